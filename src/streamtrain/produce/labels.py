"""Labels that arrive later: the schedule that splits each event into a feature and a label event.

Wire format (both records keyed by the event id, UTF-8; the id is ``id_prefix + str(i)`` for
the i-th event, counting from 0, so the same run gives the same ids)::

    feature event, on the main topic:   {"id": "17", "x": {...}}
    label event, on the labels topic:   {"id": "17", "y": true}

Event time, in ms since the epoch (the records' CreateTime timestamps):

* feature i: ``start_ms + round(i * spacing_ms)``;
* label i: ``feature_ts(i) + delay_i``, where ``delay_i`` comes from the ``--label-delay`` spec:
  a duration (``30s``, ``250ms``, ``2m``, ``0``), ``feature:NAME`` (the value of feature NAME
  in *seconds*, rounded to the nearest ms) or ``random:MIN..MAX`` (whole ms drawn uniformly
  from MIN to MAX, both included, by ``random.Random(seed)`` in event order).

Emission order is event-time order, River's ``stream.simulate_qa``: before feature i go out all
pending labels due at or before its timestamp, by (due time, i); the rest follow the last
feature. A label is never emitted before its own feature (a delay of 0 puts it right after).
With ``spacing_ms=1`` and ``start_ms=0`` the sequence of ``(i, is_label)`` equals
``simulate_qa(dataset, moment=None, delay=...)`` for a constant delay in ms, or for a callable
returning the same delays (:meth:`LabelDelay.sampler`).

Each label is left out with probability ``drop``, decided by a random stream of its own, so
changing ``drop`` leaves the delays as they were (and a larger ``drop`` leaves out a superset).
An event whose label is None gets no label event. Delays and drop decisions are drawn for every
event, kept or not, so event i's delay does not depend on the labels before it.
"""

from __future__ import annotations

import heapq
import math
import numbers
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import orjson

from streamtrain.durations import DURATION, parse_duration_ms
from streamtrain.errors import ConfigError

__all__ = [
    "Emission",
    "LabelDelay",
    "LabelSchedule",
    "encode_feature_event",
    "encode_label_event",
    "event_id",
    "parse_duration_ms",
]

Kind = Literal["feature", "label"]

_DELAY_FORMS = "a duration (30s, 250ms, 2m, 0), feature:NAME or random:MIN..MAX"
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
# Seeds the drop stream apart from the delay stream, which is random.Random(seed) itself.
_DROP_STREAM = "streamtrain.label-drop:"


@dataclass(frozen=True)
class LabelDelay:
    """A parsed ``--label-delay`` spec; :meth:`parse` builds it, :meth:`sampler` draws delays."""

    spec: str
    kind: Literal["constant", "feature", "random"]
    low_ms: int = 0  # the constant delay, or the smallest random one
    high_ms: int = 0  # the largest random delay (included)
    feature: str | None = None

    @classmethod
    def parse(cls, spec: str) -> LabelDelay:
        """Parse a spec; :class:`ConfigError` naming it when it is none of the three forms.

        >>> LabelDelay.parse("random:0ms..50ms")
        LabelDelay(spec='random:0ms..50ms', kind='random', low_ms=0, high_ms=50, feature=None)
        """
        form, sep, rest = spec.partition(":")
        try:
            if not sep and (spec.strip() == "0" or DURATION.fullmatch(spec.strip())):
                ms = parse_duration_ms(spec)
                return cls(spec, "constant", low_ms=ms, high_ms=ms)
            if form == "feature" and rest.strip():
                return cls(spec, "feature", feature=rest.strip())
            if form == "random":
                low, dots, high = rest.partition("..")
                if not dots:
                    raise ValueError("expected random:MIN..MAX")
                low_ms, high_ms = parse_duration_ms(low), parse_duration_ms(high)
                if low_ms > high_ms:
                    raise ValueError(f"MIN {low.strip()} is above MAX {high.strip()}")
                return cls(spec, "random", low_ms=low_ms, high_ms=high_ms)
        except ValueError as err:
            raise ConfigError(f"label delay {spec!r}: {err}") from None
        raise ConfigError(f"label delay {spec!r} is not {_DELAY_FORMS}")

    def sampler(self, seed: int = 0) -> Callable[[Mapping[str, Any]], int]:
        """A function of an event's features giving its delay in ms; call it once per event,
        in event order (random delays come from ``random.Random(seed)``).

        >>> draw = LabelDelay.parse("feature:wait").sampler()
        >>> draw({"wait": 1.25})
        1250
        """
        if self.kind == "constant":
            ms = self.low_ms
            return lambda _x: ms
        if self.kind == "random":
            randint = random.Random(seed).randint
            low, high = self.low_ms, self.high_ms
            return lambda _x: randint(low, high)
        name = self.feature
        assert name is not None
        return lambda x: _feature_delay_ms(x, name)


def _feature_delay_ms(x: Mapping[str, Any], name: str) -> int:
    if name not in x:
        raise ConfigError(f"no feature {name!r} for the label delay")
    value = x[name]
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"label delay feature {name!r} must be a number, got {value!r}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"label delay feature {name!r} must be >= 0 seconds, got {value!r}")
    return round(seconds * 1000)


def event_id(index: int, prefix: str = "") -> str:
    """The id of the ``index``-th event (from 0): ``prefix`` followed by the index."""
    return f"{prefix}{index}"


def encode_feature_event(event_id: str, x: Mapping[str, Any]) -> bytes:
    """``{"id": ..., "x": {...}}``, numpy scalars as JSON numbers.

    >>> encode_feature_event("3", {"a": 1.5})
    b'{"id":"3","x":{"a":1.5}}'
    """
    return orjson.dumps({"id": event_id, "x": x}, option=_JSON_OPTIONS)


def encode_label_event(event_id: str, y: Any) -> bytes:
    """``{"id": ..., "y": label}``.

    >>> encode_label_event("3", True)
    b'{"id":"3","y":true}'
    """
    return orjson.dumps({"id": event_id, "y": y}, option=_JSON_OPTIONS)


class Emission(NamedTuple):
    """One record to write: a feature event (main topic) or a label event (labels topic)."""

    kind: Kind
    i: int  # the event's position in the dataset, from 0 (the name "index" is tuple's)
    timestamp_ms: int
    key: bytes
    value: bytes


class LabelSchedule:
    """The emissions of ``rows`` (``(x, y)`` pairs) in event-time order; see the module doc.
    ``encode_feature`` and ``encode_label`` make the record values (``(id, x)`` and ``(id, y)``
    in, bytes out; default the JSON events above).

    Each iteration runs the schedule from the start and resets the counters: ``dropped``
    (labels left out), ``unlabelled`` (events with no label) and ``pending`` (labels decided
    but not yet emitted).

    >>> rows = [({"a": 1}, True), ({"a": 2}, False), ({"a": 3}, True)]
    >>> schedule = LabelSchedule(rows, delay=LabelDelay.parse("2ms"), start_ms=1000)
    >>> [(e.kind, e.i, e.timestamp_ms) for e in schedule]  # doctest: +NORMALIZE_WHITESPACE
    [('feature', 0, 1000), ('feature', 1, 1001), ('label', 0, 1002), ('feature', 2, 1002),
     ('label', 1, 1003), ('label', 2, 1004)]
    """

    def __init__(
        self,
        rows: Iterable[tuple[Mapping[str, Any], Any]],
        *,
        delay: LabelDelay,
        drop: float = 0.0,
        seed: int = 0,
        start_ms: int = 0,
        spacing_ms: float = 1.0,
        id_prefix: str = "",
        encode_feature: Callable[[str, Any], bytes] = encode_feature_event,
        encode_label: Callable[[str, Any], bytes] = encode_label_event,
    ) -> None:
        if not 0 <= drop < 1:
            raise ValueError(f"drop must be >= 0 and < 1, got {drop}")
        if not math.isfinite(spacing_ms) or spacing_ms < 0:
            raise ValueError(f"spacing_ms must be a finite number >= 0, got {spacing_ms}")
        self.rows = rows
        self.delay = delay
        self.drop = drop
        self.seed = seed
        self.start_ms = start_ms
        self.spacing_ms = spacing_ms
        self.id_prefix = id_prefix
        self.encode_feature = encode_feature
        self.encode_label = encode_label
        self.dropped = 0
        self.unlabelled = 0
        # (due_ms, i, key, value): i breaks ties, so labels due together go out in event order.
        self._pending: list[tuple[int, int, bytes, bytes]] = []

    @property
    def pending(self) -> int:
        return len(self._pending)

    def __iter__(self) -> Iterator[Emission]:
        self.dropped = self.unlabelled = 0
        pending = self._pending = []
        delay_of = self.delay.sampler(self.seed)
        drawn = random.Random(f"{_DROP_STREAM}{self.seed}").random
        for i, (x, y) in enumerate(self.rows):
            ts = self.start_ms + round(i * self.spacing_ms)
            while pending and pending[0][0] <= ts:
                due, j, key, value = heapq.heappop(pending)
                yield Emission("label", j, due, key, value)
            try:
                delay_ms = delay_of(x)
            except ConfigError as err:
                raise ConfigError(f"event {i + 1}: {err}") from None
            left_out = drawn() < self.drop
            eid = event_id(i, self.id_prefix)
            key = eid.encode()
            yield Emission("feature", i, ts, key, self.encode_feature(eid, x))
            # Counted once the feature was taken: a consumer that stops before taking it never
            # sees its label counted as dropped or pending.
            if y is None:
                self.unlabelled += 1
            elif left_out:
                self.dropped += 1
            else:
                heapq.heappush(pending, (ts + delay_ms, i, key, self.encode_label(eid, y)))
        while pending:
            due, j, key, value = heapq.heappop(pending)
            yield Emission("label", j, due, key, value)
