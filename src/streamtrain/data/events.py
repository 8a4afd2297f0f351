"""The wire format of a training event, and its validation.

A training event is a JSON object ``{"x": {feature: number, ...}, "y": label}``, the format of
the seed article's producer. Anything else is *invalid*: decoding raises :class:`InvalidEvent`
with a stable machine-readable ``reason`` (it becomes a dead-letter header) and a human message.

Rules, chosen so a model never sees a value it cannot learn from:

* ``x`` is a non-empty object whose values are JSON numbers (ints or floats, not booleans:
  ``true`` as a feature is usually a schema mistake) and finite. NaN/Infinity are not JSON and
  fail to decode; numbers too large for a double decode as infinity and are refused too.
* ``y`` depends on the problem: a classifier takes a boolean, an integer or a string; a regressor
  takes a finite number (not a boolean). Models of other kinds accept any JSON scalar.
* An event with no ``y`` (or ``"y": null``) is *unlabelled*: valid, decoded with ``y`` None.
  The trainer predicts it instead of learning from it (:mod:`streamtrain.train.predictions`).
"""

from __future__ import annotations

import enum
import math
from typing import Any, NoReturn

import orjson

from streamtrain.models.problem import Problem

__all__ = [
    "InvalidEvent",
    "Reason",
    "check_event",
    "decode_event",
    "encode_event",
    "json_type",
    "load_object",
    "validate_features",
    "validate_label",
]


class Reason(enum.StrEnum):
    """Why an event was refused; the value is what goes into the dead-letter header."""

    UNDECODABLE = "undecodable"  # no bytes, not UTF-8 or not JSON
    NOT_AN_OBJECT = "not-an-object"
    BAD_FEATURES = "bad-features"  # x missing, not an object, empty, or a non-numeric value
    NON_FINITE = "non-finite-feature"
    OUT_OF_RANGE = "feature-out-of-range"  # finite, but its square overflows a double
    BAD_LABEL = "bad-label"
    BAD_ID = "bad-id"  # a feature or label event to be joined whose id is missing or invalid
    # A string (categorical) feature for a model that takes numbers only (flat records).
    CATEGORICAL = "categorical-feature"
    # Hostile input (streamtrain.records.limits): past --max-record-bytes, --max-features.
    RECORD_TOO_LARGE = "record-too-large"
    TOO_MANY_FEATURES = "too-many-features"
    # Registry formats (streamtrain.formats.decoding names the same values).
    UNKNOWN_SCHEMA = "unknown-schema"  # the schema id is not in the registry
    SCHEMA_MISMATCH = "schema-mismatch"  # the bytes do not match the schema they name
    UNUSABLE_SCHEMA = "unusable-schema"  # another format than asked for, or not a record


class InvalidEvent(ValueError):
    """An event that cannot be learned from; it goes to the dead-letter topic."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


_loads = orjson.loads
_isfinite = math.isfinite
# Scalers square deviations: beyond 1e150 the square overflows a double and the model's state
# turns to inf/NaN for good, so such values are refused like non-finite ones.
MAX_FEATURE_MAGNITUDE = 1e150
_NUMBER_TYPES = (int, float)
_CLASS_LABEL_TYPES = (bool, int, str)


def decode_event(value: bytes | None, problem: Problem) -> tuple[dict[str, float], Any]:
    """Decode and validate one event's bytes; return ``(x, y)`` or raise :class:`InvalidEvent`.

    ``y`` is None for an unlabelled event.

    >>> from streamtrain.models.problem import Problem
    >>> decode_event(b'{"x": {"a": 1.5, "b": 2}, "y": true}', Problem.CLASSIFICATION)
    ({'a': 1.5, 'b': 2}, True)
    >>> decode_event(b'{"x": {"a": 1.5}}', Problem.CLASSIFICATION)
    ({'a': 1.5}, None)
    >>> try:
    ...     decode_event(b'{"x": {"a": "high"}, "y": 1.0}', Problem.REGRESSION)
    ... except InvalidEvent as err:
    ...     print(f"{err.reason}: {err}")
    bad-features: feature 'a' must be a number, got string
    """
    return check_event(load_object(value), problem)


def load_object(value: bytes | None) -> dict[str, Any]:
    """The JSON object in ``value``, or :class:`InvalidEvent` (undecodable, not an object)."""
    if value is None:
        raise InvalidEvent(Reason.UNDECODABLE, "message has no value (tombstone)")
    try:
        event = _loads(value)
    except orjson.JSONDecodeError as err:
        raise InvalidEvent(Reason.UNDECODABLE, f"not valid UTF-8 JSON: {err}") from None
    if type(event) is not dict:
        raise InvalidEvent(
            Reason.NOT_AN_OBJECT, f"event must be a JSON object, got {json_type(event)}"
        )
    return event


def check_event(event: dict[str, Any], problem: Problem) -> tuple[dict[str, float], Any]:
    """``(x, y)`` of a decoded event object, by the rules above (``y`` None: unlabelled)."""
    x = event.get("x")
    if type(x) is not dict or not x:
        if "x" not in event:
            raise InvalidEvent(Reason.BAD_FEATURES, 'event has no "x" field')
        raise InvalidEvent(
            Reason.BAD_FEATURES, f'"x" must be a non-empty object, got {json_type(x)}'
        )
    _check_features(x)
    y = event.get("y")
    if y is None:
        return x, None
    return x, validate_label(y, problem)


def validate_label(y: Any, problem: Problem) -> Any:
    """Check a label (not None) by the rules above for ``problem``; return it.

    Shared by :func:`decode_event` and the serving side's ``POST /labels``, so a label the
    server accepts is one the trainer can learn from.

    >>> validate_label(2.5, Problem.REGRESSION)
    2.5
    >>> try:
    ...     validate_label(True, Problem.REGRESSION)
    ... except InvalidEvent as err:
    ...     print(f"{err.reason}: {err}")
    bad-label: a regressor's label must be a number, got boolean
    """
    if problem is Problem.CLASSIFICATION:
        if type(y) not in _CLASS_LABEL_TYPES:
            raise InvalidEvent(
                Reason.BAD_LABEL,
                f"a classifier's label must be a boolean, integer or string, got {json_type(y)}",
            )
    elif problem is Problem.REGRESSION:
        ty = type(y)
        if ty is float:
            if not _isfinite(y):
                raise InvalidEvent(Reason.BAD_LABEL, f"label is not finite: {y!r}")
        elif ty is not int:
            raise InvalidEvent(
                Reason.BAD_LABEL, f"a regressor's label must be a number, got {json_type(y)}"
            )
    elif isinstance(y, dict | list):
        raise InvalidEvent(Reason.BAD_LABEL, f"label must be a JSON scalar, got {json_type(y)}")
    return y


def validate_features(x: Any) -> dict[str, float]:
    """Check a features object by the rules above (for prediction requests); return it."""
    if type(x) is not dict or not x:
        raise InvalidEvent(
            Reason.BAD_FEATURES, f'"x" must be a non-empty object, got {json_type(x)}'
        )
    _check_features(x)
    return x


def _check_features(x: dict[str, Any]) -> None:
    for name, v in x.items():
        # type() rather than isinstance: bool is an int subclass and must be refused.
        tv = type(v)
        if tv is float:
            if not -MAX_FEATURE_MAGNITUDE <= v <= MAX_FEATURE_MAGNITUDE:
                _refuse_float(name, v)
        elif tv is not int:  # JSON integers are 64-bit at most: always in range
            raise InvalidEvent(
                Reason.BAD_FEATURES, f"feature {name!r} must be a number, got {json_type(v)}"
            )


def encode_event(x: dict[str, Any], y: Any) -> bytes:
    """Encode one event in the wire format (numpy scalars are turned into JSON numbers).

    >>> from streamtrain.models.problem import Problem
    >>> encode_event({"a": 1.5}, 3.2)
    b'{"x":{"a":1.5},"y":3.2}'
    >>> decode_event(encode_event({"a": 1.5}, 3.2), Problem.REGRESSION)
    ({'a': 1.5}, 3.2)
    """
    return orjson.dumps(
        {"x": x, "y": y}, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    )


def _refuse_float(name: str, v: float) -> NoReturn:
    if not _isfinite(v):
        raise InvalidEvent(Reason.NON_FINITE, f"feature {name!r} is not finite: {v!r}")
    raise InvalidEvent(
        Reason.OUT_OF_RANGE,
        f"feature {name!r} = {v!r} is beyond ±{MAX_FEATURE_MAGNITUDE:g}, where models overflow",
    )


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
