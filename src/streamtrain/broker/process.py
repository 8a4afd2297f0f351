"""A Kafka JVM seen from outside: pid files, command lines, ports, whether a broker answers,
what its log says, and lock files.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from streamtrain.errors import ConfigError

BROKER_MAIN_CLASS = "kafka.Kafka"


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports that were free on localhost a moment ago (for brokers
    started by tests and benchmarks)."""
    with ExitStack() as stack:
        sockets = []
        for _ in range(count):
            # All held open together, so the kernel cannot hand out the same port twice.
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]


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


@contextmanager
def _lock_file(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def broker_answers(
    bootstrap: str, timeout: float = 3.0, config: Mapping[str, Any] | None = None
) -> bool:
    """True if a Kafka broker at ``bootstrap`` (``host:port[,...]``) answers a metadata request.

    ``config`` adds client settings (TLS, SASL) for a secured broker.
    """
    deadline = time.monotonic() + timeout
    # A refused TCP connection settles it at once; the Kafka client would keep retrying.
    if not any(_tcp_connects(address, timeout) for address in bootstrap.split(",")):
        return False
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    full: dict[str, Any] = {
        **(config or {}),
        "bootstrap.servers": bootstrap,
        "reconnect.backoff.max.ms": 500,
        # Connection errors are the expected answer while polling a starting broker.
        "log_level": 0,
        "error_cb": _ignore,
    }
    admin = AdminClient(full)
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


def stop_process_group(
    pid: int, timeout: float, alive: Callable[[int], bool], *, kill_wait: float, hard: bool = False
) -> bool:
    """SIGTERM the process group of ``pid`` and wait ``timeout`` s, then SIGKILL it and wait
    ``kill_wait`` s (``hard``: SIGKILL at once); True once ``alive(pid)`` says it is gone, or it
    was gone already. A PermissionError (not ours to signal) is the caller's to report."""
    steps = [(signal.SIGKILL, kill_wait)]
    if not hard:
        steps.insert(0, (signal.SIGTERM, timeout))
    for sig, wait in steps:
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not alive(pid):
                return True
            time.sleep(0.05)
    return False


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


def _ignore(*_args: object) -> None:
    return None
