"""The compiled fast path gives River's per-event results exactly, batch after batch."""

from __future__ import annotations

import contextlib
import itertools
import math
import pickle
import random
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

pytest.importorskip("numba")  # without numba there is no fast path to test

import numpy as np
from river import (
    compose,
    datasets,
    linear_model,
    metrics,
    optim,
    preprocessing,
    tree,
)

from streamtrain.fastpath import FastEvaluator, FastPathFallback, fast_evaluator_for
from streamtrain.models.problem import Problem
from streamtrain.train.progressive import ProgressiveEvaluator

Event = tuple[dict[str, Any], Any]
BATCH_SIZES = (1, 2, 17, 500, 1, 64, 3, 250)


def _batches(events: list[Event], sizes: Iterable[int] = BATCH_SIZES) -> Iterator[list[Event]]:
    cycle = itertools.cycle(sizes)
    i = 0
    while i < len(events):
        k = next(cycle)
        yield events[i : i + k]
        i += k


def _river(model: Any, mets: dict[str, Any], events: list[Event]) -> ProgressiveEvaluator:
    """River's per-event path; an event on which the model raises is skipped (dead-lettered)."""
    evaluator = ProgressiveEvaluator(model, mets)
    for x, y in events:
        with contextlib.suppress(Exception):
            evaluator.learn(x, y)
    return evaluator


def _fast(
    fast: FastEvaluator, events: list[Event], sizes: Iterable[int] = BATCH_SIZES
) -> tuple[int, int]:
    """Drive ``fast`` the way the trainer does: a batch per call, River for refused batches."""
    river_path = ProgressiveEvaluator(fast.model, fast.metrics)
    fast_batches = fallbacks = 0
    for batch in _batches(events, sizes):
        xs = [x for x, _ in batch]
        ys = [y for _, y in batch]
        try:
            fast.learn_many(xs, ys)
            fast_batches += 1
        except FastPathFallback:
            fallbacks += 1
            fast.sync()
            for x, y in batch:
                with contextlib.suppress(Exception):
                    river_path.learn(x, y)
    return fast_batches, fallbacks


def _assert_same(
    make: Callable[[], tuple[Any, dict[str, Any]]],
    events: list[Event],
    sizes: Iterable[int] = BATCH_SIZES,
    *,
    expect_fallbacks: bool = False,
) -> dict[str, float]:
    model_r, mets_r = make()
    river = _river(model_r, mets_r, events)
    model_f, mets_f = make()
    fast = fast_evaluator_for(model_f, mets_f)
    assert fast is not None
    fast_batches, fallbacks = _fast(fast, events, sizes)
    assert fast_batches > 0
    assert (fallbacks > 0) == expect_fallbacks
    got = fast.values()
    want = river.values()
    assert got.keys() == want.keys()
    for name in want:
        assert math.isfinite(want[name])
        assert got[name] == pytest.approx(want[name], abs=1e-9, rel=0)
        assert got[name] == want[name]  # in fact bit for bit
    model_s, mets_s = fast.sync()
    assert model_s is model_f
    assert mets_s == mets_f and all(mets_s[k] is mets_f[k] for k in mets_f)
    # The River objects are left exactly as River's own loop leaves them.
    assert pickle.dumps(model_f) == pickle.dumps(model_r)
    assert pickle.dumps(mets_f) == pickle.dumps(mets_r)
    return got


def _phishing() -> list[Event]:
    return list(datasets.Phishing())


def _synthetic_classification(n: int = 3000, seed: int = 7) -> list[Event]:
    """Ten features, ints and floats over a wide range, a noisy linear boolean label."""
    rng = random.Random(seed)
    coefs = [rng.uniform(-2, 2) for _ in range(10)]
    events = []
    for _ in range(n):
        x: dict[str, Any] = {}
        for j in range(10):
            if j % 3 == 0:
                x[f"f{j}"] = rng.randint(-5, 50)
            elif j == 4:
                x[f"f{j}"] = rng.uniform(-1e6, 1e6)
            else:
                x[f"f{j}"] = rng.gauss(j, 1 + j)
        score = sum(
            c * (v / 1e6 if j == 4 else v)
            for j, (c, v) in enumerate(zip(coefs, x.values(), strict=True))
        )
        events.append((x, score + rng.gauss(0, 10) > 20))
    return events


def _friedman(n: int = 3000, seed: int = 42) -> list[Event]:
    return [(dict(x), y) for x, y in datasets.synth.Friedman(seed=seed).take(n)]


def _trump() -> list[Event]:
    return list(datasets.TrumpApproval())


def _clf_metrics() -> dict[str, Any]:
    return {
        "ROCAUC": metrics.ROCAUC(),
        "Accuracy": metrics.Accuracy(),
        "LogLoss": metrics.LogLoss(),
    }


def _reg_metrics() -> dict[str, Any]:
    return {"MAE": metrics.MAE(), "RMSE": metrics.RMSE(), "MSE": metrics.MSE()}


# -- equality with River, per supported pipeline and metric ------------------------------------


@pytest.mark.parametrize("metric", ["ROCAUC", "Accuracy", "LogLoss"])
@pytest.mark.parametrize("data", [_phishing, _synthetic_classification])
def test_scaled_logistic_regression_each_metric(
    metric: str, data: Callable[[], list[Event]]
) -> None:
    def make() -> tuple[Any, dict[str, Any]]:
        model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
        return model, {metric: getattr(metrics, metric)()}

    _assert_same(make, data())


def test_the_default_pipeline_and_metrics_on_phishing() -> None:
    def make() -> tuple[Any, dict[str, Any]]:
        return preprocessing.StandardScaler() | linear_model.LogisticRegression(), _clf_metrics()

    values = _assert_same(make, _phishing())
    assert values["ROCAUC"] > 0.9


def test_non_default_hyper_parameters() -> None:
    def make() -> tuple[Any, dict[str, Any]]:
        model = preprocessing.StandardScaler() | linear_model.LogisticRegression(
            optimizer=optim.SGD(0.1),
            loss=optim.losses.Log(weight_pos=2.0, weight_neg=0.5),
            l2=0.01,
            intercept_init=0.3,
            intercept_lr=0.05,
            clip_gradient=0.5,
        )
        mets = {
            "ROCAUC": metrics.ROCAUC(n_thresholds=25),
            "ROCAUC-neg": metrics.ROCAUC(pos_val=False),
            "Accuracy": metrics.Accuracy(),
            "LogLoss": metrics.LogLoss(),
        }
        return model, mets

    _assert_same(make, _synthetic_classification(seed=11))


def test_plain_logistic_regression() -> None:
    def make() -> tuple[Any, dict[str, Any]]:
        return linear_model.LogisticRegression(l2=0.001), _clf_metrics()

    _assert_same(make, _phishing())
    _assert_same(make, _synthetic_classification(seed=3))  # unscaled: saturated sigmoids


def test_scaler_without_std() -> None:
    def make() -> tuple[Any, dict[str, Any]]:
        model = preprocessing.StandardScaler(with_std=False) | linear_model.LogisticRegression()
        return model, _clf_metrics()

    _assert_same(make, _phishing())


@pytest.mark.parametrize("metric", ["MAE", "RMSE", "MSE"])
@pytest.mark.parametrize("data", [_friedman, _trump])
def test_scaled_linear_regression_each_metric(metric: str, data: Callable[[], list[Event]]) -> None:
    def make() -> tuple[Any, dict[str, Any]]:
        model = preprocessing.StandardScaler() | linear_model.LinearRegression()
        return model, {metric: getattr(metrics, metric)()}

    _assert_same(make, data())


def test_linear_regression_variants() -> None:
    def plain() -> tuple[Any, dict[str, Any]]:
        return linear_model.LinearRegression(), _reg_metrics()

    def tuned() -> tuple[Any, dict[str, Any]]:
        model = preprocessing.StandardScaler() | linear_model.LinearRegression(
            optimizer=optim.SGD(0.005), l2=0.1, intercept_lr=0.1, clip_gradient=5.0
        )
        return model, _reg_metrics()

    _assert_same(plain, _friedman(seed=5))
    _assert_same(tuned, _trump())


def test_batches_of_one_and_one_big_batch() -> None:
    def make() -> tuple[Any, dict[str, Any]]:
        return preprocessing.StandardScaler() | linear_model.LogisticRegression(), _clf_metrics()

    events = _phishing()
    assert _assert_same(make, events, sizes=(1,)) == _assert_same(make, events, sizes=(100_000,))


# -- feature layouts, fallbacks, round trips ----------------------------------------------------


def _drop(x: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in x.items() if k not in names}


def test_a_feature_appearing_or_disappearing_switches_the_layout() -> None:
    events = _phishing()
    # Whole batches without a feature, then with a new one: River treats missing as absent.
    changed = [
        (_drop(x, "popup_window"), y) if 300 <= i < 700 else (x, y)
        for i, (x, y) in enumerate(events)
    ]
    changed = [({**x, "extra": i % 5} if i >= 900 else x, y) for i, (x, y) in enumerate(changed)]

    def make() -> tuple[Any, dict[str, Any]]:
        return preprocessing.StandardScaler() | linear_model.LogisticRegression(), _clf_metrics()

    _assert_same(make, changed, sizes=(100,))


def test_mixed_layouts_and_reordered_keys_fall_back_to_river() -> None:
    events = _phishing()
    mixed = []
    for i, (x, y) in enumerate(events):
        if i % 97 == 13:
            x = _drop(x, "https")
        elif i % 89 == 5:
            x = dict(reversed(list(x.items())))  # same keys, another summation order
        mixed.append((x, y))

    def make() -> tuple[Any, dict[str, Any]]:
        return preprocessing.StandardScaler() | linear_model.LogisticRegression(), _clf_metrics()

    _assert_same(make, mixed, expect_fallbacks=True)


def test_non_boolean_labels_and_non_numeric_values_fall_back() -> None:
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    mets = _clf_metrics()
    fast = fast_evaluator_for(model, mets)
    assert fast is not None
    x = {"a": 1.0, "b": 2}
    before = pickle.dumps((model, mets))
    for xs, ys in [([x, x], [True, 1]), ([x, {"a": "high", "b": 2}], [True, False])]:
        with pytest.raises(FastPathFallback):
            fast.learn_many(xs, ys)
    fast.sync()
    assert pickle.dumps((model, mets)) == before  # nothing was applied

    regression = fast_evaluator_for(linear_model.LinearRegression(), {"MAE": metrics.MAE()})
    assert regression is not None
    with pytest.raises(FastPathFallback):
        regression.learn_many([x], [True])


@pytest.mark.parametrize("labels", ["ints", "mixed"])
def test_zero_one_integer_labels_are_binary_labels(labels: str) -> None:
    # Agrawal's labels are the ints 0 and 1: River treats them as False/True throughout.
    events = list(itertools.islice(datasets.synth.Agrawal(seed=3), 2000))
    if labels == "mixed":
        events = [(x, bool(y) if i % 3 else y) for i, (x, y) in enumerate(events)]
    assert {type(y) for _, y in events} >= {int}

    def make() -> tuple[Any, dict[str, Any]]:
        model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
        return model, {"ROCAUC": metrics.ROCAUC(), "LogLoss": metrics.LogLoss()}

    _assert_same(make, events)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_unlabelled_events_are_predicted_where_they_stand(task: str) -> None:
    from streamtrain.models.prediction import answer_from_fast_path, predict_answer

    if task == "classification":
        events = _phishing()
        kind = Problem.CLASSIFICATION

        def make() -> tuple[Any, dict[str, Any]]:
            model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
            return model, {"ROCAUC": metrics.ROCAUC(), "LogLoss": metrics.LogLoss()}
    else:
        events = _friedman()
        kind = Problem.REGRESSION

        def make() -> tuple[Any, dict[str, Any]]:
            model = preprocessing.StandardScaler() | linear_model.LinearRegression()
            return model, {"MAE": metrics.MAE()}

    # Every 4th event, and a run of ten, unlabelled.
    stream = [(x, None if i % 4 == 1 or 40 <= i < 50 else y) for i, (x, y) in enumerate(events)]
    model_r, mets_r = make()
    river = ProgressiveEvaluator(model_r, mets_r)
    want = []
    for x, y in stream:
        if y is None:
            want.append(predict_answer(model_r, kind, x))
        else:
            river.learn(x, y)
    model_f, mets_f = make()
    fast = fast_evaluator_for(model_f, mets_f)
    assert fast is not None
    got = []
    for batch in _batches(stream):
        values = fast.learn_many([x for x, _ in batch], [y for _, y in batch])
        answered = zip(batch, values.tolist(), strict=True)
        got += [answer_from_fast_path(kind, v) for (_, y), v in answered if y is None]
    assert got == want  # to the last bit
    assert fast.values() == river.values()
    fast.sync()
    assert pickle.dumps((model_f, mets_f)) == pickle.dumps((model_r, mets_r))


def test_other_integer_labels_or_accuracy_with_ints_fall_back() -> None:
    x = {"a": 1.0, "b": 2.0}
    for mets, ys in [
        ({"ROCAUC": metrics.ROCAUC()}, [0, 2]),  # not binary
        ({"Accuracy": metrics.Accuracy()}, [0, 1]),  # its matrix keeps the labels as keys
    ]:
        model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
        fast = fast_evaluator_for(model, mets)
        assert fast is not None
        with pytest.raises(FastPathFallback):
            fast.learn_many([x, x], ys)


def test_an_event_river_raises_on_falls_back_with_the_batch_untouched() -> None:
    # MSE squares the error: beyond ~1e154 CPython raises OverflowError on that event, which the
    # trainer dead-letters. The fast path hands such a batch to River, which does just that.
    rng = random.Random(1)
    events: list[Event] = [
        ({"a": rng.gauss(0, 1), "b": rng.gauss(0, 1)}, rng.gauss(0, 1)) for _ in range(600)
    ]
    events[321] = (events[321][0], 1e160)

    def make() -> tuple[Any, dict[str, Any]]:
        return preprocessing.StandardScaler() | linear_model.LinearRegression(), _reg_metrics()

    model, mets = make()
    with pytest.raises(OverflowError):
        ProgressiveEvaluator(model, mets).learn(*events[321])
    _assert_same(make, events, sizes=(50,), expect_fallbacks=True)


def test_sync_round_trip_then_either_path_continues_identically() -> None:
    events = _phishing()

    def make() -> tuple[Any, dict[str, Any]]:
        return preprocessing.StandardScaler() | linear_model.LogisticRegression(), _clf_metrics()

    model_r, mets_r = make()
    reference = ProgressiveEvaluator(model_r, mets_r)
    model, mets = make()
    fast = fast_evaluator_for(model, mets)
    assert fast is not None
    river_path = ProgressiveEvaluator(model, mets)
    for i, batch in enumerate(_batches(events, (40, 1, 130))):
        for x, y in batch:
            reference.learn(x, y)
        if i % 3 == 1:  # River learns some batches from the synced objects...
            fast.sync()
            for x, y in batch:
                river_path.learn(x, y)
        else:  # ... and the fast path picks up from where River left them.
            fast.learn_many([x for x, _ in batch], [y for _, y in batch])
        if i % 5 == 0:
            # A progress report. (River's ROCAUC.get() inserts zero cells into its confusion
            # matrices, so the reference reports at the same points to stay byte-identical.)
            assert fast.values() == reference.values()
    fast.sync()
    assert pickle.dumps((model, mets)) == pickle.dumps((model_r, mets_r))


def test_resuming_from_a_pickled_checkpoint() -> None:
    events = _synthetic_classification(2000, seed=5)

    def make() -> tuple[Any, dict[str, Any]]:
        return preprocessing.StandardScaler() | linear_model.LogisticRegression(), _clf_metrics()

    # A pickle round trip changes how objects are shared, hence the bytes: River goes through one
    # at the same point.
    model_r, mets_r = make()
    _river(model_r, mets_r, events[:1100])
    model_r, mets_r = pickle.loads(pickle.dumps((model_r, mets_r)))
    _river(model_r, mets_r, events[1100:])

    model, mets = make()
    fast = fast_evaluator_for(model, mets)
    assert fast is not None
    _fast(fast, events[:1100])
    blob = pickle.dumps(fast.sync())
    model2, mets2 = pickle.loads(blob)
    resumed = fast_evaluator_for(model2, mets2)
    assert resumed is not None
    _fast(resumed, events[1100:])
    assert resumed.values() == ProgressiveEvaluator(model_r, mets_r).values()
    model_f, mets_f = resumed.sync()
    assert pickle.dumps((model_f, mets_f)) == pickle.dumps((model_r, mets_r))


def test_without_waiting_for_the_kernel_river_learns_until_it_is_ready(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streamtrain.fastpath import evaluator

    events = _phishing()

    def make() -> tuple[Any, dict[str, Any]]:
        return preprocessing.StandardScaler() | linear_model.LogisticRegression(), _clf_metrics()

    model_r, mets_r = make()
    _river(model_r, mets_r, events)

    ready = evaluator._kernel
    assert ready is not None
    monkeypatch.setattr(evaluator, "_kernel", None)  # still compiling
    model, mets = make()
    fast = fast_evaluator_for(model, mets, wait=False)
    assert fast is not None
    assert _fast(fast, events[:300]) == (0, len(list(_batches(events[:300]))))
    monkeypatch.setattr(evaluator, "_kernel", ready)  # compiled: picks up from River's state
    fast_batches, fallbacks = _fast(fast, events[300:])
    assert fast_batches > 0 and fallbacks == 0
    assert fast.values() == ProgressiveEvaluator(model_r, mets_r).values()
    assert pickle.dumps(fast.sync()) == pickle.dumps((model_r, mets_r))


def test_learn_during_predict_is_left_to_river() -> None:
    fast = fast_evaluator_for(
        preprocessing.StandardScaler() | linear_model.LogisticRegression(), _clf_metrics()
    )
    assert fast is not None
    with compose.learn_during_predict(), pytest.raises(FastPathFallback):
        fast.learn_many([{"a": 1.0}], [True])


def test_task_and_empty_batches() -> None:
    fast = fast_evaluator_for(linear_model.LinearRegression(), {"MAE": metrics.MAE()})
    assert fast is not None
    assert fast.problem is Problem.REGRESSION
    fast.learn_many([], [])
    assert fast.values() == {"MAE": 0.0}
    with pytest.raises(ValueError, match="labels"):
        fast.learn_many([{"a": 1.0}], [])


# -- eligibility ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make_model", "make_metrics"),
    [
        (tree.HoeffdingTreeClassifier, _clf_metrics),
        (lambda: linear_model.LogisticRegression(optimizer=optim.Adam()), _clf_metrics),
        (
            lambda: linear_model.LogisticRegression(
                optimizer=optim.SGD(optim.schedulers.InverseScaling(0.1))
            ),
            _clf_metrics,
        ),
        (lambda: linear_model.LogisticRegression(l1=0.01), _clf_metrics),
        (lambda: linear_model.LogisticRegression(loss=optim.losses.Hinge()), _clf_metrics),
        (
            lambda: linear_model.LogisticRegression(initializer=optim.initializers.Constant(0.1)),
            _clf_metrics,
        ),
        (lambda: linear_model.LinearRegression(loss=optim.losses.Absolute()), _reg_metrics),
        (
            lambda: (
                preprocessing.StandardScaler(window_size=10) | linear_model.LogisticRegression()
            ),
            _clf_metrics,
        ),
        (lambda: preprocessing.MinMaxScaler() | linear_model.LogisticRegression(), _clf_metrics),
        (
            lambda: (
                preprocessing.StandardScaler()
                | preprocessing.StandardScaler()
                | linear_model.LogisticRegression()
            ),
            _clf_metrics,
        ),
        (linear_model.LogisticRegression, lambda: {"F1": metrics.F1()}),
        (linear_model.LogisticRegression, lambda: {"rolling": metrics.RollingROCAUC()}),
        (linear_model.LinearRegression, lambda: {"R2": metrics.R2()}),
        (linear_model.LinearRegression, lambda: {"ROCAUC": metrics.ROCAUC()}),
    ],
)
def test_ineligible_models_and_metrics_get_none(
    make_model: Callable[[], Any], make_metrics: Callable[[], dict[str, Any]]
) -> None:
    assert fast_evaluator_for(make_model(), make_metrics()) is None


def test_accuracies_sharing_a_confusion_matrix() -> None:
    # River updates a shared matrix once per metric and event; so does the fast path.
    def make() -> tuple[Any, dict[str, Any]]:
        shared = metrics.ConfusionMatrix()
        mets = {"a": metrics.Accuracy(cm=shared), "b": metrics.Accuracy(cm=shared)}
        return linear_model.LogisticRegression(), mets

    _assert_same(make, _phishing())


# -- batch decoding --------------------------------------------------------------------------------

_GOOD = [
    b'{"x": {"a": 0.5, "b": 1, "c": -2.25e10}, "y": true}',
    b'{"x": {"a": 1e150, "b": -1e150}, "y": false}',
    b'{"x": {"a": 3}, "y": 2}',
    b'{"x": {"a": 3.5}, "y": "cat"}',
    b'{"x": {"a": 18446744073709551615}, "y": 0.25}',
    b'{"x": {"a": -9223372036854775808}, "y": null}',
    b'{"y": 1.5, "x": {"a": 2}, "extra": [1]}',
]
_BAD = [
    None,
    b"",
    b"\x00\xff not json",
    b'{"x": {"a": NaN}, "y": true}',
    b'{"x": {"a": 1e999}, "y": true}',
    b"[1, 2, 3]",
    b'"text"',
    b'{"y": true}',
    b'{"x": [1, 2], "y": true}',
    b'{"x": {}, "y": true}',
    b'{"x": {"a": "high"}, "y": true}',
    b'{"x": {"a": true}, "y": true}',
    b'{"x": {"a": null}, "y": 1}',
    b'{"x": {"a": 1e151}, "y": false}',
    b'{"x": {"a": -1.0000001e150}, "y": false}',
    b'{"x": {"a": 0.5}}',  # unlabelled: valid, y None
    b'{"x": {"a": 0.5}, "y": null}',
    b'{"x": {"a": "bad"}}',
    b'{"x": {"a": 0.5}, "y": {"label": 1}}',
    b'{"x": {"a": 0.5}, "y": [1]}',
    b'{"x": {"a": 0.5}, "y": true, "z": 1}',
    b'{"x": {"a": 0.5}, "y": 1e999}',
    b'{"x": {"a": 100000000000000000000000000000}, "y": 1}',
]


@pytest.mark.parametrize("task", list(Problem))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_decode_batch_gives_decode_events_verdicts(task: Problem, seed: int) -> None:
    from streamtrain.data.events import InvalidEvent, decode_event
    from streamtrain.fastpath.decode import decode_batch

    rng = random.Random(seed)
    values = [*_GOOD * 5, *_BAD]
    rng.shuffle(values)
    values = values[: rng.randint(1, len(values))] if seed else values
    want_ok: list[tuple[int, Any, Any]] = []
    want_bad: list[tuple[int, str, str]] = []
    for i, value in enumerate(values):
        try:
            x, y = decode_event(value, task)
        except InvalidEvent as bad:
            want_bad.append((i, bad.reason.value, bad.message))
        else:
            want_ok.append((i, x, y))
    batch = decode_batch(values, task)
    assert list(zip(batch.positions, batch.xs, batch.ys, strict=True)) == want_ok
    assert [(i, b.reason.value, b.message) for i, b in batch.invalid] == want_bad
    # Each label keeps its JSON type (True is not 1).
    assert [type(y) for y in batch.ys] == [type(y) for _, _, y in want_ok]


def test_decode_batch_of_valid_events_only() -> None:
    from streamtrain.fastpath.decode import decode_batch

    events = _phishing()[:300]
    values = [_seed_json({"x": x, "y": y}) for x, y in events]
    batch = decode_batch(values, Problem.CLASSIFICATION)
    assert batch.invalid == []
    assert batch.positions == list(range(300))
    assert list(zip(batch.xs, batch.ys, strict=True)) == events


@pytest.mark.parametrize("task", [Problem.CLASSIFICATION, Problem.REGRESSION])
def test_a_batch_of_valid_events_is_decoded_in_bulk_with_the_same_results(task: Problem) -> None:
    from streamtrain.data.events import decode_event
    from streamtrain.fastpath.decode import decode_batch

    valid = [v for v in [*_GOOD, *_BAD] if v is not None and _verdict(v, task) == "ok"]
    for seed in range(5):
        values = random.Random(seed).choices(valid, k=40)
        batch = decode_batch(values, task)
        want = [decode_event(v, task) for v in values]
        assert list(zip(batch.xs, batch.ys, strict=True)) == want
        assert [type(y) for y in batch.ys] == [type(y) for _, y in want]
        assert batch.positions == list(range(40)) and batch.invalid == []


def _verdict(value: bytes, task: Problem) -> str:
    from streamtrain.data.events import InvalidEvent, decode_event

    try:
        decode_event(value, task)
    except InvalidEvent as bad:
        return bad.reason.value
    return "ok"


def test_one_layout_is_decoded_straight_into_the_feature_matrix() -> None:
    from streamtrain.fastpath.decode import decode_batch

    values = [
        b'{"x": {"a": 0.5, "b": 1}, "y": true}',
        b'{"x": {"a": 18446744073709551615, "b": -1e150}, "y": false}',
        b'{"x": {"a": -3, "b": 2.25}}',
    ]
    batch = decode_batch(values, Problem.CLASSIFICATION)
    assert batch.matrix is not None and batch.matrix.dtype == np.float64
    assert batch.matrix.tolist() == [[0.5, 1.0], [float(2**64 - 1), -1e150], [-3.0, 2.25]]
    assert batch.ys == [True, False, None]
    # Another order of the same keys is another layout: River sums in each event's order.
    mixed = decode_batch([*values, b'{"x": {"b": 1, "a": 0.5}, "y": true}'], Problem.CLASSIFICATION)
    assert mixed.matrix is None and mixed.xs[3] == {"b": 1, "a": 0.5}
    # One bad value anywhere: no matrix, and its verdict is decode_event's.
    bad = decode_batch(
        [*values, b'{"x": {"a": 0.5, "b": true}, "y": true}'], Problem.CLASSIFICATION
    )
    assert bad.matrix is None and [(i, e.reason.value) for i, e in bad.invalid] == [
        (3, "bad-features")
    ]


def test_learning_from_the_decoded_matrix_is_learning_from_the_dicts() -> None:
    from streamtrain.fastpath.decode import decode_batch

    values = [_seed_json({"x": x, "y": y}) for x, y in _phishing()[:600]]
    from_dicts = fast_evaluator_for(*_default_pipeline())
    from_matrix = fast_evaluator_for(*_default_pipeline())
    assert from_dicts is not None and from_matrix is not None
    for i in range(0, len(values), 100):
        batch = decode_batch(values[i : i + 100], Problem.CLASSIFICATION)
        assert batch.matrix is not None
        want = from_dicts.learn_many(batch.xs, batch.ys)
        got = from_matrix.learn_many(batch.xs, batch.ys, batch.matrix)
        assert got.tolist() == want.tolist()
    assert from_matrix.values() == from_dicts.values()


def _default_pipeline() -> tuple[Any, dict[str, Any]]:
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    return model, {"ROCAUC": metrics.ROCAUC(), "Accuracy": metrics.Accuracy()}


def _seed_json(obj: Any) -> bytes:
    import json

    return json.dumps(obj).encode()
