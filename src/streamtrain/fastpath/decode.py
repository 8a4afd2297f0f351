"""Decode and validate a batch of events at once, with :func:`decode_event`'s exact verdicts.

The per-event validation of :func:`streamtrain.data.events.decode_event` spends most of its time
in a Python loop over every feature value. Here the structure of each event (an object, a
non-empty ``x`` object, a ``y`` of the problem's type) is checked per event as there, but feature
values are checked for a whole batch at once: one C-level pass collects their types (only
``int`` and ``float`` are valid; ``bool`` is its own type) and, when there are floats, ``min``
and ``max`` bound them to ±``MAX_FEATURE_MAGNITUDE`` (``inf`` is out of range; JSON has no NaN).

Any event that does not pass (or sits in a batch whose bulk check fails) is decoded again by
``decode_event`` itself, which gives the verdict and the dead-letter reason and message, so
results are always exactly ``decode_event``'s.

A batch of valid events only (the usual case) is checked without a Python loop per event: the
same parser (orjson), then C-level passes over the whole batch, and, when every event has the
same features in the same order, their values go straight into the feature matrix the compiled
path learns from (``DecodedBatch.matrix``), range-checked there by numpy. Anything unusual in the
batch sends it to the per-event checks above instead, so verdicts cannot differ.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import orjson

from streamtrain.data.events import MAX_FEATURE_MAGNITUDE, InvalidEvent, decode_event
from streamtrain.models.problem import Problem

__all__ = ["DecodedBatch", "decode_batch", "decode_each"]

_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError
_chain = itertools.chain.from_iterable
_NUMBER_TYPES = frozenset((int, float))
_CLASS_LABEL_TYPES = frozenset((bool, int, str))
_isfinite = math.isfinite
_repeat = itertools.repeat
_get: Callable[[Any, str], Any] = dict.get
_load_any: Callable[[Any], Any] = orjson.loads  # a None value raises TypeError
_NONE = type(None)
_LABEL_TYPES = {
    Problem.CLASSIFICATION: frozenset((bool, int, str, _NONE)),
    Problem.REGRESSION: frozenset((int, float, _NONE)),
}


class DecodedBatch:
    """Valid events (``xs``, ``ys``, and their ``positions`` in the input, ascending) and the
    invalid ones (``invalid``: position and the :class:`InvalidEvent`), in input order.

    An unlabelled event is valid, with ``None`` for its ``y``. ``numeric``: every feature value
    is an int or a float (always, in the seed's format; flat records may hold strings).
    ``matrix``: when known, the feature values of ``xs`` as float64, one row per event, for a
    batch whose events all have the keys of ``xs[0]`` in that order (else ``None``)."""

    __slots__ = ("invalid", "matrix", "numeric", "positions", "xs", "ys")

    def __init__(
        self,
        xs: list[dict[str, Any]],
        ys: list[Any],
        positions: list[int],
        invalid: list[tuple[int, InvalidEvent]],
        numeric: bool = True,
        matrix: np.ndarray | None = None,
    ) -> None:
        self.matrix = matrix
        self.numeric = numeric
        self.xs = xs
        self.ys = ys
        self.positions = positions
        self.invalid = invalid


def decode_each(
    decode: Callable[[bytes | None, Problem], tuple[dict[str, Any], Any]],
    values: Sequence[bytes | None],
    problem: Problem,
) -> DecodedBatch:
    """``decode`` of each value, one by one, as a batch; ``numeric`` unless a feature value is
    a string (a category, which the compiled path must not read as a number)."""
    xs: list[dict[str, Any]] = []
    ys: list[Any] = []
    positions: list[int] = []
    invalid: list[tuple[int, InvalidEvent]] = []
    numeric = True
    for i, value in enumerate(values):
        try:
            x, y = decode(value, problem)
        except InvalidEvent as bad:
            invalid.append((i, bad))
            continue
        if numeric and any(isinstance(v, str) for v in x.values()):
            numeric = False
        xs.append(x)
        ys.append(y)
        positions.append(i)
    return DecodedBatch(xs, ys, positions, invalid, numeric)


def decode_batch(values: Sequence[bytes | None], problem: Problem) -> DecodedBatch:
    """Decode ``values`` as :func:`decode_event` would decode each of them, but faster."""
    clean = _decode_clean(values, problem)
    if clean is not None:
        return clean
    return _decode_mixed(values, problem)


def _decode_clean(values: Sequence[bytes | None], problem: Problem) -> DecodedBatch | None:
    """The batch, when every event in it is valid by the checks of :func:`_decode_mixed`, each
    done for the whole batch at once; ``None`` when any event may be invalid."""
    labels = _LABEL_TYPES.get(problem)
    if labels is None or not values:
        return None
    try:
        events = list(map(_load_any, values))  # TypeError for None (a tombstone)
    except (_JSONDecodeError, TypeError):
        return None
    if set(map(type, events)) != {dict}:
        return None
    xs: list[dict[str, Any]] = list(map(_get, events, _repeat("x")))
    if set(map(type, xs)) != {dict} or not all(xs):
        return None
    ys = list(map(_get, events, _repeat("y")))
    label_types = set(map(type, ys))
    if not label_types <= labels:
        return None
    if float in label_types and not all(map(_isfinite, (y for y in ys if type(y) is float))):
        return None  # a regression target of inf (1e999)
    n = len(xs)
    layout = list(xs[0])
    if list(_chain(xs)) != layout * n:
        # Mixed layouts: no one matrix, and the features checked as _decode_mixed does.
        if not _features_valid(xs):
            return None
        return DecodedBatch(xs, ys, list(range(n)), [])
    features = list(_chain(map(dict.values, xs)))
    types = set(map(type, features))
    if not types <= _NUMBER_TYPES:
        return None
    matrix = np.array(features, dtype=np.float64).reshape(n, len(layout))
    # ints (64-bit at most in JSON here) are always in range; inf and nan fail this too.
    if float in types and not np.abs(matrix).max() <= MAX_FEATURE_MAGNITUDE:
        return None
    return DecodedBatch(xs, ys, list(range(n)), [], matrix=matrix)


def _decode_mixed(values: Sequence[bytes | None], problem: Problem) -> DecodedBatch:
    """Each event checked on its own; the suspects judged by :func:`decode_event`."""
    xs: list[dict[str, Any]] = []
    ys: list[Any] = []
    positions: list[int] = []
    suspects: list[int] = []
    loads = _loads
    for i, value in enumerate(values):
        if value is None:
            suspects.append(i)
            continue
        try:
            event = loads(value)
        except _JSONDecodeError:
            suspects.append(i)
            continue
        if type(event) is not dict:
            suspects.append(i)
            continue
        x = event.get("x")
        if type(x) is not dict or not x:
            suspects.append(i)
            continue
        y = event.get("y")
        ty = type(y)
        if y is None:
            pass  # unlabelled: valid, to be predicted
        elif problem is Problem.CLASSIFICATION:
            if ty not in _CLASS_LABEL_TYPES:
                suspects.append(i)
                continue
        elif problem is Problem.REGRESSION:
            if not (ty is int or (ty is float and _isfinite(y))):
                suspects.append(i)
                continue
        elif ty is dict or ty is list:
            suspects.append(i)
            continue
        xs.append(x)
        ys.append(y)
        positions.append(i)
    if xs and not _features_valid(xs):
        # Some feature is bad: find which events (rare), and let decode_event judge them.
        keep = [k for k, x in enumerate(xs) if _features_valid((x,))]
        if len(keep) != len(xs):
            kept = set(keep)
            suspects.extend(positions[k] for k in range(len(xs)) if k not in kept)
            xs = [xs[k] for k in keep]
            ys = [ys[k] for k in keep]
            positions = [positions[k] for k in keep]
    invalid: list[tuple[int, InvalidEvent]] = []
    if suspects:
        suspects.sort()
        rescued: list[tuple[int, dict[str, Any], Any]] = []
        for i in suspects:
            try:
                x, y = decode_event(values[i], problem)
            except InvalidEvent as bad:
                invalid.append((i, bad))
            else:  # not expected: the checks above mirror decode_event's
                rescued.append((i, x, y))
        if rescued:
            merged = sorted(
                [*zip(positions, xs, ys, strict=True), *rescued], key=lambda item: item[0]
            )
            positions = [item[0] for item in merged]
            xs = [item[1] for item in merged]
            ys = [item[2] for item in merged]
    return DecodedBatch(xs, ys, positions, invalid)


def _features_valid(xs: Sequence[dict[str, Any]]) -> bool:
    """Every feature value of every event is an int, or a float within ±MAX_FEATURE_MAGNITUDE."""
    types = set(map(type, _chain(map(dict.values, xs))))
    if not types <= _NUMBER_TYPES:
        return False
    if float not in types:
        return True  # JSON integers are 64-bit at most: always in range
    values = _chain(map(dict.values, xs))
    if max(values) > MAX_FEATURE_MAGNITUDE:
        return False
    return min(_chain(map(dict.values, xs))) >= -MAX_FEATURE_MAGNITUDE
