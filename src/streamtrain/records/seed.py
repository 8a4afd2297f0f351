"""What a step asks of a record shape, and the seed's ``{"x": {...}, "y": ...}`` shape."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from streamtrain.data.events import decode_event
from streamtrain.fastpath.decode import DecodedBatch, decode_batch
from streamtrain.join.events import decode_item
from streamtrain.models.problem import Problem

__all__ = ["SEED", "EventShape", "SeedShape"]


class EventShape(Protocol):
    """Bytes to a learnable event, or :class:`~streamtrain.data.events.InvalidEvent`."""

    def decode(self, value: bytes | None, problem: Problem) -> tuple[dict[str, Any], Any]:
        """``(x, y)`` of one record; ``y`` None when unlabelled."""
        ...

    def decode_batch(self, values: Sequence[bytes | None], problem: Problem) -> DecodedBatch:
        """:meth:`decode` of each value, as a batch for the compiled path."""
        ...

    def decode_item(
        self, value: bytes | None, key: bytes | None, problem: Problem, id_from: str
    ) -> tuple[str, str | None, dict[str, Any] | None, Any]:
        """``(kind, id, x, y)`` of a record of a joined stream (:mod:`streamtrain.join.events`)."""
        ...


class SeedShape:
    """The seed's format: exactly :func:`~streamtrain.data.events.decode_event` and friends
    (the very functions, so the default path is unchanged)."""

    decode = staticmethod(decode_event)
    decode_batch = staticmethod(decode_batch)
    decode_item = staticmethod(decode_item)

    def __repr__(self) -> str:
        return "SeedShape()"


SEED: EventShape = SeedShape()
