"""The River internals the fast path relies on are as verified, and when not, it fails closed.

If a River upgrade breaks a test here, the adapter (``streamtrain.fastpath.river_adapter``) must
be checked against the new River before its ``VERIFIED_RIVER`` and the bound in pyproject.toml
may move.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import random
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("numba")  # without numba there is no fast path to test

import river
from river import base, compose, datasets, linear_model, metrics, optim, preprocessing, stats

from streamtrain.fastpath import (
    FastEvaluator,
    FastPathDisabled,
    FastPathFallback,
    disabled_counts,
    fast_evaluator_for,
)
from streamtrain.fastpath import fallback as fallback_module
from streamtrain.fastpath.eligibility import plan_for
from streamtrain.fastpath.river_adapter import (
    VERIFIED_RIVER,
    MetricsBinding,
    ModelBinding,
    UnsupportedRiver,
    check_river_version,
    learning_during_predict,
    verified_range,
)
from streamtrain.train.progressive import ProgressiveEvaluator

Event = tuple[dict[str, Any], Any]
ROOT = Path(__file__).resolve().parents[2]


def _phishing() -> list[Event]:
    return list(datasets.Phishing())


def _friedman(n: int = 600) -> list[Event]:
    return [(dict(x), y) for x, y in datasets.synth.Friedman(seed=3).take(n)]


MODELS = {
    "scaled logistic": lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression(),
    "unscaled-std logistic": lambda: (
        preprocessing.StandardScaler(with_std=False)
        | linear_model.LogisticRegression(l2=0.01, intercept_init=0.5)
    ),
    "plain logistic": lambda: linear_model.LogisticRegression(optimizer=optim.SGD(0.05)),
    "scaled linear": lambda: preprocessing.StandardScaler() | linear_model.LinearRegression(),
    "plain linear": lambda: linear_model.LinearRegression(clip_gradient=3.0),
}


def _events_for(name: str) -> list[Event]:
    return _phishing() if "logistic" in name else _friedman()


def _metrics_for(name: str) -> dict[str, Any]:
    if "logistic" in name:
        return {
            "ROCAUC": metrics.ROCAUC(n_thresholds=7),
            "ROCAUC-neg": metrics.ROCAUC(pos_val=False),
            "Accuracy": metrics.Accuracy(),
            "LogLoss": metrics.LogLoss(),
        }
    return {"MAE": metrics.MAE(), "MSE": metrics.MSE(), "RMSE": metrics.RMSE()}


# -- the version --------------------------------------------------------------------------------


def test_the_installed_river_is_a_verified_release() -> None:
    check_river_version()  # raises UnsupportedRiver otherwise
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    requirement = next(
        dep for dep in project["project"]["dependencies"] if dep.split(">")[0] == "river"
    )
    assert requirement == f"river{verified_range()}"  # pyproject and the adapter agree


@pytest.mark.parametrize(
    ("version", "verified"),
    [("0.24.1", False), ("0.24.2", True), ("0.26.1", True), ("0.27.0", False), ("1.0", False)],
)
def test_releases_outside_the_verified_range_are_refused(version: str, verified: bool) -> None:
    low, high = VERIFIED_RIVER
    assert low < high
    if verified:
        check_river_version(version)
    else:
        with pytest.raises(UnsupportedRiver, match="outside"):
            check_river_version(version)


# -- layout: every internal the adapter touches, on fresh and on learned River objects -----------


@pytest.mark.parametrize("name", MODELS)
def test_the_adapter_accepts_river_objects_fresh_and_learned(name: str) -> None:
    model, mets = MODELS[name](), _metrics_for(name)
    plan_for(model, mets)  # every binding checks each attribute it will read or write
    evaluator = ProgressiveEvaluator(model, mets)
    for x, y in _events_for(name)[:50]:
        evaluator.learn(x, y)
    evaluator.values()  # ROCAUC.get() inserts cells of its own
    plan = plan_for(model, mets)  # learning changed some types (ints became floats)
    assert plan.problem.value == ("classification" if "logistic" in name else "regression")


def test_learn_during_predict_is_reported() -> None:
    assert learning_during_predict() is False
    with compose.learn_during_predict():
        assert learning_during_predict() is True
    assert learning_during_predict() is False


# -- meaning: state read from River and written into fresh objects is River's state --------------


def _layout(events: list[Event]) -> list[str]:
    layout = list(events[0][0])
    assert all(list(x) == layout for x, _ in events)
    return layout


def _predict(model: Any, x: dict[str, Any]) -> Any:
    final = model[-1] if isinstance(model, compose.Pipeline) else model
    return (
        model.predict_proba_one(x) if isinstance(final, base.Classifier) else model.predict_one(x)
    )


@pytest.mark.parametrize("name", MODELS)
def test_model_state_round_trip_is_bit_for_bit(name: str) -> None:
    events = _events_for(name)
    learned = MODELS[name]()
    for x, y in events[:300]:
        _predict(learned, x)
        learned.learn_one(x, y)
    layout = _layout(events)
    state = plan_for(learned, {}).model.read(layout)
    assert state.n_iterations == 300
    assert state.weights.any() and state.intercept[0] != 0

    fresh = MODELS[name]()
    assert not plan_for(fresh, {}).model.read(layout).weights.any()  # unseen reads as zeros
    plan_for(fresh, {}).model.write(layout, state)
    assert pickle.dumps(fresh) == pickle.dumps(learned)
    # And both go on identically with River.
    for x, y in events[300:400]:
        assert _predict(fresh, x) == _predict(learned, x)
        fresh.learn_one(x, y)
        learned.learn_one(x, y)
    assert pickle.dumps(fresh) == pickle.dumps(learned)


def test_mean_metrics_round_trip() -> None:
    rng = random.Random(4)
    learned = [metrics.LogLoss(), metrics.MAE(), metrics.MSE(), metrics.RMSE()]
    for _ in range(200):
        y, p = rng.random() < 0.4, rng.random()
        learned[0].update(y, p)
        for metric in learned[1:]:
            metric.update(rng.gauss(0, 3), rng.gauss(0, 3))
    n, values = MetricsBinding([], [], learned).read_means()
    assert n.tolist() == [200.0] * 4
    fresh = [type(metric)() for metric in learned]
    empty = np.zeros((0, 2, 2), dtype=np.int64)
    cells = np.zeros((2, 2), dtype=np.int64)
    MetricsBinding([], [], fresh).write(empty, empty, cells, cells, n, values)
    assert [m.get() for m in fresh] == [m.get() for m in learned]
    assert pickle.dumps(fresh) == pickle.dumps(learned)


def test_confusion_matrix_cells_are_rivers_updates() -> None:
    """Counted cell updates, added through the adapter, equal River's event-by-event updates."""
    rng = random.Random(9)
    stream = [(rng.random() < 0.3, rng.random() ** 2) for _ in range(400)]

    def make() -> tuple[list[Any], list[Any]]:
        return [metrics.ROCAUC(n_thresholds=6), metrics.ROCAUC(pos_val=False)], [metrics.Accuracy()]

    rocs, accs = make()
    for y, p in stream:
        for roc in rocs:
            roc.update(y, {True: p, False: 1.0 - p})
        for acc in accs:
            acc.update(y, p > 0.5)

    rocs_f, accs_f = make()
    binding = MetricsBinding(rocs_f, accs_f, [])
    rows = len(binding.thresholds)
    cm_counts = np.zeros((rows, 2, 2), dtype=np.int64)
    cm_first = np.full((rows, 2, 2), -1, dtype=np.int64)
    acc_counts = np.zeros((2, 2), dtype=np.int64)
    acc_first = np.full((2, 2), -1, dtype=np.int64)

    def count(counts: np.ndarray, first: np.ndarray, a: int, b: int, i: int) -> None:
        counts[a, b] += 1
        if first[a, b] < 0:
            first[a, b] = i

    for i, (y, p) in enumerate(stream):
        # ROCAUC.update: cm.update(y_true == pos_val, p_true > threshold) for each threshold.
        for row, (t, pos) in enumerate(zip(binding.thresholds, binding.positive, strict=True)):
            count(cm_counts[row], cm_first[row], int(y == bool(pos)), int(p > t), i)
        count(acc_counts, acc_first, int(y), int(p > 0.5), i)
    empty = np.zeros(0)
    binding.write(cm_counts, cm_first, acc_counts, acc_first, empty, empty)
    assert pickle.dumps((rocs_f, accs_f)) == pickle.dumps((rocs, accs))
    assert [m.get() for m in (*rocs_f, *accs_f)] == [m.get() for m in (*rocs, *accs)]


# -- failing closed ------------------------------------------------------------------------------


@pytest.fixture
def fresh_record(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """A fresh per-process record of disabled reasons (so that each test sees its first log)."""
    counts: Counter[str] = Counter()
    monkeypatch.setattr(fallback_module, "_counts", counts)
    return counts


def _scaled_logistic() -> tuple[Any, dict[str, Any]]:
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    return model, {
        "ROCAUC": metrics.ROCAUC(),
        "Accuracy": metrics.Accuracy(),
        "LogLoss": metrics.LogLoss(),
    }


def _drop_weights(model: Any, mets: dict[str, Any]) -> None:
    del model["LogisticRegression"]._weights


def _plain_dict_counts(model: Any, mets: dict[str, Any]) -> None:
    model["StandardScaler"].counts = dict(model["StandardScaler"].counts)


def _drop_mean(model: Any, mets: dict[str, Any]) -> None:
    del mets["LogLoss"]._mean


def _foreign_matrix(model: Any, mets: dict[str, Any]) -> None:
    mets["ROCAUC"].cms[3] = object()


def _drop_public_attribute(model: Any, mets: dict[str, Any]) -> None:
    del model["LogisticRegression"].l1


def _drop_cells_total(model: Any, mets: dict[str, Any]) -> None:
    del mets["Accuracy"].cm._total_true_positives  # as in River < 0.24


@pytest.mark.parametrize(
    "breakage",
    [
        _drop_weights,
        _plain_dict_counts,
        _drop_mean,
        _foreign_matrix,
        _drop_public_attribute,
        _drop_cells_total,
    ],
)
def test_an_unexpected_river_object_is_not_eligible_and_logged_once(
    breakage: Any, fresh_record: Counter[str], caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(3):
        model, mets = _scaled_logistic()
        breakage(model, mets)
        with caplog.at_level(logging.WARNING, logger="streamtrain.fastpath"):
            assert fast_evaluator_for(model, mets) is None
    assert len(fresh_record) == 1 and next(iter(fresh_record.values())) == 3
    assert disabled_counts() == dict(fresh_record)
    assert len([r for r in caplog.records if "fast path is off" in r.message]) == 1


def test_an_unverified_river_release_is_not_eligible(
    monkeypatch: pytest.MonkeyPatch, fresh_record: Counter[str]
) -> None:
    monkeypatch.setattr(river, "__version__", "0.27.0")
    assert fast_evaluator_for(*_scaled_logistic()) is None
    assert list(fresh_record) == [
        f"River 0.27.0 is outside the releases the fast path was verified with ({verified_range()})"
    ]


def test_a_missing_river_flag_is_not_eligible(
    monkeypatch: pytest.MonkeyPatch, fresh_record: Counter[str]
) -> None:
    monkeypatch.delattr(compose.Pipeline, "_LEARN_UNSUPERVISED_DURING_PREDICT")
    assert fast_evaluator_for(*_scaled_logistic()) is None
    assert len(fresh_record) == 1


class _RenamedMean(stats.Mean):
    """A stats.Mean of another class: what a River that reorganised its means might hand over."""


def _drive(fast: FastEvaluator, events: list[Event], size: int) -> FastEvaluator | None:
    """The trainer's loop: a batch per call; River for refused batches, and for good once the
    fast path is disabled."""
    river_path = ProgressiveEvaluator(fast.model, fast.metrics)
    current: FastEvaluator | None = fast
    for i in range(0, len(events), size):
        batch = events[i : i + size]
        if current is not None:
            try:
                current.learn_many([x for x, _ in batch], [y for _, y in batch])
                continue
            except FastPathDisabled:
                current.sync()
                current = None
            except FastPathFallback:
                current.sync()
        for x, y in batch:
            with contextlib.suppress(Exception):
                river_path.learn(x, y)
    return current


def _rename_mean(mets: dict[str, Any]) -> None:
    old = mets["LogLoss"]._mean
    new = _RenamedMean()
    new.__dict__.update(vars(old))
    mets["LogLoss"]._mean = new


def test_an_unexpected_object_met_later_disables_with_rivers_results(
    fresh_record: Counter[str], caplog: pytest.LogCaptureFixture
) -> None:
    events = _phishing()
    model_r, mets_r = _scaled_logistic()
    reference = ProgressiveEvaluator(model_r, mets_r)
    for x, y in events[:500]:
        reference.learn(x, y)
    _rename_mean(mets_r)
    for x, y in events[500:]:
        reference.learn(x, y)

    model, mets = _scaled_logistic()
    fast = fast_evaluator_for(model, mets)
    assert fast is not None
    assert _drive(fast, events[:500], 50) is fast
    fast.sync()  # a checkpoint: River's objects are the caller's again ...
    _rename_mean(mets)  # ... and now hold something the adapter was not verified with
    with caplog.at_level(logging.WARNING, logger="streamtrain.fastpath"):
        assert _drive(fast, events[500:], 50) is None
    assert fast.disabled_because == "LogLoss._mean is a _RenamedMean, expected Mean"
    assert fresh_record == Counter({fast.disabled_because: 1})
    assert len(caplog.records) == 1
    with pytest.raises(FastPathDisabled):
        fast.learn_many([events[0][0]], [events[0][1]])  # off for good
    assert fast.values() == reference.values()
    assert pickle.dumps(fast.sync()) == pickle.dumps((model_r, mets_r))


def test_a_failing_read_disables_with_nothing_taken(
    monkeypatch: pytest.MonkeyPatch, fresh_record: Counter[str]
) -> None:
    events = _phishing()[:200]
    model, mets = _scaled_logistic()
    fast = fast_evaluator_for(model, mets)
    assert fast is not None
    fast.learn_many([x for x, _ in events[:100]], [y for _, y in events[:100]])
    fast.sync()
    before = pickle.dumps((model, mets))

    def broken(self: ModelBinding, layout: list[str]) -> Any:
        raise AttributeError("'VectorDict' object has no attribute 'to_dict'")

    monkeypatch.setattr(ModelBinding, "read", broken)
    with pytest.raises(FastPathDisabled, match="to_dict"):
        fast.learn_many([x for x, _ in events[100:]], [y for _, y in events[100:]])
    assert pickle.dumps(fast.sync()) == before  # nothing was taken or applied
    assert fast.fallbacks == 1 and fast.disabled_because is not None
    assert len(fresh_record) == 1


def test_a_failing_write_is_raised_and_disables(
    monkeypatch: pytest.MonkeyPatch, fresh_record: Counter[str]
) -> None:
    events = _phishing()[:100]
    fast = fast_evaluator_for(*_scaled_logistic())
    assert fast is not None
    fast.learn_many([x for x, _ in events], [y for _, y in events])

    def broken(self: ModelBinding, layout: list[str], state: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(ModelBinding, "write", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        fast.sync()
    assert fast.disabled_because == "writing the state into River failed: RuntimeError: a bug"
    fast.sync()  # not retried over a partly written state
    with pytest.raises(FastPathDisabled):
        fast.learn_many([events[0][0]], [events[0][1]])
