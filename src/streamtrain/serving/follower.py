"""Follow a named model in Kafka: its newest verified checkpoint, and its metrics records.

:class:`CheckpointFollower` tails the compacted checkpoint topic (``read_committed``, from the
beginning) on a background thread, verifies each newest checkpoint of the model's keys and
swaps the model in with one reference assignment. Readers call :meth:`current` once
per request and use that snapshot throughout, so a swap never drops or mixes a request. A
checkpoint that fails verification is logged and recorded, and the previous one stays served.

:class:`MetricsFollower` tails the metrics topic (format: :mod:`streamtrain.formats`) for the
model's records, keeps a bounded history of the whole run in memory (every recent record,
evenly spaced older ones) and pushes new ones to asyncio subscribers (the dashboard's
server-sent events) through the :class:`~streamtrain.serving.hub.MetricsHub` it is.

Which record keys belong to a model, and how their snapshots make one servable model, is
decided by :class:`ModelKeys` alone: the model's name, or a partitioned model's replicas (keys
``NAME/p0``, ``NAME/p1``, ..., served together as a
:class:`~streamtrain.serving.snapshot.ReplicaSet`).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from confluent_kafka import KafkaError

from streamtrain.config import KafkaSettings
from streamtrain.errors import NotAuthorized
from streamtrain.formats import DEFAULT_METRICS_TOPIC, decode_metrics_record, replica_partition
from streamtrain.kafka.reader import Fetch, Record, TopicReader
from streamtrain.serving.backfill import StartBound, sample_older
from streamtrain.serving.hub import DEFAULT_HISTORY, MetricsHub, Subscription
from streamtrain.serving.merge import ProcessMerger
from streamtrain.serving.snapshot import ModelSnapshot, ReplicaSet
from streamtrain.state.store import CheckpointStore

__all__ = [
    "CheckpointFollower",
    "MetricsFollower",
    "MetricsHub",
    "ModelKeys",
    "Rejection",
    "Servable",
    "SnapshotSource",
    "StaticSnapshotSource",
    "Subscription",
]

log = logging.getLogger(__name__)

# What a request predicts with: one model, or a partitioned model's replicas together.
Servable = ModelSnapshot | ReplicaSet

_RETRY_SECONDS = 1.0


@dataclasses.dataclass(frozen=True)
class ModelKeys:
    """Which checkpoint and metrics keys make up the model served under ``name``.

    The model is its name's checkpoint or, for a partitioned model, the replicas keyed
    ``NAME/p<partition>``; like :func:`~streamtrain.serving.snapshot.load_model`, a checkpoint
    under the plain name wins over replicas.
    """

    name: str

    def owns_checkpoint(self, key: str) -> bool:
        return key == self.name or replica_partition(key, self.name) is not None

    def checkpoint_partitions(self, partitions: int) -> list[int]:
        """Partitions of the checkpoint topic that may hold this model's keys."""
        if partitions == 1:
            return [0]
        # Replica keys hash anywhere and their number is not known up front: read them all.
        return list(range(partitions))

    def owns_metrics(self, key: str) -> bool:
        return key == self.name

    def assemble(self, newest: Mapping[str, ModelSnapshot]) -> Servable | None:
        """The servable model from the newest verified snapshot of each key, if any."""
        single = newest.get(self.name)
        if single is not None:
            return single
        replicas = sorted(
            (partition, snapshot)
            for key, snapshot in newest.items()
            if (partition := replica_partition(key, self.name)) is not None
        )
        if not replicas:
            return None
        return ReplicaSet(self.name, tuple(snapshot for _, snapshot in replicas))


@dataclasses.dataclass(frozen=True)
class Rejection:
    """A checkpoint that was read but not served."""

    key: str
    partition: int
    offset: int
    error: str
    at: float  # seconds since the epoch

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class SnapshotSource(Protocol):
    """Where the app gets the model to serve; :meth:`current` is called once per request."""

    def current(self) -> Servable | None: ...

    def status(self) -> dict[str, Any]: ...

    @property
    def swaps(self) -> int: ...

    @property
    def rejections(self) -> int: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class StaticSnapshotSource:
    """A fixed snapshot (or none): for tests and for embedding a model loaded elsewhere."""

    def __init__(self, snapshot: Servable | None = None) -> None:
        self.snapshot = snapshot
        self.swaps = 0 if snapshot is None else 1
        self.rejections = 0

    def set(self, snapshot: Servable | None) -> None:
        self.snapshot = snapshot
        self.swaps += 1

    def current(self) -> Servable | None:
        return self.snapshot

    def status(self) -> dict[str, Any]:
        return {"source": "static", "swaps": self.swaps, "last_rejection": None}

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class _TopicFollower:
    """A daemon thread that runs :meth:`_follow` until stopped, retrying after failures.

    A missing right is no failure to retry (it would wait for ever): the thread ends, keeps
    the refusal in :attr:`denied` and hands it to ``on_denied`` (serve stops with it).
    """

    what = "topic"  # names the thread and the log lines

    def __init__(
        self, keys: ModelKeys, on_denied: Callable[[NotAuthorized], None] | None = None
    ) -> None:
        self.keys = keys
        self.on_denied = on_denied
        self.denied: NotAuthorized | None = None
        self.last_error: str | None = None
        self.waiting_for_topic = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"{self.what}:{self.keys.name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow()
            except NotAuthorized as err:
                self.denied, self.last_error = err, str(err)
                if self.on_denied is not None:
                    self.on_denied(err)  # it tells the user
                else:
                    log.error("following %s of %r stopped: %s", self.what, self.keys.name, err)
                return
            except Exception as err:  # keep what we have; try again
                self.last_error = _log_failure(self.last_error, err, self.what, self.keys)
                self._stop.wait(_RETRY_SECONDS)

    def _follow(self) -> None:
        raise NotImplementedError

    def _fetched(self, fetch: Fetch) -> None:
        """Keep the client's last error until the broker answers again."""
        if fetch.error is not None:
            self.last_error = fetch.error.str()
        elif fetch.answered:
            self.last_error = None

    def _on_client_error(self, err: KafkaError) -> None:
        self.last_error = err.str()

    def _waiting(self, waiting: bool) -> None:
        self.waiting_for_topic = waiting


class CheckpointFollower(_TopicFollower):
    """Keeps the newest verified checkpoint of one model, following the topic live."""

    what = "checkpoints"

    def __init__(
        self,
        store: CheckpointStore,
        keys: ModelKeys,
        on_denied: Callable[[NotAuthorized], None] | None = None,
    ) -> None:
        super().__init__(keys, on_denied)
        self.store = store
        self._current: Servable | None = None
        self._newest: dict[str, ModelSnapshot] = {}
        self._opened: dict[str, tuple[int, int]] = {}  # key -> (partition, offset) last opened
        self._caught_up = threading.Event()
        self.swaps = 0
        self.rejections = 0
        self.last_rejection: Rejection | None = None
        self.swapped_at: float | None = None

    # -- what requests use ----------------------------------------------------------------

    def current(self) -> Servable | None:
        """The model to serve now (read the reference once and keep using it)."""
        return self._current

    def status(self) -> dict[str, Any]:
        return {
            "source": "kafka",
            "checkpoint_topic": self.store.topic,
            "caught_up": self._caught_up.is_set(),
            "waiting_for_topic": self.waiting_for_topic,
            "swaps": self.swaps,
            "swapped_at": self.swapped_at,
            "rejections": self.rejections,
            "last_rejection": self.last_rejection.to_json() if self.last_rejection else None,
            "last_error": self.last_error,
            "denied": str(self.denied) if self.denied is not None else None,
        }

    def wait_caught_up(self, timeout: float) -> bool:
        """Block until the topic was read to its end once; False on timeout."""
        return self._caught_up.wait(timeout)

    # -- the thread -----------------------------------------------------------------------

    def _follow(self) -> None:
        # Only the newest record per key is opened: catching up through hours of uncompacted
        # checkpoints must not unpickle every one of them.
        pending: dict[str, tuple[bytes | None, int, int]] = {}

        def apply(fetch: Fetch) -> None:
            self._fetched(fetch)
            for record in fetch.records:
                if record.key is not None and self.keys.owns_checkpoint(record.key):
                    pending[record.key] = (record.value, record.partition, record.offset)
            if not fetch.caught_up:
                return  # still catching up: only the newest of each key will be opened
            for key, (value, partition, offset) in pending.items():
                self._open(key, value, partition, offset)
            if pending:
                # Once per fetch: replicas committed together swap in together.
                self._swap()
            pending.clear()
            self._caught_up.set()

        self.store.reader.follow(
            self._stop,
            apply,
            select=self.keys.checkpoint_partitions,
            on_waiting=self._waiting,
            on_client_error=self._on_client_error,
            batch=100,
        )

    def _open(self, key: str, value: bytes | None, partition: int, offset: int) -> None:
        if self._opened.get(key, (partition, -1)) >= (partition, offset):
            return  # read again after a reconnect: already served or rejected
        self._opened[key] = (partition, offset)
        if value is None:
            # A tombstone deletes the key from the compacted topic, but serving on is safer
            # than going dark on a stray delete; a restart of serve drops the model.
            log.warning("checkpoint of %r deleted (tombstone); still serving the last one", key)
            return
        try:
            snapshot = ModelSnapshot.from_bytes(value, self.store, key)
            if snapshot.header.model_name != key:
                raise ValueError(
                    f"checkpoint under key {key!r} says it is model {snapshot.header.model_name!r}"
                )
        except Exception as err:  # verification failed, or the payload does not unpickle
            self.rejections += 1
            self.last_rejection = Rejection(key, partition, offset, str(err), time.time())
            log.warning("not serving checkpoint %s@%d:%d: %s", key, partition, offset, err)
            return
        self._newest[key] = snapshot

    def _swap(self) -> None:
        assembled = self.keys.assemble(self._newest)
        if assembled is None or assembled.version == getattr(self._current, "version", None):
            return
        self._current = assembled  # the swap: one reference assignment
        self.swaps += 1
        self.swapped_at = time.time()
        log.info("serving %r version %s", self.keys.name, assembled.version)


class MetricsFollower(_TopicFollower, MetricsHub):
    """A :class:`MetricsHub` fed from the metrics topic on a thread: at start, samples of the
    older records and the tail whole (:mod:`~streamtrain.serving.backfill`: a bounded read),
    then every new record; after a reconnect, from where it was."""

    what = "metrics"

    def __init__(
        self,
        kafka: KafkaSettings,
        keys: ModelKeys,
        topic: str = DEFAULT_METRICS_TOPIC,
        history: int = DEFAULT_HISTORY,
        on_denied: Callable[[NotAuthorized], None] | None = None,
    ) -> None:
        _TopicFollower.__init__(self, keys, on_denied)
        MetricsHub.__init__(self, history)
        self.kafka = kafka
        self.topic = topic
        self.reader = TopicReader(kafka, topic, what="metrics topic")
        self.undecodable = 0
        self.bound = StartBound.of_history(history)
        self.read_at_start = 0  # records fetched until first caught up (samples included)
        self.caught_up = threading.Event()
        self._next: dict[int, int] = {}  # partition -> next offset to read
        # Several processes of a partitioned model report separately: one series for them.
        self._merger = ProcessMerger()

    def stop(self, timeout: float = 10.0) -> None:
        _TopicFollower.stop(self, timeout)
        self.close_subscribers()

    def status(self) -> dict[str, Any]:
        return {
            "metrics_topic": self.topic,
            "records": self.received,
            "undecodable": self.undecodable,
            "waiting_for_topic": self.waiting_for_topic,
            "last_error": self.last_error,
            "denied": str(self.denied) if self.denied is not None else None,
        }

    def _follow(self) -> None:
        def start_at(partitions: list[int]) -> dict[int, int]:
            if not self._next:
                sampled, self._next = sample_older(
                    self.kafka, self.topic, partitions, self.bound, self.keys.owns_metrics,
                    on_read=self._read,
                )  # fmt: skip
                for record in sampled:
                    self._take(record)
            return dict(self._next)

        def apply(fetch: Fetch) -> None:
            self._fetched(fetch)
            if not self.caught_up.is_set():
                self._read(len(fetch.records))
            for record in fetch.records:
                self._next[record.partition] = record.offset + 1
                self._take(record)
            if fetch.caught_up:
                self.caught_up.set()

        # Records are keyed by model but spread by the producer's partitioner: read all.
        self.reader.follow(
            self._stop,
            apply,
            on_waiting=self._waiting,
            on_client_error=self._on_client_error,
            start_at=start_at,
        )

    def _read(self, records: int) -> None:
        self.read_at_start += records

    def _take(self, record: Record) -> None:
        if record.key is None or not self.keys.owns_metrics(record.key):
            return
        decoded = decode_metrics_record(record.value)
        if decoded is None:
            self.undecodable += 1
            return
        self.publish(self._merger.merge(decoded))


def _log_failure(previous: str | None, err: Exception, what: str, keys: ModelKeys) -> str:
    """Log a follower's failure once, not on every retry while the broker stays away."""
    text = f"{type(err).__name__}: {err}"
    level = logging.DEBUG if text == previous else logging.WARNING
    log.log(level, "following %s of %r failed (retrying): %s", what, keys.name, err)
    return text
