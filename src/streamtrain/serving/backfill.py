"""Where serve starts reading the metrics topic: a bounded read, however long the retention.

The dashboard's history (:class:`~streamtrain.serving.follower.MetricsHub`) keeps at most
``history`` records of a run: the newest half whole, older ones evenly spaced. Reading the
whole topic at start to build it made serve's start-up grow with the topic's retention (a
week of reports by default). It needs no more than this, per partition of the metrics topic:

* the **tail**: the last ``history // 2`` offsets, read whole and then followed live (the
  newest half of the history, and every record after it);
* **samples** of what came before: at ``history // 10`` offsets evenly spaced from the
  partition's first one (the start of the oldest retained run) up to the tail, the first
  record of the model at or after each, looking at most ``window`` (50) offsets on.

So start-up reads at most ``history // 2 + (history // 10) * 50`` records per partition
(27,500 with the default 5,000-record history), whatever the retention; where one model
writes the topic alone it reads ``history // 2 + history // 10`` (3,000). The curves keep the
run's start and an older part drawn from evenly spaced points (a promotion seen between two
samples is marked at the later one). A follower that reconnects goes on from the offsets it
had reached, with nothing sampled or read twice.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from streamtrain.config import KafkaSettings
from streamtrain.errors import TopicReadError
from streamtrain.kafka.authz import is_denied, not_authorized
from streamtrain.kafka.clients import client_config
from streamtrain.kafka.reader import READER_GROUP_PREFIX, Record

__all__ = ["StartBound", "sample_older"]

_POLL_SECONDS = 0.05


@dataclasses.dataclass(frozen=True)
class StartBound:
    """How much of a partition serve reads at start (see the module's docstring)."""

    tail: int
    samples: int
    window: int = 50

    @classmethod
    def of_history(cls, history: int) -> StartBound:
        return cls(tail=max(1, history // 2), samples=max(1, history // 10))

    @property
    def most_records(self) -> int:
        """The most records read from one partition before the follower is live."""
        return self.tail + self.samples * self.window

    def plan(self, low: int, high: int) -> tuple[list[int], int]:
        """The offsets to sample in a partition holding ``[low, high)``, and where its tail
        starts.

        >>> StartBound(tail=100, samples=4).plan(0, 1_000)
        ([0, 225, 450, 675], 900)
        >>> StartBound(tail=100, samples=4).plan(10, 60)
        ([], 10)
        """
        start = max(low, high - self.tail)
        span = start - low
        count = min(self.samples, span)
        return [low + span * i // count for i in range(count)], start


def sample_older(
    kafka: KafkaSettings,
    topic: str,
    partitions: list[int],
    bound: StartBound,
    owns: Callable[[str], bool],
    *,
    on_read: Callable[[int], None] = lambda n: None,
) -> tuple[list[Record], dict[int, int]]:
    """The sampled records of the keys ``owns`` accepts, in offset order per partition, and
    the offset each partition's tail starts at; ``on_read`` counts every record fetched.

    Raises :class:`~streamtrain.errors.TopicReadError` when a watermark or a sample cannot be
    read within the connect timeout (the follower retries).
    """
    consumer = Consumer(
        client_config(
            kafka,
            **{
                "group.id": f"{READER_GROUP_PREFIX}{uuid.uuid4().hex[:12]}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                # A sample needs a record or a few, not the megabyte a fetch brings by default,
                # and each is a new fetch: asked for at once, not after a backoff (a small
                # queued.max.messages.kbytes made every sample wait out fetch.queue.backoff.ms).
                "max.partition.fetch.bytes": 65_536,
                "fetch.wait.max.ms": 10,
                "fetch.queue.backoff.ms": 0,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": True,
            },
        )
    )
    sampled: list[Record] = []
    starts: dict[int, int] = {}
    try:
        for partition in partitions:
            low, high = _watermarks(consumer, topic, partition, kafka.connect_timeout)
            offsets, starts[partition] = bound.plan(low, high)
            ends = [*offsets[1:], starts[partition]][: len(offsets)]
            for offset, end in zip(offsets, ends, strict=True):
                found = _first_owned(
                    consumer,
                    TopicPartition(topic, partition, offset),
                    min(offset + bound.window, end),
                    owns,
                    on_read,
                    kafka.connect_timeout,
                )
                if found is not None:
                    sampled.append(found)
    finally:
        consumer.close()
    return sampled, starts


def _watermarks(consumer: Consumer, topic: str, partition: int, timeout: float) -> tuple[int, int]:
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout)
    except KafkaException as err:
        inner = err.args[0] if err.args else None
        raise TopicReadError(
            f"cannot find the ends of metrics topic {topic!r}: {err}",
            inner if isinstance(inner, KafkaError) else None,
        ) from err
    return int(low), int(high)


def _first_owned(
    consumer: Consumer,
    at: TopicPartition,
    end: int,
    owns: Callable[[str], bool],
    on_read: Callable[[int], None],
    timeout: float,
) -> Record | None:
    """The first record at or after ``at`` and before ``end`` whose key ``owns`` accepts."""
    consumer.assign([at])
    deadline = time.monotonic() + timeout
    for msg in _messages(consumer, deadline, at):
        offset = msg.offset() or 0
        if offset >= end:
            return None
        on_read(1)
        key = msg.key()
        if key is not None and owns(key.decode("utf-8", "replace")):
            return Record(key.decode("utf-8", "replace"), msg.value(), at.partition, offset)
    return None


def _messages(consumer: Consumer, deadline: float, at: TopicPartition) -> Iterator[Any]:
    while True:
        msg = consumer.poll(_POLL_SECONDS)
        if msg is None:
            if time.monotonic() > deadline:
                raise TopicReadError(
                    f"no record of {at.topic!r} partition {at.partition} at offset {at.offset} "
                    "came within the connect timeout",
                    None,
                )
            continue
        err = msg.error()
        if err is None:
            yield msg
        elif is_denied(err):
            raise not_authorized(
                err,
                "reading the metrics topic",
                topics=[at.topic],
                group=f"{READER_GROUP_PREFIX}*",
                group_right="DESCRIBE",
            ) from KafkaException(err)
        elif err.code() != KafkaError._PARTITION_EOF:
            raise TopicReadError(f"sampling {at.topic!r} failed: {err.str()}", err)
        else:
            return  # past the end: the partition is shorter than it was
