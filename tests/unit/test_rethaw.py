"""After each snapshot, a named trainer's tasks go on learning on the snapshot's thawed copy
(:mod:`streamtrain.train.handover`): fresh objects, whose attributes pickling has not moved out
of line. A reference to an old object left anywhere (the step, a challenger, the gate, a drift
detector) would learn on it while the checkpoints read the new one: these runs must end bit for
bit as River and as a run that never renews."""

from __future__ import annotations

import collections
import math
import pickle
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from kafka_fakes import FakeClients, FakeMessage
from test_trainer_control import (
    EVENTS,
    TOPIC,
    check_end,
    check_exactly_once,
    entries,
    labelled,
    make_cluster,
    make_trainer,
)

from streamtrain.train import handover
from streamtrain.train.registry import TaskRegistry
from streamtrain.train.tasks import Task

CHALLENGERS = ("lr=StandardScaler | LogisticRegression(l2=0.001)", "tree=HoeffdingTreeClassifier")


def _models(task: Task) -> list[Any]:
    """Every model and metric object a task learns with."""
    out = [task.evaluator.model, *task.evaluator.metrics.values(), *task.evaluator.rolling.values()]
    for challenger in task.challengers:
        ev = challenger.evaluator
        out += [ev.model, *ev.metrics.values(), *ev.rolling.values()]
    if task.drift is not None:
        out += list(task.drift.detectors.values())
    return out


def _renewals(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[Any], Task]]:
    """(the old task's model objects, the new task) of every renewal, in order."""
    seen: list[tuple[list[Any], Task]] = []
    renew = TaskRegistry.renew

    def spying(self: TaskRegistry, states: Any) -> dict[str, Task]:
        old = [_models(self.tasks[key]) for key in states]
        renewed = renew(self, states)
        seen.extend(zip(old, renewed.values(), strict=True))
        return renewed

    monkeypatch.setattr(TaskRegistry, "renew", spying)
    return seen


def _same(a: Any, b: Any, path: str = "", seen: set[tuple[int, int]] | None = None) -> None:
    """``a`` and ``b`` hold equal values bit for bit, object by object (pickle bytes would
    also compare which equal strings are one object, which a thaw changes on purpose)."""
    seen = set() if seen is None else seen
    if (id(a), id(b)) in seen:
        return
    seen.add((id(a), id(b)))
    assert type(a) is type(b), path
    if isinstance(a, float):
        assert struct.pack("<d", a) == struct.pack("<d", b), path
    elif isinstance(a, str | bytes | int | bool | type(None) | type):
        assert a == b, path
    elif isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            _same(a[k], b[k], f"{path}[{k!r}]", seen)
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{path}[{i}]", seen)
    elif isinstance(a, collections.deque | set | frozenset):
        assert getattr(a, "maxlen", None) == getattr(b, "maxlen", None), path
        _same(list(a), list(b), f"{path}<items>", seen)
    elif _plain(a):
        _same(vars(a), vars(b), f"{path}.", seen)
    else:  # its own reduce (River's VectorDict...); iterators in it as lists
        reduced = [
            [list(x) if isinstance(x, Iterator) else x for x in o.__reduce_ex__(4)[1:]]
            for o in (a, b)
        ]
        _same(reduced[0], reduced[1], f"{path}<reduce>", seen)


def _plain(obj: Any) -> bool:
    return type(obj).__reduce_ex__ is object.__reduce_ex__ and hasattr(obj, "__dict__")


@pytest.fixture
def clients() -> Any:
    made = FakeClients(make_cluster())
    yield made
    made.release()


def test_every_snapshot_renews_the_task_and_the_run_ends_as_river(
    clients: FakeClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handover, "RETHAW_SHARE", math.inf)  # renew at every snapshot
    renewals = _renewals(monkeypatch)
    trainer = make_trainer(clients)
    summary = trainer.run()
    assert trainer._handover is not None and trainer._handover.rethaw.done == len(renewals)
    assert len(renewals) >= summary.checkpoints - 1 > 1
    (task,) = trainer.tasks.values()
    assert task is renewals[-1][1]  # the last snapshot's copy is what learned after it
    live = _models(task)
    for old, _new in renewals:
        assert not any(o is n for o in old for n in live)
    # River's model, metric, curve and outputs, bit for bit (its baseline run renews too)
    check_end(trainer, summary)


def test_a_renewed_task_learns_on_its_new_objects(
    clients: FakeClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A renewed task, fed one more batch: its new champion and challengers learn it, and no
    object of the task it replaced changes."""
    monkeypatch.setattr(handover, "RETHAW_SHARE", math.inf)
    renewals = _renewals(monkeypatch)
    trainer = make_trainer(clients, challengers=CHALLENGERS)
    trainer.run()
    old_models, task = renewals[0]
    frozen = [pickle.dumps(m) for m in old_models]
    new_models = _models(task)
    assert len(new_models) == len(old_models)
    assert not any(o is n for o in old_models for n in new_models)
    log = clients.cluster.topics[TOPIC][0]
    records = [FakeMessage(TOPIC, 0, i, rec) for i, rec in enumerate(log[:40])]
    champion = dict(task.evaluator.model["LogisticRegression"].weights)
    challenger = dict(task.challengers["lr"].evaluator.model["LogisticRegression"].weights)
    learned = task.events_learned
    task.learn(records)
    assert task.events_learned > learned
    assert dict(task.evaluator.model["LogisticRegression"].weights) != champion
    assert dict(task.challengers["lr"].evaluator.model["LogisticRegression"].weights) != challenger
    assert [pickle.dumps(m) for m in old_models] == frozen  # the old objects learned nothing


@pytest.mark.parametrize("on_drift", ["alert", "promote-best", "reset-challengers"])
def test_challengers_gate_and_detectors_end_as_a_run_that_never_renews(
    monkeypatch: pytest.MonkeyPatch, on_drift: str
) -> None:
    ends = {}
    for share in (0.0, math.inf):
        monkeypatch.setattr(handover, "RETHAW_SHARE", share)
        made = FakeClients(make_cluster())
        try:
            trainer = make_trainer(made, challengers=CHALLENGERS, on_drift=on_drift, drift="ADWIN")
            summary = trainer.run()
            assert trainer._handover is not None
            assert (trainer._handover.rethaw.done > 1) == (share > 0)
            (task,) = trainer.tasks.values()
            ends[share] = (task.state(), task.summary(), summary.metrics, made.cluster)
        finally:
            made.release()
    (kept, kept_summary, kept_metrics, _), (renewed, renewed_summary, renewed_metrics, cluster) = (
        ends[0.0],
        ends[math.inf],
    )
    assert renewed_metrics == kept_metrics and renewed_summary == kept_summary
    _same(vars(renewed), vars(kept))  # every model, metric, detector and counter
    assert len(entries(cluster, "committed")) > 1
    assert renewed.events_learned == len(labelled(EVENTS))


def test_a_renewing_run_with_challengers_commits_rivers_champion_exactly_once(
    clients: FakeClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handover, "RETHAW_SHARE", math.inf)
    trainer = make_trainer(clients, challengers=CHALLENGERS)
    trainer.run()
    check_exactly_once(clients.cluster)


@pytest.mark.parametrize(("per_byte", "renewed"), [(1.0, 0), (0.0, 1)])
def test_the_default_rule_weighs_the_predicted_cost_against_the_learning_time(
    clients: FakeClients, monkeypatch: pytest.MonkeyPatch, per_byte: float, renewed: int
) -> None:
    """At 5 % of the learning, a guessed second a byte never pays. A guessed free renewal is
    made once; from then on its measured cost (milliseconds) decides, against 5 % of the
    learning of 40 events between these snapshots (a tenth of a millisecond): never again."""
    monkeypatch.setattr(handover, "_FIRST_SECONDS_PER_BYTE", per_byte)
    trainer = make_trainer(clients)
    summary = trainer.run()
    assert trainer._handover is not None
    rethaw = trainer._handover.rethaw
    assert rethaw.done == renewed
    assert rethaw.done + rethaw.skipped == summary.checkpoints > 2
    assert (rethaw.seconds_per_byte == per_byte) == (renewed == 0)
    check_end(trainer, summary)
