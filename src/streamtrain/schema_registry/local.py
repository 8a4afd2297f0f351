"""A local schema registry: Apicurio Registry run from its runner jar, owned through a data
directory::

    <data_dir>/registry.pid    pid (and process group) of the running JVM
    <data_dir>/registry.url    the address it was started on
    <data_dir>/registry.log    its output

It keeps schemas in memory (they are gone when it stops), listens on 127.0.0.1 only, and checks
new schema versions against the previous one as Confluent's registry does by default
(compatibility BACKWARD; Apicurio's own default is NONE).
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from streamtrain.broker.process import (
    _lock_file,
    _read_tail,
    free_ports,
    parse_pid,
    pid_alive,
    port_is_free,
    process_cmdline,
    stop_process_group,
)
from streamtrain.broker.runtime import find_java
from streamtrain.errors import ConfigError, SchemaRegistryError
from streamtrain.schema_registry.runtime import NEEDED_FOR, RUNNER_JAR, ensure_registry_jar

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8081
DEFAULT_HEAP = "256m"
CCOMPAT_PATH = "/apis/ccompat/v7"

PID_FILE = "registry.pid"
URL_FILE = "registry.url"
LOG_FILE = "registry.log"
LOCK_FILE = ".lock"
# On the JVM's command line: ties a pid to this data directory (pids are reused).
_DIR_PROPERTY = "-Dstreamtrain.registry.dir="
_POLL_SECONDS = 0.25
_KILL_WAIT_SECONDS = 10.0


def default_data_dir() -> Path:
    """``$STREAMTRAIN_REGISTRY_DIR`` or ``~/.local/share/streamtrain/registry``."""
    configured = os.environ.get("STREAMTRAIN_REGISTRY_DIR")
    if configured:
        return Path(configured).expanduser().absolute()
    return Path.home() / ".local" / "share" / "streamtrain" / "registry"


def registry_answers(url: str, timeout: float = 3.0) -> bool:
    """True if a Confluent-compatible schema registry at ``url`` lists its subjects.

    ``url`` is the API root (for Apicurio, ending in ``/apis/ccompat/v7``).
    """
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/subjects", timeout=timeout) as answer:
            return bool(answer.status == 200)
    except (OSError, ValueError):
        return False


@dataclass(frozen=True)
class RegistryStatus:
    """What :meth:`LocalSchemaRegistry.status` found."""

    running: bool
    pid: int | None
    url: str
    answering: bool
    data_dir: Path
    log_path: Path


class LocalSchemaRegistry:
    """Apicurio Registry on this machine, started and stopped through ``data_dir``.

    ``port`` 0 picks a free port at start; None means the running registry's port, else
    :data:`DEFAULT_PORT`. Any process can stop or inspect the registry another one started.

    >>> LocalSchemaRegistry(data_dir=Path("/tmp/r"), port=18081).url
    'http://127.0.0.1:18081/apis/ccompat/v7'
    """

    def __init__(
        self,
        *,
        data_dir: Path | None = None,
        host: str = DEFAULT_HOST,
        port: int | None = None,
        heap: str = DEFAULT_HEAP,
        cache_dir: Path | None = None,
    ) -> None:
        if port is not None and not 0 <= port < 65536:
            raise ConfigError(f"registry port must be between 0 and 65535, got {port}")
        self.data_dir = (
            Path(data_dir).expanduser().absolute() if data_dir is not None else default_data_dir()
        )
        self.host = host
        self.port = port
        self.heap = heap
        self.cache_dir = cache_dir
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"LocalSchemaRegistry(url={self.url!r}, data_dir={str(self.data_dir)!r})"

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_FILE

    @property
    def url(self) -> str:
        """The Confluent-compatible API root, what ``--schema-registry`` takes."""
        if self.port is None or self.port == 0:
            started = self._started_url()
            if started is not None and self.running_pid() is not None:
                return started
        port = DEFAULT_PORT if self.port is None else self.port
        return f"http://{self.host}:{port}{CCOMPAT_PATH}"

    def up(self, wait_seconds: float = 60) -> bool:
        """Start the registry and wait until it answers.

        Returns False if one from this data directory already runs (at the asked port, if one
        was asked). Raises :class:`SchemaRegistryError` (after stopping what it started) when
        the port is taken, the JVM exits, or it does not answer within ``wait_seconds``.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            pid = self.running_pid()
            if pid is not None:
                started = self._started_url()
                if self.port and started is not None and f":{self.port}/" not in started:
                    raise SchemaRegistryError(
                        f"the registry of {self.data_dir} already runs at {started} (pid {pid}), "
                        f"not on port {self.port}; stop it first"
                    )
                return False
            jar = ensure_registry_jar(self.cache_dir)
            java = find_java(NEEDED_FOR)
            port = self.port if self.port else DEFAULT_PORT
            if self.port == 0:
                port = free_ports(1)[0]
            elif not port_is_free(self.host, port):
                raise SchemaRegistryError(
                    f"cannot start the schema registry: {self.host}:{port} is already in use; "
                    "stop what runs there or pick another --port (0 for a free one)"
                )
            url = f"http://{self.host}:{port}{CCOMPAT_PATH}"
            proc = self._launch(java, jar, port)
            try:
                (self.data_dir / URL_FILE).write_text(url + "\n", encoding="utf-8")
                self._await(proc, url, wait_seconds)
            except BaseException:
                self._terminate(proc.pid, timeout=5)
                (self.data_dir / PID_FILE).unlink(missing_ok=True)
                raise
        return True

    def down(self, timeout: float = 30) -> bool:
        """Stop the registry (SIGTERM, SIGKILL after ``timeout`` s); False if none ran."""
        if not self.data_dir.is_dir():
            return False
        with self._locked():
            pid = self.running_pid()
            if pid is None:
                return False
            self._terminate(pid, timeout)
            (self.data_dir / PID_FILE).unlink(missing_ok=True)
        return True

    def status(self, timeout: float = 3.0) -> RegistryStatus:
        """Whether this directory's registry runs, and whether a registry answers at its URL."""
        pid = self.running_pid()
        url = self.url
        return RegistryStatus(
            running=pid is not None,
            pid=pid,
            url=url,
            answering=registry_answers(url, timeout=timeout),
            data_dir=self.data_dir,
            log_path=self.log_path,
        )

    def running_pid(self) -> int | None:
        """The pid of this directory's running registry; a stale pid file is removed."""
        path = self.data_dir / PID_FILE
        try:
            pid = parse_pid(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except OSError as err:
            raise SchemaRegistryError(f"cannot read {path}: {err.strerror or err}") from err
        if pid is not None and self._is_alive(pid):
            args = process_cmdline(pid)
            if f"{_DIR_PROPERTY}{self.data_dir}" in args and any(
                arg.endswith(RUNNER_JAR) for arg in args
            ):
                return pid
        path.unlink(missing_ok=True)
        return None

    # -- internals ---------------------------------------------------------------------------

    def _launch(self, java: str, jar: Path, port: int) -> subprocess.Popen[bytes]:
        (management_port,) = free_ports(1)
        env = {
            **os.environ,
            "QUARKUS_HTTP_HOST": self.host,
            "QUARKUS_HTTP_PORT": str(port),
            # Its management interface (health, metrics) would take 9000 on all interfaces.
            "QUARKUS_MANAGEMENT_HOST": self.host,
            "QUARKUS_MANAGEMENT_PORT": str(management_port),
            "APICURIO_STORAGE_KIND": "sql",
            "APICURIO_DATASOURCE_URL": "jdbc:h2:mem:streamtrain",
            "APICURIO_RULES_GLOBAL_COMPATIBILITY": "BACKWARD",
        }
        command = [
            java,
            f"-Xmx{self.heap}",
            f"{_DIR_PROPERTY}{self.data_dir}",
            f"-Djava.io.tmpdir={self.data_dir}",
            "-jar",
            str(jar),
        ]
        with self.log_path.open("wb") as log:
            try:
                # Its own session: Ctrl-C in the terminal that ran `up` must not reach it.
                proc = subprocess.Popen(
                    command,
                    cwd=self.data_dir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as err:
                raise SchemaRegistryError(f"cannot run {java}: {err.strerror or err}") from err
        self._proc = proc
        try:
            (self.data_dir / PID_FILE).write_text(f"{proc.pid}\n", encoding="utf-8")
        except BaseException:
            self._terminate(proc.pid, timeout=5)
            raise
        return proc

    def _await(self, proc: subprocess.Popen[bytes], url: str, wait_seconds: float) -> None:
        deadline = time.monotonic() + wait_seconds
        while not registry_answers(url, timeout=2.0):
            code = proc.poll()
            if code is not None:
                tail = _read_tail(self.log_path, 0).strip().splitlines()
                reason = tail[-1] if tail else "no output"
                raise SchemaRegistryError(
                    f"the schema registry exited during start-up (exit code {code}): {reason} "
                    f"(log: {self.log_path})"
                )
            if time.monotonic() >= deadline:
                raise SchemaRegistryError(
                    f"the schema registry did not answer at {url} within {wait_seconds:g} s and "
                    f"was stopped (log: {self.log_path})"
                )
            time.sleep(_POLL_SECONDS)

    def _terminate(self, pid: int, timeout: float) -> None:
        try:
            stopped = stop_process_group(pid, timeout, self._is_alive, kill_wait=_KILL_WAIT_SECONDS)
        except PermissionError as err:
            raise SchemaRegistryError(
                f"not allowed to stop the schema registry (pid {pid}): {err.strerror}"
            ) from err
        if not stopped:
            raise SchemaRegistryError(f"the schema registry (pid {pid}) survived SIGKILL")

    def _is_alive(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None
        return pid_alive(pid)

    def _started_url(self) -> str | None:
        try:
            return (self.data_dir / URL_FILE).read_text(encoding="utf-8").strip() or None
        except OSError:
            return None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with _lock_file(self.data_dir / LOCK_FILE):
            yield
