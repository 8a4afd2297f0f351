"""How the fast path hands work back to River: for one batch, or for good, and why.

:class:`FastPathFallback` refuses one batch (River learns it event by event). Its subclass
:class:`FastPathDisabled` also says that the fast path is off for good for that model, because River
or one of its objects is not what the fast path was verified with. Each such decision is counted
per reason and logged once per process and reason (:func:`record_disabled`), so that an upgrade of
River that changes its internals shows up as a warning and a count, never as a crash or a result
that differs from River's.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

__all__ = ["FastPathDisabled", "FastPathFallback", "disabled_counts", "record_disabled"]

log = logging.getLogger(__name__)


class FastPathFallback(Exception):
    """``learn_many`` could not take this batch; nothing of it was applied.

    The caller calls :meth:`FastEvaluator.sync` and learns the batch with River, event by event
    (which reproduces River's behaviour exactly, including an event on which River raises).
    """


class FastPathDisabled(FastPathFallback):
    """The fast path is off for good for this model: River is not as the adapter expects.

    As for any :class:`FastPathFallback`, nothing of the batch was applied and the River objects
    hold the whole state (``sync()`` is then a no-op), so the caller learns the batch with River.
    Every later ``learn_many`` raises this again at once: the caller should drop the evaluator and
    stay on River's per-event path for that model. The reason is in ``str(exc)`` and in
    :attr:`FastEvaluator.disabled_because`.
    """


_lock = threading.Lock()
_counts: Counter[str] = Counter()


def record_disabled(reason: str, *, exc_info: BaseException | None = None) -> None:
    """Count that the fast path was turned off for a model, and log ``reason`` once per process."""
    with _lock:
        first = reason not in _counts
        _counts[reason] += 1
    if first:
        log.warning(
            "the fast path is off for a model, River's per-event path learns it instead: %s",
            reason,
            exc_info=exc_info,
        )


def disabled_counts() -> dict[str, int]:
    """How many times, per reason, the fast path was turned off for a model in this process.

    Counts models refused at the eligibility check because River was not as expected, and
    evaluators disabled for good later (:class:`FastPathDisabled`: River not as expected, or the
    model changed so that it no longer qualifies); not models that were never eligible.
    """
    with _lock:
        return dict(_counts)
