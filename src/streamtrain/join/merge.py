"""Event-time merge of a task's input partitions, so results are a pure function of the logs.

A joined task reads several partitions (its feature partitions and its label partitions). Each
partition is taken in log order; *between* partitions, the record with the smallest timestamp
goes first, a label before a feature at the same time (River's ``simulate_qa`` rule: an answer
due at ``t`` is revealed before the question asked at ``t``), then by input key — (topic,
partition) in a trainer — so ties between partitions do not depend on the order the group
assigned them in. A record is only taken once every input has a record buffered to compare it with —
the rule Kafka Streams applies per task (``max.task.idle.ms``, KIP-695) — except that an input
with nothing buffered may be passed over when

* it is **caught up** (everything its log holds was handed over) and has stayed empty for
  ``max_wait`` seconds: records written later are later, by arrival; or
* it has stayed empty for ``stall`` seconds although its log holds more (its leader is away):
  a warning says the order may then differ from a replay's.

So whenever every topic's records were in the log before the trainer reached them — a replay,
a restart, a backlog — the order depends on the logs alone, however fetches interleave.

>>> merge = EventTimeMerge(["features/0", "labels/0"], max_wait=0.0)
>>> merge.add("features/0", 10, 1, "f1"); merge.add("features/0", 20, 1, "f2")
>>> merge.add("labels/0", 10, 0, "l1")
>>> list(merge.take(now=0.0, caught_up=lambda _: False))  # labels/0 may hold more
['l1']
>>> list(merge.take(now=0.0, caught_up=lambda _: True))  # it does not
['f1', 'f2']
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any

__all__ = ["EventTimeMerge"]

log = logging.getLogger(__name__)

# An input whose log holds more than was fetched blocks the merge this long before it is
# passed over (its leader may be away): long enough for any healthy fetch.
DEFAULT_STALL = 30.0


class EventTimeMerge:
    """Buffers per input (``add``), hands records over in merged order (``take``)."""

    def __init__(
        self, inputs: Iterable[Hashable], *, max_wait: float, stall: float = DEFAULT_STALL
    ) -> None:
        self.max_wait = max_wait
        self.stall = max(stall, max_wait)
        self._queues: dict[Any, deque[tuple[int, int, Any, Any]]] = {}
        self._blocked_since: float | None = None
        self._warned = False
        for key in inputs:
            self.add_input(key)

    def add_input(self, key: Hashable) -> None:
        if key not in self._queues:
            self._queues[key] = deque()

    def remove_input(self, key: Hashable) -> None:
        self._queues.pop(key, None)

    @property
    def inputs(self) -> list[Hashable]:
        return list(self._queues)

    def add(self, key: Hashable, timestamp: int, rank: int, item: Any) -> None:
        """Buffer ``item`` of input ``key`` (log order within an input); ``rank`` breaks
        timestamp ties (smaller first: labels are 0, features 1), then the keys (which must
        compare with each other)."""
        self._queues[key].append((timestamp, rank, key, item))

    def buffered(self, key: Hashable) -> int:
        queue = self._queues.get(key)
        return len(queue) if queue is not None else 0

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def take(self, now: float, caught_up: Callable[[Hashable], bool]) -> Iterator[Any]:
        """Items in merged order, as far as the rules in the module doc allow at ``now``."""
        queues = self._queues
        while True:
            empty = [key for key, queue in queues.items() if not queue]
            if len(empty) == len(queues):
                self._blocked_since = None
                return
            if not empty:
                self._blocked_since = None
            elif not self._may_pass(empty, now, caught_up):
                return
            best = min((q[0] for q in queues.values() if q), key=_order_key)
            queues[best[2]].popleft()
            yield best[3]

    def _may_pass(
        self, empty: list[Hashable], now: float, caught_up: Callable[[Hashable], bool]
    ) -> bool:
        if self._blocked_since is None:
            self._blocked_since = now
        waited = now - self._blocked_since
        if all(caught_up(key) for key in empty):
            return waited >= self.max_wait
        if waited < self.stall:
            return False
        if not self._warned:
            self._warned = True
            log.warning(
                "inputs %s have had nothing to read for %.0f s although their logs hold more; "
                "merging without them (the order may differ from a replay's)",
                empty,
                waited,
            )
        return True


def _order_key(head: tuple[int, int, Any, Any]) -> tuple[int, int, Any]:
    return head[0], head[1], head[2]
