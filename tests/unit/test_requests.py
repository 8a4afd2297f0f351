"""Requests to add and remove challengers, applied to tasks through the real step: the added
challenger's metrics are River's on the events from its start, the champion's are untouched,
each request is applied once, and a removed challenger stays removed across a restart."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import OFFSET_INVALID, KafkaError
from river import datasets, evaluate, metrics, naive_bayes, tree

from streamtrain.data.events import encode_event
from streamtrain.state.payload import TrainState, freeze, thaw
from streamtrain.train.challengers import ChallengerChange, Roster, parse_challengers
from streamtrain.train.progressive import build_metrics
from streamtrain.train.promotion import PromotionRule
from streamtrain.train.requests import (
    ADD_CHALLENGER,
    PROMOTE,
    REMOVE_CHALLENGER,
    Requests,
    request,
)
from streamtrain.train.step import SimpleRecord
from streamtrain.train.tasks import Task
from tests.unit.test_promotion import _Consumer, _Message

PHISHING = list(datasets.Phishing())
RULE = PromotionRule("ROCAUC", window=50, every=10, after=2)
START = 300


def _pvs(model: Any, events: list[Any]) -> float:
    return float(evaluate.progressive_val_score(events, model, metrics.ROCAUC()).get())


def _records() -> list[SimpleRecord]:
    return [SimpleRecord(encode_event(x, y), 0, i) for i, (x, y) in enumerate(PHISHING)]


class Tasks(dict[str, Task]):
    """A registry's tasks and its ``replace``, with the challengers given at start."""

    def __init__(self, challengers: tuple[str, ...] = ()) -> None:
        super().__init__()
        model = naive_bayes.GaussianNB()
        self.metrics = build_metrics(["ROCAUC"], model)
        self.roster = Roster(parse_challengers(challengers), self.metrics, model)
        self["m"] = self.build("m", TrainState(model, self.metrics, 0, {}, {}))

    def build(self, key: str, state: TrainState) -> Task:
        return Task.from_state(key, state, roster=self.roster, promotion=RULE, spec="GaussianNB")

    def replace(self, key: str, state: TrainState) -> Task:
        task = self.build(key, state)
        task.pending = self[key].take_outputs()
        self[key] = task
        return task

    def restart(self) -> None:
        """What a restart does: the task again from its checkpoint's bytes."""
        state = self["m"].state()
        self["m"] = self.build("m", thaw(freeze(state), state.events_learned, state.offsets))


def _follower(messages: list[_Message]) -> Requests:
    return Requests(lambda conf: _Consumer(messages), "events", "m", clock=lambda: 12.5)


def test_a_challenger_added_mid_stream_learns_from_there_and_changes_nothing_else() -> None:
    tasks = Tasks()  # no challengers yet, hence no gate
    records = _records()
    tasks["m"].learn(records[:START])
    assert tasks["m"].gate is None
    follower = _follower(
        [
            _Message(0, request(ADD_CHALLENGER, "m", "ht", 0.0, "HoeffdingTreeClassifier")),
            _Message(1, request(ADD_CHALLENGER, "m", "bad", 0.0, "NoSuchModel")),
            _Message(2, request(ADD_CHALLENGER, "m", "ht", 0.0, "GaussianNB")),  # taken
            _Message(3, request(ADD_CHALLENGER, "m", "reg", 0.0, "LinearRegression")),
            _Message(4, request(ADD_CHALLENGER, "other", "x", 0.0, "GaussianNB")),
        ]
    )
    follower.apply(tasks, tasks.replace)
    task = tasks["m"]
    assert [c.label for c in task.challengers] == ["ht"]
    assert task.gate is not None and task.gate.state.champion == "c0"
    assert task.requests["next"] == 5
    [change] = [o for o in task.take_outputs() if isinstance(o, ChallengerChange)]
    assert change.to_plain() == {
        "kind": "challenger-added",
        "model": "m",
        "label": "ht",
        "spec": "HoeffdingTreeClassifier",
        "events": START,
        "offsets": {"0": START},
        "at": 12.5,
        "request": 0,
    }
    follower.apply(tasks, tasks.replace)  # nothing new: nothing applied again
    assert tasks["m"] is task and task.take_outputs() == []

    tasks.restart()
    tasks["m"].learn(records[START:])
    summary = tasks["m"].summary()
    ht = summary["challengers"]["ht"]
    assert (ht["started_at"], ht["started_offsets"], ht["started_time"]) == (
        START,
        {"0": START},
        12.5,
    )
    assert ht["events_learned"] == len(PHISHING) - START
    assert ht["metrics"]["ROCAUC"] == pytest.approx(
        _pvs(tree.HoeffdingTreeClassifier(), PHISHING[START:]), abs=1e-12, rel=0
    )
    assert summary["metrics"]["ROCAUC"] == _pvs(naive_bayes.GaussianNB(), PHISHING)


def test_a_removed_challenger_stays_removed_and_the_champion_cannot_be() -> None:
    tasks = Tasks(("lr=LogisticRegression", "ht=HoeffdingTreeClassifier"))
    tasks["m"].learn(_records()[:100])
    messages = [
        _Message(0, request(REMOVE_CHALLENGER, "m", "c0", 0.0)),  # the champion: skipped
        _Message(1, request(REMOVE_CHALLENGER, "m", "lr", 0.0)),
        _Message(2, request(REMOVE_CHALLENGER, "m", "lr", 0.0)),  # gone already: skipped
    ]
    tasks["m"].take_outputs()
    _follower(messages).apply(tasks, tasks.replace)
    assert [c.label for c in tasks["m"].challengers] == ["ht"]
    [change] = tasks["m"].take_outputs()
    assert isinstance(change, ChallengerChange)
    assert (change.kind, change.label, change.learned) == ("challenger-removed", "lr", 100)
    assert tasks["m"].requests == {"next": 3, "removed": ["lr"]}

    tasks.restart()  # the same --challenger flags: lr does not come back
    assert [c.label for c in tasks["m"].challengers] == ["ht"]
    # Removing the last one keeps the gate (the champion's label and spec) and its state.
    _follower([_Message(3, request(REMOVE_CHALLENGER, "m", "ht", 0.0))]).apply(tasks, tasks.replace)
    tasks.restart()
    task = tasks["m"]
    assert not task.challengers and task.gate is not None
    assert task.requests == {"next": 4, "removed": ["ht", "lr"]}
    # Adding a removed label again starts it afresh, and it is no longer "removed".
    _follower([_Message(4, request(ADD_CHALLENGER, "m", "lr", 0.0, "LogisticRegression"))]).apply(
        tasks, tasks.replace
    )
    assert [c.label for c in tasks["m"].challengers] == ["lr"]
    assert tasks["m"].challengers["lr"].started_at == 100
    assert tasks["m"].requests["removed"] == ["ht"]


def test_promote_requests_still_apply_once() -> None:
    tasks = Tasks(("lr=LogisticRegression",))
    tasks["m"].learn(_records()[:60])
    follower = _follower([_Message(0, request(PROMOTE, "m", "lr", 0.0))])
    follower.apply(tasks, tasks.replace)
    follower.apply(tasks, tasks.replace)
    assert tasks["m"].gate is not None and tasks["m"].gate.state.promotions == 1
    assert tasks["m"].gate.state.champion == "lr"


class _EndOfPartition:
    """What librdkafka hands over when a reader reaches the end (enable.partition.eof)."""

    def offset(self) -> None:
        return None

    def value(self) -> None:
        return None

    def error(self) -> KafkaError:
        return KafkaError(KafkaError._PARTITION_EOF)


class _Counted(_Consumer):
    """A consumer that counts what the follower asks of it (``high``: its end, if not the
    number of messages)."""

    def __init__(self, messages: list[Any], high: int | None = None) -> None:
        super().__init__(messages)
        if high is not None:
            self.high = high
        self.assigned = 0
        self.watermarks = 0
        self.consumed = 0
        self.closed = False

    def assign(self, _partitions: Any) -> None:
        self.assigned += 1

    def get_watermark_offsets(self, tp: Any, timeout: float) -> tuple[int, int]:
        self.watermarks += 1
        return super().get_watermark_offsets(tp, timeout)

    def consume(self, n: int, timeout: float) -> list[Any]:
        self.consumed += 1
        return super().consume(n, timeout)

    def position(self, tps: list[Any]) -> list[Any]:
        # Nothing consumed yet: librdkafka has no position to tell (OFFSET_INVALID).
        return [type(tp)(tp.topic, tp.partition, self.at or OFFSET_INVALID) for tp in tps]

    def close(self) -> None:
        self.closed = True


def test_the_first_catch_up_takes_the_end_the_consumer_already_reached() -> None:
    """Opened at the trainer's start, the reader has reached the end by the first checkpoint:
    the catch-up then costs no watermark round trip (it took 0.45 s on the learning thread)."""
    spec = "lr=StandardScaler | LogisticRegression"
    messages = [_Message(0, request(ADD_CHALLENGER, "m", "c1", 1.0, spec)), _EndOfPartition()]
    consumer = _Counted(messages, high=1)
    follower = Requests(lambda conf: consumer, "events", "m")
    follower.start()
    assert consumer.consumed == 0  # start() only opens and assigns
    tasks = Tasks()
    follower.apply(tasks, tasks.replace)
    assert [r.label for r in follower.seen] == ["c1"] and follower.end == 1
    assert consumer.watermarks == 0


def test_an_empty_requests_partition_is_caught_up_at_once() -> None:
    consumer = _Counted([], high=0)
    follower = Requests(lambda conf: consumer, "events", "m")
    follower.apply(Tasks())
    # One short consume, the watermarks (nothing there), and the non-blocking drain: no
    # waiting for an end-of-partition event that an empty partition may be slow to send.
    assert consumer.watermarks == 1 and consumer.consumed == 2
    assert follower.seen == [] and follower.end == 0


def test_opened_early_the_follower_catches_up_at_the_first_apply_only() -> None:
    """``start`` (at the trainer's start) makes and assigns the consumer and reads nothing: the
    catch-up to the end stays with the first ``apply``, once; after ``close`` it starts over."""
    made: list[_Counted] = []

    def consumer(_conf: dict[str, Any]) -> _Counted:
        made.append(_Counted([_Message(0, request(PROMOTE, "other", "x", 0.0))]))
        return made[-1]

    follower = Requests(consumer, "events", "m")
    follower.start()
    follower.start()
    [first] = made
    assert (first.assigned, first.watermarks, first.consumed) == (1, 0, 0)
    tasks = Tasks()
    follower.apply(tasks, tasks.replace)
    follower.apply(tasks, tasks.replace)
    assert len(made) == 1 and first.watermarks == 1 and follower.end == 1
    assert tasks["m"].requests["next"] == 1
    follower.close()
    assert first.closed
    follower.apply(tasks, tasks.replace)
    assert len(made) == 2 and made[1].watermarks == 1
