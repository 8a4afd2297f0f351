"""The promotion gate and drift detection together (the default run: --drift ADWIN): the gate
sees every labelled event, each detector follows its model through promotions, and a
reset-challengers restart leaves the gate's windows and counts fresh, not stale."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from river import metrics
from river.datasets import synth

from streamtrain.data.events import encode_event
from streamtrain.state.payload import TrainState, freeze, thaw
from streamtrain.train.challengers import Roster, parse_challengers
from streamtrain.train.drift import Detection, DriftPolicy
from streamtrain.train.progressive import build_metrics
from streamtrain.train.promotion import Promotion, PromotionRule
from streamtrain.train.step import SimpleRecord
from streamtrain.train.tasks import Task
from tests.unit.test_promotion import CHALLENGERS, ORACLES, PHISHING, _expected, _pvs

RULE = PromotionRule("ROCAUC", window=50, every=10, after=2, mode="auto")
SENSITIVE = "PageHinkley(threshold=5)"  # fires several times on Phishing, for every model


def _task(state: TrainState | None = None, on_drift: str = "alert", spec: str = SENSITIVE) -> Task:
    model = ORACLES["c0"]()
    built = build_metrics(["ROCAUC", "LogLoss"], model)
    roster = Roster(parse_challengers(CHALLENGERS), built, model)
    state = state or TrainState(model, built, 0, {}, {})
    policy = DriftPolicy(spec, on_drift)
    return Task.from_state(
        "t", state, roster=roster, promotion=RULE, spec="GaussianNB", drift=policy
    )


def _run(task: Task, records: list[SimpleRecord], cut: int | None = None) -> tuple[Task, list]:
    out: list[Any] = []
    for i in range(0, len(records), 37):
        if cut is not None and i <= cut < i + 37:
            state = task.state()
            task = _task(thaw(freeze(state), state.events_learned, state.offsets))
        task.learn(records[i : i + 37])
        out += task.take_outputs()
    return task, out


def _fired(model: Any, events: list[tuple[dict[str, Any], Any]]) -> list[int]:
    """The detector fed ``model``'s progressive 0/1 error over the whole stream: where it
    fires."""
    detector, fired = DriftPolicy(SENSITIVE).new_detector(), []
    for i, (x, y) in enumerate(events, start=1):
        proba = model.predict_proba_one(x)
        model.learn_one(x, y)
        if proba:
            detector.update(0.0 if max(proba, key=proba.get) == y else 1.0)
            if detector.drift_detected:
                fired.append(i)
    return fired


@pytest.mark.parametrize("cut", [None, 420])
def test_with_drift_on_the_gate_promotes_where_the_offline_rule_does(cut: int | None) -> None:
    """Drift detection feeds the challengers itself; the gate still sees every event, so the
    promotions are the offline rule's and each model's metrics River's. Each detector follows
    its model: a model's detections, whatever its label then, are those of a detector fed its
    own errors."""
    records = [SimpleRecord(encode_event(x, y), 0, i) for i, (x, y) in enumerate(PHISHING)]
    task, out = _run(_task(), records, cut)
    promotions = [p for p in out if isinstance(p, Promotion)]
    assert [(p.events, p.from_label, p.to_label) for p in promotions] == _expected()
    assert task.gate is not None and task.gate.state.events == len(PHISHING)
    champion = task.gate.state.champion
    assert task.evaluator.values()["ROCAUC"] == pytest.approx(
        _pvs(champion, metrics.ROCAUC), abs=1e-12
    )
    assert task.drift is not None
    assert set(task.drift.detectors) == {"champion", *(c.label for c in task.challengers)}

    def model_at(label: str, events: int) -> str:  # who held ``label`` at that event
        if label != "champion":
            return label
        before = [p.to_label for p in promotions if p.events < events]
        return before[-1] if before else "c0"

    found: dict[str, list[int]] = {label: [] for label in ORACLES}
    for d in out:
        if isinstance(d, Detection):
            found[model_at(d.label, d.events)].append(d.events)
    expected = {label: _fired(make(), PHISHING) for label, make in ORACLES.items()}
    assert any(expected.values())  # the test sees detections at all
    assert found == expected


def test_reset_challengers_restarts_the_gates_windows_and_counts() -> None:
    """A champion's drift restarts the challengers: the gate's window comes with each fresh
    evaluator (empty) and its win counts start again; the gate goes on seeing every event."""
    stream = [
        (x, bool(y))
        for x, y in itertools.chain(
            itertools.islice(synth.Agrawal(classification_function=0, seed=7), 1_500),
            itertools.islice(synth.Agrawal(classification_function=4, seed=8), 1_000),
        )
    ]
    records = [SimpleRecord(encode_event(x, y), 0, i) for i, (x, y) in enumerate(stream)]
    task = _task(on_drift="reset-challengers", spec="ADWIN")
    assert task.gate is not None
    task, out = _run(task, records)
    resets = [d for d in out if isinstance(d, Detection) and d.action == "reset-challengers"]
    assert resets  # the change in the stream restarts them at least once
    assert task.gate is not None and task.gate.state.events == len(stream)
    for c in task.challengers:
        assert RULE.key in c.evaluator.rolling
    # Right at a restart: counts at 0, windows empty, and an evaluation runs on them.
    task.gate.state.wins = dict.fromkeys(task.gate.state.wins, 1)
    task.challengers.restart(task.events_learned)
    assert set(task.gate.state.wins.values()) == {0}
    for c in task.challengers:
        window = c.evaluator.rolling[RULE.key]
        assert c.events_learned == 0 and len(window.window) == 0
    assert task.gate.evaluate() is None
