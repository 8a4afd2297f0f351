"""Fault points for fault-injection tests: ``STREAMTRAIN_FAULT=<point>:<n>``.

When set, the process kills itself with SIGKILL the ``n``-th time it reaches a crash point — a
real crash at an exact place in the checkpoint protocol, which a test cannot hit by timing.
Crash points: ``after-learn`` (a batch learned, nothing committed),
``after-checkpoint-produced`` (checkpoint record sent in the open transaction),
``before-commit`` (offsets sent to the transaction, commit not yet requested),
``after-join-predict`` (a joined task predicted a feature event, inside its join step: the
batch half done, its prediction and join state in memory only), ``after-request-applied`` (a
task applied requests from ``streamtrain models``, its checkpoint not yet committed),
``commit-behind-learning`` (a checkpoint transaction filled on the committer thread, not yet
committed, while the learning thread has learned past its snapshot; the committer waits for
that before crashing).

Hang points block the calling thread for good instead, as librdkafka's transactional calls
sometimes do after a broker restart: ``hang-commit`` (the ``n``-th ``commit_transaction``).
Unset in normal use: a call and one comparison each time a point is reached (tens of ns;
the join reaches one per feature event, next to a River prediction of some microseconds).
"""

from __future__ import annotations

import os
import signal
import threading

_counts: dict[str, int] = {}


def _armed() -> tuple[str, int] | None:
    spec = os.environ.get("STREAMTRAIN_FAULT")
    if not spec:
        return None
    point, _, n = spec.partition(":")
    return point, int(n or "1")


_ARMED = _armed()


def crash_point(point: str) -> None:
    if _ARMED is None or _ARMED[0] != point:
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] >= _ARMED[1]:
        os.kill(os.getpid(), signal.SIGKILL)


def will_crash(point: str) -> bool:
    """Whether the next :func:`crash_point` ``point`` kills (to set the scene for it first)."""
    return _ARMED is not None and _ARMED[0] == point and _counts.get(point, 0) + 1 >= _ARMED[1]


def hang_point(point: str) -> None:
    if _ARMED is None or _ARMED[0] != point:
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] == _ARMED[1]:
        threading.Event().wait()  # never set: this thread is stuck, like a hung C call
