"""Build confluent-kafka clients from :class:`KafkaSettings`, with bounded waits.

librdkafka retries an unreachable broker forever and logs every failed attempt; a command must
instead say clearly, within ``connect_timeout``, that nobody answered. Every client built here
routes librdkafka's own log lines to the ``streamtrain.librdkafka`` logger (quiet unless
``--verbose``) instead of stderr.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata, NewTopic

from streamtrain.config import KafkaSettings
from streamtrain.errors import BrokerUnreachable, NotAuthenticated, StreamtrainError, TopicMissing
from streamtrain.kafka.authz import is_denied, not_authorized

LIBRDKAFKA_LOGGER = logging.getLogger("streamtrain.librdkafka")


def client_config(settings: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    conf = settings.client_config(**overrides)
    conf.setdefault("logger", LIBRDKAFKA_LOGGER)
    return conf


class _Admin(AdminClient):
    """An admin client that keeps the last login failure librdkafka reported: a broker that
    refuses the credentials otherwise looks like one that does not answer."""

    def __init__(self, conf: dict[str, Any]) -> None:
        self.login_failure: KafkaError | None = None
        theirs = conf.get("error_cb")

        def on_error(err: KafkaError) -> None:
            if err.code() in _LOGIN_FAILURES:
                self.login_failure = err
            if theirs is not None:
                theirs(err)

        merged: dict[str, Any] = {**conf, "error_cb": on_error}
        super().__init__(merged)


_LOGIN_FAILURES = frozenset({KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED})


def admin_client(settings: KafkaSettings) -> AdminClient:
    return _Admin(client_config(settings))


def wait_for_cluster(settings: KafkaSettings, admin: AdminClient | None = None) -> ClusterMetadata:
    """Return cluster metadata, or raise :class:`BrokerUnreachable` after ``connect_timeout``
    (:class:`NotAuthenticated` if the broker refused the login)."""
    admin = admin or admin_client(settings)
    try:
        return admin.list_topics(timeout=settings.connect_timeout)
    except KafkaException as err:
        admin.poll(0)  # error callbacks run only when served
        refused = getattr(admin, "login_failure", None)
        if refused is not None:
            raise NotAuthenticated(
                f"the broker at {settings.bootstrap_servers} refused the login "
                f"({refused.name()}): check sasl.username and sasl.password",
                refused,
            ) from None
        raise BrokerUnreachable(
            f"no Kafka broker answered at {settings.bootstrap_servers} within "
            f"{settings.connect_timeout:g}s ({_short(err)}); is it running? "
            "`streamtrain broker up` starts a local one"
        ) from None


def partition_count(metadata: ClusterMetadata, topic: str) -> int | None:
    """Partitions of ``topic`` in ``metadata``, or ``None`` when it does not exist."""
    meta = metadata.topics.get(topic)
    if meta is None:
        return None
    # A topic-level error other than "unknown" (a leader being elected after a broker crash)
    # still describes a topic that exists: counted as missing, it would be created again.
    if meta.error is not None and (meta.error.code() in _ABSENT or not meta.partitions):
        return None
    return len(meta.partitions)


# What a topic's metadata says when it is not there, or not there for us.
_ABSENT = frozenset({KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.TOPIC_AUTHORIZATION_FAILED})


def require_topic(settings: KafkaSettings, topic: str) -> int:
    """Partition count of an existing topic; :class:`TopicMissing` when absent."""
    count = partition_count(wait_for_cluster(settings), topic)
    if count is None:
        check_visible(settings, topic, "reading a topic", "READ")
        raise TopicMissing(
            f"topic {topic!r} does not exist at {settings.bootstrap_servers} "
            "(`streamtrain produce` creates it)"
        )
    return count


def ensure_topic(
    settings: KafkaSettings,
    topic: str,
    *,
    partitions: int = 1,
    replication_factor: int = -1,
    config: dict[str, str] | None = None,
    admin: AdminClient | None = None,
) -> bool:
    """Create ``topic`` if it is missing; True when this call created it.

    ``replication_factor=-1`` takes the broker's ``default.replication.factor``.
    """
    admin = admin or admin_client(settings)
    if partition_count(wait_for_cluster(settings, admin), topic) is not None:
        return False
    # Invisible may mean forbidden (listing all topics leaves those out): say so, not "create".
    check_visible(settings, topic, "writing a topic", "WRITE")
    new = NewTopic(
        topic,
        num_partitions=partitions,
        replication_factor=replication_factor,
        config=config or {},
    )
    future = admin.create_topics([new], operation_timeout=settings.connect_timeout)[topic]
    created = True
    try:
        future.result(timeout=settings.connect_timeout + 5)
    except TimeoutError:
        # No answer (a controller being elected): whether it was created shows below.
        created = False
    except KafkaException as err:
        inner = err.args[0] if err.args else None
        if is_denied(inner):
            raise not_authorized(
                inner, "creating a topic", topics=[topic], topic_right="CREATE"
            ) from err
        if not (inner is not None and inner.code() == KafkaError.TOPIC_ALREADY_EXISTS):
            raise
        created = False  # another process won the race; that is fine
    # The broker answers CreateTopics before its metadata shows the topic everywhere; callers
    # read the partition count next, so wait (bounded) until it is visible.
    deadline = time.monotonic() + settings.connect_timeout
    while (
        partition_count(admin.list_topics(topic, timeout=settings.connect_timeout), topic) is None
    ):
        if time.monotonic() > deadline:
            raise StreamtrainError(
                f"topic {topic!r} was created but does not show up"
                if created
                else f"topic {topic!r} could not be created: the cluster did not answer in time"
            )
        time.sleep(0.1)
    return created


def check_visible(settings: KafkaSettings, topic: str, doing: str, right: str) -> None:
    """Raise :class:`NotAuthorized` if ``topic`` is hidden from us by a missing right.

    Asked for by name, a broker tells a forbidden topic from a missing one. Auto-creation is
    off for this one request, so asking never creates the topic.
    """
    admin = AdminClient(client_config(settings, **{"allow.auto.create.topics": False}))
    try:
        meta = admin.list_topics(topic, timeout=settings.connect_timeout).topics.get(topic)
    except KafkaException:
        return  # the caller's own checks report an unreachable broker
    if meta is not None and is_denied(meta.error):
        raise not_authorized(meta.error, doing, topics=[topic], topic_right=right)


def _short(err: KafkaException) -> str:
    inner = err.args[0] if err.args else err
    if isinstance(inner, KafkaError):
        return inner.str()
    return str(inner)
