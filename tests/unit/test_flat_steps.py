"""On flat records too, River's per-event step and the compiled step are one step: the same
outcomes and model for any mix of missing values, booleans, strings and bad records."""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

import orjson
import pytest

pytest.importorskip("numba")  # without numba there is no compiled step to compare

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_step import _evaluator, _run, _same_outcome, _state

from streamtrain.fastpath import fast_evaluator_for
from streamtrain.records import RecordShape
from streamtrain.records.models import model_shape
from streamtrain.train.step import FastStep, RiverStep, SimpleRecord

_number = st.floats(min_value=-50, max_value=50, allow_nan=False, allow_infinity=False)
# Mostly complete records (the compiled path takes those), some with a missing value.
_value = st.one_of(*[_number] * 15, st.none())
_odd = st.sampled_from([*[None] * 20, "text", [1.0], 1e200, {"deep": 1.0}])


@st.composite
def flat_records(draw: st.DrawFn) -> bytes:
    record: dict[str, Any] = {"a": draw(_value), "n": {"b": draw(_value)}, "c": draw(st.booleans())}
    odd = draw(_odd)
    if odd is not None:
        record["odd"] = odd
    label = draw(st.sampled_from([True, False, True, False, None, "absent"]))
    if label != "absent":
        record["t"] = {"y": label}
    return orjson.dumps(record)


@st.composite
def batches(draw: st.DrawFn) -> list[list[SimpleRecord]]:
    values = draw(st.lists(flat_records(), min_size=1, max_size=80))
    records = [SimpleRecord(v, 0, i) for i, v in enumerate(values)]
    cuts = sorted(draw(st.lists(st.integers(0, len(records)), max_size=5)))
    bounds = [0, *cuts, len(records)]
    return [records[i:j] for i, j in itertools.pairwise(bounds) if j > i]


def _compare(parts: list[list[SimpleRecord]]) -> Any:
    """Run both steps over ``parts``; check they agree; return the compiled evaluator."""
    river_step = RiverStep(_evaluator(), model_shape(RecordShape("t.y"), _evaluator().model))
    evaluator = _evaluator()
    compiled = fast_evaluator_for(evaluator.model, evaluator.metrics, wait=True)
    assert compiled is not None
    shape = model_shape(RecordShape("t.y"), evaluator.model)
    assert isinstance(shape, RecordShape) and shape.numbers_only == "StandardScaler"
    fast_step = FastStep(evaluator, compiled, shape)

    river_outcomes = _run(river_step, parts)
    fast_outcomes = _run(fast_step, parts)
    for river, fast in zip(river_outcomes, fast_outcomes, strict=True):
        _same_outcome(river, fast)
    fast_step.sync()
    expected, got = _state(river_step.evaluator), _state(fast_step.evaluator)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert math.isclose(got[key], value, rel_tol=0, abs_tol=1e-12), key
    return compiled


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_river_and_compiled_steps_agree_on_flat_records(parts: list[list[SimpleRecord]]) -> None:
    _compare(parts)


def test_the_compiled_step_learns_most_of_a_mostly_complete_flat_stream() -> None:
    rng = random.Random(3)
    values = []
    for i in range(3000):
        record: dict[str, Any] = {"a": rng.gauss(0, 3), "n": {"b": rng.random()}, "c": i % 3 == 0}
        if i % 500 == 7:
            record["a"] = None  # a batch with a missing value goes to River
        if i % 700 == 9:
            record["odd"] = "text"  # refused: categorical-feature
        record["t"] = {"y": rng.random() < 0.4}
        values.append(orjson.dumps(record))
    records = [SimpleRecord(v, 0, i) for i, v in enumerate(values)]
    compiled = _compare([records[i : i + 100] for i in range(0, len(records), 100)])
    # Six batches hold a record with a missing value: River learns those, the kernel the rest.
    assert compiled.fallbacks == 6 and compiled.events >= 2300
