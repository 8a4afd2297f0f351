"""Flat records: one object per event, its label in a named field (``train --target``).

``{"amount": 12.3, "country": "FR", "device": {"os": "ios"}, "is_fraud": false, "txn": "t1"}``
with target ``is_fraud`` and id field ``txn`` is the event ``x = {"amount": 12.3, "country":
"FR", "device.os": "ios"}``, ``y = False``. The rules:

* nested objects flatten to dotted names (``device.os``); a field whose name already has a dot
  is the same name, and two fields that flatten to one name are refused (``bad-features``);
* the target and the id field are paths in that flat namespace, never features; the features
  are every other field, or those matching ``features`` (names or :mod:`fnmatch` globs), less
  those matching ``drop``;
* ``null`` or absent fields are *missing*: left out of ``x``, as River takes them;
* booleans are the numbers 0 and 1, strings are categorical values (for encoders, trees...),
  ints and finite floats within ±1e150 are numbers (the seed's range rule); arrays and other
  values are refused (``bad-features``), as is a record left with no feature at all;
* with ``numbers_only`` (the model's first step takes numbers only, say a ``StandardScaler``),
  a string feature is refused before the model sees it (``categorical-feature``);
* a missing or ``null`` target makes the event *unlabelled*: predicted, not learned, as an
  ``{"x"}`` event without ``y`` is (and, with ``--labels-topic``, a feature event waiting for
  its label). A target that names an object is ``bad-label``; labels follow the seed's rules.

The bytes are JSON unless another ``load`` is given: a format's decoder (bytes → dict, raising
:class:`~streamtrain.data.events.InvalidEvent`) plugs in there, and the rest stays.

>>> from streamtrain.models.problem import Problem
>>> shape = RecordShape(target="is_fraud", id_field="txn", drop=("debug.*",))
>>> shape.extract({"amount": 12.3, "device": {"os": "ios", "rooted": True}, "coupon": None,
...                "is_fraud": False, "txn": "t1", "debug": {"host": "a"}})
('t1', {'amount': 12.3, 'device.os': 'ios', 'device.rooted': 1}, False)
>>> shape.decode(b'{"amount": 3, "country": "FR"}', Problem.CLASSIFICATION)
({'amount': 3, 'country': 'FR'}, None)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase
from math import isfinite
from typing import Any

from streamtrain.data.events import (
    MAX_FEATURE_MAGNITUDE,
    InvalidEvent,
    Reason,
    json_type,
    load_object,
    validate_label,
)
from streamtrain.fastpath.decode import DecodedBatch, decode_each
from streamtrain.join.events import FEATURE, INLINE, LABEL, UNLABELLED, resolve_id
from streamtrain.models.problem import Problem

__all__ = ["RecordShape", "flat_features", "flatten"]

_MAX_REMEMBERED = 10_000  # feature names whose selection is cached (a stream has few)
_GLOB = frozenset("*?[")
_PLAIN = frozenset((int, float, str))
_MAX = MAX_FEATURE_MAGNITUDE


def flatten(obj: dict[str, Any]) -> dict[str, Any]:
    """Nested objects as dotted names, in document order; other values as they are.

    >>> flatten({"a": 1, "b": {"c": None, "d": {"e": "x"}}, "f": []})
    {'a': 1, 'b.c': None, 'b.d.e': 'x', 'f': []}
    """
    out: dict[str, Any] = {}
    _flatten_into(out, "", obj)
    return out


def _flatten_into(out: dict[str, Any], prefix: str, obj: dict[str, Any]) -> None:
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if type(value) is dict:
            _flatten_into(out, f"{name}.", value)
        elif name in out:
            raise InvalidEvent(Reason.BAD_FEATURES, f"two fields flatten to the name {name!r}")
        else:
            out[name] = value


@dataclasses.dataclass(frozen=True)
class RecordShape:
    """Where a flat record keeps its label (``target``), its id (``id_field``) and features.

    ``numbers_only`` names the model step that takes numbers only (strings refused), if any;
    ``load`` turns a record's bytes into its object (JSON by default).
    """

    target: str
    id_field: str | None = None
    features: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    numbers_only: str | None = None
    # Bytes to the record's object: JSON here; a format (Avro...) plugs in its own decoder,
    # raising InvalidEvent for bytes it cannot read.
    load: Callable[[bytes | None], dict[str, Any]] = dataclasses.field(
        default=load_object, repr=False
    )
    _kept: dict[str, bool] = dataclasses.field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        for what, path in (("target", self.target), ("id field", self.id_field)):
            if path is not None and (not path or _GLOB & set(path)):
                raise ValueError(f"the {what} must be a field name (a.b for nested), not {path!r}")
        if self.id_field == self.target:
            raise ValueError("the id field and the target must differ")
        if any(not p for p in (*self.features, *self.drop)):
            raise ValueError("a feature or drop pattern is empty")

    def keeps(self, name: str) -> bool:
        """Whether field ``name`` (flat) is a feature, by ``features`` and ``drop``."""
        kept = self._kept.get(name)
        if kept is None:
            kept = (not self.features or any(fnmatchcase(name, p) for p in self.features)) and (
                not any(fnmatchcase(name, p) for p in self.drop)
            )
            if len(self._kept) < _MAX_REMEMBERED:
                self._kept[name] = kept
        return kept

    def extract(self, obj: dict[str, Any]) -> tuple[Any, dict[str, Any], Any]:
        """``(id, x, y)`` of a decoded record: the id field's and target's values as they are
        (None when absent), the features by the rules above; or :class:`InvalidEvent`."""
        flat = flatten(obj) if dict in set(map(type, obj.values())) else dict(obj)
        y = flat.pop(self.target, None)
        if y is None:
            prefix = f"{self.target}."
            if any(name.startswith(prefix) for name in flat):
                raise InvalidEvent(Reason.BAD_LABEL, f"the target {self.target!r} is an object")
        event_id = None if self.id_field is None else flat.pop(self.id_field, None)
        if self.features or self.drop:
            kept, keeps = self._kept, self.keeps
            flat = {k: v for k, v in flat.items() if kept.get(k) or (k not in kept and keeps(k))}
        # The common case in C-level passes: numbers in range, and strings if allowed.
        types = set(map(type, flat.values()))
        if types <= _PLAIN and (str not in types or self.numbers_only is None):
            if float not in types:
                return event_id, flat, y
            plain = flat.values()
            numbers = plain if str not in types else [v for v in plain if type(v) is not str]
            total = sum(numbers)  # NaN if one is NaN (or +inf and -inf): then one at a time
            if total == total and min(numbers) >= -_MAX and max(numbers) <= _MAX:
                return event_id, flat, y
        return event_id, self._features(flat), y

    def _features(self, flat: dict[str, Any]) -> dict[str, Any]:
        return flat_features(flat, self.numbers_only)

    def check(self, obj: dict[str, Any], problem: Problem) -> tuple[dict[str, Any], Any]:
        """``(x, y)`` of a decoded record, validated (``y`` None: unlabelled)."""
        _id, x, y = self.extract(obj)
        if not x:
            raise InvalidEvent(Reason.BAD_FEATURES, "the record has no feature")
        return x, (None if y is None else validate_label(y, problem))

    def decode(self, value: bytes | None, problem: Problem) -> tuple[dict[str, Any], Any]:
        """``(x, y)`` of a record's bytes, read by ``load``."""
        return self.check(self.load(value), problem)

    def decode_batch(self, values: Sequence[bytes | None], problem: Problem) -> DecodedBatch:
        return decode_each(self.decode, values, problem)

    def decode_item(
        self, value: bytes | None, key: bytes | None, problem: Problem, id_from: str
    ) -> tuple[str, str | None, dict[str, Any] | None, Any]:
        """A joined stream's record: a record with the target and no feature is a label event,
        one with features and no target a feature event (see :mod:`streamtrain.join.events`)."""
        raw_id, x, y = self.extract(self.load(value))
        missing = f"a label record needs its id field {self.id_field!r}"
        if y is not None:
            y = validate_label(y, problem)
            if not x:
                return (
                    LABEL,
                    resolve_id(raw_id, key, id_from, required=True, missing=missing),
                    None,
                    y,
                )
            return INLINE, None, x, y
        if not x:
            raise InvalidEvent(Reason.BAD_FEATURES, "the record has neither features nor target")
        event_id = resolve_id(raw_id, key, id_from, required=False, missing=missing)
        return (FEATURE if event_id is not None else UNLABELLED), event_id, x, None


def flat_features(flat: dict[str, Any], numbers_only: str | None = None) -> dict[str, Any]:
    """The features of a flattened record by the rules above, one value at a time, refusing
    with the exact reason; ``numbers_only`` names the model step that refuses strings.

    >>> flat_features({"amount": 3.5, "country": "FR", "rooted": True, "coupon": None})
    {'amount': 3.5, 'country': 'FR', 'rooted': 1}
    """
    x: dict[str, Any] = {}
    for name, v in flat.items():
        tv = type(v)
        if v is None:
            continue
        if tv is bool:
            v = int(v)
        elif tv is float:
            if not -_MAX <= v <= _MAX:
                if not isfinite(v):
                    raise InvalidEvent(Reason.NON_FINITE, f"feature {name!r} is not finite: {v!r}")
                raise InvalidEvent(
                    Reason.OUT_OF_RANGE, f"feature {name!r} = {v!r} is beyond ±1e+150"
                )
        elif tv is str:
            if numbers_only is not None:
                raise InvalidEvent(
                    Reason.CATEGORICAL,
                    f"feature {name!r} is a string, and {numbers_only} takes numbers "
                    "only: encode it in the spec (OneHotEncoder) or leave it out (--drop)",
                )
        elif tv is not int:
            raise InvalidEvent(
                Reason.BAD_FEATURES,
                f"feature {name!r} must be a number, string or boolean, got {json_type(v)}",
            )
        x[name] = v
    return x
