"""A bounded history of one model's metrics records, and their live delivery to listeners.

:class:`MetricsHub` is what the dashboard's server-sent events read; the
:class:`~streamtrain.serving.follower.MetricsFollower` fills it from the metrics topic (tests
publish to a bare one).
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from typing import Any

from streamtrain.serving.curves import ModelViews
from streamtrain.serving.history import ThinnedHistory

__all__ = ["DEFAULT_HISTORY", "MetricsHub", "Subscription"]

DEFAULT_HISTORY = 5_000


@dataclasses.dataclass(eq=False)
class Subscription:
    """One live listener of a :class:`MetricsHub`; ``queue`` yields records, ``None`` at end."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[dict[str, Any] | None]
    overflowed: bool = False


class MetricsHub:
    """A bounded history of metrics records, and live delivery to asyncio subscribers.

    The history spans the whole run in at most ``history`` records (a
    :class:`~streamtrain.serving.history.ThinnedHistory`: the newest half whole, older records
    evenly spaced), so a learning curve keeps its start however long the trainer runs.

    Each record is published with every model's view added (:class:`~.curves.ModelViews`:
    ``models``, ``promotions``, ``drifts``), which the dashboard draws.

    :meth:`publish` may be called from any thread. A subscriber that falls ``queue_size``
    records behind is ended (its stream closes; a dashboard reconnects and gets the history)
    rather than let a stalled client grow memory without bound.
    """

    def __init__(self, history: int = DEFAULT_HISTORY, queue_size: int = 1_000) -> None:
        self._records: ThinnedHistory[dict[str, Any]] = ThinnedHistory(history)
        self._views = ModelViews()
        self._subscribers: set[Subscription] = set()
        self._lock = threading.Lock()
        self._queue_size = queue_size
        self.received = 0

    @property
    def capacity(self) -> int:
        """The most records the history holds."""
        return self._records.capacity

    def publish(self, record: dict[str, Any]) -> None:
        with self._lock:
            record = self._views.annotate(record)
            self._records.append(record)
            self.received += 1
            for sub in self._subscribers:
                _offer(sub, record)

    def history(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._records)

    def latest(self) -> dict[str, Any] | None:
        with self._lock:
            return self._records.last()

    def subscribe(self) -> tuple[list[dict[str, Any]], Subscription]:
        """The history so far and a subscription to every record after it (no gap, no repeat).

        Call from the event loop that will read the subscription's queue.
        """
        sub = Subscription(asyncio.get_running_loop(), asyncio.Queue(self._queue_size))
        with self._lock:
            self._subscribers.add(sub)
            return list(self._records), sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subscribers.discard(sub)

    def close_subscribers(self) -> None:
        """End every subscription (their streams finish), e.g. at shutdown."""
        with self._lock:
            subs, self._subscribers = self._subscribers, set()
        for sub in subs:
            _offer(sub, None)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        self.close_subscribers()

    def status(self) -> dict[str, Any]:
        return {"records": self.received}


def _offer(sub: Subscription, record: dict[str, Any] | None) -> None:
    def put() -> None:
        try:
            sub.queue.put_nowait(record)
        except asyncio.QueueFull:
            sub.overflowed = True

    try:
        sub.loop.call_soon_threadsafe(put)
    except RuntimeError:  # its loop is closed: nobody is listening any more
        sub.overflowed = True
