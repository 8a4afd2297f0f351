"""A bounded history of a whole run: every recent record, evenly spaced older ones."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class ThinnedHistory(Generic[T]):
    """At most ``capacity`` items that span everything ever appended.

    The newest ``capacity // 2`` items are kept whole. Older ones are kept at a stride: every
    item whose position in the run is a multiple of it. When the older part outgrows its half,
    the stride doubles and every other kept item goes, so the older points stay evenly spaced
    over the run however long it gets, and the first item is never dropped. Appending is
    amortised O(1). ``dashboard.js`` keeps its copy by the same rule.

    >>> history = ThinnedHistory(capacity=8)
    >>> for step in range(20):
    ...     history.append(step)
    >>> list(history)
    [0, 4, 8, 12, 16, 17, 18, 19]
    >>> for step in range(20, 100):
    ...     history.append(step)
    >>> list(history), history.last()
    ([0, 32, 64, 96, 97, 98, 99], 99)
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 2:
            raise ValueError(f"a history holds at least 2 items, got {capacity}")
        self.capacity = capacity
        self._recent: collections.deque[tuple[int, T]] = collections.deque()
        self._older: list[tuple[int, T]] = []
        self._stride = 1
        self._appended = 0

    def append(self, item: T) -> None:
        self._recent.append((self._appended, item))
        self._appended += 1
        if len(self._recent) > self.capacity // 2:
            position, aged = self._recent.popleft()
            if position % self._stride == 0:
                self._older.append((position, aged))
            if len(self._older) > self.capacity - self.capacity // 2:
                self._stride *= 2
                self._older = [(p, x) for p, x in self._older if p % self._stride == 0]

    def __iter__(self) -> Iterator[T]:
        for _, item in self._older:
            yield item
        for _, item in self._recent:
            yield item

    def __len__(self) -> int:
        return len(self._older) + len(self._recent)

    def last(self) -> T | None:
        return self._recent[-1][1] if self._recent else None
