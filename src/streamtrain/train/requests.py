"""Requests to a running (or stopped) named model's trainer, applied at its next checkpoint:
``streamtrain models promote NAME LABEL``, ``models add-challenger NAME SPEC [--label L]`` and
``models remove-challenger NAME LABEL``.

A request is a JSON record on the events topic (partition 0, keyed by the model's name; its
``kind`` says which: :func:`request`). A trainer follows that partition (:class:`Requests`,
one follower for every kind) and, at each checkpoint, hands each task of the model the
requests at or past the offset its state remembers (``Task.requests["next"]``; a checkpoint
from before add/remove existed keeps it in the gate's state), in log order, then moves that
offset past them. The change, its record on the events topic and the new offset go into the
same checkpoint transaction, so each request is applied exactly once: a rolled-back or killed
checkpoint takes the change back with it, and the next one applies the request again.

* promote: the gate (:mod:`streamtrain.train.promotion`) makes challenger LABEL the champion;
* add-challenger: a fresh challenger of SPEC labelled LABEL starts at this point (the task's
  events learned and input offsets now, and the time: kept in its state and in the
  ``challenger-added`` record); the task is made again from its state with it
  (:meth:`TaskRegistry.replace`), so every other model goes on exactly as it was;
* remove-challenger: challenger LABEL is dropped (a ``challenger-removed`` record), and
  remembered as removed (``Task.requests["removed"]``) so that a restart with the same
  ``--challenger`` flags does not bring it back; adding it again later starts it afresh.

A request that does not fit the task (an unknown label, the champion, a label taken, a spec
that fails to parse, a joined model) is logged and skipped: the CLI checks each one against
the newest checkpoint before writing it, so that happens only when the model changed between.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from streamtrain.errors import ConfigError
from streamtrain.faults import crash_point
from streamtrain.formats import PROMOTION_REQUEST
from streamtrain.kafka.reader import READER_GROUP_PREFIX
from streamtrain.state.payload import TrainState
from streamtrain.train.challengers import (
    ADDED,
    CHAMPION,
    FOUNDER,
    REMOVED,
    Challenger,
    ChallengerChange,
)
from streamtrain.train.promotion import MANUAL
from streamtrain.train.settings import TrainSettings
from streamtrain.train.tasks import Task

__all__ = [
    "ADD_CHALLENGER",
    "KINDS",
    "PROMOTE",
    "REMOVE_CHALLENGER",
    "PromotionRequests",
    "Request",
    "Requests",
    "promotion_requests",
    "request",
]

log = logging.getLogger(__name__)

REQUESTS_PARTITION = 0
CATCH_UP_SECONDS = 5.0
# A catch-up's consume call returns early only with 500 records in hand: fewer (the partition's
# end-of-partition event included) wait out its timeout, so a short one ends the catch-up soon
# after the end is reached.
_CATCH_UP_POLL = 0.05
PROMOTE = PROMOTION_REQUEST
ADD_CHALLENGER = "add-challenger-request"
REMOVE_CHALLENGER = "remove-challenger-request"
KINDS = (PROMOTE, ADD_CHALLENGER, REMOVE_CHALLENGER)


def request(kind: str, name: str, label: str, at: float, spec: str | None = None) -> bytes:
    """The value of a request of ``kind`` for model ``name`` (``spec``: an added challenger's).

    >>> request(ADD_CHALLENGER, "fraud", "ht", 0.0, "HoeffdingTreeClassifier")
    b'{"kind":"add-challenger-request","model":"fraud","label":"ht","at":0.0,"spec":"HoeffdingTreeClassifier"}'
    """
    plain: dict[str, Any] = {"kind": kind, "model": name, "label": label, "at": at}
    if spec is not None:
        plain["spec"] = spec
    return orjson.dumps(plain)


@dataclasses.dataclass(frozen=True)
class Request:
    offset: int  # on the events topic
    kind: str
    label: str
    spec: str = ""


def promotion_requests(settings: TrainSettings, clients: Any) -> Requests | None:
    """A named model's follower of its requests (an unnamed one has none)."""
    if settings.name is None:
        return None
    return Requests(
        lambda conf: clients.consumer(conf, log.debug), settings.events_topic, settings.name
    )


Rebuild = Callable[[str, TrainState], Task]


class Requests:
    """Follows the events topic for the requests of model ``name``; ``consumer`` makes a
    consumer from its configuration (made on the first :meth:`apply`)."""

    def __init__(
        self,
        consumer: Callable[[dict[str, Any]], Consumer],
        topic: str,
        name: str,
        clock: Callable[[], float] = time.time,
    ):
        self._make = consumer
        self.topic = topic
        self.name = name
        self.clock = clock
        self._consumer: Consumer | None = None
        self._caught_up = False
        self.seen: list[Request] = []  # this model's requests, in log order
        self.end = 0  # the offset after the last record read

    def apply(self, tasks: Mapping[str, Task], rebuild: Rebuild | None = None) -> None:
        """Apply, in each task, the requests it has not yet applied. ``rebuild`` makes a task
        again from a state (``TaskRegistry.replace``); without it, adding and removing
        challengers is skipped."""
        self._read()
        for key in list(tasks):
            task = tasks[key]
            start = next_request(task)
            todo = [r for r in self.seen if r.offset >= start]
            for r in todo:
                if r.kind == PROMOTE:
                    _promote(task, r)
                elif rebuild is not None:
                    state = _changed(task, r, self.clock())
                    if state is not None:
                        task = rebuild(key, state)
            if start < self.end:
                task.requests["next"] = self.end
                if task.gate is not None:
                    task.gate.state.requests = max(task.gate.state.requests, self.end)
            if todo:
                crash_point("after-request-applied")

    def open(self) -> None:
        """Make the consumer and let it start fetching, ahead of the first :meth:`apply`.

        A new consumer took about a second to reach the end of the partition on a local broker;
        made at the first checkpoint, that second stopped learning (bench/PROFILE.md). Opened
        while the trainer joins its group, it has usually fetched to the end by then.
        """
        if self._consumer is None:
            consumer = self._consumer = self._make(
                {
                    # Under the readers' prefix: the DESCRIBE a named trainer is granted covers it.
                    "group.id": f"{READER_GROUP_PREFIX}requests.{uuid.uuid4().hex[:12]}",
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                    # The end as a read_committed reader sees it: _catch_up stops there.
                    "enable.partition.eof": True,
                }
            )
            consumer.assign([TopicPartition(self.topic, REQUESTS_PARTITION, OFFSET_BEGINNING)])

    def _read(self) -> None:
        self.open()
        consumer = self._consumer
        assert consumer is not None
        if not self._caught_up:
            self._caught_up = True
            self._catch_up(consumer)  # requests made while no trainer ran: at the first checkpoint
        while self._take(consumer.consume(500, timeout=0)):
            pass

    def _catch_up(self, consumer: Consumer) -> None:
        """Read up to the partition's end as it is now (a few seconds at most: an open
        transaction holds a read_committed reader back)."""
        tp = TopicPartition(self.topic, REQUESTS_PARTITION)
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=CATCH_UP_SECONDS)
        except KafkaException:  # no such topic yet: no requests
            return
        if high <= low:  # nothing to read: one written from now on is read at a later apply
            return
        deadline = time.monotonic() + CATCH_UP_SECONDS
        while time.monotonic() < deadline:
            messages = consumer.consume(500, timeout=_CATCH_UP_POLL)
            self._take(messages)
            # The high watermark can stay out of reach: a transaction marker at the end of the
            # log (every trainer commits on this topic) or an empty partition leave the position
            # short of it, and waiting the whole deadline stalled every named trainer's first
            # checkpoint. A request behind an open transaction is applied at a later one.
            if any(_at_end(m) for m in messages):
                return
            position = consumer.position([tp])[0].offset
            if position >= high:
                return

    def _take(self, messages: list[Any]) -> bool:
        for msg in messages:
            offset = msg.offset()
            if msg.error() is not None or offset is None:
                continue
            self.end = offset + 1
            found = _request(offset, msg.value(), self.name)
            if found is not None:
                self.seen.append(found)
        return bool(messages)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
            self._caught_up = False


PromotionRequests = Requests  # its name when it followed promotions only


def _at_end(msg: Any) -> bool:
    error = msg.error()
    return error is not None and error.code() == KafkaError._PARTITION_EOF


def next_request(task: Task) -> int:
    """The first events-topic offset whose request ``task`` has not applied."""
    saved = task.requests.get("next")
    if saved is not None:
        return int(saved)
    return task.gate.state.requests if task.gate is not None else 0


def _request(offset: int, value: bytes | None, name: str) -> Request | None:
    """The request in one events-topic record, if it is one for model ``name``."""
    try:
        record = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict) or record.get("model") != name:
        return None
    kind, label, spec = record.get("kind"), record.get("label"), record.get("spec", "")
    if kind not in KINDS or not isinstance(label, str) or not isinstance(spec, str):
        return None
    if kind == ADD_CHALLENGER and not spec:
        return None
    return Request(offset, kind, label, spec)


def _promote(task: Task, r: Request) -> None:
    gate = task.gate
    if gate is None:
        log.warning("%s: no challengers to promote %r from; request skipped", task.key, r.label)
        return
    try:
        promoted = gate.promote(r.label, MANUAL)
    except KeyError:
        log.warning("%s: no challenger %r to promote; request skipped", task.key, r.label)
        return
    promoted.positions = dict(task.offsets)
    task.add_promotion(promoted)
    log.info("%s: %s promoted on request", task.key, r.label)


def champion_label(task: Task) -> str:
    return task.gate.state.champion if task.gate is not None else FOUNDER


def _changed(task: Task, r: Request, now: float) -> TrainState | None:
    """The state of ``task`` with request ``r`` (add or remove) applied, its record owed; None
    when the request does not fit the task (logged)."""
    if task.labels_topic is not None or task.join_state is not None:
        log.warning("%s: a joined model has no challengers; %s skipped", task.key, r.kind)
        return None
    labels = [c.label for c in task.challengers]
    if r.kind == ADD_CHALLENGER:
        if r.label in (CHAMPION, champion_label(task)) or r.label in labels:
            log.warning("%s: label %r is taken; challenger not added", task.key, r.label)
            return None
        try:
            added = Challenger.added(
                r.label,
                r.spec,
                task.sync(),
                started_at=task.events_learned,
                offsets=task.offsets,
                at=now,
            )
        except ConfigError as err:
            log.warning("%s: %s; challenger not added", task.key, err)
            return None
        state = task.state()
        state.challengers[r.label] = added.to_plain()
        removed = [label for label in task.requests.get("removed", []) if label != r.label]
        change = ChallengerChange(
            ADDED, r.label, r.spec, task.events_learned, dict(task.offsets), now, r.offset
        )
        log.info("%s: challenger %s (%s) added on request", task.key, r.label, r.spec)
    else:
        if r.label not in labels:
            log.warning("%s: no challenger %r to remove; request skipped", task.key, r.label)
            return None
        gone = task.challengers[r.label]
        state = task.state()
        del state.challengers[r.label]
        removed = [*task.requests.get("removed", []), r.label]
        change = ChallengerChange(
            REMOVED,
            r.label,
            gone.spec,
            task.events_learned,
            dict(task.offsets),
            now,
            r.offset,
            learned=gone.events_learned,
        )
        log.info("%s: challenger %s removed on request", task.key, r.label)
    # Its detector and win count, if the label had them before, start afresh (or go).
    if state.drift is not None:
        state.drift = {**state.drift, "detectors": dict(state.drift.get("detectors", {}))}
        state.drift["detectors"].pop(r.label, None)
    if state.promotion is not None:
        state.promotion = {**state.promotion, "wins": dict(state.promotion.get("wins", {}))}
        state.promotion["wins"].pop(r.label, None)
    state.requests = {**task.requests, "next": r.offset + 1, "removed": sorted(set(removed))}
    task.add_promotion(change)
    return state
