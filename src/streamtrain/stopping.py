"""Stopping a long-running command cleanly: :class:`StopFlag` and :func:`stop_on_signals`.

``threading.Event.set`` takes the event's lock. A Python signal handler runs on the main thread
between two bytecodes, possibly while that very thread holds the same lock inside
``Event.wait`` — and then it waits for itself forever (a produce run paced by ``Event.wait``
hung that way after SIGINT). So the handlers here only assign and append, and the stop
callbacks they call must do no more: setting a :class:`StopFlag` is a plain assignment; waiting
on it sleeps in short slices, and a signal cuts a sleep short, so its handler runs at once.

The CLI catches SIGINT and SIGTERM from its first line (:func:`catch_early_signals`): importing
River takes a while, and a SIGTERM sent right after spawning a trainer must still mean "stop
cleanly", not "die with nothing saved". :func:`stop_on_signals` replays what was caught.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType

__all__ = [
    "STOP_SIGNALS",
    "StopFlag",
    "catch_early_signals",
    "early_signals",
    "release_early_signals",
    "stop_on_signals",
]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_SLICE = 0.05  # the longest a waiter sleeps before looking at the flag again


class StopFlag:
    """``set`` / ``is_set`` / ``wait`` like ``threading.Event``, without a lock."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def clear(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        """Until set (True) or ``timeout`` seconds passed (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._set:
            if deadline is None:
                time.sleep(_SLICE)
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(_SLICE, remaining))
        return True


_early: list[int] = []  # signals caught before a command's own handlers were installed


def _remember(signum: int, _frame: FrameType | None) -> None:
    _early.append(signum)


def catch_early_signals() -> bool:
    """Remember SIGINT/SIGTERM until :func:`stop_on_signals` replays them.

    False, with nothing installed, off the main thread (the CLI run from a library thread).
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    for sig in STOP_SIGNALS:
        signal.signal(sig, _remember)
    return True


def early_signals() -> list[signal.Signals]:
    """The signals remembered and not replayed yet."""
    return [signal.Signals(s) for s in _early]


def release_early_signals() -> None:
    """Forget what was remembered; the default handlers return where the early ones still are."""
    if threading.current_thread() is not threading.main_thread():
        return  # nothing was installed from here
    _early.clear()
    if signal.getsignal(signal.SIGINT) is _remember:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGTERM) is _remember:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def stop_on_signals(
    stop: Callable[[signal.Signals], None], *, second_sigint_interrupts: bool = False
) -> Iterator[list[signal.Signals]]:
    """Call ``stop(sig)`` for each SIGINT/SIGTERM while the block runs; yield those caught.

    Signals remembered since :func:`catch_early_signals` are replayed first, as if they had
    just arrived. The previous handlers are back on exit. With ``second_sigint_interrupts``, a
    SIGINT once one was caught raises ``KeyboardInterrupt`` instead: the way out when the clean
    stop itself hangs. Off the main thread, where handlers cannot be installed, nothing is
    caught.
    """
    caught: list[signal.Signals] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        sig = signal.Signals(signum)
        if second_sigint_interrupts and sig is signal.SIGINT and signal.SIGINT in caught:
            raise KeyboardInterrupt
        caught.append(sig)
        stop(sig)

    previous = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}
    try:
        while _early:  # both handlers are ours now: nothing more is appended meanwhile
            on_signal(_early.pop(0), None)
        yield caught
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
