"""Kafka configuration rendered as text: a KRaft node's ``server.properties``, its log4j2
configuration, and the ids and controller lists its storage is formatted with.

Configuration is rendered by pure functions parameterised by node id, roles and the controller
quorum; nothing here starts a process or touches a file.
"""

from __future__ import annotations

import base64
import textwrap
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from streamtrain.broker.runtime import KAFKA_VERSION
from streamtrain.errors import ConfigError

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 9092


def default_controller_port(port: int) -> int:
    """The controller listener port paired with broker ``port`` (the next one, or the previous
    one at the top of the range)."""
    return port + 1 if port < 65535 else port - 1


def new_cluster_id() -> str:
    """A KRaft cluster id, same format as ``kafka-storage.sh random-uuid``.

    Kafka ids are 16 random bytes in URL-safe base64 without padding; Kafka rejects ids that
    start with ``-`` because they look like command-line flags.
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not text.startswith("-"):
            return text


def escape_property(text: str, *, key: bool = False) -> str:
    """Escape ``text`` for a Java ``.properties`` file.

    Kafka and log4j2 read these files as ISO-8859-1, so anything outside printable ASCII (a
    non-ASCII home directory, say) must be written as ``\\uXXXX`` to survive.
    """
    out: list[str] = []
    for index, char in enumerate(text):
        code = ord(char)
        if char == "\\":
            out.append("\\\\")
        elif char == " " and (key or index == 0):
            out.append("\\ ")
        elif key and char in "=:#!":
            out.append("\\" + char)
        elif char == "\t":
            out.append("\\t")
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif 32 <= code < 127:
            out.append(char)
        else:
            encoded = char.encode("utf-16-be")
            for i in range(0, len(encoded), 2):
                out.append(f"\\u{int.from_bytes(encoded[i : i + 2], 'big'):04x}")
    return "".join(out)


def render_server_properties(
    *,
    node_id: int,
    log_dir: Path,
    host: str = DEFAULT_HOST,
    port: int | None = DEFAULT_PORT,
    controller_port: int | None = DEFAULT_PORT + 1,
    roles: Sequence[str] = ("broker", "controller"),
    controllers: Sequence[str] | None = None,
    replication_factor: int = 1,
    extra: Mapping[str, str] | None = None,
) -> str:
    """Render one KRaft node's ``server.properties``.

    ``roles`` is any non-empty subset of broker/controller; a broker needs ``port``, a
    controller ``controller_port``. ``controllers`` lists every controller as ``host:port``
    (defaults to this node alone). ``replication_factor`` sizes Kafka's internal topics and must
    not exceed the number of brokers. ``extra`` overrides or adds properties.
    """
    role_set = set(roles)
    if not role_set or not role_set <= {"broker", "controller"}:
        raise ConfigError(f"node roles must be broker and/or controller, got {list(roles)}")
    if node_id < 0:
        raise ConfigError(f"node id must be >= 0, got {node_id}")
    if replication_factor < 1:
        raise ConfigError(f"replication factor must be >= 1, got {replication_factor}")
    is_broker = "broker" in role_set
    is_controller = "controller" in role_set
    if is_broker:
        port = _checked_port(port, "broker port")
    if is_controller:
        controller_port = _checked_port(controller_port, "controller port")
    if is_broker and is_controller and port == controller_port:
        raise ConfigError(f"broker and controller cannot share port {port}")
    if controllers is None:
        if not is_controller:
            raise ConfigError("a broker-only node needs the controllers' host:port list")
        controllers = [f"{host}:{controller_port}"]
    if not controllers:
        raise ConfigError("the controller quorum cannot be empty")

    listeners = []
    if is_broker:
        listeners.append(f"PLAINTEXT://{host}:{port}")
    if is_controller:
        listeners.append(f"CONTROLLER://{host}:{controller_port}")
    min_isr = max(1, replication_factor - 1)

    sections: list[tuple[str, dict[str, str]]] = [
        (
            "KRaft identity. controller.quorum.bootstrap.servers (not the static"
            " controller.quorum.voters) pairs with `kafka-storage format --standalone` or"
            " --initial-controllers, so the quorum can later grow without reformatting.",
            {
                "process.roles": ",".join(r for r in ("broker", "controller") if r in role_set),
                "node.id": str(node_id),
                "controller.quorum.bootstrap.servers": ",".join(controllers),
            },
        ),
        (
            "Plaintext on the given host, for local development; a secured node (`up --secure`)"
            " has these replaced by TLS and SASL listeners (streamtrain/broker/security.py).",
            {
                "listeners": ",".join(listeners),
                **({"advertised.listeners": f"PLAINTEXT://{host}:{port}"} if is_broker else {}),
                "controller.listener.names": "CONTROLLER",
                "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                **({"inter.broker.listener.name": "PLAINTEXT"} if is_broker else {}),
            },
        ),
        (
            "Kafka's defaults (3 replicas) leave a small cluster unable to create its internal"
            " topics, so transactions, consumer groups and share groups would hang.",
            {
                "offsets.topic.replication.factor": str(replication_factor),
                "transaction.state.log.replication.factor": str(replication_factor),
                "transaction.state.log.min.isr": str(min_isr),
                "share.coordinator.state.topic.replication.factor": str(replication_factor),
                "share.coordinator.state.topic.min.isr": str(min_isr),
                "default.replication.factor": str(replication_factor),
                "min.insync.replicas": str(min_isr),
            },
        ),
        (
            "Consumers join a group at once instead of waiting 3 s for more members, and"
            " producing to a new topic creates it: tests and demos rely on both.",
            {
                "group.initial.rebalance.delay.ms": "0",
                "auto.create.topics.enable": "true",
                "num.partitions": "1",
            },
        ),
        ("", {"log.dirs": str(log_dir)}),
    ]

    overrides = dict(extra or {})
    for name, value in overrides.items():
        _check_property(name, value)
    lines = [
        f"# Generated by streamtrain for Kafka {KAFKA_VERSION}; rewritten on every start.",
    ]
    for comment, props in sections:
        lines.append("")
        if comment:
            lines.extend(textwrap.wrap(comment, 98, initial_indent="# ", subsequent_indent="# "))
        for name, value in props.items():
            lines.append(
                f"{escape_property(name, key=True)}={escape_property(overrides.pop(name, value))}"
            )
    if overrides:
        lines.extend(["", "# extra_properties"])
        for name, value in overrides.items():
            lines.append(f"{escape_property(name, key=True)}={escape_property(value)}")
    return "\n".join(lines) + "\n"


def render_log4j2_properties(log_file: Path, *, level: str = "INFO") -> str:
    """A log4j2 configuration sending the broker's log to a size-capped ``log_file``."""
    path = escape_property(str(log_file))
    return f"""# Generated by streamtrain; rewritten on every start.
status = warn
name = streamtrain-kafka

appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = {path}
appender.file.filePattern = {path}.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3

rootLogger.level = {level}
rootLogger.appenderRef.file.ref = file

# Per-request logging would dwarf everything else.
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.requestchannel.name = kafka.network.RequestChannel$
logger.requestchannel.level = WARN
"""


def render_initial_controllers(voters: Sequence[tuple[int, str, int, str]]) -> str:
    """``kafka-storage format --initial-controllers`` for (node id, host, controller port,
    directory id) voters."""
    return ",".join(
        f"{node_id}@{host}:{port}:{directory_id}" for node_id, host, port, directory_id in voters
    )


def _checked_port(port: int | None, what: str) -> int:
    if port is None or not 0 < port < 65536:
        raise ConfigError(f"{what} must be between 1 and 65535, got {port}")
    return port


def _check_property(name: str, value: str) -> None:
    if not name or any(c.isspace() for c in name):
        raise ConfigError(f"invalid Kafka property name {name!r}")
    if not isinstance(value, str):
        raise ConfigError(f"Kafka property {name} must be a string, got {value!r}")
