"""Read a topic's committed records: once to its end, or following it, with bounded waits.

Every read is ``isolation.level=read_committed`` from the beginning of the chosen partitions,
with an assignment (no group membership, nothing committed), so any number of readers see
everything.

:meth:`TopicReader.read_to_end` stops at the log end as of its start. That end includes
records of transactions not yet decided, so the read waits until each of those is committed
(read) or aborted (skipped): a checkpoint whose commit was acknowledged a moment ago is never
missed. It gives up after ``patience`` seconds without progress (a crashed writer's
transaction stays open until the broker times it out), so the read-back always ends.

:meth:`TopicReader.follow` hands over every fetch until stopped, saying when it has caught up
with the topic: every partition reported its end, or a fetch came back short. The second case
matters: a read_committed reader of a topic that transactions commit to every fraction of a
second may never see an end-of-partition, since the end keeps moving.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from streamtrain.config import KafkaSettings
from streamtrain.errors import BrokerUnreachable, NotAuthorized, TopicMissing, TopicReadError
from streamtrain.kafka.authz import is_denied, not_authorized
from streamtrain.kafka.clients import (
    check_visible,
    client_config,
    partition_count,
    wait_for_cluster,
)

__all__ = [
    "CatchUp",
    "EndWatch",
    "Fetch",
    "Record",
    "Select",
    "TopicReader",
    "fetch_of",
    "readable_ends",
]

# Chooses the partitions to read from the topic's partition count.
Select = Callable[[int], Iterable[int]]

_BATCH = 500
# Readers take a fresh group id under this prefix; librdkafka looks its coordinator up, which
# on a secured cluster needs DESCRIBE on it (broker/acls.py grants that on the prefix).
READER_GROUP_PREFIX = "streamtrain.reader."
_POLL_SECONDS = 0.2
_METADATA_SECONDS = 5.0


@dataclasses.dataclass(frozen=True)
class Record:
    """One committed record; ``key`` decoded as UTF-8 (bad bytes replaced), None when absent."""

    key: str | None
    value: bytes | None
    partition: int
    offset: int


@dataclasses.dataclass(frozen=True)
class Fetch:
    """What one fetch of :meth:`TopicReader.follow` brought."""

    records: list[Record]
    # Every record readable so far has now been handed over (this fetch's included).
    caught_up: bool
    # The client's last fetch error, when nothing healthy came back after it ...
    error: KafkaError | None
    # ... and whether the broker answered (a record or an end of partition) after any error.
    answered: bool


class TopicReader:
    """Reads one topic; ``what`` names it in errors ("checkpoint topic", "metrics topic")."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        *,
        what: str = "topic",
        max_record_bytes: int | None = None,
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.what = what
        self.max_record_bytes = max_record_bytes

    def partitions(self) -> int | None:
        """The topic's partition count, None if it does not exist.

        Raises :class:`~streamtrain.errors.BrokerUnreachable` after the connect timeout, and
        :class:`~streamtrain.errors.NotAuthorized` when a missing right hides the topic (a
        listing of all topics leaves it out as if it did not exist).
        """
        count = partition_count(wait_for_cluster(self.kafka), self.topic)
        if count is None:
            check_visible(self.kafka, self.topic, f"reading the {self.what}", "READ")
        return count

    def _partitions_within(self, patience: float) -> int | None:
        """:meth:`partitions`, asking again for up to ``patience`` seconds while no broker
        answers: right after a broker crash, the next metadata request may go to it, or to
        one still starting, and time out while the others would answer."""
        deadline = time.monotonic() + patience
        while True:
            try:
                return self.partitions()
            except BrokerUnreachable:
                if time.monotonic() >= deadline:
                    raise
            time.sleep(_POLL_SECONDS)

    def read_to_end(self, select: Select = range, *, patience: float = 10.0) -> Iterator[Record]:
        """Every committed record of the partitions ``select(count)`` picks, up to the log end
        as of now, in log order per partition.

        Raises :class:`~streamtrain.errors.TopicMissing` when the topic does not exist,
        :class:`~streamtrain.errors.BrokerUnreachable` when no broker answers, and
        :class:`~streamtrain.errors.TopicReadError` on a failed fetch; each after
        ``max(patience, connect_timeout)`` seconds without progress.
        """
        wait = max(patience, self.kafka.connect_timeout)  # every wait of the read
        count = self._partitions_within(wait)
        if count is None:
            raise TopicMissing(
                f"{self.what} {self.topic!r} does not exist at {self.kafka.bootstrap_servers}"
            )
        chosen = sorted(set(select(count)))
        if not chosen:
            return
        ends = readable_ends(self._watermarks(chosen, wait))
        if not ends:
            return
        watch = EndWatch(ends, wait)
        # Client-level errors (a broker that went away: _TRANSPORT, _ALL_BROKERS_DOWN) are
        # informational, the client reconnects by itself. Without an error_cb, poll() hands
        # them over as if they were fetch errors, and a broker restart in the middle of a
        # read-back would end the read (and the trainer doing it). Kept for the stall message.
        client_errors: list[KafkaError] = []
        consumer = self._consumer(error_cb=client_errors.append)
        try:
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in ends])
            while not watch.done:
                # One message at a time: consume() would wait out its timeout for a full
                # batch, and the read stops the moment the last record is in.
                msg = consumer.poll(_POLL_SECONDS)
                err = msg.error() if msg is not None else None
                if err is None and client_errors and is_denied(client_errors[-1]):
                    err = client_errors[-1]
                if msg is not None and err is None:
                    watch.progressed()
                    yield _record(msg)
                elif is_denied(err):
                    raise self._refusal(err) from KafkaException(err)
                elif err is not None and err.code() != KafkaError._PARTITION_EOF:
                    raise TopicReadError(
                        f"reading {self.what} {self.topic!r} failed: {err.str()}", err
                    ) from KafkaException(err)
                # Control records and aborted data move the position without a message.
                watch.positions(
                    {
                        tp.partition: tp.offset
                        for tp in consumer.position(
                            [TopicPartition(self.topic, p) for p in watch.pending]
                        )
                    }
                )
                if watch.stalled():
                    last = "".join(f"; last client error: {e.str()}" for e in client_errors[-1:])
                    raise TopicReadError(
                        f"timed out reading {self.what} {self.topic!r}: partitions "
                        f"{sorted(watch.pending)} made no progress in {watch.patience:g}s "
                        f"(a transaction still undecided, or the broker stopped answering){last}",
                        client_errors[-1] if client_errors else None,
                    )
        finally:
            consumer.close()

    def follow(
        self,
        stop: threading.Event,
        on_fetch: Callable[[Fetch], None],
        *,
        select: Select = range,
        on_waiting: Callable[[bool], None] = lambda waiting: None,
        on_client_error: Callable[[KafkaError], None] | None = None,
        batch: int = _BATCH,
        poll_seconds: float = 0.25,
        start_at: Callable[[list[int]], Mapping[int, int]] | None = None,
    ) -> None:
        """Call ``on_fetch`` with every fetch from the beginning of the partitions ``select``
        picks, until ``stop`` is set; an empty fetch comes every ``poll_seconds`` at most.
        ``start_at``, given the chosen partitions once the topic exists, may name an offset
        to start at instead, per partition.

        While the topic does not exist, ``on_waiting(True)`` is called and its creation
        awaited; ``on_waiting(False)`` once it does. Fetch errors are handed over, not raised
        (the client keeps retrying); client-level errors go to ``on_client_error``. A broker
        that does not answer the metadata request raises ``KafkaException``. A missing right
        (on the topic, or to look up the reader's group) raises
        :class:`~streamtrain.errors.NotAuthorized`: retrying would wait for ever.
        """
        refused: list[KafkaError] = []

        def on_error(err: KafkaError) -> None:
            if is_denied(err):
                refused.append(err)
            elif on_client_error is not None:
                on_client_error(err)

        consumer = self._consumer(**{"enable.partition.eof": True, "error_cb": on_error})
        try:
            count = self._wait_for_topic(consumer, stop, on_waiting, refused)
            if count is None:
                return
            chosen = sorted(set(select(count)))
            starts = start_at(chosen) if start_at is not None else {}
            consumer.assign(
                [TopicPartition(self.topic, p, starts.get(p, OFFSET_BEGINNING)) for p in chosen]
            )
            catch_up = CatchUp(chosen, batch)
            while not stop.is_set():
                messages = consumer.consume(batch, timeout=poll_seconds)
                refused += [e for m in messages if is_denied(e := m.error())]
                if refused:
                    raise self._refusal(refused[0]) from KafkaException(refused[0])
                on_fetch(fetch_of(messages, catch_up))
        finally:
            consumer.close()

    def _wait_for_topic(
        self,
        consumer: Consumer,
        stop: threading.Event,
        waiting: Callable[[bool], None],
        refused: list[KafkaError],
    ) -> int | None:
        """Partition count of the topic once it exists; None if stopped first."""
        while not stop.is_set():
            topics = consumer.list_topics(self.topic, timeout=_METADATA_SECONDS).topics
            meta = topics.get(self.topic)
            if meta is not None and is_denied(meta.error):
                refused.append(meta.error)
            if refused:
                raise self._refusal(refused[0]) from KafkaException(refused[0])
            if meta is not None and meta.error is None and meta.partitions:
                waiting(False)
                return len(meta.partitions)
            waiting(True)
            stop.wait(1.0)
        return None

    def _refusal(self, err: KafkaError) -> NotAuthorized:
        """The error for a refused read of this topic (or lookup of a reader's group)."""
        return not_authorized(
            err,
            f"reading the {self.what}",
            topics=[self.topic],
            group=f"{READER_GROUP_PREFIX}*",
            group_right="DESCRIBE",
        )

    def _watermarks(self, partitions: list[int], patience: float) -> dict[int, tuple[int, int]]:
        """Low and high watermark of each partition, asking again for up to ``patience``
        seconds: a partition whose leader crashed has none until the controller fences that
        broker and elects another (``broker.session.timeout.ms``, 9 s by default), longer than
        one connect timeout. Each attempt is a new client: one that asked the dead leader
        keeps asking it, its metadata never refreshed."""
        deadline = time.monotonic() + patience
        marks: dict[int, tuple[int, int]] = {}
        while True:
            # A read_committed client is told the last stable offset instead of the log end,
            # which stops short of a transaction whose commit was acknowledged but whose
            # markers are not written yet: ask as a read_uncommitted one.
            consumer = self._consumer(**{"isolation.level": "read_uncommitted"})
            try:
                for p in partitions:
                    if p not in marks:
                        marks[p] = consumer.get_watermark_offsets(
                            TopicPartition(self.topic, p), timeout=self.kafka.connect_timeout
                        )
                return marks
            except KafkaException as err:
                inner = err.args[0] if err.args else None
                if is_denied(inner) or time.monotonic() >= deadline:
                    text = inner.str() if isinstance(inner, KafkaError) else str(err)
                    raise TopicReadError(
                        f"cannot find the end of {self.what} {self.topic!r}: {text}",
                        inner if isinstance(inner, KafkaError) else None,
                    ) from err
            finally:
                consumer.close()
            time.sleep(_POLL_SECONDS)

    def _consumer(self, **extra: Any) -> Consumer:
        conf: dict[str, Any] = {
            # A fresh group id that is never joined nor committed: readers only assign.
            "group.id": f"{READER_GROUP_PREFIX}{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
        if self.max_record_bytes is not None:
            conf["fetch.message.max.bytes"] = self.max_record_bytes
        conf.update(extra)
        return Consumer(client_config(self.kafka, **conf))


def readable_ends(watermarks: Mapping[int, tuple[int, int]]) -> dict[int, int]:
    """The offset to read up to in each partition that holds records, from (low, high)
    watermarks; an empty partition (all records expired or compacted away) is left out."""
    return {p: high for p, (low, high) in watermarks.items() if high > low}


class EndWatch:
    """How far :meth:`TopicReader.read_to_end` still has to go, and whether it is stuck."""

    def __init__(
        self,
        ends: Mapping[int, int],
        patience: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pending = dict(ends)
        self.patience = patience
        self._clock = clock
        self._last_progress = clock()

    @property
    def done(self) -> bool:
        return not self.pending

    def progressed(self) -> None:
        self._last_progress = self._clock()

    def positions(self, positions: Mapping[int, int]) -> None:
        """Drop the partitions whose next offset reached their end."""
        for partition, offset in positions.items():
            end = self.pending.get(partition)
            if end is not None and offset >= end:
                del self.pending[partition]
                self.progressed()

    def stalled(self) -> bool:
        return not self.done and self._clock() - self._last_progress > self.patience


class CatchUp:
    """Whether :meth:`TopicReader.follow` has caught up: every partition reported its end, or
    a fetch came back short of a full batch. Once caught up, it stays so."""

    def __init__(self, partitions: Iterable[int], batch: int) -> None:
        self._unread = set(partitions)
        self._batch = batch
        self.caught_up = False

    def after(self, fetched: int, ended: Iterable[int]) -> bool:
        """Update with a fetch of ``fetched`` messages in which partitions ``ended`` ended."""
        self._unread.difference_update(ended)
        if not self._unread or fetched < self._batch:
            self.caught_up = True
            self._unread.clear()
        return self.caught_up


def fetch_of(messages: Sequence[Message], catch_up: CatchUp) -> Fetch:
    """The :class:`Fetch` made of the messages one ``consume`` returned."""
    records: list[Record] = []
    ended: list[int] = []
    error: KafkaError | None = None
    answered = False
    for msg in messages:
        err = msg.error()
        if err is None:
            records.append(_record(msg))
            error, answered = None, True
        elif err.code() == KafkaError._PARTITION_EOF:
            ended.append(msg.partition() or 0)
            error, answered = None, True
        else:
            error, answered = err, False
    return Fetch(records, catch_up.after(len(messages), ended), error, answered)


def _record(msg: Message) -> Record:
    key = msg.key()
    return Record(
        key.decode("utf-8", "replace") if key is not None else None,
        msg.value(),
        msg.partition() or 0,
        msg.offset() or 0,
    )
