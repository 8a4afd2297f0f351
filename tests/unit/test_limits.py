"""Record limits in front of a shape: a batch decodes as its records one by one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from streamtrain.data.events import InvalidEvent, Reason
from streamtrain.models.problem import Problem
from streamtrain.records import SEED, EventShape, RecordShape
from streamtrain.records.limits import BoundedShape

CLS = Problem.CLASSIFICATION


def _verdicts(shape: BoundedShape, values: list[bytes | None]) -> list[object]:
    out: list[object] = []
    for value in values:
        try:
            out.append(shape.decode(value, CLS))
        except InvalidEvent as bad:
            out.append(bad.reason)
    return out


@pytest.mark.parametrize(
    ("inner", "encode"),
    [
        (SEED, lambda x, y: {"x": x, "y": y}),
        (RecordShape("label"), lambda x, y: {**x, "label": y}),
    ],
)
def test_a_batch_with_refused_records_decodes_as_each_record_alone(
    inner: EventShape, encode: Callable[[dict[str, float], bool], dict[str, Any]]
) -> None:
    shape = BoundedShape(inner, max_record_bytes=120, max_features=3)
    values: list[bytes | None] = [
        orjson.dumps(encode({"a": 1.0, "b": 2.0}, True)),
        orjson.dumps(encode({"a": 1.0, "pad": 0.0, "z": 9.0, "w": 1.0}, False)),  # 4 features
        orjson.dumps(encode({"a": 1.0}, True)) + b" " * 200,  # too large
        b"not json",
        orjson.dumps(encode({"c": 3.0}, False)),
    ]
    batch = shape.decode_batch(values, CLS)
    verdicts = _verdicts(shape, values)
    assert [r for _i, r in ((i, b.reason) for i, b in batch.invalid)] == [
        v for v in verdicts if isinstance(v, Reason)
    ]
    assert list(zip(batch.xs, batch.ys, strict=True)) == [
        v for v in verdicts if not isinstance(v, Reason)
    ]
    assert Reason.TOO_MANY_FEATURES in verdicts and Reason.RECORD_TOO_LARGE in verdicts
    # Within the limits, the inner shape's own batch is handed over as it is.
    good = [values[0], values[4]]
    assert shape.decode_batch(good, CLS).xs == inner.decode_batch(good, CLS).xs


def test_joined_records_are_bounded_too() -> None:
    shape = BoundedShape(SEED, max_record_bytes=1000, max_features=1)
    with pytest.raises(InvalidEvent) as bad:
        shape.decode_item(b'{"id": "7", "x": {"a": 1, "b": 2}}', None, CLS, "value")
    assert bad.value.reason is Reason.TOO_MANY_FEATURES
    assert shape.decode_item(b'{"id": "7", "y": true}', None, CLS, "value")[0] == "label"
