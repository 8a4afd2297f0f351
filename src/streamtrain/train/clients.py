"""How a trainer reaches Kafka: topic set-up, client configuration, clients, checkpoint store.

The :class:`~streamtrain.train.trainer.Trainer` gets everything Kafka through a
:class:`KafkaClients`, so unit tests can hand it fakes with the same methods and drive its
control paths (aborts, fencing, lost partitions, stuck commits) without a broker.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer

from streamtrain.config import KafkaSettings
from streamtrain.durations import parse_duration_ms
from streamtrain.errors import ConfigError
from streamtrain.kafka.clients import client_config, ensure_topic, require_topic
from streamtrain.state.history import ensure_history_topic, history_topic
from streamtrain.state.keys import SigningKey
from streamtrain.state.store import CheckpointStore, ensure_checkpoint_topic
from streamtrain.train.settings import TrainSettings

__all__ = [
    "CONSUMER_DEFAULTS",
    "KafkaClients",
    "consumer_config",
    "producer_config",
    "transactional_id",
]

# Throughput settings of the trainer's consumer; a user's own -X of the same key wins.
#
# librdkafka (2.x) stops fetching a partition once its local queue holds queued.min.messages
# (100,000) records or queued.max.messages.kbytes, and then looks again only after
# fetch.queue.backoff.ms, 1,000 ms by default. A consumer that drains 100,000 records in well
# under a second therefore idles out the rest of it: at most about 100,000 records/s plus one
# fetch, the 132k records/s of `make bench`'s consume-only with the defaults, against 519k with a
# 20 ms backoff. The backoff applies only while the queue is full (the trainer is behind), so a
# short one costs a queue check every 20 ms then, and nothing at a trickle (latency is set by
# fetch.wait.max.ms and the broker, not by this). 20 ms keeps a full queue from running dry
# (100,000 records last far longer than 20 ms) at 50 checks a second; a larger queue
# (queued.min.messages) would only hold more memory for the same effect.
# Measured with `python bench/consumer.py`; see README "Performance".
CONSUMER_DEFAULTS: dict[str, Any] = {"fetch.queue.backoff.ms": 20}

ErrorCallback = Callable[[KafkaError], None]


class KafkaClients:
    """The real thing: confluent-kafka clients for ``kafka``."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka = kafka

    def prepare_topics(self, settings: TrainSettings) -> None:
        """The input topic must exist (and a separate labels topic, co-partitioned with it for a
        partitioned model); outputs (and the checkpoint topic) are made if needed."""
        partitions = require_topic(self.kafka, settings.topic)
        labels = settings.separate_labels_topic
        if labels is not None:
            label_partitions = require_topic(self.kafka, labels)
            if settings.partitioned and label_partitions != partitions:
                raise ConfigError(
                    f"{settings.topic!r} has {partitions} partitions and {labels!r} has "
                    f"{label_partitions}: a partitioned model joins partition p of both, so "
                    "they must be co-partitioned (same partition count, keyed by id)"
                )
        ensure_topic(self.kafka, settings.dlq_topic, partitions=partitions)
        ensure_topic(self.kafka, settings.predictions_out, partitions=partitions)
        # Drift detections, promotions (and, for a named model, requests for them): records
        # keyed by model, read back in order from one partition.
        if settings.drift_policy() is not None or settings.challengers:
            ensure_topic(self.kafka, settings.events_topic, partitions=1)
        if settings.name:
            ensure_checkpoint_topic(self.kafka, settings.checkpoint_topic)
            ensure_history_topic(
                self.kafka,
                history_topic(settings.checkpoint_topic),
                parse_duration_ms(settings.keep_versions_for),
            )

    def consumer(self, conf: dict[str, Any], on_error: ErrorCallback) -> Consumer:
        tuned = with_consumer_defaults(conf, self.kafka.options)
        return Consumer(client_config(self.kafka, **tuned, error_cb=on_error))

    def producer(self, conf: dict[str, Any], on_error: ErrorCallback) -> Producer:
        return Producer(client_config(self.kafka, **conf, error_cb=on_error))

    def checkpoint_store(self, key: SigningKey, topic: str, patience: float) -> CheckpointStore:
        return CheckpointStore(self.kafka, key, topic, patience=patience)


def transactional_id(settings: TrainSettings) -> str | None:
    """One writer per model (a second trainer with the name fences the first), or for a
    partitioned model one per process (the group generation fences zombies, KIP-447)."""
    if not settings.name:
        return None
    if settings.partitioned:
        return f"streamtrain.{settings.name}.{uuid.uuid4().hex[:12]}"
    return f"streamtrain.{settings.name}"


def producer_config(settings: TrainSettings, txn_id: str | None) -> dict[str, Any]:
    conf: dict[str, Any] = {"enable.idempotence": True, "acks": "all", "linger.ms": 20}
    if txn_id is not None:
        conf["transactional.id"] = txn_id
        conf["transaction.timeout.ms"] = int(settings.transaction_timeout * 1000)
        conf["message.max.bytes"] = 64 * 1024 * 1024
        conf["compression.type"] = "zstd"
    return conf


def with_consumer_defaults(conf: dict[str, Any], options: Mapping[str, str]) -> dict[str, Any]:
    """``conf`` with :data:`CONSUMER_DEFAULTS` added for every key the user's ``-X``
    ``options`` do not set (``conf`` itself is applied after the options, so it must not
    carry a default the user set).

    >>> with_consumer_defaults({"group.id": "g"}, {})
    {'fetch.queue.backoff.ms': 20, 'group.id': 'g'}
    >>> with_consumer_defaults({"group.id": "g"}, {"fetch.queue.backoff.ms": "500"})
    {'group.id': 'g'}
    """
    defaults = {k: v for k, v in CONSUMER_DEFAULTS.items() if k not in options}
    return {**defaults, **conf}


def consumer_config(settings: TrainSettings, group: str) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": settings.start,
        # Never learn from records of aborted transactions.
        "isolation.level": "read_committed",
    }
    if settings.name and not settings.partitioned:
        # Static membership (KIP-345): a restarted trainer takes over its predecessor's
        # place in the group at once, instead of waiting out a killed member's session. One
        # id per set of topics read: the broker hands a static member that rejoins a stable
        # group its previous assignment, even for topics it no longer subscribes to (it does
        # not compare subscriptions, KAFKA-12759), and librdkafka takes it as is. With another
        # id, a trainer that reads other topics than the last run joins anew (after the last
        # run's member has timed out, if that was less than a session ago).
        topics = [settings.topic, settings.separate_labels_topic or ""]
        digest = hashlib.sha256("\0".join(topics).encode()).hexdigest()[:12]
        conf["group.instance.id"] = f"streamtrain.{settings.name}.{digest}"
    if settings.partitioned:
        # A dead process's tasks move after this long; shorter than the 45 s default so
        # that losing a trainer pauses its partitions for seconds, not most of a minute.
        conf["session.timeout.ms"] = int(settings.session_timeout * 1000)
        conf["heartbeat.interval.ms"] = max(int(settings.session_timeout * 1000) // 5, 500)
        if settings.separate_labels_topic is not None:
            # The range assignor gives partition p of co-partitioned topics to one member:
            # the task that joins them.
            conf["partition.assignment.strategy"] = "range"
    # These are applied after the raw -X options (client_config), so they win over them:
    # exactly-once and group membership rest on them. Throughput settings, which a user may
    # well tune, are CONSUMER_DEFAULTS instead, added under the -X options.
    return conf
