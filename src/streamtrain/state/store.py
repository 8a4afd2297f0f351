"""The checkpoint topic: a compacted topic keyed by model name, written transactionally.

Each model's checkpoints go to one partition chosen by a hash of its key that this module owns
(crc32, not the client's partitioner), so a reader scans one partition to find a model's
latest state. Compaction keeps the newest record per key.
"""

from __future__ import annotations

import time
import uuid
import zlib
from collections.abc import Iterator

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from streamtrain.config import KafkaSettings
from streamtrain.errors import StreamtrainError
from streamtrain.formats import DEFAULT_CHECKPOINT_TOPIC
from streamtrain.kafka.clients import client_config, ensure_topic, partition_count, wait_for_cluster
from streamtrain.state.envelope import OpenedCheckpoint, open_envelope
from streamtrain.state.keys import SigningKey

__all__ = [
    "CHECKPOINT_TOPIC_CONFIG",
    "DEFAULT_CHECKPOINT_TOPIC",
    "MAX_CHECKPOINT_BYTES",
    "CheckpointStore",
    "checkpoint_partition",
    "ensure_checkpoint_topic",
]

MAX_CHECKPOINT_BYTES = 64 * 1024 * 1024

CHECKPOINT_TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    "max.message.bytes": str(MAX_CHECKPOINT_BYTES),
    # Roll segments hourly so compaction can drop old checkpoints (it never touches the
    # active segment).
    "segment.ms": str(60 * 60 * 1000),
    "min.cleanable.dirty.ratio": "0.1",
}


def checkpoint_partition(key: str, partitions: int) -> int:
    return zlib.crc32(key.encode()) % partitions


def ensure_checkpoint_topic(kafka: KafkaSettings, topic: str = DEFAULT_CHECKPOINT_TOPIC) -> int:
    """Create the compacted checkpoint topic if needed; return its partition count."""
    ensure_topic(kafka, topic, partitions=1, config=dict(CHECKPOINT_TOPIC_CONFIG))
    count = partition_count(wait_for_cluster(kafka), topic)
    if count is None:
        raise StreamtrainError(f"checkpoint topic {topic!r} could not be created")
    return count


def _log_ends(kafka: KafkaSettings, topic: str, partitions: list[int]) -> dict[int, int]:
    """High watermarks *including* undecided transactional records.

    A read_committed client is told the last stable offset instead, which stops short of a
    transaction whose commit was acknowledged but whose markers are not written yet: reading
    only to there could miss a checkpoint committed a moment ago.
    """
    consumer = Consumer(
        client_config(
            kafka,
            **{
                "group.id": f"streamtrain.reader.{uuid.uuid4().hex[:12]}",
                "isolation.level": "read_uncommitted",
            },
        )
    )
    try:
        return {
            p: consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=kafka.connect_timeout
            )[1]
            for p in partitions
        }
    finally:
        consumer.close()


def _scan(
    kafka: KafkaSettings, topic: str, partitions: list[int], patience: float
) -> Iterator[tuple[str, bytes | None]]:
    """Every committed (key, value) in ``partitions``, up to the log end as of now.

    Waits until every transaction with records before that end is decided (committed records
    are read, aborted ones skipped), for at most ``patience`` seconds without progress: a
    crashed writer's transaction stays open until the broker times it out.
    """
    ends = _log_ends(kafka, topic, partitions)
    targets = {p: end for p, end in ends.items() if end > 0}
    if not targets:
        return
    consumer = Consumer(
        client_config(
            kafka,
            **{
                "group.id": f"streamtrain.reader.{uuid.uuid4().hex[:12]}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.message.max.bytes": MAX_CHECKPOINT_BYTES,
            },
        )
    )
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in targets])
        pending = dict(targets)
        last_progress = time.monotonic()
        while pending:
            msg = consumer.poll(0.2)
            if msg is not None:
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise KafkaException(err)
                else:
                    last_progress = time.monotonic()
                    key = msg.key()
                    if key is not None:
                        yield key.decode("utf-8", "replace"), msg.value()
            # Control records and aborted data move the position without a message.
            for tp in consumer.position([TopicPartition(topic, p) for p in pending]):
                if tp.offset >= pending[tp.partition]:
                    del pending[tp.partition]
                    last_progress = time.monotonic()
            if pending and time.monotonic() - last_progress > max(patience, kafka.connect_timeout):
                raise StreamtrainError(
                    f"timed out reading checkpoint topic {topic!r}: partitions "
                    f"{sorted(pending)} hold a transaction that is still undecided"
                )
    finally:
        consumer.close()


class CheckpointStore:
    """Reads checkpoints back; writing happens inside the trainer's transactions."""

    def __init__(
        self,
        kafka: KafkaSettings,
        key: SigningKey,
        topic: str = DEFAULT_CHECKPOINT_TOPIC,
        *,
        patience: float = 60.0,
    ) -> None:
        self.kafka = kafka
        self.key = key
        self.topic = topic
        # A crashed trainer's open transaction holds read_committed readers back until the
        # broker aborts it (transaction timeout); wait that long before giving up.
        self.patience = patience

    def partitions(self) -> int | None:
        return partition_count(wait_for_cluster(self.kafka), self.topic)

    def latest_raw(self, name: str) -> bytes | None:
        """The newest committed checkpoint bytes of ``name``, unverified; None if none."""
        latest: bytes | None = None
        for _, value in self._records_of([name]):
            latest = value
        return latest

    def latest(self, name: str) -> OpenedCheckpoint | None:
        """The newest committed, verified checkpoint of ``name``, or None if it has none.

        A newest checkpoint that fails verification raises
        :class:`~streamtrain.state.envelope.CheckpointRejected`: falling back to an older one
        or to a fresh model would silently forget learned state.
        """
        raw = self.latest_raw(name)
        if raw is None:
            return None
        return open_envelope(raw, self.key, what=f"checkpoint of model {name!r}")

    def latest_many(self, names: list[str]) -> dict[str, OpenedCheckpoint]:
        """Verified newest checkpoints of ``names`` (absent ones are left out), in one scan."""
        raw = dict(self._records_of(names))  # the last record of each key wins
        return {
            key: open_envelope(value, self.key, what=f"checkpoint of {key!r}")
            for key, value in raw.items()
            if value is not None
        }

    def history(self, names: list[str]) -> Iterator[OpenedCheckpoint]:
        """Every committed, verified checkpoint of ``names`` still in the topic, oldest first.

        Compaction keeps only the newest per key in the long run; until a segment is cleaned,
        this is the full record of how a model got where it is (used to audit forks).
        """
        for key, value in self._records_of(names):
            if value is not None:
                yield open_envelope(value, self.key, what=f"checkpoint of {key!r}")

    def _records_of(self, names: list[str]) -> Iterator[tuple[str, bytes | None]]:
        """The committed records keyed by ``names``, in log order; only their partitions
        are read."""
        count = self.partitions()
        if count is None or not names:
            return
        wanted = set(names)
        partitions = sorted({checkpoint_partition(n, count) for n in wanted})
        for key, value in _scan(self.kafka, self.topic, partitions, self.patience):
            if key in wanted:
                yield key, value

    def all_latest(self) -> dict[str, bytes | None]:
        """Newest raw checkpoint per model name across the topic."""
        count = self.partitions()
        if count is None:
            return {}
        latest: dict[str, bytes | None] = {}
        for key, value in _scan(self.kafka, self.topic, list(range(count)), self.patience):
            latest[key] = value
        return {k: v for k, v in latest.items() if v is not None}
