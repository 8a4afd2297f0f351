"""The checkpoint topic: a compacted topic keyed by model name, written transactionally.

Each model's checkpoints go to one partition chosen by a hash of its key that this module owns
(crc32, not the client's partitioner), so a reader scans one partition to find a model's
latest state. Compaction keeps the newest record per key.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

from streamtrain.config import KafkaSettings
from streamtrain.errors import StreamtrainError, TopicMissing
from streamtrain.formats import DEFAULT_CHECKPOINT_TOPIC
from streamtrain.kafka.clients import ensure_topic, partition_count, wait_for_cluster
from streamtrain.kafka.reader import Select, TopicReader
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
        self.reader = TopicReader(
            kafka, topic, what="checkpoint topic", max_record_bytes=MAX_CHECKPOINT_BYTES
        )

    def partitions(self) -> int | None:
        return self.reader.partitions()

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
        if not names:
            return
        wanted = set(names)
        for key, value in self._scan(
            lambda count: {checkpoint_partition(n, count) for n in wanted}
        ):
            if key in wanted:
                yield key, value

    def all_latest(self) -> dict[str, bytes | None]:
        """Newest raw checkpoint per model name across the topic."""
        latest = dict(self._scan(range))  # the last record of each key wins
        return {k: v for k, v in latest.items() if v is not None}

    def _scan(self, select: Select) -> Iterator[tuple[str, bytes | None]]:
        """Every committed, keyed record of the chosen partitions up to the log end as of now;
        nothing when the topic does not exist."""
        try:
            for record in self.reader.read_to_end(select, patience=self.patience):
                if record.key is not None:
                    yield record.key, record.value
        except TopicMissing:
            return
