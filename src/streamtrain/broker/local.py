"""A real Apache Kafka (KRaft, combined broker+controller nodes) run from the official jars.

:class:`LocalBroker` is one node whose files live in one data directory::

    <data_dir>/cluster.id                 id the storage was formatted with
    <data_dir>/broker.pid                 pid (and process group) of the running JVM
    <data_dir>/config/server.properties   rewritten on every start
    <data_dir>/config/log4j2.properties
    <data_dir>/kafka-logs/                Kafka's log.dirs (topic data and the metadata log)
    <data_dir>/logs/server.log            the broker's log
    <data_dir>/logs/stdout.log            JVM stdout/stderr (crashes before logging is up)

:class:`LocalCluster` is 3 (or 5) such nodes forming one cluster and one controller quorum::

    <data_dir>/cluster.json               the layout: node ids, ports, cluster and directory ids
    <data_dir>/node-<id>/                 one node, laid out as above

Configuration is rendered by pure functions parameterised by node id, roles and the controller
quorum; both classes run their JVMs with the same node machinery.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from streamtrain.broker.runtime import KAFKA_VERSION, ensure_kafka_jars, find_java
from streamtrain.errors import BrokerError, ConfigError

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 9092
DEFAULT_HEAP = "512m"
BROKER_MAIN_CLASS = "kafka.Kafka"

PID_FILE = "broker.pid"
CLUSTER_ID_FILE = "cluster.id"
LOCK_FILE = ".lock"
CONFIG_DIR = "config"
LOG_DIRS = "kafka-logs"
LOGS_DIR = "logs"
SERVER_LOG = "server.log"
STDOUT_LOG = "stdout.log"

CLUSTER_FILE = "cluster.json"
NODE_DIR_PREFIX = "node-"
# Odd sizes only: a quorum of 2 or 4 voters survives no more lost nodes than one of 1 or 3.
CLUSTER_SIZES = (3, 5)
DEFAULT_CLUSTER_BROKERS = 3
# Replicas of each partition in a cluster (and min.insync.replicas one less): one node may be
# down while acks=all writes and transactions still succeed.
CLUSTER_REPLICATION_FACTOR = 3

# G1 settings from Kafka's own kafka-run-class.sh; a broker under test sees the same GC as prod.
_GC_OPTIONS = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
)
_HEAP_RE = re.compile(r"^[1-9][0-9]*[kKmMgG]?$")
_POLL_SECONDS = 0.2
_KILL_WAIT_SECONDS = 10.0
_T = TypeVar("_T")


@dataclass(frozen=True)
class BrokerStatus:
    """What :meth:`LocalBroker.status` found."""

    running: bool
    """A JVM started from this data directory is alive."""
    pid: int | None
    bootstrap: str
    answering: bool
    """Some Kafka broker answered a metadata request at ``bootstrap``."""
    data_dir: Path
    log_path: Path


def default_data_dir() -> Path:
    """``$STREAMTRAIN_BROKER_DIR`` or ``~/.local/share/streamtrain/broker``."""
    configured = os.environ.get("STREAMTRAIN_BROKER_DIR")
    if configured:
        return Path(configured).expanduser().absolute()
    return Path.home() / ".local" / "share" / "streamtrain" / "broker"


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
            "Everything is plaintext on the given host: this node is for local development.",
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


def parse_pid(text: str) -> int | None:
    """The pid in a pid file's text, or None if it is not a positive integer."""
    text = text.strip()
    if not text.isdigit():
        return None
    pid = int(text)
    return pid if pid > 0 else None


def is_broker_cmdline(args: Sequence[str], config_path: Path) -> bool:
    """True if a process's arguments are Kafka's main class started with ``config_path``.

    Pids are reused, so a pid file alone proves nothing; the config path ties the process to
    one data directory.
    """
    return BROKER_MAIN_CLASS in args and str(config_path) in args


_STACK_FRAME = re.compile(r"^(at [\w.$<>/]+\(.*\)|\.\.\. \d+ more)$")
_EXCEPTION = re.compile(
    r"^(?:Caused by: |Exception in thread \"[^\"]*\" )?([\w.$]+(?:Exception|Error)\b.*)$"
)
_LOG_LEVEL = re.compile(r"^\[[^\]]*\]\s+(ERROR|FATAL)\s+(.*)$")


def last_meaningful_line(text: str) -> str | None:
    """The line of Kafka's output most likely to say why it stopped.

    Preference: the exception logged with the last ERROR/FATAL line (that is what the operator
    can act on), else that ERROR line, else the last exception of a bare stack trace, else the
    last line that is not a stack frame.
    """
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not _STACK_FRAME.match(line.strip())
    ]
    for index in range(len(lines) - 1, -1, -1):
        logged = _LOG_LEVEL.match(lines[index])
        if logged:
            following = lines[index + 1] if index + 1 < len(lines) else ""
            exception = _EXCEPTION.match(following)
            return exception.group(1) if exception else logged.group(2)
    for line in reversed(lines):
        exception = _EXCEPTION.match(line)
        if exception:
            return exception.group(1)
    return lines[-1] if lines else None


@dataclass
class _Launch:
    """A JVM just started by :meth:`_Node._launch`, not yet known to answer."""

    proc: subprocess.Popen[bytes]
    log_offset: int


class _Node:
    """One Kafka JVM owned through its data directory: the machinery :class:`LocalBroker` and
    each node of a :class:`LocalCluster` share.

    Any process can manage a node another one started: the pid file and the process's command
    line identify it, and a lock file in the node's directory serialises starting and stopping.
    """

    def __init__(
        self,
        *,
        data_dir: Path,
        node_id: int,
        host: str,
        port: int,
        controller_port: int,
        heap: str,
        extra_properties: Mapping[str, str] | None,
        cache_dir: Path | None,
        name: str = "Kafka",
        controllers: Sequence[str] | None = None,
        replication_factor: int = 1,
        initial_controllers: str | None = None,
        cluster_id: str | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.node_id = node_id
        self.host = host
        self.port = _checked_port(port, "broker port")
        self.controller_port = _checked_port(controller_port, "controller port")
        if self.controller_port == self.port:
            raise ConfigError(f"broker and controller cannot share port {port}")
        if not _HEAP_RE.match(heap):
            raise ConfigError(f"heap must look like 512m or 1g, got {heap!r}")
        self.heap = heap
        self.extra_properties = dict(extra_properties or {})
        self.cache_dir = cache_dir
        self.name = name
        self.controllers = list(controllers) if controllers is not None else None
        self.replication_factor = replication_factor
        # None formats the node as a single-voter quorum (--standalone); a cluster passes the
        # --initial-controllers value every node of it must be formatted with.
        self.initial_controllers = initial_controllers
        # None reads (or creates) <data_dir>/cluster.id; a cluster passes its shared id.
        self.cluster_id = cluster_id
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / CONFIG_DIR / "server.properties"

    @property
    def log4j_path(self) -> Path:
        return self.data_dir / CONFIG_DIR / "log4j2.properties"

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOGS_DIR / SERVER_LOG

    @property
    def stdout_path(self) -> Path:
        return self.data_dir / LOGS_DIR / STDOUT_LOG

    @property
    def pid_path(self) -> Path:
        return self.data_dir / PID_FILE

    @property
    def log_dir(self) -> Path:
        return self.data_dir / LOG_DIRS

    def server_properties(self) -> str:
        return render_server_properties(
            node_id=self.node_id,
            log_dir=self.log_dir,
            host=self.host,
            port=self.port,
            controller_port=self.controller_port,
            controllers=self.controllers,
            replication_factor=self.replication_factor,
            extra=self.extra_properties,
        )

    def down(self, timeout: float = 30) -> bool:
        """Stop the node: SIGTERM its process group, SIGKILL after ``timeout`` seconds.

        Returns False if no node from this data directory was running.
        """
        return self._stop(timeout, hard=False)

    def status(self, timeout: float = 3.0) -> BrokerStatus:
        """Whether this data directory's node runs, and whether anything answers at
        :attr:`bootstrap` (possibly a broker started some other way)."""
        pid = self.running_pid()
        return BrokerStatus(
            running=pid is not None,
            pid=pid,
            bootstrap=self.bootstrap,
            answering=broker_answers(self.bootstrap, timeout=timeout),
            data_dir=self.data_dir,
            log_path=self.log_path,
        )

    def running_pid(self) -> int | None:
        """The pid of this data directory's running node; a stale pid file is removed."""
        try:
            text = self.pid_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as err:
            raise BrokerError(f"cannot read {self.pid_path}: {err.strerror or err}") from err
        pid = parse_pid(text)
        if (
            pid is not None
            and self._is_alive(pid)
            and is_broker_cmdline(process_cmdline(pid), self.config_path)
        ):
            return pid
        self.pid_path.unlink(missing_ok=True)
        return None

    # -- internals ---------------------------------------------------------------------------

    def _check_ports(self) -> None:
        for port in (self.port, self.controller_port):
            if not port_is_free(self.host, port):
                who = "another process"
                if port == self.port and broker_answers(self.bootstrap, timeout=2):
                    who = "another Kafka broker"
                raise BrokerError(
                    f"cannot start {self.name}: {self.host}:{port} is already in use by {who}; "
                    f"stop it or pick other ports (log: {self.log_path})"
                )

    def _write_config(self) -> None:
        (self.data_dir / CONFIG_DIR).mkdir(parents=True, exist_ok=True)
        (self.data_dir / LOGS_DIR).mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.server_properties(), encoding="ascii")
        self.log4j_path.write_text(render_log4j2_properties(self.log_path), encoding="ascii")

    def _format_storage(self, java: str, libs: Path) -> None:
        # extra_properties may point log.dirs elsewhere; every one of them must be formatted.
        log_dirs = self.extra_properties.get("log.dirs", str(self.log_dir)).split(",")
        if all((Path(d.strip()) / "meta.properties").is_file() for d in log_dirs if d.strip()):
            return
        id_path = self.data_dir / CLUSTER_ID_FILE
        cluster_id = self.cluster_id
        if cluster_id is None:
            cluster_id = id_path.read_text(encoding="utf-8").strip() if id_path.is_file() else ""
        if not cluster_id:
            cluster_id = new_cluster_id()
        if not id_path.is_file() or id_path.read_text(encoding="utf-8").strip() != cluster_id:
            id_path.write_text(cluster_id + "\n", encoding="utf-8")
        if self.initial_controllers is None:
            # A single voter that is its own quorum.
            quorum = ["--standalone"]
        else:
            # Every voter as id@host:port:directory-id, the same on every node.
            quorum = ["--initial-controllers", self.initial_controllers]
        command = [
            java,
            f"-Dlog4j2.configurationFile={self.log4j_path}",
            "-cp",
            f"{libs}/*",
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            cluster_id,
            "--config",
            str(self.config_path),
            *quorum,
            # Dirs formatted by an earlier, interrupted attempt are kept rather than rejected.
            "--ignore-formatted",
        ]
        try:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=120,
                check=False,
            )
        except subprocess.TimeoutExpired as err:
            raise BrokerError(f"formatting Kafka storage in {self.data_dir} timed out") from err
        if result.returncode != 0:
            reason = last_meaningful_line(result.stdout + "\n" + result.stderr) or "no output"
            raise BrokerError(f"formatting Kafka storage in {self.data_dir} failed: {reason}")

    def _start(self, java: str, libs: Path, wait_seconds: float) -> None:
        """Launch the JVM and wait until it answers; stop it again if it does not."""
        launch = self._launch(java, libs)
        try:
            _await_answers([(self, launch)], wait_seconds)
        except BaseException:
            self._abort(launch)
            raise

    def _launch(self, java: str, libs: Path) -> _Launch:
        command = [
            java,
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            *_GC_OPTIONS,
            f"-Dlog4j2.configurationFile={self.log4j_path}",
            "-cp",
            f"{libs}/*",
            BROKER_MAIN_CLASS,
            str(self.config_path),
        ]
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.stdout_path.open("wb") as stdout:
            try:
                # Its own session: Ctrl-C in the terminal that ran `up` must not reach the broker.
                proc = subprocess.Popen(
                    command,
                    cwd=self.data_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as err:
                raise BrokerError(f"cannot run {java}: {err.strerror or err}") from err
        self._proc = proc
        launch = _Launch(proc, log_offset)
        try:
            self.pid_path.write_text(f"{proc.pid}\n", encoding="utf-8")
        except BaseException:
            self._abort(launch)
            raise
        return launch

    def _check_launch(self, launch: _Launch) -> None:
        code = launch.proc.poll()
        if code is not None:
            raise BrokerError(
                f"{self.name} exited during start-up (exit code {code}): "
                f"{self._failure_reason(launch.log_offset)} (log: {self.log_path})"
            )

    def _abort(self, launch: _Launch) -> None:
        self._terminate(launch.proc.pid, timeout=5)
        self.pid_path.unlink(missing_ok=True)

    def _stop(self, timeout: float, *, hard: bool) -> bool:
        if not self.data_dir.is_dir():
            return False
        with self._locked():
            pid = self.running_pid()
            if pid is None:
                return False
            self._terminate(pid, timeout, hard=hard)
            self.pid_path.unlink(missing_ok=True)
        return True

    def _terminate(self, pid: int, timeout: float, *, hard: bool = False) -> None:
        steps = [(signal.SIGKILL, _KILL_WAIT_SECONDS)]
        if not hard:
            steps.insert(0, (signal.SIGTERM, timeout))
        for sig, wait in steps:
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                return
            except PermissionError as err:
                raise BrokerError(
                    f"not allowed to stop {self.name} (pid {pid}): {err.strerror}"
                ) from err
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not self._is_alive(pid):
                    return
                time.sleep(0.05)
        raise BrokerError(f"{self.name} (pid {pid}) survived SIGKILL; see {self.log_path}")

    def _is_alive(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None
        return pid_alive(pid)

    def _failure_reason(self, log_offset: int) -> str:
        for path, offset in ((self.log_path, log_offset), (self.stdout_path, 0)):
            line = last_meaningful_line(_read_tail(path, offset))
            if line:
                return line
        return "no log output"

    def _configured_bootstrap(self) -> str | None:
        try:
            text = self.config_path.read_text(encoding="ascii", errors="replace")
        except OSError:
            return None
        match = re.search(r"^advertised\.listeners=PLAINTEXT://(\S+)$", text, re.MULTILINE)
        return match.group(1) if match else None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with _lock_file(self.data_dir / LOCK_FILE):
            yield


def _await_answers(launched: Sequence[tuple[_Node, _Launch]], wait_seconds: float) -> None:
    """Wait until every just-launched node answers a metadata request at its own address.

    All are polled together: a node of a cluster cannot answer before a majority of the
    controller quorum is up. Raises as soon as one JVM exits or the time is up; the caller stops
    what it launched.
    """
    deadline = time.monotonic() + wait_seconds
    pending = list(launched)
    while True:
        for node, launch in pending:
            node._check_launch(launch)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            node = pending[0][0]
            raise BrokerError(
                f"{node.name} did not answer at {node.bootstrap} within {wait_seconds:g} s "
                f"and was stopped (log: {node.log_path})"
            )
        pending = [
            (node, launch)
            for node, launch in pending
            if not broker_answers(node.bootstrap, timeout=min(2.0, remaining))
        ]
        if not pending:
            return
        time.sleep(_POLL_SECONDS)


class LocalBroker(_Node):
    """One local Kafka node (broker and controller in one JVM) owned through its data directory.

    Any process can manage the broker another one started: the pid file and the process's
    command line identify it, and a lock file serialises ``up`` and ``down``.
    """

    def __init__(
        self,
        *,
        data_dir: Path | None = None,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        controller_port: int | None = None,
        heap: str = DEFAULT_HEAP,
        extra_properties: Mapping[str, str] | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        port = _checked_port(port, "broker port")
        super().__init__(
            data_dir=(
                Path(data_dir).expanduser().absolute()
                if data_dir is not None
                else default_data_dir()
            ),
            node_id=1,
            host=host,
            port=port,
            controller_port=(
                controller_port if controller_port is not None else default_controller_port(port)
            ),
            heap=heap,
            extra_properties=extra_properties,
            cache_dir=cache_dir,
        )

    def __repr__(self) -> str:
        return f"LocalBroker(bootstrap={self.bootstrap!r}, data_dir={str(self.data_dir)!r})"

    def up(self, wait_seconds: float = 60) -> bool:
        """Start the broker and wait until it answers a metadata request.

        Returns True if it started one, False if a broker from this data directory was already
        running. Raises :class:`BrokerError` (after stopping anything it started) when the
        ports are taken, the JVM exits, or it does not answer within ``wait_seconds``, and
        :class:`ConfigError` if the directory holds a :class:`LocalCluster`.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            layout = ClusterLayout.load(self.data_dir)
            if layout is not None:
                raise ConfigError(
                    f"{self.data_dir} holds a {len(layout.nodes)}-broker cluster, not a single "
                    "broker; start it as a cluster or use another data directory"
                )
            pid = self.running_pid()
            if pid is not None:
                running_at = self._configured_bootstrap()
                if running_at is not None and running_at != self.bootstrap:
                    raise BrokerError(
                        f"the broker in {self.data_dir} is already running at {running_at} "
                        f"(pid {pid}), not {self.bootstrap}; stop it first"
                    )
                return False
            libs = ensure_kafka_jars(self.cache_dir)
            java = find_java()
            self._check_ports()
            self._write_config()
            self._format_storage(java, libs)
            self._start(java, libs, wait_seconds)
        return True


# -- a cluster of nodes on one machine ------------------------------------------------------


@dataclass(frozen=True)
class ClusterNodeSpec:
    """One node of a :class:`ClusterLayout`."""

    node_id: int
    port: int
    controller_port: int
    directory_id: str
    """The metadata log directory's id, part of the controller quorum's identity (KIP-853)."""


@dataclass(frozen=True)
class ClusterLayout:
    """The shape of a local cluster, fixed when its storage is first formatted.

    Saved as ``<data_dir>/cluster.json``, which is also what marks a data directory as a
    cluster's. The controllers' addresses and directory ids are written into every node's
    formatted metadata log, so neither the host nor the ports can change afterwards.
    """

    cluster_id: str
    host: str
    nodes: tuple[ClusterNodeSpec, ...]

    @classmethod
    def new(cls, host: str, ports: Sequence[tuple[int, int]]) -> ClusterLayout:
        return cls(
            cluster_id=new_cluster_id(),
            host=host,
            nodes=tuple(
                ClusterNodeSpec(
                    node_id=index + 1,
                    port=port,
                    controller_port=controller_port,
                    # Directory ids are Kafka Uuids, the same format as cluster ids.
                    directory_id=new_cluster_id(),
                )
                for index, (port, controller_port) in enumerate(ports)
            ),
        )

    @property
    def ports(self) -> list[tuple[int, int]]:
        return [(node.port, node.controller_port) for node in self.nodes]

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{self.host}:{node.port}" for node in self.nodes)

    @property
    def controllers(self) -> list[str]:
        return [f"{self.host}:{node.controller_port}" for node in self.nodes]

    @property
    def initial_controllers(self) -> str:
        """The ``kafka-storage format --initial-controllers`` value: every voter as
        ``id@host:port:directory-id``."""
        return render_initial_controllers(
            [
                (node.node_id, self.host, node.controller_port, node.directory_id)
                for node in self.nodes
            ]
        )

    def to_json(self) -> str:
        return (
            json.dumps(
                {
                    "kafka_version": KAFKA_VERSION,
                    "cluster_id": self.cluster_id,
                    "host": self.host,
                    "nodes": [
                        {
                            "node_id": node.node_id,
                            "port": node.port,
                            "controller_port": node.controller_port,
                            "directory_id": node.directory_id,
                        }
                        for node in self.nodes
                    ],
                },
                indent=2,
            )
            + "\n"
        )

    @classmethod
    def from_json(cls, text: str) -> ClusterLayout:
        raw = json.loads(text)
        return cls(
            cluster_id=str(raw["cluster_id"]),
            host=str(raw["host"]),
            nodes=tuple(
                ClusterNodeSpec(
                    node_id=int(node["node_id"]),
                    port=int(node["port"]),
                    controller_port=int(node["controller_port"]),
                    directory_id=str(node["directory_id"]),
                )
                for node in raw["nodes"]
            ),
        )

    @classmethod
    def load(cls, data_dir: Path) -> ClusterLayout | None:
        """The layout saved in ``data_dir``, or None if it is not a cluster's directory."""
        path = data_dir / CLUSTER_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as err:
            raise BrokerError(f"cannot read {path}: {err.strerror or err}") from err
        try:
            layout = cls.from_json(text)
        except (ValueError, KeyError, TypeError) as err:
            raise BrokerError(f"{path} is not a streamtrain cluster layout: {err}") from err
        if not layout.nodes:
            raise BrokerError(f"{path} lists no nodes")
        return layout

    def save(self, data_dir: Path) -> None:
        # Written whole or not at all: a torn file would orphan the formatted storage.
        path = data_dir / CLUSTER_FILE
        partial = path.with_name(f".{CLUSTER_FILE}.partial")
        partial.write_text(self.to_json(), encoding="utf-8")
        os.replace(partial, path)


def is_cluster_dir(data_dir: Path) -> bool:
    """True if ``data_dir`` holds a :class:`LocalCluster` (it has a ``cluster.json``)."""
    return (Path(data_dir).expanduser() / CLUSTER_FILE).is_file()


def cluster_ports(base_port: int, brokers: int) -> list[tuple[int, int]]:
    """(broker, controller) ports of each node: ``base_port`` and the next one for the first,
    the following two for the second, and so on."""
    ports = [(base_port + 2 * i, base_port + 2 * i + 1) for i in range(brokers)]
    for port, controller_port in ports:
        _checked_port(port, "broker port")
        _checked_port(controller_port, "controller port")
    return ports


def render_initial_controllers(voters: Sequence[tuple[int, str, int, str]]) -> str:
    """``kafka-storage format --initial-controllers`` for (node id, host, controller port,
    directory id) voters."""
    return ",".join(
        f"{node_id}@{host}:{port}:{directory_id}" for node_id, host, port, directory_id in voters
    )


@dataclass(frozen=True)
class NodeStatus:
    """One node as :meth:`LocalCluster.status` found it."""

    node_id: int
    running: bool
    """A JVM started from this node's directory is alive."""
    pid: int | None
    port: int
    controller_port: int
    bootstrap: str
    answering: bool
    """A broker answered a metadata request at this node's own address."""
    data_dir: Path
    log_path: Path


@dataclass(frozen=True)
class ClusterStatus:
    """What :meth:`LocalCluster.status` found, node by node."""

    bootstrap: str
    data_dir: Path
    nodes: tuple[NodeStatus, ...]

    @property
    def running_count(self) -> int:
        return sum(node.running for node in self.nodes)

    @property
    def answering_count(self) -> int:
        return sum(node.answering for node in self.nodes)

    @property
    def healthy(self) -> bool:
        """Every node answers."""
        return self.answering_count == len(self.nodes)


class LocalCluster:
    """A local Kafka cluster: ``brokers`` combined broker+controller JVMs on this machine.

    The controllers form a KRaft quorum of ``brokers`` voters, so the cluster keeps working
    with any minority of nodes stopped. Cluster-wide defaults suit failover tests: replication
    factor 3 (for new topics and Kafka's internal ones) and ``min.insync.replicas=2``, so
    ``acks=all`` writes and transactions succeed with one node down.

    Files live under one data directory::

        <data_dir>/cluster.json    the layout (see :class:`ClusterLayout`); marks a cluster
        <data_dir>/node-<id>/      one node, laid out like a LocalBroker's data directory

    Node ids are 1 to ``brokers``; node ``id`` listens on ``base_port + 2 * (id - 1)`` for
    clients and the port after it for the controller quorum, unless ``ports`` lists the
    (broker, controller) pairs. An existing cluster keeps the host and ports it was created
    with: passing None adopts them, anything else must match.
    """

    def __init__(
        self,
        *,
        data_dir: Path | None = None,
        brokers: int | None = None,
        host: str | None = None,
        base_port: int | None = None,
        ports: Sequence[tuple[int, int]] | None = None,
        heap: str = DEFAULT_HEAP,
        extra_properties: Mapping[str, str] | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.data_dir = (
            Path(data_dir).expanduser().absolute() if data_dir is not None else default_data_dir()
        )
        saved = ClusterLayout.load(self.data_dir)
        if brokers is None:
            brokers = len(saved.nodes) if saved is not None else DEFAULT_CLUSTER_BROKERS
        if brokers not in CLUSTER_SIZES:
            sizes = " or ".join(str(n) for n in CLUSTER_SIZES)
            raise ConfigError(
                f"a local cluster has {sizes} brokers (an odd number, so a majority of the "
                f"controller quorum survives a lost node), got {brokers}; use LocalBroker for 1"
            )
        if host is None:
            host = saved.host if saved is not None else DEFAULT_HOST
        if ports is not None:
            if base_port is not None:
                raise ConfigError("pass either base_port or ports, not both")
            node_ports = [(int(p), int(c)) for p, c in ports]
            if len(node_ports) != brokers:
                raise ConfigError(f"{brokers} brokers need {brokers} port pairs, got {len(ports)}")
        elif base_port is not None or saved is None:
            node_ports = cluster_ports(
                base_port if base_port is not None else DEFAULT_PORT, brokers
            )
        else:
            node_ports = saved.ports
        flat = [port for pair in node_ports for port in pair]
        if len(set(flat)) != len(flat):
            raise ConfigError(f"cluster nodes cannot share ports: {node_ports}")
        if saved is not None:
            if brokers != len(saved.nodes):
                wanted = f"{brokers} brokers"
            elif (host, node_ports) != (saved.host, saved.ports):
                wanted = f"{host} ports {_pairs(node_ports)}"
            else:
                wanted = ""
            if wanted:
                raise ConfigError(
                    f"the cluster in {self.data_dir} has {len(saved.nodes)} brokers on "
                    f"{saved.host} ports {_pairs(saved.ports)}, not {wanted}; its controller "
                    "addresses are part of its storage, so use another data directory"
                )
        elif _holds_single_broker(self.data_dir):
            raise ConfigError(
                f"{self.data_dir} holds a single-node broker, not a cluster; "
                "use another data directory for the cluster"
            )
        self.host = host
        self.heap = heap
        self.extra_properties = dict(extra_properties or {})
        self.cache_dir = cache_dir
        self._layout = saved if saved is not None else ClusterLayout.new(host, node_ports)
        self._nodes = self._make_nodes(self._layout)

    def __repr__(self) -> str:
        return f"LocalCluster(bootstrap={self.bootstrap!r}, data_dir={str(self.data_dir)!r})"

    @property
    def brokers(self) -> int:
        return len(self._nodes)

    @property
    def node_ids(self) -> tuple[int, ...]:
        return tuple(node.node_id for node in self._nodes)

    @property
    def bootstrap(self) -> str:
        """Every node's client address, comma-separated: a client survives any one of them
        being down."""
        return self._layout.bootstrap

    @property
    def replication_factor(self) -> int:
        return min(CLUSTER_REPLICATION_FACTOR, len(self._nodes))

    def node_bootstrap(self, node_id: int) -> str:
        """``host:port`` of one node."""
        return self._node(node_id).bootstrap

    def node_dir(self, node_id: int) -> Path:
        return self._node(node_id).data_dir

    def node_log_path(self, node_id: int) -> Path:
        return self._node(node_id).log_path

    def server_properties(self, node_id: int) -> str:
        """The ``server.properties`` node ``node_id`` is started with."""
        return self._node(node_id).server_properties()

    def running_pids(self) -> dict[int, int | None]:
        """Node id to the pid of its running JVM (None if it is not running)."""
        return {node.node_id: node.running_pid() for node in self._nodes}

    # -- lifecycle ---------------------------------------------------------------------------

    def up(self, wait_seconds: float = 90) -> bool:
        """Start every node that is not running, all at once, and wait until each answers.

        Returns False if all were already running. Raises :class:`BrokerError` (after stopping
        the nodes it started) when a port is taken, a JVM exits, or a node does not answer
        within ``wait_seconds``.
        """
        return self._start_nodes(self.node_ids, wait_seconds)

    def start_node(self, node_id: int, wait_seconds: float = 60) -> bool:
        """Start one node (after :meth:`stop_node`) and wait until it answers.

        It rejoins on its own: it catches up with the metadata log, and the partition leaders
        add its replicas back to the ISR once they catch up. A lone node cannot answer without
        a majority of the quorum, so most of the cluster must be running. Returns False if it
        already ran.
        """
        self._node(node_id)
        return self._start_nodes((node_id,), wait_seconds)

    def stop_node(self, node_id: int, timeout: float = 30, *, hard: bool = False) -> bool:
        """Stop one node: gracefully (SIGTERM, so it hands its partition leadership over in a
        controlled shutdown; SIGKILL after ``timeout`` seconds) or, with ``hard``, SIGKILL at
        once as a crash would. Returns False if it was not running."""
        node = self._node(node_id)
        if not self.data_dir.is_dir():
            return False
        with self._locked():
            return node._stop(timeout, hard=hard)

    def down(self, timeout: float = 30) -> bool:
        """Stop every node at once (SIGTERM, SIGKILL after ``timeout`` seconds).

        Returns False if no node was running.
        """
        if not self.data_dir.is_dir():
            return False
        with self._locked():
            stopped = _in_parallel(
                [partial(node._stop, timeout, hard=False) for node in self._nodes]
            )
        return any(stopped)

    def status(self, timeout: float = 3.0) -> ClusterStatus:
        """Each node: whether its JVM runs and whether it answers at its own address."""

        def one(node: _Node) -> NodeStatus:
            pid = node.running_pid()
            return NodeStatus(
                node_id=node.node_id,
                running=pid is not None,
                pid=pid,
                port=node.port,
                controller_port=node.controller_port,
                bootstrap=node.bootstrap,
                answering=broker_answers(node.bootstrap, timeout=timeout),
                data_dir=node.data_dir,
                log_path=node.log_path,
            )

        nodes = _in_parallel([partial(one, node) for node in self._nodes])
        return ClusterStatus(bootstrap=self.bootstrap, data_dir=self.data_dir, nodes=tuple(nodes))

    # -- internals ---------------------------------------------------------------------------

    def _make_nodes(self, layout: ClusterLayout) -> tuple[_Node, ...]:
        return tuple(
            _Node(
                data_dir=self.data_dir / f"{NODE_DIR_PREFIX}{spec.node_id}",
                node_id=spec.node_id,
                host=layout.host,
                port=spec.port,
                controller_port=spec.controller_port,
                heap=self.heap,
                extra_properties=self.extra_properties,
                cache_dir=self.cache_dir,
                name=f"Kafka node {spec.node_id}",
                controllers=layout.controllers,
                replication_factor=min(CLUSTER_REPLICATION_FACTOR, len(layout.nodes)),
                initial_controllers=layout.initial_controllers,
                cluster_id=layout.cluster_id,
            )
            for spec in layout.nodes
        )

    def _node(self, node_id: int) -> _Node:
        for node in self._nodes:
            if node.node_id == node_id:
                return node
        raise ConfigError(f"the cluster has nodes {list(self.node_ids)}, not {node_id}")

    def _start_nodes(self, node_ids: Sequence[int], wait_seconds: float) -> bool:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            self._adopt_layout()
            nodes = [self._node(node_id) for node_id in node_ids]
            with ExitStack() as locks:
                for node in nodes:
                    node.data_dir.mkdir(parents=True, exist_ok=True)
                    locks.enter_context(node._locked())
                todo = [node for node in nodes if node.running_pid() is None]
                if not todo:
                    return False
                libs = ensure_kafka_jars(self.cache_dir)
                java = find_java()
                for node in todo:
                    node._check_ports()
                for node in todo:
                    node._write_config()
                _in_parallel([partial(node._format_storage, java, libs) for node in todo])
                launched: list[tuple[_Node, _Launch]] = []
                try:
                    for node in todo:
                        launched.append((node, node._launch(java, libs)))
                    _await_answers(launched, wait_seconds)
                except BaseException:
                    _in_parallel([partial(node._abort, launch) for node, launch in launched])
                    raise
        return True

    def _adopt_layout(self) -> None:
        """Save the layout on first start; adopt one another process saved meanwhile."""
        saved = ClusterLayout.load(self.data_dir)
        if saved is None:
            self._layout.save(self.data_dir)
        elif saved != self._layout:
            if saved.host != self._layout.host or saved.ports != self._layout.ports:
                raise ConfigError(
                    f"the cluster in {self.data_dir} was just created on {saved.bootstrap} "
                    f"by another process, not on {self.bootstrap}"
                )
            self._layout = saved
            self._nodes = self._make_nodes(saved)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with _lock_file(self.data_dir / LOCK_FILE):
            yield


def _pairs(ports: Sequence[tuple[int, int]]) -> str:
    return ",".join(f"{port}/{controller_port}" for port, controller_port in ports)


def _holds_single_broker(data_dir: Path) -> bool:
    return any((data_dir / name).exists() for name in (CLUSTER_ID_FILE, LOG_DIRS, PID_FILE))


def _in_parallel(calls: Sequence[Callable[[], _T]]) -> list[_T]:
    """Run ``calls`` in threads; their results in order, or the first one's exception once all
    have finished (so nothing is left running behind the caller's back)."""
    if len(calls) <= 1:
        return [call() for call in calls]
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
    return [future.result() for future in futures]


@contextmanager
def _lock_file(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def broker_answers(bootstrap: str, timeout: float = 3.0) -> bool:
    """True if a Kafka broker at ``bootstrap`` (``host:port[,...]``) answers a metadata request."""
    deadline = time.monotonic() + timeout
    # A refused TCP connection settles it at once; the Kafka client would keep retrying.
    if not any(_tcp_connects(address, timeout) for address in bootstrap.split(",")):
        return False
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "reconnect.backoff.max.ms": 500,
        # Connection errors are the expected answer while polling a starting broker.
        "log_level": 0,
        "error_cb": _ignore,
    }
    admin = AdminClient(config)
    try:
        metadata = admin.list_topics(timeout=max(0.5, deadline - time.monotonic()))
    except KafkaException:
        return False
    return bool(metadata.brokers)


def port_is_free(host: str, port: int) -> bool:
    """True if ``port`` can be bound on every address ``host`` resolves to."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise ConfigError(f"cannot resolve host {host!r}: {err.strerror}") from err
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            # Java sets SO_REUSEADDR too, so a port in TIME_WAIT after a restart counts as free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
            except OSError as err:
                if err.errno == errno.EADDRINUSE:
                    return False
                if err.errno != errno.EADDRNOTAVAIL:
                    raise
    return True


def pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live (not zombie) process; reaps it if it is our exited child."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        # Either it exited just now, or there is no procfs (macOS) and kill(0) is all we have.
        return not Path("/proc/self").exists()
    except OSError:
        return True
    # The state follows the parenthesised command name, which may itself contain ")".
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def process_cmdline(pid: int) -> list[str]:
    """A process's arguments, or ``[]`` if it is gone or unreadable."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return []
        return _ps_cmdline(pid)
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def _ps_cmdline(pid: int) -> list[str]:
    # Without procfs (macOS) ps is the portable source; arguments come back space-joined.
    try:
        result = subprocess.run(
            ["ps", "-o", "command=", "-p", str(pid)],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return result.stdout.split() if result.returncode == 0 else []


def _tcp_connects(address: str, timeout: float) -> bool:
    host, _, port = address.strip().rpartition(":")
    if not host or not port.isdigit():
        return False
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=min(timeout, 2.0)):
            return True
    except OSError:
        return False


def _read_tail(path: Path, offset: int, limit: int = 65536) -> str:
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            start = offset if offset <= size else 0  # the log rolled over since start-up
            handle.seek(max(start, size - limit))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _checked_port(port: int | None, what: str) -> int:
    if port is None or not 0 < port < 65536:
        raise ConfigError(f"{what} must be between 1 and 65535, got {port}")
    return port


def _check_property(name: str, value: str) -> None:
    if not name or any(c.isspace() for c in name):
        raise ConfigError(f"invalid Kafka property name {name!r}")
    if not isinstance(value, str):
        raise ConfigError(f"Kafka property {name} must be a string, got {value!r}")


def _ignore(*_args: object) -> None:
    return None
