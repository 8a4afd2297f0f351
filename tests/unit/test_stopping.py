"""StopFlag, set from a signal handler while the main thread waits on it; stop_on_signals."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator

import pytest

from streamtrain.stopping import (
    STOP_SIGNALS,
    StopFlag,
    catch_early_signals,
    early_signals,
    release_early_signals,
    stop_on_signals,
)


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


@pytest.fixture
def handlers_restored() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        release_early_signals()
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_signals_stop_the_block_and_the_handlers_come_back(handlers_restored: None) -> None:
    before = signal.getsignal(signal.SIGTERM)
    stops: list[signal.Signals] = []
    with stop_on_signals(stops.append) as caught:
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)  # no KeyboardInterrupt unless asked for
    assert stops == caught == [signal.SIGTERM, signal.SIGINT, signal.SIGINT]
    assert signal.getsignal(signal.SIGTERM) is before


def test_early_signals_are_replayed_once(handlers_restored: None) -> None:
    assert catch_early_signals()
    signal.raise_signal(signal.SIGTERM)
    assert early_signals() == [signal.SIGTERM]
    stops: list[signal.Signals] = []
    with stop_on_signals(stops.append):
        assert stops == [signal.SIGTERM]
    with stop_on_signals(stops.append):
        pass
    assert stops == [signal.SIGTERM] and early_signals() == []
    # Back to remembering, until released to the defaults.
    signal.raise_signal(signal.SIGINT)
    assert early_signals() == [signal.SIGINT]
    release_early_signals()
    assert early_signals() == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_second_sigint_can_interrupt(handlers_restored: None) -> None:
    stops: list[signal.Signals] = []
    with (
        pytest.raises(KeyboardInterrupt),
        stop_on_signals(stops.append, second_sigint_interrupts=True),
    ):
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGINT)
        assert stops == [signal.SIGTERM, signal.SIGTERM, signal.SIGINT]
        signal.raise_signal(signal.SIGINT)
    assert len(stops) == 3


def test_off_the_main_thread_nothing_is_installed() -> None:
    results: list[object] = []

    def body() -> None:
        results.append(catch_early_signals())
        with stop_on_signals(results.append) as caught:
            results.append(caught)
        release_early_signals()

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert results == [False, []]
