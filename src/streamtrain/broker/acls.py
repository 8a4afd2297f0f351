"""The least Kafka ACLs each streamtrain command needs, and writing them as the super user.

The resource names follow the code that uses them: the trainer's consumer group
(``train/trainer.py``), its transactional id (``train/clients.py``), the output topics
(``train/settings.py``), the checkpoint and metrics topics (``formats.py``) and the readers'
throw-away group ids (``kafka/reader.py``). READ and WRITE imply DESCRIBE in Kafka, so it is
never granted on its own where one of them is. Since Kafka 3.0 an idempotent producer needs
WRITE on a topic, not IDEMPOTENT_WRITE on the cluster (KIP-679), so nobody gets a cluster right.

>>> for acl in command_acls("produce", topic="clicks"):
...     print(acl)
topic clicks: WRITE, CREATE
>>> for acl in command_acls("train", topic="clicks", name="ctr"):
...     print(acl)
topic clicks: READ
topic clicks.dlq: WRITE, CREATE
topic clicks.predictions: WRITE, CREATE
topic streamtrain.metrics: WRITE, CREATE
topic streamtrain.events: WRITE, CREATE
topic streamtrain.checkpoints: READ, WRITE, CREATE
topic streamtrain.checkpoints.history: READ, WRITE, CREATE
topic streamtrain.events: READ
group streamtrain.ctr: READ
transactional-id streamtrain.ctr: WRITE
group streamtrain.reader.*: DESCRIBE
>>> for acl in command_acls("models", topic=""):
...     print(acl)
topic streamtrain.checkpoints: READ
topic streamtrain.checkpoints.history: READ
topic streamtrain.events: WRITE, CREATE
group streamtrain.reader.*: DESCRIBE
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streamtrain.errors import ConfigError
from streamtrain.formats import (
    DEFAULT_CHECKPOINT_TOPIC,
    DEFAULT_EVENTS_TOPIC,
    DEFAULT_METRICS_TOPIC,
)
from streamtrain.kafka.reader import READER_GROUP_PREFIX

if TYPE_CHECKING:
    from confluent_kafka.admin import AclBinding

COMMANDS = ("train", "produce", "serve", "models")
# Readers of the checkpoint and metrics topics (kafka/reader.py) take a fresh group id under
# READER_GROUP_PREFIX; they only assign partitions and never join nor commit, but librdkafka
# still looks the group's coordinator up, which needs DESCRIBE on it.
EPHEMERAL_GROUP_PREFIX = "streamtrain.ephemeral."
"""An unnamed trainer's fresh consumer group; it commits no offsets."""


@dataclass(frozen=True)
class Acl:
    """ALLOW ``operations`` on one resource (a literal name, or every name with a prefix)."""

    resource: str
    """``topic``, ``group`` or ``transactional-id``."""
    name: str
    operations: tuple[str, ...]
    prefixed: bool = False

    def __str__(self) -> str:
        star = "*" if self.prefixed else ""
        return f"{self.resource} {self.name}{star}: {', '.join(self.operations)}"

    def bindings(self, principal: str) -> list[AclBinding]:
        """One confluent-kafka binding per operation, for ``principal`` from any host."""
        from confluent_kafka.admin import (
            AclBinding,
            AclOperation,
            AclPermissionType,
            ResourcePatternType,
            ResourceType,
        )

        kind = {
            "topic": ResourceType.TOPIC,
            "group": ResourceType.GROUP,
            "transactional-id": ResourceType.TRANSACTIONAL_ID,
        }[self.resource]
        pattern = ResourcePatternType.PREFIXED if self.prefixed else ResourcePatternType.LITERAL
        return [
            AclBinding(
                kind,
                self.name,
                pattern,
                principal,
                "*",
                AclOperation[operation],
                AclPermissionType.ALLOW,
            )
            for operation in self.operations
        ]


def command_acls(
    command: str,
    *,
    topic: str,
    name: str | None = None,
    labels_topic: str | None = None,
    group: str | None = None,
    partitioned: bool = False,
    log_topic: str | None = None,
    checkpoint_topic: str = DEFAULT_CHECKPOINT_TOPIC,
    metrics_topic: str = DEFAULT_METRICS_TOPIC,
) -> list[Acl]:
    """The ACLs ``command`` needs with these options (their defaults as the command has them).

    ``topic`` is train's input or produce's output; serve reads the checkpoint and metrics
    topics and writes its ``log_topic`` and ``labels_topic`` when it has them; ``models``
    (listing, ``history``, ``predict`` too, and the requests ``promote``, ``add-challenger``,
    ``remove-challenger``) reads the checkpoint topics and writes requests to the events
    topic. ``models rollback`` writes as the model's trainer: ``train``'s rights.
    """
    if command not in COMMANDS:
        raise ConfigError(f"ACLs are known for {', '.join(COMMANDS)}, not {command!r}")
    writes = ("WRITE", "CREATE")  # CREATE: each command creates its missing output topics
    if command == "produce":
        return [Acl("topic", t, writes) for t in _present(topic, labels_topic)]
    if command == "models":
        return [
            Acl("topic", checkpoint_topic, ("READ",)),
            Acl("topic", f"{checkpoint_topic}.history", ("READ",)),  # models history, --pin
            Acl("topic", DEFAULT_EVENTS_TOPIC, writes),  # requests to the trainers
            Acl("group", READER_GROUP_PREFIX, ("DESCRIBE",), prefixed=True),
        ]
    if command == "serve":
        if not name:
            raise ConfigError("serve serves a named model: give --name")
        acls = [
            Acl("topic", checkpoint_topic, ("READ",)),
            Acl("topic", f"{checkpoint_topic}.history", ("READ",)),  # serve --pin
            Acl("topic", metrics_topic, ("READ",)),
        ]
        acls += [Acl("topic", t, writes) for t in _present(log_topic, labels_topic)]
        return [*acls, Acl("group", READER_GROUP_PREFIX, ("DESCRIBE",), prefixed=True)]
    if partitioned and not name:
        raise ConfigError("--partitioned needs --name: partitioned state is always durable")
    acls = [Acl("topic", t, ("READ",)) for t in _present(topic, labels_topic)]
    acls += [
        Acl("topic", f"{topic}.dlq", writes),
        Acl("topic", f"{topic}.predictions", writes),
        Acl("topic", metrics_topic, writes),
        Acl("topic", DEFAULT_EVENTS_TOPIC, writes),  # drift detections (train --drift)
    ]
    if name:
        acls += [
            Acl("topic", checkpoint_topic, ("READ", "WRITE", "CREATE")),
            Acl("topic", f"{checkpoint_topic}.history", ("READ", "WRITE", "CREATE")),
            Acl("topic", DEFAULT_EVENTS_TOPIC, ("READ",)),  # requests (`models promote`, ...)
            Acl("group", group or f"streamtrain.{name}", ("READ",)),
            # One id per model, or per process of a partitioned one (a random suffix).
            Acl(
                "transactional-id",
                f"streamtrain.{name}" + ("." if partitioned else ""),
                ("WRITE",),
                prefixed=partitioned,
            ),
            Acl("group", READER_GROUP_PREFIX, ("DESCRIBE",), prefixed=True),
        ]
    elif group:
        acls.append(Acl("group", group, ("READ",)))
    else:
        acls.append(Acl("group", EPHEMERAL_GROUP_PREFIX, ("READ",), prefixed=True))
    return acls


def _present(*topics: str | None) -> list[str]:
    return list(dict.fromkeys(t for t in topics if t))


def grant(
    admin_config: dict[str, Any], principal: str, acls: Sequence[Acl], timeout: float
) -> None:
    """Create ``acls`` for ``principal`` with an admin client built from ``admin_config``."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    from streamtrain.errors import StreamtrainError

    bindings = [binding for acl in acls for binding in acl.bindings(principal)]
    admin = AdminClient(admin_config)
    futures = admin.create_acls(bindings, request_timeout=timeout)
    for binding, future in futures.items():
        try:
            future.result(timeout=timeout + 5)
        except KafkaException as err:
            raise StreamtrainError(f"cannot create the ACL {binding}: {err}") from err
