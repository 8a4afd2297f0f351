"""Bounds on what one record may cost: its size in bytes and its number of features.

One producer gone wrong (a record of megabytes, an object with a million keys) must not blow up
the model's memory, the join's pending state or a checkpoint. :class:`BoundedShape` refuses
such records before and after decoding, as dead letters with their own reasons
(``record-too-large``, ``too-many-features``), in front of any shape (the seed's or flat).

A ``record-too-large`` dead letter does not copy the value (see
:mod:`streamtrain.train.deadletter`): the dead-letter topic may not accept what the input topic
did, and a refused delivery would stop the trainer. Its origin headers locate the original.

>>> from streamtrain.models.problem import Problem
>>> from streamtrain.records import SEED
>>> shape = BoundedShape(SEED, max_record_bytes=64, max_features=2)
>>> shape.decode(b'{"x": {"a": 1, "b": 2}, "y": true}', Problem.CLASSIFICATION)
({'a': 1, 'b': 2}, True)
>>> shape.decode(b'{"x": {"a": 1, "b": 2, "c": 3}, "y": true}', Problem.CLASSIFICATION)
Traceback (most recent call last):
...
streamtrain.data.events.InvalidEvent: 3 features, more than --max-features 2
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streamtrain.data.events import InvalidEvent, Reason
from streamtrain.fastpath.decode import DecodedBatch, decode_each
from streamtrain.models.problem import Problem
from streamtrain.records.seed import EventShape

__all__ = ["DEFAULT_MAX_FEATURES", "DEFAULT_MAX_RECORD_BYTES", "BoundedShape"]

# Kafka's own default record limit (message.max.bytes) is about 1 MiB.
DEFAULT_MAX_RECORD_BYTES = 1 << 20
# Far above any model learned event by event; far below what would exhaust memory.
DEFAULT_MAX_FEATURES = 10_000


class BoundedShape:
    """``inner``, refusing records over ``max_record_bytes`` or ``max_features``."""

    def __init__(self, inner: EventShape, *, max_record_bytes: int, max_features: int) -> None:
        self.inner = inner
        self.max_record_bytes = max_record_bytes
        self.max_features = max_features

    def __repr__(self) -> str:
        return (
            f"BoundedShape({self.inner!r}, max_record_bytes={self.max_record_bytes}, "
            f"max_features={self.max_features})"
        )

    def decode(self, value: bytes | None, problem: Problem) -> tuple[dict[str, Any], Any]:
        self._check_size(value)
        x, y = self.inner.decode(value, problem)
        self._check_features(x)
        return x, y

    def decode_batch(self, values: Sequence[bytes | None], problem: Problem) -> DecodedBatch:
        # C-level passes (no Python code per record): a fast path's batch has 500 of them.
        if max(map(len, filter(None, values)), default=0) <= self.max_record_bytes:
            batch = self.inner.decode_batch(values, problem)
            if max(map(len, batch.xs), default=0) <= self.max_features:
                return batch  # the usual case: the inner shape's batch as it is
        return decode_each(self.decode, values, problem)

    def decode_item(
        self, value: bytes | None, key: bytes | None, problem: Problem, id_from: str
    ) -> tuple[str, str | None, dict[str, Any] | None, Any]:
        self._check_size(value)
        kind, event_id, x, y = self.inner.decode_item(value, key, problem, id_from)
        if x is not None:
            self._check_features(x)
        return kind, event_id, x, y

    def _check_size(self, value: bytes | None) -> None:
        if value is not None and len(value) > self.max_record_bytes:
            raise InvalidEvent(
                Reason.RECORD_TOO_LARGE,
                f"{len(value)} bytes, more than --max-record-bytes {self.max_record_bytes}",
            )

    def _check_features(self, x: dict[str, Any]) -> None:
        if len(x) > self.max_features:
            raise InvalidEvent(
                Reason.TOO_MANY_FEATURES,
                f"{len(x)} features, more than --max-features {self.max_features}",
            )
