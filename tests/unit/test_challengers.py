"""Challengers learn the champion's events beside it: River's own results for each spec, the
champion's unchanged to the bit, their state in the checkpoint payload."""

from __future__ import annotations

import io
import itertools
import pickle
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from rich.console import Console
from river import datasets, evaluate, linear_model, preprocessing, tree

from streamtrain.cli.main import main
from streamtrain.config import resolve
from streamtrain.data.events import encode_event
from streamtrain.errors import ConfigError
from streamtrain.fastpath import fast_evaluator_for
from streamtrain.state.payload import TrainState, freeze, thaw
from streamtrain.train.challengers import Roster, parse_challengers
from streamtrain.train.progress import Progress, Summary
from streamtrain.train.progressive import build_metrics
from streamtrain.train.reporting import challenger_summary
from streamtrain.train.settings import TrainSettings
from streamtrain.train.step import SimpleRecord
from streamtrain.train.tasks import JoinSpec, Task
from streamtrain.train.telemetry import progress_record
from streamtrain.train.view import LiveView, LogView, final_line

CHALLENGERS = ("HoeffdingTreeClassifier", "lr=StandardScaler | LogisticRegression(l2=0.01)")
METRICS = ("ROCAUC", "Accuracy", "LogLoss")
PHISHING = list(datasets.Phishing())
# The oracle's models for CHALLENGERS, in order.
ORACLES = {
    "c1": tree.HoeffdingTreeClassifier,
    "lr": lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression(l2=0.01),
}


def _champion() -> Any:
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


def _records() -> list[SimpleRecord]:
    """Phishing with, every 50 events, a record that is not an event and an unlabelled one."""
    values: list[bytes] = []
    for i, (x, y) in enumerate(PHISHING):
        values.append(encode_event(x, y))
        if i % 50 == 7:
            values += [b"{not json", orjson.dumps({"x": x, "id": f"q{i}"})]
    return [SimpleRecord(v, 0, i) for i, v in enumerate(values)]


def _task(fast: bool, challengers: tuple[str, ...] = CHALLENGERS, state: Any = None) -> Task:
    model = _champion()
    built = build_metrics(METRICS, model)
    if fast:  # the kernel loaded, so that the champion learns every batch compiled
        pytest.importorskip("numba")
        assert fast_evaluator_for(_champion(), build_metrics(METRICS, model), wait=True)
    roster = Roster(parse_challengers(challengers), built, model)
    state = state or TrainState(model, built, 0, {}, {})
    return Task.from_state("t", state, fast=fast, roster=roster)


def _learn(task: Task, records: list[SimpleRecord], batch: int = 97) -> None:
    for i in range(0, len(records), batch):
        task.learn(records[i : i + batch])
    if task.fast is not None:
        assert task.fast.fallbacks == 0  # the compiled path learned every batch


def _river(model: Any) -> dict[str, float]:
    scores = {}
    for name in METRICS:
        scores[name] = evaluate.progressive_val_score(
            PHISHING, model(), build_metrics([name], model())[name]
        ).get()
    return scores


@pytest.fixture(scope="module")
def oracle() -> dict[str, dict[str, float]]:
    return {label: _river(make) for label, make in {**ORACLES, "champion": _champion}.items()}


@pytest.mark.parametrize("fast", [False, True], ids=["river", "compiled"])
def test_each_model_ends_where_river_does(fast: bool, oracle: dict[str, dict[str, float]]) -> None:
    task = _task(fast)
    assert (task.fast is not None) is fast
    _learn(task, _records())
    assert task.events_learned == len(PHISHING)
    assert task.sync().values() == pytest.approx(oracle["champion"], abs=1e-12, rel=0)
    for label, challenger in task.challengers.items():
        assert challenger.events_learned == len(PHISHING)
        assert challenger.model_errors == 0
        assert challenger.evaluator.values() == pytest.approx(oracle[label], abs=1e-12, rel=0)


@pytest.mark.parametrize("fast", [False, True], ids=["river", "compiled"])
def test_challengers_change_nothing_of_the_champion(fast: bool) -> None:
    alone, beside = _task(fast, ()), _task(fast)
    records = _records()
    _learn(alone, records)
    _learn(beside, records)
    assert not alone.challengers and len(beside.challengers) == 2
    assert beside.sync().values() == alone.sync().values()  # to the bit
    assert beside.events_predicted == alone.events_predicted > 0
    assert beside.dead_letter_reasons == alone.dead_letter_reasons
    probes = [x for x, _ in itertools.islice(datasets.Phishing(), 0, 1250, 25)]
    for x in probes:
        assert beside.evaluator.model.predict_proba_one(
            x
        ) == alone.evaluator.model.predict_proba_one(x)
    answers = [o.answer for o in beside.take_outputs() if hasattr(o, "answer")]
    assert answers == [o.answer for o in alone.take_outputs() if hasattr(o, "answer")]


def test_payload_round_trip_resumes_every_model(oracle: dict[str, dict[str, float]]) -> None:
    records = _records()
    first = _task(False)
    _learn(first, records[:600])
    state = first.state()
    payload = freeze(state)
    again = thaw(payload, state.events_learned, state.offsets)
    assert list(again.challengers) == ["c1", "lr"]
    resumed = _task(False, state=again)
    assert [c.events_learned for c in resumed.challengers] == [state.events_learned] * 2
    _learn(resumed, records[600:])
    for label, challenger in resumed.challengers.items():
        assert challenger.started_at == 0
        assert challenger.evaluator.values() == pytest.approx(oracle[label], abs=1e-12, rel=0)


def test_a_checkpoint_without_challengers_still_loads() -> None:
    """A payload written before challengers existed (no key): none are restored, and those
    asked for now start fresh where the champion is."""
    model = _champion()
    old = pickle.dumps({"model": model, "metrics": build_metrics([], model)})
    state = thaw(old, 40, {0: 40})
    assert state.challengers == {}
    assert not Task.from_state("t", state).challengers
    task = _task(False, state=state)
    assert [(c.label, c.started_at, c.events_learned) for c in task.challengers] == [
        ("c1", 40, 0),
        ("lr", 40, 0),
    ]
    assert "challengers" not in pickle.loads(freeze(TrainState(model, {}, 0, {}, {})))


def test_a_saved_challenger_wins_over_a_different_spec_and_is_kept() -> None:
    task = _task(False, ("a=HoeffdingTreeClassifier", "b=Perceptron"))
    _learn(task, _records()[:100])
    state = task.state()
    again = _task(False, ("a=GaussianNB", "c=Perceptron"), state=state)
    assert [(c.label, c.spec, c.events_learned > 0) for c in again.challengers] == [
        ("a", "HoeffdingTreeClassifier", True),
        ("b", "Perceptron", True),
        ("c", "Perceptron", False),
    ]


def test_labels() -> None:
    specs = parse_challengers(["GaussianNB", "x.1=Perceptron", " LogisticRegression(l2=0.1)"])
    assert [(s.label, s.spec) for s in specs] == [
        ("c1", "GaussianNB"),
        ("x.1", "Perceptron"),
        ("c3", "LogisticRegression(l2=0.1)"),
    ]
    for bad in (["a=GaussianNB", "a=Perceptron"], ["champion=GaussianNB"], ["a="]):
        with pytest.raises(ConfigError):
            parse_challengers(bad)


def test_challengers_from_env_and_file() -> None:
    env = {"STREAMTRAIN_CHALLENGERS": "a=LogisticRegression(l2=0.1, l1=0.0), GaussianNB"}
    settings = resolve(TrainSettings, {}, env=env)
    assert [(s.label, s.spec) for s in settings.challenger_specs()] == [
        ("a", "LogisticRegression(l2=0.1, l1=0.0)"),
        ("c2", "GaussianNB"),
    ]
    file = {"train": {"challengers": ["ht=HoeffdingTreeClassifier"]}}
    settings = resolve(TrainSettings, {}, env={}, file=file, section="train")
    assert settings.challengers == ("ht=HoeffdingTreeClassifier",)


@pytest.mark.parametrize(
    "challenger",
    ["NoSuchModel", "Perceptron(", "LinearRegression", "champion=GaussianNB", "os.system('x')"],
)
def test_a_bad_challenger_is_one_line_and_exit_2(
    challenger: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--challenger", challenger, "--bootstrap-servers", "127.0.0.1:1"]
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "Traceback" not in err[0] and "challenger" in err[0], err


def test_challengers_refuse_joined_labels() -> None:
    with pytest.raises(ConfigError, match="--labels-topic"):
        TrainSettings(challengers=("GaussianNB",), labels_topic="labels")


def test_reports_show_each_challenger(capsys: pytest.CaptureFixture[str]) -> None:
    task = _task(False)
    _learn(task, _records()[:300])
    report = task.challengers.summary()
    progress = Progress(
        topic="t",
        model="m",
        events_learned=task.events_learned,
        dead_lettered=0,
        events_per_second=1.0,
        elapsed_seconds=1.0,
        metrics=task.evaluator.values(),
        lag={},
        dead_letter_reasons={},
        challengers=report,
    )
    record = progress_record(progress)
    assert list(record["challengers"]) == ["c1", "lr"]
    assert record["challengers"]["lr"]["metrics"] == task.challengers["lr"].evaluator.values()
    assert record["challengers"]["lr"]["spec"] == "StandardScaler | LogisticRegression(l2=0.01)"
    assert orjson.loads(orjson.dumps(record))["challengers"]["c1"]["events_learned"] > 0
    no_challengers = progress_record(Progress(**{**progress.__dict__, "challengers": {}}))
    assert "challengers" not in no_challengers
    LogView(every=0).on_progress(progress)
    line = capsys.readouterr().err
    assert "| c1 learned=" in line and "| lr learned=" in line


def test_live_view_and_final_line_show_each_challenger() -> None:
    task = _task(False)
    _learn(task, _records()[:300])
    values = task.evaluator.values()
    progress = Progress(
        topic="t",
        model="m",
        events_learned=task.events_learned,
        dead_lettered=0,
        events_per_second=1.0,
        elapsed_seconds=1.0,
        metrics=values,
        lag={},
        dead_letter_reasons={},
        challengers=task.challengers.summary(),
    )
    console = Console(record=True, width=160, file=io.StringIO())
    console.print(LiveView("t", console)._render(progress))
    text = console.export_text()
    rows = [line for line in text.splitlines() if "ROCAUC" in line]
    assert [row.split()[1] for row in rows] == ["champion", "c1", "lr"]
    summary = Summary(
        topic="t",
        group="g",
        model="m",
        events_learned=300,
        dead_lettered=0,
        dead_letter_reasons={},
        dead_letter_failures=0,
        metrics=values,
        positions={},
        elapsed_seconds=1.0,
        events_per_second=1.0,
        stopped_because="idle",
        challengers=task.challengers.summary(),
    )
    line = final_line(summary)
    assert "; champion: ROCAUC" in line and line.endswith("[idle]")
    assert "; c1 (HoeffdingTreeClassifier): ROCAUC" in line
    assert Summary(**{**summary.__dict__, "challengers": {}}).to_dict()["challengers"] == {}


def test_replicas_combine_like_the_champion() -> None:
    """A partitioned model's challenger: counts summed, metrics weighted by events learned."""
    tasks = {}
    records = _records()
    for p, part in enumerate((records[:400], records[400:])):
        task = _task(False)
        _learn(task, part)
        tasks[f"m/p{p}"] = task
    registry = SimpleNamespace(tasks=tasks)
    combined = challenger_summary(registry)  # type: ignore[arg-type]
    parts = [t.challengers["lr"] for t in tasks.values()]
    total = sum(c.events_learned for c in parts)
    assert combined["lr"]["events_learned"] == total == len(PHISHING)
    expected = sum(c.evaluator.values()["ROCAUC"] * c.events_learned / total for c in parts)
    assert combined["lr"]["metrics"]["ROCAUC"] == pytest.approx(expected, abs=1e-12)


def test_a_checkpoint_with_challengers_refuses_joined_labels() -> None:
    task = _task(False)
    join = JoinSpec(None, TrainSettings(labels_topic="l").join_policy())
    with pytest.raises(ConfigError, match="joined labels"):
        Task.from_state("m", task.state(), join=join)
