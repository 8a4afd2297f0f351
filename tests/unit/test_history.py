"""The serve process's bounded metrics history (serving/history.py)."""

from __future__ import annotations

import itertools

import pytest

from streamtrain.serving.follower import MetricsHub
from streamtrain.serving.history import ThinnedHistory


def test_a_short_run_is_kept_whole() -> None:
    history: ThinnedHistory[int] = ThinnedHistory(10)
    for i in range(10):
        history.append(i)
    assert list(history) == list(range(10))
    assert history.last() == 9


@pytest.mark.parametrize("capacity", [2, 3, 10, 1000])
def test_a_long_run_stays_bounded_and_evenly_spread(capacity: int) -> None:
    history: ThinnedHistory[int] = ThinnedHistory(capacity)
    total = 200_000
    for i in range(total):
        history.append(i)
        assert len(history) <= capacity
    kept = list(history)
    assert kept[0] == 0 and kept[-1] == total - 1  # the run's start and its newest item
    assert kept == sorted(set(kept))
    newest = capacity // 2
    assert kept[-newest:] == list(range(total - newest, total))
    older = kept[: len(kept) - newest]
    gaps = {b - a for a, b in itertools.pairwise(older)}
    assert len(gaps) <= 1  # one stride: older points evenly spaced over the run
    assert len(older) >= (capacity - newest) // 2  # and they use at least half their room


def test_a_history_needs_room_for_two() -> None:
    with pytest.raises(ValueError):
        ThinnedHistory(1)


def test_hub_history_covers_the_whole_run() -> None:
    hub = MetricsHub(history=100)
    for i in range(10_000):
        hub.publish({"i": i})
    kept = [r["i"] for r in hub.history()]
    assert len(kept) <= 100 and kept[0] == 0
    latest = hub.latest()
    assert latest is not None and latest["i"] == 9_999  # with every model's view added
    assert hub.received == 10_000
    # Every tenth of the run still has points on the curve.
    assert all(any(k * 1000 <= i < (k + 1) * 1000 for i in kept) for k in range(10))
