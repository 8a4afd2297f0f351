"""Manual promotions: ``streamtrain models promote NAME LABEL`` asks, the trainer applies.

A request is a JSON record on the events topic (partition 0, keyed by the model's name:
:func:`streamtrain.formats.promotion_request`). A trainer
follows that partition and, at each checkpoint, hands every task of the model the requests at
or past the offset its gate state remembers (``GateState.requests``), then moves that offset
past them. The promotion, its record and the new offset go into the same checkpoint
transaction, so each request is applied exactly once: a rolled-back or killed checkpoint takes
the promotion back with it, and the next one applies the request again. A label the task has
no challenger for (any more) is logged and skipped.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from streamtrain.formats import PROMOTION_REQUEST
from streamtrain.kafka.reader import READER_GROUP_PREFIX
from streamtrain.train.promotion import MANUAL
from streamtrain.train.settings import TrainSettings
from streamtrain.train.tasks import Task

__all__ = ["PromotionRequests", "promotion_requests"]

log = logging.getLogger(__name__)

REQUESTS_PARTITION = 0


def promotion_requests(settings: TrainSettings, clients: Any) -> PromotionRequests | None:
    """A named model's follower of its promotion requests (an unnamed one has none)."""
    if settings.name is None:
        return None
    return PromotionRequests(
        lambda conf: clients.consumer(conf, log.debug), settings.events_topic, settings.name
    )


class PromotionRequests:
    """Follows the events topic for the requests of model ``name``; ``consumer`` makes a
    consumer from its configuration (made on the first :meth:`apply` with a gated task)."""

    def __init__(self, consumer: Callable[[dict[str, Any]], Consumer], topic: str, name: str):
        self._make = consumer
        self.topic = topic
        self.name = name
        self._consumer: Consumer | None = None
        self.seen: list[tuple[int, str]] = []  # (offset, label) of this model's requests
        self.end = 0  # the offset after the last record read

    def apply(self, tasks: Mapping[str, Task]) -> None:
        """Promote, in each gated task, as the requests it has not yet applied say."""
        gated = [task for task in tasks.values() if task.gate is not None]
        if not gated:
            return
        self._read()
        for task in gated:
            gate = task.gate
            assert gate is not None
            for offset, label in self.seen:
                if offset < gate.state.requests:
                    continue
                try:
                    promoted = gate.promote(label, MANUAL)
                except KeyError:
                    log.warning("%s: no challenger %r to promote; request skipped", task.key, label)
                else:
                    promoted.positions = dict(task.offsets)
                    task.add_promotion(promoted)
                    log.info("%s: %s promoted on request", task.key, label)
            gate.state.requests = max(gate.state.requests, self.end)

    def _read(self) -> None:
        consumer = self._consumer
        if consumer is None:
            consumer = self._consumer = self._make(
                {
                    # Under the readers' prefix: the DESCRIBE a named trainer is granted covers it.
                    "group.id": f"{READER_GROUP_PREFIX}requests.{uuid.uuid4().hex[:12]}",
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                }
            )
            consumer.assign([TopicPartition(self.topic, REQUESTS_PARTITION, OFFSET_BEGINNING)])
        while True:
            messages = consumer.consume(500, timeout=0)
            if not messages:
                return
            for msg in messages:
                offset = msg.offset()
                if msg.error() is not None or offset is None:
                    continue
                self.end = offset + 1
                try:
                    record = orjson.loads(msg.value() or b"")
                except orjson.JSONDecodeError:
                    continue
                if (
                    isinstance(record, dict)
                    and record.get("kind") == PROMOTION_REQUEST
                    and record.get("model") == self.name
                    and isinstance(record.get("label"), str)
                ):
                    self.seen.append((offset, record["label"]))

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
