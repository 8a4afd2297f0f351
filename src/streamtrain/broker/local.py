"""A real single-node Apache Kafka (KRaft, combined broker+controller) run from the official jars.

The node's files live in one data directory::

    <data_dir>/cluster.id                 id the storage was formatted with
    <data_dir>/broker.pid                 pid (and process group) of the running JVM
    <data_dir>/config/server.properties   rewritten on every start
    <data_dir>/config/log4j2.properties
    <data_dir>/kafka-logs/                Kafka's log.dirs (topic data and the metadata log)
    <data_dir>/logs/server.log            the broker's log
    <data_dir>/logs/stdout.log            JVM stdout/stderr (crashes before logging is up)

Configuration is rendered by pure functions parameterised by node id, roles and the controller
quorum, so a multi-node cluster can reuse them with one data directory per node.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import os
import re
import signal
import socket
import subprocess
import textwrap
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


class LocalBroker:
    """One local Kafka node (broker and controller in one JVM) owned through its data directory.

    Any process can manage the broker another one started: the pid file and the process's
    command line identify it, and a lock file serialises ``up`` and ``down``.
    """

    node_id = 1

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
        self.data_dir = (
            Path(data_dir).expanduser().absolute() if data_dir is not None else default_data_dir()
        )
        self.host = host
        self.port = _checked_port(port, "broker port")
        self.controller_port = _checked_port(
            controller_port if controller_port is not None else default_controller_port(port),
            "controller port",
        )
        if self.controller_port == self.port:
            raise ConfigError(f"broker and controller cannot share port {port}")
        if not _HEAP_RE.match(heap):
            raise ConfigError(f"heap must look like 512m or 1g, got {heap!r}")
        self.heap = heap
        self.extra_properties = dict(extra_properties or {})
        self.cache_dir = cache_dir
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"LocalBroker(bootstrap={self.bootstrap!r}, data_dir={str(self.data_dir)!r})"

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
            extra=self.extra_properties,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def up(self, wait_seconds: float = 60) -> bool:
        """Start the broker and wait until it answers a metadata request.

        Returns True if it started one, False if a broker from this data directory was already
        running. Raises :class:`BrokerError` (after stopping anything it started) when the
        ports are taken, the JVM exits, or it does not answer within ``wait_seconds``.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
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
            for port in (self.port, self.controller_port):
                if not port_is_free(self.host, port):
                    who = "another process"
                    if port == self.port and broker_answers(self.bootstrap, timeout=2):
                        who = "another Kafka broker"
                    raise BrokerError(
                        f"cannot start Kafka: {self.host}:{port} is already in use by {who}; "
                        f"stop it or pick other ports (log: {self.log_path})"
                    )
            self._write_config()
            self._format_storage(java, libs)
            self._start(java, libs, wait_seconds)
        return True

    def down(self, timeout: float = 30) -> bool:
        """Stop the broker: SIGTERM its process group, SIGKILL after ``timeout`` seconds.

        Returns False if no broker from this data directory was running.
        """
        if not self.data_dir.is_dir():
            return False
        with self._locked():
            pid = self.running_pid()
            if pid is None:
                return False
            self._terminate(pid, timeout)
            self.pid_path.unlink(missing_ok=True)
        return True

    def status(self, timeout: float = 3.0) -> BrokerStatus:
        """Whether this data directory's broker runs, and whether anything answers at
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
        """The pid of this data directory's running broker; a stale pid file is removed."""
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
        cluster_id = id_path.read_text(encoding="utf-8").strip() if id_path.is_file() else ""
        if not cluster_id:
            cluster_id = new_cluster_id()
            id_path.write_text(cluster_id + "\n", encoding="utf-8")
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
            # A single voter that is its own quorum; a cluster would pass --initial-controllers.
            "--standalone",
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
        try:
            self.pid_path.write_text(f"{proc.pid}\n", encoding="utf-8")
            deadline = time.monotonic() + wait_seconds
            while True:
                code = proc.poll()
                if code is not None:
                    raise BrokerError(
                        f"Kafka exited during start-up (exit code {code}): "
                        f"{self._failure_reason(log_offset)} (log: {self.log_path})"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BrokerError(
                        f"Kafka did not answer at {self.bootstrap} within {wait_seconds:g} s "
                        f"and was stopped (log: {self.log_path})"
                    )
                if broker_answers(self.bootstrap, timeout=min(2.0, remaining)):
                    return
                time.sleep(_POLL_SECONDS)
        except BaseException:
            self._terminate(proc.pid, timeout=5)
            self.pid_path.unlink(missing_ok=True)
            raise

    def _terminate(self, pid: int, timeout: float) -> None:
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, _KILL_WAIT_SECONDS)):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                return
            except PermissionError as err:
                raise BrokerError(f"not allowed to stop Kafka (pid {pid}): {err.strerror}") from err
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not self._is_alive(pid):
                    return
                time.sleep(0.05)
        raise BrokerError(f"Kafka (pid {pid}) survived SIGKILL; see {self.log_path}")

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
        with (self.data_dir / LOCK_FILE).open("a") as handle:
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
