"""In-memory fakes of the confluent-kafka clients a Trainer uses, to drive its control paths
(aborts, fencing, replaced or stuck producers, rebalances) in unit tests, without a broker.

* :class:`FakeCluster` — topics (a list of records per partition), consumer-group offsets and
  generations, and a transaction coordinator. A transactional record is in the log at once but
  visible to ``read_committed`` readers only once its transaction commits: they stop at the
  first undecided one (the LSO) and skip aborted ones. Commit and abort write a control marker,
  which takes an offset like on a broker. ``init_transactions`` of a producer bumps the epoch of
  its ``transactional.id`` (fencing older producers) and aborts a transaction left open.
* :class:`FakeConsumer` — one member of a group, subscribed to one topic. Rebalance callbacks
  run inside ``consume``/``poll``, one step per call (that call returns nothing): the test asks
  for :meth:`FakeConsumer.revoke` or :meth:`FakeConsumer.lose`, usually from a trigger
  (:meth:`FakeCluster.after`) fired once so many records were handed out.
* :class:`FakeProducer` — transactional (or plain) producer with *scripted failures*
  (:class:`Script`): the n-th call of a method raises a given ``KafkaError`` or hangs until
  released, before or after it took effect on the "broker" (``landed``).
* :class:`FakeStore` (a ``CheckpointStore`` reading committed records) and :class:`FakeClients`
  (the trainer's ``clients`` port, recording every client it made).

Time is a :class:`FakeClock`; it moves only when an empty ``poll`` "waits" its timeout.

Deliberately not modelled: brokers, leaders, replication, retention, compaction; batching,
linger, prefetch queues and request timeouts (calls return at once unless scripted to hang);
several members sharing a group (a rebalance is the test's decision) and cooperative
rebalancing; idempotence sequence numbers; size limits; the broker's transaction timeout;
delivery reports (an unnamed trainer's ``on_delivery``: only named models are driven here);
thread-safety beyond one caller at a time (a stuck call's thread resumes only after the test,
and then finds itself fenced).
"""

from __future__ import annotations

import dataclasses
import threading
import zlib
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_INVALID,
    OFFSET_STORED,
    TIMESTAMP_CREATE_TIME,
    KafkaError,
    KafkaException,
)
from confluent_kafka import TopicPartition as TP

from streamtrain.errors import StreamtrainError, TopicMissing
from streamtrain.state.envelope import OpenedCheckpoint, open_envelope
from streamtrain.state.keys import SigningKey

_FATAL = KafkaError(KafkaError._FATAL, "fatal error (see the error callback)", fatal=True)


def _bytes(value: Any) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


class FakeClock:
    """Monotonic seconds that move only when told; ``limit`` stops a run-away test."""

    def __init__(self, now: float = 1000.0, limit: float = 3600.0) -> None:
        self.now, self.end = now, now + limit

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)
        if self.now > self.end:
            raise AssertionError("the fake clock ran past its limit: the trainer never stopped")


@dataclasses.dataclass(eq=False)
class Txn:
    txn_id: str
    state: str = "open"  # open | committed | aborted
    offsets: dict[str, dict[tuple[str, int], int]] = dataclasses.field(default_factory=dict)
    partitions: set[tuple[str, int]] = dataclasses.field(default_factory=set)


@dataclasses.dataclass(eq=False)
class Record:
    key: bytes | None
    value: bytes | None
    headers: Any
    timestamp: int
    txn: Txn | None = None
    control: bool = False  # a commit/abort marker: takes an offset, never returned

    def visible(self, committed_only: bool) -> bool:
        if self.control:
            return False
        return self.txn is None or not committed_only or self.txn.state == "committed"


@dataclasses.dataclass(frozen=True)
class FakeGroupMetadata:
    """What ``consumer_group_metadata()`` carries: the generation fences zombies (KIP-447)."""

    group: str
    generation: int


class FakeCluster:
    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.topics: dict[str, list[list[Record]]] = {}
        self.group_offsets: dict[str, dict[tuple[str, int], int]] = defaultdict(dict)
        self.generations: Counter[str] = Counter()
        self.epochs: dict[str, int] = {}  # transactional.id -> current producer epoch
        self.open_txns: dict[str, Txn] = {}
        # What happened, in order: ("init", txn_id, epoch), ("committed"|"aborted", txn_id,
        # {partition: offset}), ("assigned"|"released"|"lost", [partitions]), ("expelled",);
        # watchers see each entry as it comes.
        self.journal: list[tuple[Any, ...]] = []
        self.watchers: list[Callable[[tuple[Any, ...]], None]] = []
        self.delivered = 0  # records handed to consumers
        self._triggers: list[tuple[int, Callable[[FakeConsumer], None]]] = []

    def create_topic(self, name: str, partitions: int = 1) -> None:
        self.topics.setdefault(name, [[] for _ in range(partitions)])

    def append(self, topic, partition, value, key=None, *, headers=None, timestamp=None, txn=None):
        log = self.topics[topic][partition]
        ts = int(self.clock() * 1000) if timestamp is None else timestamp
        log.append(Record(_bytes(key), _bytes(value), headers, ts, txn))
        if txn is not None:
            txn.partitions.add((topic, partition))
        return len(log) - 1

    def after(self, records: int, action: Callable[[FakeConsumer], None]) -> None:
        """Run ``action(consumer)`` in the consume call that hands out the ``records``-th record."""
        self._triggers.append((records, action))

    def record(self, *entry: Any) -> None:
        self.journal.append(entry)
        for watch in self.watchers:
            watch(entry)

    def readable_end(self, topic: str, partition: int, committed_only: bool) -> int:
        """The log end, or for read_committed the first undecided transactional record (LSO)."""
        log = self.topics[topic][partition]
        if committed_only:
            for i, rec in enumerate(log):
                if rec.txn is not None and rec.txn.state == "open":
                    return i
        return len(log)

    def committed(self, topic: str) -> list[Record]:
        """What a read_committed reader sees. A real reader would wait for an undecided
        transaction (up to its patience); here nothing would ever decide it: an error."""
        out: list[Record] = []
        for p, log in enumerate(self.topics.get(topic, [])):
            if self.readable_end(topic, p, True) < len(log):
                raise StreamtrainError(f"{topic}[{p}] holds a transaction that is still undecided")
            out.extend(rec for rec in log if rec.visible(True))
        return out

    # -- the transaction coordinator ---------------------------------------------------------

    def init_producer(self, txn_id: str) -> int:
        left_open = self.open_txns.get(txn_id)
        if left_open is not None:
            self.end_txn(left_open, "aborted")
        self.epochs[txn_id] = self.epochs.get(txn_id, -1) + 1
        self.record("init", txn_id, self.epochs[txn_id])
        return self.epochs[txn_id]

    def end_txn(self, txn: Txn, outcome: str) -> None:
        txn.state = outcome
        for topic, p in sorted(txn.partitions):
            self.topics[topic][p].append(Record(None, None, None, 0, txn, control=True))
        offsets: dict[int, int] = {}
        if outcome == "committed":
            for group, positions in txn.offsets.items():
                self.group_offsets[group].update(positions)
                offsets.update({p: o for (_t, p), o in positions.items()})
        if self.open_txns.get(txn.txn_id) is txn:
            del self.open_txns[txn.txn_id]
        self.record(outcome, txn.txn_id, offsets)

    def _delivered(self, n: int, consumer: FakeConsumer) -> None:
        self.delivered += n
        due = [t for t in self._triggers if t[0] <= self.delivered]
        for trigger in due:
            self._triggers.remove(trigger)
            trigger[1](consumer)


class FakeMessage:
    """A consumed record, read like a ``confluent_kafka.Message``: ``value()``, ``offset()``..."""

    def __init__(self, topic: str, partition: int, offset: int, rec: Record) -> None:
        fields = dict(topic=topic, partition=partition, offset=offset, value=rec.value, key=rec.key)
        fields.update(headers=rec.headers, timestamp=(TIMESTAMP_CREATE_TIME, rec.timestamp))
        for name, value in [*fields.items(), ("error", None)]:
            setattr(self, name, lambda value=value: value)


class FakeConsumer:
    """One group member subscribed to one topic; see the module doc for rebalances.

    ``position()`` is the documented contract: last returned record + 1 (past skipped markers),
    ``OFFSET_INVALID`` until something was fetched after an assign or seek.
    """

    def __init__(self, cluster: FakeCluster, conf: dict[str, Any], on_error: Any = None) -> None:
        self.cluster = cluster
        self.group: str = conf["group.id"]
        self.committed_only = conf.get("isolation.level") == "read_committed"
        self.reset = conf.get("auto.offset.reset", "latest")
        self.topic = ""
        self.callbacks: dict[str, Any] = {}
        self.fetching: dict[int, int] = {}  # assigned partition -> next offset to fetch
        self.app: dict[int, int] = {}  # partition -> position()
        self.generation = -1
        self.closed = False
        self.seeks: list[TP] = []
        self._steps: deque[Callable[[], None]] = deque()
        self._assign_called = False

    # -- group membership --------------------------------------------------------------------

    def subscribe(self, topics: list[str], on_assign=None, on_revoke=None, on_lost=None) -> None:
        (self.topic,) = topics
        self.callbacks = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost or on_revoke}
        self._steps.append(self._join)

    def revoke(self) -> None:
        """A rebalance: everything is revoked (eager protocol), then assigned back."""
        self._steps.extend([self._revoked, self._join])

    def lose(self) -> None:
        """The group moved on without this member (missed session timeout): its generation is
        stale from now on; it is told at its next poll, then joins again."""
        self.cluster.generations[self.group] += 1
        self.cluster.record("expelled")
        self._steps.extend([self._lost, self._join])

    def _join(self) -> None:
        self.cluster.generations[self.group] += 1
        self.generation = self.cluster.generations[self.group]
        parts = [TP(self.topic, p) for p in range(len(self.cluster.topics[self.topic]))]
        self._assign_called = False
        if self.callbacks["assign"] is not None:
            self.callbacks["assign"](self, parts)
        if not self._assign_called:  # as confluent-kafka does after the callback
            self.assign(parts)
        self.cluster.record("assigned", sorted(self.fetching))

    def _revoked(self) -> None:
        self._leave("revoke", "released")

    def _lost(self) -> None:
        self._leave("lost", "lost")

    def _leave(self, callback: str, entry: str) -> None:
        parts = self.assignment()
        if self.callbacks[callback] is not None:
            self.callbacks[callback](self, parts)
        self.cluster.record(entry, [tp.partition for tp in parts])
        self.unassign()

    # -- positions ---------------------------------------------------------------------------

    def assign(self, partitions: list[TP]) -> None:
        self._assign_called = True
        # Another topic's partitions (the trainer's request follower: the events topic, which
        # the fake cluster does not have) fetch nothing.
        mine = [tp for tp in partitions if tp.topic == self.topic]
        self.fetching = {tp.partition: self._resolve(tp.partition, tp.offset) for tp in mine}
        self.app = {}

    def unassign(self) -> None:
        self.fetching, self.app = {}, {}

    def assignment(self) -> list[TP]:
        return [TP(self.topic, p) for p in sorted(self.fetching)]

    def seek(self, tp: TP) -> None:
        if tp.partition not in self.fetching:
            raise KafkaException(KafkaError(KafkaError._STATE, "partition not assigned"))
        self.fetching[tp.partition] = self._resolve(tp.partition, tp.offset)
        self.app.pop(tp.partition, None)
        self.seeks.append(TP(tp.topic, tp.partition, self.fetching[tp.partition]))

    def position(self, partitions: list[TP]) -> list[TP]:
        app = self.app
        return [TP(t.topic, t.partition, app.get(t.partition, OFFSET_INVALID)) for t in partitions]

    def get_watermark_offsets(self, tp: TP, timeout: Any = None, cached: bool = False) -> Any:
        if tp.topic not in self.cluster.topics:  # as librdkafka answers
            raise KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))
        # A read_committed client is told the last stable offset as the high end.
        return 0, self.cluster.readable_end(tp.topic, tp.partition, self.committed_only)

    def offsets_for_times(self, partitions: list[TP], timeout: Any = None) -> list[TP]:
        out = []
        for tp in partitions:
            log = self.cluster.topics[tp.topic][tp.partition]
            hits = (i for i, r in enumerate(log) if not r.control and r.timestamp >= tp.offset)
            out.append(TP(tp.topic, tp.partition, next(hits, OFFSET_END)))
        return out

    def consumer_group_metadata(self) -> FakeGroupMetadata:
        return FakeGroupMetadata(self.group, self.generation)

    def _resolve(self, p: int, offset: int) -> int:
        if offset == OFFSET_BEGINNING:
            return 0
        if offset == OFFSET_END:
            return self.cluster.readable_end(self.topic, p, self.committed_only)
        if offset in (OFFSET_STORED, OFFSET_INVALID):
            stored = self.cluster.group_offsets[self.group].get((self.topic, p))
            if stored is not None:
                return stored
            return self._resolve(p, OFFSET_BEGINNING if self.reset == "earliest" else OFFSET_END)
        return offset

    # -- consuming ---------------------------------------------------------------------------

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[FakeMessage]:
        if self.closed:
            raise RuntimeError("Consumer closed")
        if self._steps:
            self._steps.popleft()()
            return []
        out: list[FakeMessage] = []
        ends = {
            p: self.cluster.readable_end(self.topic, p, self.committed_only) for p in self.fetching
        }
        while len(out) < num_messages and any(self.fetching[p] < end for p, end in ends.items()):
            for p in sorted(ends):  # round-robin, a record at a time
                pos, log = self.fetching[p], self.cluster.topics[self.topic][p]
                if pos < ends[p] and len(out) < num_messages:
                    if log[pos].visible(self.committed_only):
                        out.append(FakeMessage(self.topic, p, pos, log[pos]))
                    self.fetching[p] = self.app[p] = pos + 1
        if not out and timeout and timeout > 0:
            self.cluster.clock.advance(timeout)  # waited that long for nothing
        self.cluster._delivered(len(out), self)
        return out

    def poll(self, timeout: float | None = None) -> FakeMessage | None:
        out = self.consume(1, -1 if timeout is None else timeout)
        return out[0] if out else None

    def close(self) -> None:
        """Leaves the group: the revoke callback runs for what is still assigned."""
        if not self.closed and self.fetching and self.callbacks.get("revoke"):
            self._revoked()
        self.unassign()
        self.closed = True


@dataclasses.dataclass
class Failure:
    """What a scripted call does instead of (``landed=False``) or after taking effect."""

    error: KafkaError | None  # None: hang until the script is released
    landed: bool = False
    via_callback: bool = False  # the call raises _FATAL; the cause comes through error_cb


class Script:
    """Failures by method name and call number (counted over every producer of the clients)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.plan: dict[str, dict[int, Failure]] = defaultdict(dict)
        self.released = threading.Event()

    def add(self, method: str, at: int | Iterable[int], failure: Failure) -> None:
        for n in [at] if isinstance(at, int) else at:
            self.plan[method][n] = failure

    def take(self, method: str) -> Failure | None:
        self.calls[method] += 1
        return self.plan[method].get(self.calls[method])


class FakeProducer:
    def __init__(self, cluster: FakeCluster, conf: dict, on_error=None, script=None) -> None:
        self.cluster, self.conf, self.script = cluster, conf, script
        self.txn_id: str | None = conf.get("transactional.id")
        self.on_error = on_error or (lambda _err: None)
        self.epoch: int | None = None
        self.txn: Txn | None = None
        self.abortable: KafkaError | None = None  # only abort_transaction clears it
        self.fatal: KafkaError | None = None  # this producer is done for
        self._callbacks: list[Callable[[], None]] = []  # error_cb calls, served by poll()

    # -- the transactional API ---------------------------------------------------------------

    def init_transactions(self, timeout: float | None = None) -> None:
        def init() -> None:
            assert self.txn_id is not None
            self.epoch, self.txn = self.cluster.init_producer(self.txn_id), None

        self._api("init_transactions", init)

    def begin_transaction(self) -> None:
        def begin() -> None:  # local in librdkafka: it cannot notice being fenced
            if self.epoch is None or self.txn is not None:
                raise KafkaException(KafkaError(KafkaError._STATE, "cannot begin a transaction"))
            self.txn = Txn(self.txn_id or "")

        self._api("begin_transaction", begin)

    def produce(self, topic: str, value=None, key=None, partition: int = -1, headers=None) -> None:
        def produce() -> None:
            if self.txn_id is not None:
                if self.txn is None:
                    raise KafkaException(KafkaError(KafkaError._STATE, "no transaction"))
                if self.cluster.epochs.get(self.txn_id) != self.epoch:
                    self._set_fatal(KafkaError(KafkaError._FENCED, "fenced", fatal=True))
                    return  # refused by the broker, reported asynchronously
                self.cluster.open_txns[self.txn_id] = self.txn
            n = len(self.cluster.topics[topic])
            p = partition if partition >= 0 else zlib.crc32(_bytes(key) or b"") % n
            self.cluster.append(topic, p, value, key, headers=headers, txn=self.txn)

        self._api("produce", produce)

    def send_offsets_to_transaction(self, positions: list[TP], meta: Any, timeout=None) -> None:
        def send() -> None:
            txn = self._coordinator()
            if meta.generation != self.cluster.generations[meta.group]:
                error = KafkaError(KafkaError.ILLEGAL_GENERATION, "stale", txn_requires_abort=True)
                self.abortable = error
                raise KafkaException(error)
            offsets = {(tp.topic, tp.partition): tp.offset for tp in positions}
            txn.offsets.setdefault(meta.group, {}).update(offsets)

        self._api("send_offsets_to_transaction", send)

    def commit_transaction(self, timeout: float | None = None) -> None:
        def commit() -> None:
            self.cluster.end_txn(self._coordinator(), "committed")
            self.txn = None

        self._api("commit_transaction", commit)

    def abort_transaction(self, timeout: float | None = None) -> None:
        def abort() -> None:
            self.abortable = None
            self.cluster.end_txn(self._coordinator(), "aborted")
            self.txn = None

        self._api("abort_transaction", abort)

    def poll(self, timeout: float | None = None) -> int:
        served, self._callbacks = self._callbacks, []
        for callback in served:
            callback()
        return len(served)

    def flush(self, timeout: float | None = None) -> int:
        self.poll()
        return 0

    # -- internals ---------------------------------------------------------------------------

    def _coordinator(self) -> Txn:
        """The checks of a request to the transaction coordinator."""
        if self.txn is None:
            raise KafkaException(KafkaError(KafkaError._STATE, "no transaction in progress"))
        assert self.txn_id is not None
        if self.cluster.epochs.get(self.txn_id) != self.epoch:
            self._set_fatal(KafkaError(KafkaError._FENCED, "fenced by a newer epoch", fatal=True))
            raise KafkaException(self.fatal)
        if self.abortable is not None:
            raise KafkaException(self.abortable)
        self.cluster.open_txns[self.txn_id] = self.txn
        return self.txn

    def _set_fatal(self, error: KafkaError) -> None:
        if self.fatal is None:
            self.fatal = error
            self._callbacks.append(lambda: self.on_error(error))

    def _api(self, method: str, call: Callable[[], None]) -> None:
        failure = self.script.take(method) if self.script is not None else None
        if self.fatal is not None:  # produce() says just _FATAL; transactional calls the cause
            raise KafkaException(_FATAL if method == "produce" else self.fatal)
        if failure is not None and not failure.landed:
            self._strike(method, failure)
        call()
        if failure is not None and failure.landed:
            self._strike(method, failure)

    def _strike(self, method: str, failure: Failure) -> None:
        if failure.error is None:
            assert self.script is not None
            self.script.released.wait()  # a stuck librdkafka call
            return
        error = failure.error
        if error.fatal():
            self._set_fatal(error)
            if failure.via_callback or method == "produce":
                raise KafkaException(_FATAL)
        elif error.txn_requires_abort():
            self.abortable = error
        raise KafkaException(error)


class FakeStore:
    """A ``CheckpointStore`` over the fake cluster: committed records, verified on opening."""

    def __init__(self, cluster: FakeCluster, key: SigningKey, topic: str) -> None:
        self.cluster, self.key, self.topic = cluster, key, topic
        self.reads = 0

    def partitions(self) -> int | None:
        return len(self.cluster.topics[self.topic]) if self.topic in self.cluster.topics else None

    def latest_many(self, names: list[str]) -> dict[str, OpenedCheckpoint]:
        self.reads += 1
        return {c.header.model_name: c for c in self.history(names)}  # the last of each wins

    def history(self, names: list[str]) -> Iterator[OpenedCheckpoint]:
        """Every committed checkpoint of ``names``, oldest first, verified."""
        for rec in self.cluster.committed(self.topic):
            key = (rec.key or b"").decode()
            if key in names and rec.value is not None:
                yield open_envelope(rec.value, self.key, what=f"checkpoint of {key!r}")


class FakeClients:
    """The trainer's ``clients`` port over a :class:`FakeCluster`, with a failure script."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster
        self.script = Script()
        self.consumers: list[FakeConsumer] = []
        self.producers: list[FakeProducer] = []
        self.stores: list[FakeStore] = []

    def fail(self, method: str, at: int | Iterable[int], error: KafkaError, **how: bool) -> None:
        """``how``: ``landed``, ``via_callback`` (see :class:`Failure`)."""
        self.script.add(method, at, Failure(error, **how))

    def hang(self, method: str, at: int, *, landed: bool = False) -> None:
        self.script.add(method, at, Failure(None, landed))

    def release(self) -> None:
        self.script.released.set()

    def prepare_topics(self, settings: Any) -> None:
        if settings.topic not in self.cluster.topics:
            raise TopicMissing(f"topic {settings.topic!r} does not exist")
        partitions = len(self.cluster.topics[settings.topic])
        self.cluster.create_topic(settings.dlq_topic, partitions)
        self.cluster.create_topic(settings.predictions_out, partitions)
        if settings.name:
            self.cluster.create_topic(settings.checkpoint_topic, 1)
            self.cluster.create_topic(f"{settings.checkpoint_topic}.history", 1)

    def consumer(self, conf: dict[str, Any], on_error: Any) -> FakeConsumer:
        self.consumers.append(FakeConsumer(self.cluster, conf, on_error))
        return self.consumers[-1]

    def producer(self, conf: dict[str, Any], on_error: Any) -> FakeProducer:
        self.producers.append(FakeProducer(self.cluster, conf, on_error, self.script))
        return self.producers[-1]

    def checkpoint_store(self, key: SigningKey, topic: str, patience: float) -> FakeStore:
        self.stores.append(FakeStore(self.cluster, key, topic))
        return self.stores[-1]
