"""A stop request that a signal handler may set: :class:`StopFlag`.

``threading.Event.set`` takes the event's lock. A Python signal handler runs on the main thread
between two bytecodes, possibly while that very thread holds the same lock inside
``Event.wait`` — and then it waits for itself forever (a produce run paced by ``Event.wait``
hung that way after SIGINT). Setting a :class:`StopFlag` is a plain assignment; waiting on it
sleeps in short slices, and a signal cuts a sleep short, so its handler runs at once.
"""

from __future__ import annotations

import time

__all__ = ["StopFlag"]

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
