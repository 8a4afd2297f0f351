"""``models rollback``: make a kept version a named model's newest checkpoint again.

The new checkpoint is written as the model's own transactional writer (``streamtrain.NAME``,
the trainer's transactional id), so starting the write fences a running trainer exactly as a
second trainer would: its next commit fails, it exits with code 6 ("taken over by another
trainer") and, restarted by its supervisor, resumes from the rolled-back checkpoint. Fencing
first also settles any open transaction of that trainer, so the checkpoint read next is the
last one anybody will commit before ours.

Two ways to go on from the restored state:

- ``replay``: the old version's offsets too. The next run learns again every event since,
  ending bit-identical to a model that was never rolled forward.
- ``skip``: the current offsets. The old state resumes at the stream's present position; the
  events in between are never learned by it.

The rolled-back checkpoint is a new version (``sequence`` one more than the newest) with
``restored_from`` naming the version it restored, and goes to the history topic as well.
The trainer positions itself on a checkpoint's offsets, not its consumer group's, so nothing
else needs changing.
"""

from __future__ import annotations

import dataclasses
import enum
import time

from confluent_kafka import KafkaException, Producer

from streamtrain.config import KafkaSettings
from streamtrain.errors import ConfigError, StreamtrainError
from streamtrain.formats import replica_partition
from streamtrain.kafka.clients import client_config
from streamtrain.state.envelope import CheckpointHeader, seal
from streamtrain.state.history import VersionNotKept, history_topic, kept_version
from streamtrain.state.keys import SigningKey
from streamtrain.state.store import MAX_CHECKPOINT_BYTES, CheckpointStore, checkpoint_partition

__all__ = ["Resume", "rollback"]

_TIMEOUT = 60.0


class Resume(enum.Enum):
    """Where a rolled-back model goes on learning."""

    REPLAY = "replay"  # the old version's offsets
    SKIP = "skip"  # the current offsets


def rollback(
    kafka: KafkaSettings,
    key: SigningKey,
    checkpoint_topic: str,
    name: str,
    version: int,
    resume: Resume,
) -> CheckpointHeader:
    """Commit version ``version`` of ``name`` as its newest checkpoint; the header written.

    An unknown model or a version not (or no longer) kept raises
    :class:`~streamtrain.state.history.VersionNotKept` before anything is written or fenced.
    """
    store = CheckpointStore(kafka, key, checkpoint_topic)
    history = CheckpointStore(kafka, key, history_topic(checkpoint_topic))
    partitioned = ConfigError(
        f"{name!r} is partitioned (or one of its replicas): rollback takes a single model's "
        "name (its replicas' versions are not one model-wide version; see the README)"
    )
    if "/" in name:  # a replica's key: fencing streamtrain.NAME/pN would fence nobody
        raise partitioned
    if store.latest(name) is None:
        if any(replica_partition(k, name) is not None for k in store.all_latest()):
            raise partitioned
        raise VersionNotKept(f"no checkpoint of model {name!r} in {checkpoint_topic!r}")
    old = kept_version(history, name, version)
    producer = _fence(kafka, name)
    try:
        current = store.latest(name)  # nobody else commits now: this is the newest for good
        assert current is not None  # checkpoints are never deleted from the compacted topic
        header = dataclasses.replace(
            old.header,
            offsets=current.header.offsets if resume is Resume.SKIP else old.header.offsets,
            created_at=time.time(),
            sequence=current.header.sequence + 1,
            restored_from=version,
        )
        envelope = seal(header, old.payload, key)
        producer.begin_transaction()
        for topic, reader in ((checkpoint_topic, store), (history.topic, history)):
            partition = checkpoint_partition(name, reader.partitions() or 1)
            producer.produce(topic, envelope, name, partition=partition)
        producer.commit_transaction(_TIMEOUT)
    except KafkaException as err:
        raise StreamtrainError(f"rollback of model {name!r} failed: {err.args[0]}") from err
    finally:
        producer.flush(5)
    return header


def _fence(kafka: KafkaSettings, name: str) -> Producer:
    """The model's transactional producer, initialised: older writers of the id are fenced."""
    producer = Producer(
        client_config(
            kafka,
            **{
                "transactional.id": f"streamtrain.{name}",
                "enable.idempotence": True,
                "acks": "all",
                "message.max.bytes": MAX_CHECKPOINT_BYTES,
                "compression.type": "zstd",
            },
        )
    )
    try:
        producer.init_transactions(_TIMEOUT)
    except KafkaException as err:
        raise StreamtrainError(f"cannot take over model {name!r}'s writer: {err.args[0]}") from err
    return producer
