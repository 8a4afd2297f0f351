"""Fuzzed event payloads: whatever bytes arrive, a step never raises and accounts for every
record (learned, predicted or dead-lettered), in the seed's format and as flat records."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from river import linear_model, metrics, preprocessing

from streamtrain.data.events import Reason
from streamtrain.fastpath import fast_evaluator_for
from streamtrain.records import SEED, EventShape, RecordShape
from streamtrain.records.limits import BoundedShape
from streamtrain.train.progressive import ProgressiveEvaluator
from streamtrain.train.step import MODEL_ERROR, FastStep, RiverStep, SimpleRecord


def _dump(obj: Any) -> bytes:
    """JSON text of ``obj``; the standard library writes integers past 64 bits, which
    orjson (the trainer's reader) refuses."""
    return json.dumps(obj).encode()


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=6)
    ),
    max_leaves=20,
)
_features = st.dictionaries(st.sampled_from(["a", "b", "c", "d.e", ""]), _scalars, max_size=5)
_payloads = st.one_of(
    st.binary(max_size=64),
    _json.map(_dump),
    st.builds(lambda x, y: _dump({"x": x, "y": y}), _json, _scalars),
    st.builds(lambda x, y: _dump({"x": x, "y": y}), _features, _scalars),
    st.builds(lambda x, y: _dump({**x, "y": y}), _features, _scalars),
    st.just(b"x" * 300),  # over the byte limit below
    st.just(orjson.dumps({"x": {f"f{i}": 1.0 for i in range(40)}, "y": True})),  # too many
)
KNOWN_REASONS = {reason.value for reason in Reason} | {MODEL_ERROR}


def _evaluator() -> ProgressiveEvaluator:
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    return ProgressiveEvaluator(model, {"ROCAUC": metrics.ROCAUC()})


def _accounted(step: Any, values: list[bytes | None]) -> None:
    records = [SimpleRecord(v, 0, i) for i, v in enumerate(values)]
    out = step.run(records, {}, 0)
    assert out.learned + len(out.dead_letters) + len(out.predictions) == len(records)
    assert out.offsets == {0: len(records)}
    assert {d.reason for d in out.dead_letters} <= KNOWN_REASONS


def _shapes() -> list[EventShape]:
    return [
        BoundedShape(inner, max_record_bytes=256, max_features=30)
        for inner in (SEED, RecordShape("y"))
    ]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.none(), _payloads), min_size=1, max_size=30))
def test_any_payload_is_learned_predicted_or_dead_lettered(values: list[bytes | None]) -> None:
    for shape in _shapes():
        _accounted(RiverStep(_evaluator(), shape), values)
        evaluator = _evaluator()
        compiled = fast_evaluator_for(evaluator.model, evaluator.metrics, wait=True)
        assert compiled is not None
        _accounted(FastStep(evaluator, compiled, shape), values)
