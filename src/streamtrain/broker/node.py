"""A real Apache Kafka node (KRaft, combined broker+controller) run from the official jars.

:class:`LocalBroker` is one node whose files live in one data directory::

    <data_dir>/cluster.id                 id the storage was formatted with
    <data_dir>/broker.pid                 pid (and process group) of the running JVM
    <data_dir>/config/server.properties   rewritten on every start
    <data_dir>/config/log4j2.properties
    <data_dir>/kafka-logs/                Kafka's log.dirs (topic data and the metadata log)
    <data_dir>/logs/server.log            the broker's log
    <data_dir>/logs/stdout.log            JVM stdout/stderr (crashes before logging is up)
    <data_dir>/security/                  a secured node's CA, key and users (broker/security.py)

Each node of a :class:`~streamtrain.broker.cluster.LocalCluster` is laid out the same way, and
both run their JVMs with the same node machinery, :class:`_Node`.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from streamtrain.broker.process import (
    BROKER_MAIN_CLASS,
    _lock_file,
    _read_tail,
    broker_answers,
    is_broker_cmdline,
    last_meaningful_line,
    parse_pid,
    pid_alive,
    port_is_free,
    process_cmdline,
    stop_process_group,
)
from streamtrain.broker.properties import (
    _checked_port,
    new_cluster_id,
    render_log4j2_properties,
    render_server_properties,
)
from streamtrain.broker.security import BrokerSecurity, default_internal_port
from streamtrain.errors import BrokerError, ConfigError

DEFAULT_HEAP = "512m"

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
        security: BrokerSecurity | None = None,
        internal_port: int | None = None,
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
        # With security, clients use SASL_SSL on ``port``; the broker itself mutual TLS on
        # ``internal_port`` (see broker/security.py).
        self.security = security
        self.internal_port = _checked_port(
            internal_port if internal_port is not None else default_internal_port(self.port),
            "internal port",
        )
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def internal_bootstrap(self) -> str:
        """Where streamtrain itself checks the node: the client port, or on a secured node the
        internal listener, where it authenticates with the broker's certificate."""
        return self.bootstrap if self.security is None else f"{self.host}:{self.internal_port}"

    def answers(self, timeout: float) -> bool:
        """True if the node answers a metadata request (as the broker itself when secured)."""
        config = None if self.security is None else self.security.internal_client_config()
        return broker_answers(self.internal_bootstrap, timeout=timeout, config=config)

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
        extra = dict(self.extra_properties)
        if self.security is not None:
            extra = {
                **self.security.server_properties(
                    host=self.host,
                    port=self.port,
                    internal_port=self.internal_port,
                    controller_port=self.controller_port,
                ),
                **extra,
            }
        return render_server_properties(
            node_id=self.node_id,
            log_dir=self.log_dir,
            host=self.host,
            port=self.port,
            controller_port=self.controller_port,
            controllers=self.controllers,
            replication_factor=self.replication_factor,
            extra=extra,
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
            answering=self.answers(timeout),
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
        ports = [self.port, self.controller_port]
        if self.security is not None:
            ports.append(self.internal_port)
        for port in ports:
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
        try:
            stopped = stop_process_group(
                pid, timeout, self._is_alive, kill_wait=_KILL_WAIT_SECONDS, hard=hard
            )
        except PermissionError as err:
            raise BrokerError(
                f"not allowed to stop {self.name} (pid {pid}): {err.strerror}"
            ) from err
        if not stopped:
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
        match = re.search(
            r"^advertised\.listeners=(?:PLAINTEXT|CLIENT)://([^,\s]+)", text, re.MULTILINE
        )
        return match.group(1) if match else None

    def _configured_internal_port(self) -> int | None:
        """The internal listener's port in the written configuration (a secured node's)."""
        try:
            text = self.config_path.read_text(encoding="ascii", errors="replace")
        except OSError:
            return None
        match = re.search(r"^advertised\.listeners=.*INTERNAL://[^,\s]+:(\d+)", text, re.MULTILINE)
        return int(match.group(1)) if match else None

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
            if not node.answers(timeout=min(2.0, remaining))
        ]
        if not pending:
            return
        time.sleep(_POLL_SECONDS)
