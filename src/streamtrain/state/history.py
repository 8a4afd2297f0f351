"""Every checkpoint a named model commits, kept for a retention the user sets.

The checkpoint topic is compacted: in the long run it keeps only each model's newest record.
So the checkpoint transaction also writes the same signed envelope to a history topic,
``<checkpoint-topic>.history`` (:func:`history_topic`), whose cleanup policy is ``delete``
with ``retention.ms`` from ``train --keep-versions-for``: every version stays findable for that
long, and none is half-written (same transaction, so exactly-once like the checkpoint itself).

A version is the header's ``sequence``: 1 for a model's first checkpoint, one more for each
next (a rollback writes a new version too, with ``restored_from`` naming the one it restored).

``train --keep-versions N`` also bounds them by count: only a model's newest N versions in the
history topic are *kept* — listed by ``models history``, accepted by ``rollback``, ``serve
--pin`` and ``predict --pin``. Kafka has no retention by count, so the older records stay on
the topic until ``--keep-versions-for`` drops them; the count is the trainer's setting, saved in
each checkpoint's payload (``keep_versions``), and the newest checkpoint's applies
(:func:`keep_count`).

>>> history_topic("streamtrain.checkpoints")
'streamtrain.checkpoints.history'
"""

from __future__ import annotations

from streamtrain.config import KafkaSettings
from streamtrain.errors import StreamtrainError
from streamtrain.kafka.clients import ensure_topic, partition_count, wait_for_cluster
from streamtrain.state.envelope import OpenedCheckpoint, load_state
from streamtrain.state.store import MAX_CHECKPOINT_BYTES, CheckpointStore

__all__ = [
    "DEFAULT_KEEP_VERSIONS_FOR",
    "VersionNotKept",
    "ensure_history_topic",
    "history_topic",
    "keep_count",
    "kept_version",
    "kept_versions",
]

DEFAULT_KEEP_VERSIONS_FOR = "168h"  # a week


class VersionNotKept(StreamtrainError):
    """A model or version the history topic does not hold (never was, or retention dropped it)."""

    exit_code = 4


def history_topic(checkpoint_topic: str) -> str:
    return f"{checkpoint_topic}.history"


def ensure_history_topic(kafka: KafkaSettings, topic: str, retention_ms: int) -> int:
    """Create the history topic if needed (``retention.ms`` set then); its partition count.

    An existing topic keeps its retention: change it with the broker's config tools.
    """
    config = {
        "cleanup.policy": "delete",
        "retention.ms": str(retention_ms),
        "max.message.bytes": str(MAX_CHECKPOINT_BYTES),
    }
    ensure_topic(kafka, topic, partitions=1, config=config)
    count = partition_count(wait_for_cluster(kafka), topic)
    if count is None:
        raise StreamtrainError(f"history topic {topic!r} could not be created")
    return count


def kept_versions(history: CheckpointStore, name: str) -> list[OpenedCheckpoint]:
    """The verified versions of ``name`` still in the history topic, oldest first.

    Raises :class:`VersionNotKept` when there is none.
    """
    versions = list(history.history([name]))
    keep = keep_count(history, name) if versions else None
    if keep is not None:
        versions = versions[-keep:]
    if not versions:
        raise VersionNotKept(
            f"no kept versions of model {name!r} in {history.topic!r} (a named model's "
            "checkpoints are kept there since this release, for train --keep-versions-for)"
        )
    return versions


def keep_count(history: CheckpointStore, name: str) -> int | None:
    """The ``--keep-versions`` count in ``name``'s newest checkpoint (None: no count)."""
    suffix = history_topic("")
    if not history.topic.endswith(suffix):
        return None
    store = CheckpointStore(history.kafka, history.key, history.topic[: -len(suffix)])
    opened = store.latest(name)
    keep = None if opened is None else load_state(opened).get("keep_versions")
    return keep if isinstance(keep, int) and keep > 0 else None


def kept_version(history: CheckpointStore, name: str, version: int) -> OpenedCheckpoint:
    """Version ``version`` of ``name``; :class:`VersionNotKept` if it is not (or no longer) kept.

    A version is written once per committed transaction, so the first match is the only one.
    """
    versions = kept_versions(history, name)
    for opened in versions:
        if opened.header.sequence == version:
            return opened
    numbers = [v.header.sequence for v in versions]
    raise VersionNotKept(
        f"version {version} of model {name!r} is not kept (kept: {numbers[0]}..{numbers[-1]})"
    )
