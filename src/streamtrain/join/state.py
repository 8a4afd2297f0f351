"""The pending side of a join: predictions waiting for their label, labels waiting for their
features, and the ids recently joined — all in event time, all checkpointed with the model.

Nothing here is wall-clock: "now" is the task's **stream time**, the largest record timestamp
it has processed (as in Kafka Streams), so expiry is a pure function of the logs too.

* A pending prediction is **expired** once stream time passes its feature's timestamp plus
  ``ttl_ms``: dead-lettered ``label-expired``, or, with a default label, learned with it.
* A label whose features have not come is **held** for ``grace_ms`` past its own timestamp,
  then dead-lettered ``unmatched-label``. (A label at the same time as its features is
  processed first, by the merge's rule, and waits for them even with no grace.)
* A second label for an id joined within the TTL (or among the last ``max_pending`` joins,
  without a TTL) is dead-lettered ``duplicate-label``; so is a second feature event for an
  id already waiting (``duplicate-id``). Past that memory a late label is ``unmatched-label``.
* ``max_pending`` bounds each of the three maps; the oldest entries go first, early, under the
  same policy, counted in ``evicted``.

The checkpoint form (:meth:`JoinState.to_plain`) is plain tuples and dicts plus River's
quantile objects, so it does not depend on this module's classes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from confluent_kafka import TIMESTAMP_CREATE_TIME
from river import stats

__all__ = [
    "DUPLICATE_ID",
    "DUPLICATE_LABEL",
    "LABEL_EXPIRED",
    "UNMATCHED_LABEL",
    "JoinPolicy",
    "JoinState",
    "Pending",
    "StoredRecord",
]

LABEL_EXPIRED = "label-expired"
UNMATCHED_LABEL = "unmatched-label"
DUPLICATE_LABEL = "duplicate-label"
DUPLICATE_ID = "duplicate-id"

NO_DEFAULT = object()  # expired predictions are dead-lettered


@dataclasses.dataclass(frozen=True)
class JoinPolicy:
    """How long to wait and what to do when waiting ends (see the module doc)."""

    ttl_ms: int | None = None  # None: a prediction waits for its label for ever
    grace_ms: int = 0
    default_label: Any = NO_DEFAULT
    max_pending: int = 1_000_000

    @property
    def learns_expired(self) -> bool:
        return self.default_label is not NO_DEFAULT


@dataclasses.dataclass(frozen=True, slots=True)
class StoredRecord:
    """A consumed record kept in the join state: read like a ``confluent_kafka.Message`` by
    the dead-letter writer, so an expired entry is dead-lettered with its original bytes."""

    source: str
    part: int
    at: int
    ts: int
    data: bytes | None
    key_bytes: bytes | None
    header_list: tuple[tuple[str, bytes | None], ...] = ()

    @classmethod
    def of(cls, msg: Any, ts: int) -> StoredRecord:
        headers = msg.headers() or ()
        return cls(
            msg.topic() or "",
            msg.partition(),
            msg.offset(),
            ts,
            msg.value(),
            msg.key(),
            tuple((str(k), v) for k, v in headers),
        )

    def value(self) -> bytes | None:
        return self.data

    def key(self) -> bytes | None:
        return self.key_bytes

    def headers(self) -> list[tuple[str, bytes | None]]:
        return list(self.header_list)

    def topic(self) -> str:
        return self.source

    def partition(self) -> int:
        return self.part

    def offset(self) -> int:
        return self.at

    def timestamp(self) -> tuple[int, int]:
        return TIMESTAMP_CREATE_TIME, self.ts

    def plain(self) -> tuple[Any, ...]:
        return (
            self.source,
            self.part,
            self.at,
            self.ts,
            self.data,
            self.key_bytes,
            self.header_list,
        )


@dataclasses.dataclass(slots=True)
class Pending:
    """A prediction waiting for its label: the feature record (its ``x`` is decoded from it
    again at the join, exactly as it arrived), what the metrics will be scored with, and how
    many events the model had learned when it predicted."""

    record: StoredRecord
    proba: dict[Any, float] | None
    label: Any
    events_learned: int


@dataclasses.dataclass(slots=True)
class Held:
    """A label waiting for its features."""

    record: StoredRecord
    y: Any


COUNTERS = ("joined", "expired", "defaulted", "unmatched", "duplicate", "evicted")


@dataclasses.dataclass
class JoinState:
    """Written only by the join step (like the model it goes with)."""

    pending: dict[str, Pending] = dataclasses.field(default_factory=dict)  # by arrival
    held: dict[str, Held] = dataclasses.field(default_factory=dict)
    recent: dict[str, int] = dataclasses.field(default_factory=dict)  # id -> feature time
    stream_time: int = -1
    counts: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    delay_p50: stats.Quantile = dataclasses.field(default_factory=lambda: stats.Quantile(0.5))
    delay_p99: stats.Quantile = dataclasses.field(default_factory=lambda: stats.Quantile(0.99))

    def observe_delay(self, ms: int) -> None:
        self.delay_p50.update(ms)
        self.delay_p99.update(ms)

    def summary(self) -> dict[str, Any]:
        """What reports show: sizes, counters, label delay quantiles in ms."""
        p50, p99 = self.delay_p50.get(), self.delay_p99.get()
        return {
            "pending": len(self.pending),
            "held_labels": len(self.held),
            **self.counts,
            "label_delay_p50_ms": None if p50 is None else float(p50),
            "label_delay_p99_ms": None if p99 is None else float(p99),
        }

    def to_plain(self) -> dict[str, Any]:
        return {
            "pending": [
                (k, p.record.plain(), p.proba, p.label, p.events_learned)
                for k, p in self.pending.items()
            ],
            "held": [(k, h.record.plain(), h.y) for k, h in self.held.items()],
            "recent": list(self.recent.items()),
            "stream_time": self.stream_time,
            "counts": dict(self.counts),
            "delay": (self.delay_p50, self.delay_p99),
        }

    @classmethod
    def from_plain(cls, plain: Mapping[str, Any] | None) -> JoinState:
        if plain is None:
            return cls()
        p50, p99 = plain["delay"]
        return cls(
            pending={
                k: Pending(StoredRecord(*rec), proba, label, learned)
                for k, rec, proba, label, learned in plain["pending"]
            },
            held={k: Held(StoredRecord(*rec), y) for k, rec, y in plain["held"]},
            recent=dict(plain["recent"]),
            stream_time=int(plain["stream_time"]),
            counts={**dict.fromkeys(COUNTERS, 0), **plain["counts"]},
            delay_p50=p50,
            delay_p99=p99,
        )
