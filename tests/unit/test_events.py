"""Decoding and validation of the event wire format."""

from __future__ import annotations

import math

import orjson
import pytest

from streamtrain.data.events import (
    InvalidEvent,
    Reason,
    decode_event,
    encode_event,
    validate_label,
)
from streamtrain.models.problem import Problem


def test_seed_format_decodes() -> None:
    x = {"empty_server_form_handler": 0.0, "is_popular": 0.5, "age_of_domain": 1}
    assert decode_event(encode_event(x, True), Problem.CLASSIFICATION) == (x, True)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, Reason.UNDECODABLE),
        (b"\xff\xfe not utf8", Reason.UNDECODABLE),
        (b'{"x": {"a": 1}, "y": tru', Reason.UNDECODABLE),
        (b'{"x": {"a": NaN}, "y": true}', Reason.UNDECODABLE),
        (b'{"x": {"a": Infinity}, "y": true}', Reason.UNDECODABLE),
        (b'{"x": {"a": 1e999}, "y": true}', Reason.UNDECODABLE),
        (b"[1, 2]", Reason.NOT_AN_OBJECT),
        (b'"text"', Reason.NOT_AN_OBJECT),
        (b'{"y": true}', Reason.BAD_FEATURES),
        (b'{"x": [1, 2], "y": true}', Reason.BAD_FEATURES),
        (b'{"x": {}, "y": true}', Reason.BAD_FEATURES),
        (b'{"x": {"a": "1"}, "y": true}', Reason.BAD_FEATURES),
        (b'{"x": {"a": true}, "y": true}', Reason.BAD_FEATURES),
        (b'{"x": {"a": null}, "y": true}', Reason.BAD_FEATURES),
        (b'{"x": {"a": 1e200}, "y": true}', Reason.OUT_OF_RANGE),
        (b'{"x": {"a": 1}, "y": 0.5}', Reason.BAD_LABEL),
        (b'{"x": {"a": 1}, "y": [1]}', Reason.BAD_LABEL),
    ],
)
def test_invalid_classification_events(raw: bytes | None, reason: Reason) -> None:
    with pytest.raises(InvalidEvent) as info:
        decode_event(raw, Problem.CLASSIFICATION)
    assert info.value.reason is reason
    assert info.value.message


@pytest.mark.parametrize("task", list(Problem))
@pytest.mark.parametrize("raw", [b'{"x": {"a": 1}}', b'{"x": {"a": 1}, "y": null}'])
def test_unlabelled_events_are_valid_with_no_label(raw: bytes, task: Problem) -> None:
    assert decode_event(raw, task) == ({"a": 1}, None)


@pytest.mark.parametrize("raw", [b'{"x": {"a": "1"}}', b'{"y": null}', b'{"x": {}}'])
def test_unlabelled_events_still_need_valid_features(raw: bytes) -> None:
    with pytest.raises(InvalidEvent) as info:
        decode_event(raw, Problem.CLASSIFICATION)
    assert info.value.reason is Reason.BAD_FEATURES


@pytest.mark.parametrize("label", [True, False, 0, 3, "phishing"])
def test_classification_labels(label: object) -> None:
    assert decode_event(encode_event({"a": 1.5}, label), Problem.CLASSIFICATION)[1] == label


@pytest.mark.parametrize(
    ("raw", "ok"),
    [
        (b'{"x": {"a": 1}, "y": 2.5}', True),
        (b'{"x": {"a": 1}, "y": -3}', True),
        (b'{"x": {"a": 1}, "y": true}', False),
        (b'{"x": {"a": 1}, "y": "2.5"}', False),
    ],
)
def test_regression_labels(raw: bytes, ok: bool) -> None:
    if ok:
        decode_event(raw, Problem.REGRESSION)
    else:
        with pytest.raises(InvalidEvent) as info:
            decode_event(raw, Problem.REGRESSION)
        assert info.value.reason is Reason.BAD_LABEL


def test_non_finite_guard_for_events_decoded_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    # orjson refuses NaN; the guard still protects against a decoder that lets it through.
    monkeypatch.setattr(
        "streamtrain.data.events._loads", lambda _b: {"x": {"a": math.nan}, "y": True}
    )
    with pytest.raises(InvalidEvent) as info:
        decode_event(b"ignored", Problem.CLASSIFICATION)
    assert info.value.reason is Reason.NON_FINITE


def test_encode_numpy_scalars() -> None:
    np = pytest.importorskip("numpy")
    raw = encode_event({"a": np.float64(0.25), "b": np.int64(3)}, np.bool_(True))
    assert orjson.loads(raw) == {"x": {"a": 0.25, "b": 3}, "y": True}


@pytest.mark.parametrize("problem", list(Problem))
@pytest.mark.parametrize(
    "label", [True, 0, -3, "cat", "", 1.5, -0.0, 1e308, float("inf"), float("nan"), [1], {"a": 1}]
)
def test_validate_label_gives_the_verdict_of_decode_event(problem: Problem, label: object) -> None:
    """``POST /labels`` checks labels with validate_label: a label it accepts must be one the
    trainer learns from, and one it refuses one the trainer dead-letters (same message)."""
    event = orjson.dumps({"x": {"a": 1}, "y": label}) if _is_json(label) else None
    try:
        accepted = validate_label(label, problem)
    except InvalidEvent as refused:
        assert refused.reason is Reason.BAD_LABEL
        if event is not None:
            with pytest.raises(InvalidEvent) as decoded:
                decode_event(event, problem)
            assert (decoded.value.reason, decoded.value.message) == (
                refused.reason,
                refused.message,
            )
        return
    assert accepted is label
    if event is not None:
        assert decode_event(event, problem) == ({"a": 1}, label)


def _is_json(value: object) -> bool:
    return not (isinstance(value, float) and not math.isfinite(value))
