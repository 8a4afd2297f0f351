"""The label schedule of ``produce --labels-topic``: River's ``simulate_qa`` is its oracle."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import datasets, stream

from streamtrain.errors import ConfigError
from streamtrain.produce import ProduceSettings
from streamtrain.produce.labels import (
    Emission,
    LabelDelay,
    LabelSchedule,
    parse_duration_ms,
)

Row = tuple[dict[str, Any], Any]


def _phishing(n: int) -> list[Row]:
    return list(itertools.islice(datasets.Phishing(), n))


def _river_order(rows: Iterable[Row], delay: int | Callable[[Any, Any], int]) -> list[Any]:
    """(i, is_label) in River's order: time is the event's index, answers due at t + delay."""
    return [(i, y is not None) for i, _x, y in stream.simulate_qa(rows, moment=None, delay=delay)]


def _order(emissions: Iterable[Emission]) -> list[tuple[int, bool]]:
    return [(e.i, e.kind == "label") for e in emissions]


# --- durations and delay specs ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [("0", 0), ("0s", 0), ("250ms", 250), ("30s", 30_000), ("1.5s", 1500), ("2m", 120_000)],
)
def test_durations(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["30", "", "-1s", "0.5ms", "1 s", "2d", "s", "1e3ms"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|whole number"):
        parse_duration_ms(text)


def test_delay_specs() -> None:
    assert LabelDelay.parse("2m").kind == "constant"
    assert LabelDelay.parse("2m").low_ms == 120_000
    wait = LabelDelay.parse("feature:wait")
    assert (wait.kind, wait.feature) == ("feature", "wait")
    spread = LabelDelay.parse("random:10ms..1s")
    assert (spread.kind, spread.low_ms, spread.high_ms) == ("random", 10, 1000)


@pytest.mark.parametrize(
    "spec", ["soon", "feature:", "random:1s", "random:2s..1s", "random:..1s", "later:5s", "5"]
)
def test_a_bad_delay_spec_is_a_config_error_naming_it(spec: str) -> None:
    with pytest.raises(ConfigError, match=f"label delay {spec!r}") as caught:
        LabelDelay.parse(spec)
    assert "\n" not in str(caught.value)


def test_random_delays_are_seeded_and_within_bounds() -> None:
    spec = LabelDelay.parse("random:5ms..9ms")

    def draws(seed: int) -> list[int]:
        draw = spec.sampler(seed)
        return [draw({}) for _ in range(500)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)
    assert set(draws(7)) == {5, 6, 7, 8, 9}  # both ends included


@pytest.mark.parametrize(
    ("x", "message"),
    [
        ({"other": 1.0}, "event 1: no feature 'wait'"),
        ({"wait": -0.5}, "must be >= 0 seconds"),
        ({"wait": True}, "must be a number"),
        ({"wait": "3"}, "must be a number"),
        ({"wait": float("inf")}, "must be >= 0 seconds"),
    ],
)
def test_a_feature_delay_needs_a_non_negative_number(x: dict[str, Any], message: str) -> None:
    schedule = LabelSchedule([(x, True)], delay=LabelDelay.parse("feature:wait"))
    with pytest.raises(ConfigError, match=message):
        list(schedule)


# --- River's simulate_qa as the oracle -------------------------------------------------------


@pytest.mark.parametrize("k", [0, 1, 3, 50, 2000])
def test_constant_delay_is_rivers_order(k: int) -> None:
    rows = _phishing(300)
    schedule = list(LabelSchedule(rows, delay=LabelDelay.parse(f"{k}ms")))
    assert _order(schedule) == _river_order(rows, k)
    assert [e.timestamp_ms for e in schedule if e.kind == "feature"] == list(range(300))
    assert all(e.timestamp_ms == e.i + k for e in schedule if e.kind == "label")


@pytest.mark.parametrize(("spec", "seed"), [("random:0ms..50ms", 7), ("random:0ms..3ms", 1)])
def test_random_delays_are_rivers_order_with_the_same_delays(spec: str, seed: int) -> None:
    rows = _phishing(500)
    delay = LabelDelay.parse(spec)
    schedule = list(LabelSchedule(rows, delay=delay, seed=seed))
    draw = delay.sampler(seed)  # a fresh stream: River asks for the delays in event order too
    delays = [draw(x) for x, _ in rows]
    queued = iter(delays)
    expected = _river_order(rows, lambda _x, _y: next(queued))
    assert _order(schedule) == expected
    assert {e.i: e.timestamp_ms for e in schedule if e.kind == "label"} == {
        i: i + d for i, d in enumerate(delays)
    }
    assert len(set(delays)) > 1  # the delays did vary, so the order was put to the test


def test_feature_delay_in_seconds_is_rivers_order() -> None:
    rows = [({"a": float(i), "wait": (i * 7 % 11) / 1000}, i % 2 == 0) for i in range(200)]
    schedule = list(LabelSchedule(rows, delay=LabelDelay.parse("feature:wait")))
    assert _order(schedule) == _river_order(rows, lambda x, _y: round(x["wait"] * 1000))
    label_ts = {e.i: e.timestamp_ms for e in schedule if e.kind == "label"}
    assert label_ts == {i: i + round(x["wait"] * 1000) for i, (x, _) in enumerate(rows)}


# --- wire format, ids, drops ------------------------------------------------------------------


def test_wire_format_keys_and_ids() -> None:
    rows: list[Row] = [({"a": 1.5}, True), ({"a": 2}, None), ({"a": 3}, "cat")]
    schedule = LabelSchedule(
        rows, delay=LabelDelay.parse("1s"), start_ms=1_700_000_000_000, id_prefix="run7-"
    )
    emitted = list(schedule)
    assert [(e.kind, e.i) for e in emitted] == [
        ("feature", 0),
        ("feature", 1),
        ("feature", 2),
        ("label", 0),
        ("label", 2),
    ]
    assert [orjson.loads(e.value) for e in emitted] == [
        {"id": "run7-0", "x": {"a": 1.5}},
        {"id": "run7-1", "x": {"a": 2}},
        {"id": "run7-2", "x": {"a": 3}},
        {"id": "run7-0", "y": True},
        {"id": "run7-2", "y": "cat"},
    ]
    assert [e.key for e in emitted] == [b"run7-0", b"run7-1", b"run7-2", b"run7-0", b"run7-2"]
    assert [e.timestamp_ms - 1_700_000_000_000 for e in emitted] == [0, 1, 2, 1000, 1002]
    # The event without a label gets no label event; that is not a drop.
    assert (schedule.unlabelled, schedule.dropped, schedule.pending) == (1, 0, 0)


def test_default_ids_are_the_index() -> None:
    emitted = list(LabelSchedule(_phishing(12), delay=LabelDelay.parse("0")))
    assert [e.key for e in emitted if e.kind == "feature"] == [str(i).encode() for i in range(12)]


def test_drops_leave_the_delays_as_they_were() -> None:
    rows = list(datasets.Phishing())
    delay = LabelDelay.parse("random:0ms..40ms")

    def labels(drop: float) -> tuple[dict[int, int], int]:
        schedule = LabelSchedule(rows, delay=delay, drop=drop, seed=3)
        ts = {e.i: e.timestamp_ms for e in schedule if e.kind == "label"}
        assert len(ts) + schedule.dropped == len(rows)
        return ts, schedule.dropped

    kept, none_dropped = labels(0.0)
    some, dropped_some = labels(0.1)
    more, dropped_more = labels(0.5)
    assert none_dropped == 0
    # 125 and 625 expected of 1250; the seed fixes the counts, the bounds are loose.
    assert 70 < dropped_some < 180
    assert 525 < dropped_more < 725
    # Same delays for the labels kept, and a larger drop leaves out a superset.
    assert all(kept[i] == ts for i, ts in some.items())
    assert set(more) <= set(some) <= set(kept)


def test_the_same_seed_gives_the_same_schedule() -> None:
    rows = _phishing(300)

    def run(seed: int) -> list[Emission]:
        delay = LabelDelay.parse("random:0ms..30ms")
        return list(LabelSchedule(rows, delay=delay, drop=0.2, seed=seed, start_ms=10))

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_iterating_again_starts_over() -> None:
    schedule = LabelSchedule(_phishing(100), delay=LabelDelay.parse("random:0ms..9ms"), drop=0.3)
    first = list(schedule)
    dropped = schedule.dropped
    assert list(schedule) == first
    assert schedule.dropped == dropped > 0


def test_spacing_follows_the_rate() -> None:
    rows = _phishing(7)
    schedule = LabelSchedule(rows, delay=LabelDelay.parse("0"), start_ms=500, spacing_ms=1000 / 3)
    features = [e.timestamp_ms for e in schedule if e.kind == "feature"]
    assert features == [500, 833, 1167, 1500, 1833, 2167, 2500]


@settings(max_examples=200, deadline=None)
@given(
    labels=st.lists(st.sampled_from([True, False, None]), max_size=80),
    low=st.integers(0, 20),
    spread=st.integers(0, 30),
    spacing=st.sampled_from([0.0, 0.4, 1.0, 2.5, 7.0]),
    drop=st.sampled_from([0.0, 0.3]),
    seed=st.integers(0, 2**16),
)
def test_emissions_are_in_event_time_order(
    labels: list[Any], low: int, spread: int, spacing: float, drop: float, seed: int
) -> None:
    rows = [({"a": i}, y) for i, y in enumerate(labels)]
    delay = LabelDelay.parse(f"random:{low}ms..{low + spread}ms")
    schedule = LabelSchedule(rows, delay=delay, drop=drop, seed=seed, spacing_ms=spacing)
    emitted = list(schedule)
    features = [e for e in emitted if e.kind == "feature"]
    label_events = [e for e in emitted if e.kind == "label"]
    assert [(e.i, e.timestamp_ms) for e in features] == [
        (i, round(i * spacing)) for i in range(len(rows))
    ]
    # The labels topic is written in (timestamp, i) order: nondecreasing, stable for ties.
    keys = [(e.timestamp_ms, e.i) for e in label_events]
    assert keys == sorted(keys)
    # So is everything: a record never goes out before one with an earlier time.
    stamps = [e.timestamp_ms for e in emitted]
    assert stamps == sorted(stamps)
    position = {(e.kind, e.i): n for n, e in enumerate(emitted)}
    for label in label_events:
        feature_ts = features[label.i].timestamp_ms
        assert low <= label.timestamp_ms - feature_ts <= low + spread
        assert position["feature", label.i] < position["label", label.i]
        # A label due by a later feature's time goes out before that feature.
        for feature in features[label.i + 1 :]:
            if feature.timestamp_ms >= label.timestamp_ms:
                assert position["label", label.i] < position["feature", feature.i]
                break
    labelled = sum(y is not None for y in labels)
    assert len(label_events) + schedule.dropped == labelled
    assert schedule.unlabelled == len(labels) - labelled
    assert schedule.pending == 0


# --- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"label_delay": "1s"}, "--label-delay applies only with --labels-topic"),
        ({"label_drop": 0.1}, "--label-drop applies only with --labels-topic"),
        ({"seed": 1}, "--seed applies only with --labels-topic"),
        ({"id_prefix": "a-"}, "--id-prefix applies only with --labels-topic"),
        ({"start_time": 0}, "--start-time applies only with --labels-topic"),
        ({"labels_topic": "l", "label_drop": 1.0}, "label drop must be >= 0 and < 1"),
        ({"labels_topic": "l", "key": "a"}, "keyed by id"),
        ({"labels_topic": "bad topic"}, "not a valid Kafka topic name"),
    ],
)
def test_settings_refuse_label_options_that_cannot_apply(
    fields: Mapping[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ProduceSettings(**fields)


def test_settings_name_a_bad_delay_spec() -> None:
    with pytest.raises(ConfigError, match="label delay 'in a while'"):
        ProduceSettings(labels_topic="l", label_delay="in a while")
    assert ProduceSettings(labels_topic="l").label_delay_spec().low_ms == 0
