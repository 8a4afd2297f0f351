"""StopFlag: set from a signal handler while the main thread waits on it."""

from __future__ import annotations

import signal
import time

from streamtrain.stopping import StopFlag


def test_wait_times_out_then_sees_the_flag() -> None:
    flag = StopFlag()
    started = time.monotonic()
    assert flag.wait(0.12) is False
    assert 0.1 <= time.monotonic() - started < 1.0
    flag.set()
    assert flag.is_set() and flag.wait(10) is True and flag.wait() is True
    flag.clear()
    assert not flag.is_set()


def test_a_signal_handler_sets_it_during_wait() -> None:
    flag = StopFlag()
    previous = signal.signal(signal.SIGALRM, lambda *_: flag.set())
    try:
        # Many short waits, each interrupted at a random point by a handler that sets the
        # flag: the case that can deadlock threading.Event (its lock taken twice by one thread).
        for _ in range(50):
            flag.clear()
            signal.setitimer(signal.ITIMER_REAL, 0.003)
            started = time.monotonic()
            assert flag.wait(5) is True
            assert time.monotonic() - started < 1.0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
