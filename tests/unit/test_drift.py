"""Drift detection's pure parts: each model's detector fed its progressive error (River's path
and the compiled one alike), checkpointed, reset with the challengers, and what leaves as a
record, a report field and a Prometheus counter."""

from __future__ import annotations

import itertools
import time
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from river import drift, linear_model, naive_bayes, preprocessing
from river.datasets import synth

from streamtrain.cli.main import main
from streamtrain.data.events import encode_event
from streamtrain.errors import ConfigError
from streamtrain.fastpath import fast_evaluator_for
from streamtrain.models.problem import Problem
from streamtrain.serving.app import create_app
from streamtrain.serving.follower import MetricsHub, StaticSnapshotSource
from streamtrain.serving.merge import ProcessMerger
from streamtrain.state.payload import TrainState, freeze, thaw
from streamtrain.train.challengers import Roster, parse_challengers
from streamtrain.train.drift import Detection, DriftPolicy, TaskDrift, drift_policy
from streamtrain.train.outputs import Outputs
from streamtrain.train.progress import Progress, Summary
from streamtrain.train.progressive import build_metrics
from streamtrain.train.reporting import drift_summary
from streamtrain.train.settings import TrainSettings
from streamtrain.train.step import SimpleRecord
from streamtrain.train.tasks import Task
from streamtrain.train.telemetry import progress_record
from streamtrain.train.view import final_line

CHANGE = 1_500
STREAM = [
    (x, bool(y))
    for x, y in itertools.chain(
        itertools.islice(synth.Agrawal(classification_function=0, seed=7), CHANGE),
        itertools.islice(synth.Agrawal(classification_function=4, seed=8), 1_000),
    )
]
RECORDS = [SimpleRecord(encode_event(x, y), 0, i) for i, (x, y) in enumerate(STREAM)]


def _champion() -> Any:
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


def _oracle(model: Any, events: list[tuple[dict[str, Any], bool]]) -> list[int]:
    """ADWIN fed ``model``'s progressive 0/1 error: the event counts where it fires."""
    detector = drift.ADWIN()
    fired = []
    for i, (x, y) in enumerate(events, start=1):
        proba = model.predict_proba_one(x)
        model.learn_one(x, y)
        if proba:
            detector.update(0.0 if max(proba, key=proba.get) == y else 1.0)
            if detector.drift_detected:
                fired.append(i)
    return fired


def _task(
    *,
    fast: bool = False,
    on_drift: str = "alert",
    challengers: tuple[str, ...] = ("nb=GaussianNB",),
    state: TrainState | None = None,
) -> Task:
    model = _champion()
    metrics = build_metrics(["ROCAUC"], model)
    if fast:
        pytest.importorskip("numba")
        assert fast_evaluator_for(_champion(), build_metrics(["ROCAUC"], model), wait=True)
    roster = Roster(parse_challengers(challengers), metrics, model)
    state = state or TrainState(model, metrics, 0, {}, {})
    policy = DriftPolicy("ADWIN", on_drift)
    return Task.from_state("t", state, fast=fast, roster=roster, drift=policy)


def _run(task: Task, records: list[SimpleRecord], batch: int = 97) -> list[tuple[str, int]]:
    found = []
    for i in range(0, len(records), batch):
        task.learn(records[i : i + batch])
        found += [(d.label, d.events) for d in task.take_outputs() if isinstance(d, Detection)]
    if task.fast is not None:
        assert task.fast.fallbacks == 0
    return found


@pytest.fixture(scope="module")
def oracle() -> dict[str, list[int]]:
    return {
        "champion": _oracle(_champion(), STREAM),
        "nb": _oracle(naive_bayes.GaussianNB(), STREAM),
    }


@pytest.mark.parametrize("fast", [False, True], ids=["river", "compiled"])
def test_each_models_detections_are_rivers(fast: bool, oracle: dict[str, list[int]]) -> None:
    found = _run(_task(fast=fast), RECORDS)
    assert oracle["champion"] and all(at > CHANGE for at in oracle["champion"])
    for label in ("champion", "nb"):
        assert [at for lab, at in found if lab == label] == oracle[label]


def test_a_compiled_champion_alone_detects_what_rivers_path_does(
    oracle: dict[str, list[int]],
) -> None:
    """No challengers: the compiled path feeds the detector a batch's errors at once."""
    found = _run(_task(fast=True, challengers=()), RECORDS)
    assert found == [("champion", at) for at in oracle["champion"]]


def test_compiled_and_river_detections_agree_with_unlabelled_events() -> None:
    """Every 7th event unlabelled: same detections, counted in labelled events, on the same
    records, on either path."""
    records = [
        SimpleRecord(encode_event(x, None if i % 7 == 3 else y), 0, i)
        for i, (x, y) in enumerate(STREAM)
    ]
    seen = {}
    for fast in (False, True):
        task = _task(fast=fast, challengers=())
        found = []
        for i in range(0, len(records), 211):
            task.learn(records[i : i + 211])
            found += [
                (d.label, d.events, d.record.offset(), d.state["width"])
                for d in task.take_outputs()
                if isinstance(d, Detection)
            ]
        seen[fast] = found
    assert seen[False] and seen[True] == seen[False]


def test_a_restored_task_detects_what_an_uninterrupted_one_does(
    oracle: dict[str, list[int]],
) -> None:
    first = _task()
    before = _run(first, RECORDS[:1_200])
    state = first.state()
    restored = thaw(freeze(state), state.events_learned, state.offsets)
    after = _run(_task(state=restored), RECORDS[1_200:])
    assert sorted(before + after, key=lambda d: d[1]) == sorted(
        [(label, at) for label, ats in oracle.items() for at in ats], key=lambda d: d[1]
    )


def test_reset_challengers_restarts_them_at_the_champions_drift(
    oracle: dict[str, list[int]],
) -> None:
    task = _task(on_drift="reset-challengers")
    _run(task, RECORDS)
    last = oracle["champion"][-1]
    nb = task.challengers["nb"]
    assert (nb.started_at, nb.events_learned) == (last, len(STREAM) - last)
    fresh = naive_bayes.GaussianNB()
    for x, y in STREAM[last:]:
        fresh.learn_one(x, y)
    assert nb.evaluator.model.predict_proba_one(STREAM[0][0]) == fresh.predict_proba_one(
        STREAM[0][0]
    )
    assert task.drift is not None
    actions = {r["action"] for r in task.drift.summary()["recent"] if r["label"] == "champion"}
    assert actions == {"reset-challengers"}


def test_detection_record_and_report() -> None:
    task = _task(challengers=())
    detections = []
    for i in range(0, len(RECORDS), 500):
        task.learn(RECORDS[i : i + 500])
        detections += task.take_outputs()
    outputs = Outputs(
        dlq_topic="d", predictions_topic="p", model_name="m", input_topic="in", events_topic="ev"
    )
    record = next(iter(outputs.records(detections[:1])))
    value = orjson.loads(record.value or b"")
    assert (record.topic, record.key) == ("ev", "m")
    assert value["kind"] == "drift" and value["detector"] == "ADWIN"
    assert value["source"] == {
        "topic": "in",
        "partition": 0,
        "offset": value["events"] - 1,
        "timestamp": None,
    }
    assert value["state"]["width"] > 0
    summary = task.summary()["drift"]
    assert summary["detections"]["champion"] == len(
        [d for d in detections if d.label == "champion"]
    )


def test_the_final_line_says_how_often_each_model_drifted() -> None:
    task = _task()
    _run(task, RECORDS[:1_700])
    registry = SimpleNamespace(tasks={"t": task})
    summary = Summary(
        topic="in",
        group="g",
        model="m",
        events_learned=1_700,
        dead_lettered=0,
        dead_letter_reasons={},
        dead_letter_failures=0,
        metrics={"ROCAUC": 0.5},
        positions={},
        elapsed_seconds=1.0,
        events_per_second=1.0,
        stopped_because="idle",
        drift=drift_summary(registry),  # type: ignore[arg-type]
    )
    counts = task.drift.counts if task.drift else {}
    assert counts["champion"] >= 1
    line = final_line(summary)
    assert "; drift detected: " in line and f"champion {counts['champion']}" in line


@pytest.mark.parametrize("fast", [False, True], ids=["river", "compiled"])
def test_a_regressor_feeds_its_absolute_error(fast: bool) -> None:
    """LinearRegression on y = x until event 600, then y = x + 5: PageHinkley fed |y - ŷ|
    fires where the same detector fed the same errors offline does, after the jump."""
    events = [
        ({"x": (i % 10) / 10}, (i % 10) / 10 + (5.0 if i >= 600 else 0.0)) for i in range(900)
    ]
    records = [SimpleRecord(encode_event(x, y), 0, i) for i, (x, y) in enumerate(events)]
    model = linear_model.LinearRegression()
    policy = DriftPolicy("PageHinkley")
    if fast:
        pytest.importorskip("numba")
        assert fast_evaluator_for(linear_model.LinearRegression(), {}, wait=True)
    task = Task.from_state(
        "r", TrainState(model, build_metrics([], model), 0, {}, {}), fast=fast, drift=policy
    )
    assert (task.fast is not None) == fast
    found = _run(task, records)
    oracle, detector = linear_model.LinearRegression(), drift.PageHinkley()
    expected = []
    for i, (x, y) in enumerate(events, start=1):
        y_pred = oracle.predict_one(x)
        oracle.learn_one(x, y)
        detector.update(abs(y - y_pred))
        if detector.drift_detected:
            expected.append(("champion", i))
    assert found == expected and expected and expected[0][1] > 600


def test_policy_checks() -> None:
    assert drift_policy("none") is None and drift_policy("NONE") is None
    with pytest.raises(ConfigError, match="unknown detector"):
        drift_policy("LogisticRegression")
    with pytest.raises(ConfigError, match="needs a detector"):
        drift_policy("none", "reset-challengers")
    with pytest.raises(ConfigError, match="on-drift"):
        DriftPolicy("ADWIN", "promote-worst")
    with pytest.raises(ConfigError, match="0/1 errors"):
        DriftPolicy("DDM").check(Problem.REGRESSION)
    DriftPolicy("PageHinkley").check(Problem.REGRESSION)
    with pytest.raises(ConfigError, match="--drift"):
        TrainSettings(drift="ADWIN(delta=__import__('os'))")


def test_a_changed_spec_starts_fresh_detectors() -> None:
    saved = TaskDrift.resume(DriftPolicy("ADWIN"), Problem.CLASSIFICATION, None, ["champion"])
    saved.detectors["champion"].update(1.0)
    plain = saved.to_plain()
    same = TaskDrift.resume(DriftPolicy("ADWIN"), Problem.CLASSIFICATION, plain, ["champion"])
    assert same.detectors["champion"].width == 1
    other = TaskDrift.resume(DriftPolicy("KSWIN"), Problem.CLASSIFICATION, plain, ["champion"])
    assert isinstance(other.detectors["champion"], drift.KSWIN)


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--drift", "NoSuchDetector", "--bootstrap-servers", "127.0.0.1:1"],
        ["train", "--drift", "ADWIN(", "--bootstrap-servers", "127.0.0.1:1"],
        ["train", "--drift", "none", "--on-drift", "reset-challengers"],
        ["train", "--model", "LinearRegression", "--drift", "DDM"],
    ],
)
def test_a_bad_drift_flag_is_one_line_and_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([*argv, "--bootstrap-servers", "127.0.0.1:1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "Traceback" not in err[0] and "drift" in err[0]


def _drift_record(**drift_fields: Any) -> dict[str, Any]:
    progress = Progress(
        topic="events",
        model="LogisticRegression",
        events_learned=3,
        dead_lettered=0,
        events_per_second=1.0,
        elapsed_seconds=1.0,
        metrics={},
        lag={},
        dead_letter_reasons={},
        name="m",
        drift={"detector": "ADWIN", "on_drift": "alert", "recent": [], **drift_fields},
    )
    return progress_record(progress)


def test_serve_exports_the_detections_as_a_counter() -> None:
    hub = MetricsHub()
    hub.publish(_drift_record(detections={"champion": 2, "nb": 1}))
    with TestClient(create_app("m", StaticSnapshotSource(None), hub)) as client:
        text = client.get("/metrics").text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    for label, n in (("champion", 2), ("nb", 1)):
        key = ("streamtrain_drift_detections_total", (("label", label), ("model", "m")))
        assert samples[key] == n


def test_processes_merge_their_tasks_detections() -> None:
    def record(process: str, task: str, n: int, ts: int) -> dict[str, Any]:
        at = {"label": "champion", "events": n, "timestamp": ts}
        drift_summary = {"detector": "ADWIN", "detections": {"champion": n}, "recent": [at]}
        summary = {"events_learned": 10, "drift": drift_summary}
        return {"ts": time.time(), "process": process, "tasks": {task: summary}, "topic": "t"}

    merger = ProcessMerger()
    merger.merge(record("a", "m/p0", 2, 20))
    merged = merger.merge(record("b", "m/p1", 1, 10))
    assert merged["drift"]["detections"] == {"champion": 3}
    assert [r["timestamp"] for r in merged["drift"]["recent"]] == [10, 20]
