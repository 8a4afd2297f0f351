"""The checkpoint topic: a compacted topic keyed by model name, written transactionally.

Each model's checkpoints go to one partition chosen by a hash of its key that this module owns
(crc32, not the client's partitioner), so a reader scans one partition to find a model's
latest state. Compaction keeps the newest record per key.
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Iterator

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from streamtrain.config import KafkaSettings
from streamtrain.errors import StreamtrainError
from streamtrain.kafka.clients import client_config, ensure_topic, partition_count, wait_for_cluster
from streamtrain.state.envelope import OpenedCheckpoint, open_envelope
from streamtrain.state.keys import SigningKey

DEFAULT_CHECKPOINT_TOPIC = "streamtrain.checkpoints"
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


def _scan(
    kafka: KafkaSettings, topic: str, partitions: list[int], patience: float
) -> Iterator[tuple[str, bytes | None]]:
    """Every committed (key, value) in ``partitions``, from the start to the current end."""
    consumer = Consumer(
        client_config(
            kafka,
            **{
                "group.id": f"streamtrain.reader.{uuid.uuid4().hex[:12]}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
                "fetch.message.max.bytes": MAX_CHECKPOINT_BYTES,
            },
        )
    )
    try:
        pending = set()
        assignment = []
        for p in partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=kafka.connect_timeout
            )
            if high > low:
                pending.add(p)
                assignment.append(TopicPartition(topic, p, OFFSET_BEGINNING))
        if not assignment:
            return
        consumer.assign(assignment)
        idle_polls = 0
        while pending:
            msg = consumer.poll(1.0)
            if msg is None:
                idle_polls += 1
                if idle_polls > max(patience, kafka.connect_timeout):
                    raise StreamtrainError(
                        f"timed out reading checkpoint topic {topic!r} "
                        f"(partitions still unread: {sorted(pending)})"
                    )
                continue
            idle_polls = 0
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
                    continue
                raise KafkaException(err)
            key = msg.key()
            if key is not None:
                yield key.decode("utf-8", "replace"), msg.value()
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
        count = self.partitions()
        if count is None:
            return None
        latest: bytes | None = None
        partition = checkpoint_partition(name, count)
        for key, value in _scan(self.kafka, self.topic, [partition], self.patience):
            if key == name:
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
        count = self.partitions()
        if count is None or not names:
            return {}
        wanted = set(names)
        partitions = sorted({checkpoint_partition(n, count) for n in wanted})
        raw: dict[str, bytes | None] = {}
        for key, value in _scan(self.kafka, self.topic, partitions, self.patience):
            if key in wanted:
                raw[key] = value
        return {
            key: open_envelope(value, self.key, what=f"checkpoint of {key!r}")
            for key, value in raw.items()
            if value is not None
        }

    def all_latest(self) -> dict[str, bytes | None]:
        """Newest raw checkpoint per model name across the topic."""
        count = self.partitions()
        if count is None:
            return {}
        latest: dict[str, bytes | None] = {}
        for key, value in _scan(self.kafka, self.topic, list(range(count)), self.patience):
            latest[key] = value
        return {k: v for k, v in latest.items() if v is not None}
