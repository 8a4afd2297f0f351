"""serve's /metrics tells the trainer's state from its newest metrics record: how long ago it
reported, events learned, dead letters by reason, lag by partition (the series deploy/'s
alerts watch)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from streamtrain.serving.app import create_app
from streamtrain.serving.follower import MetricsHub, StaticSnapshotSource
from streamtrain.train.progress import Progress
from streamtrain.train.telemetry import progress_record

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(hub: MetricsHub) -> Samples:
    with TestClient(create_app("m", StaticSnapshotSource(None), hub)) as client:
        text = client.get("/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _record(**fields: Any) -> dict[str, Any]:
    progress = Progress(
        topic="events",
        model="LogisticRegression",
        events_learned=1250,
        dead_lettered=3,
        events_per_second=400.0,
        elapsed_seconds=3.0,
        metrics={"ROCAUC": 0.9},
        lag={0: 17, 1: 0},
        dead_letter_reasons={"bad-label": 2, "too-many-features": 1},
        name="m",
    )
    return {**progress_record(progress), **fields}


def test_the_newest_record_gives_age_learned_dead_letters_and_lag() -> None:
    hub = MetricsHub()
    hub.publish(_record(events_learned=5))
    hub.publish(_record(ts=time.time() - 30))
    samples = _scrape(hub)
    model = (("model", "m"),)
    age = samples[("streamtrain_trainer_record_age_seconds", model)]
    assert 30 <= age < 60
    assert samples[("streamtrain_trainer_events_learned_total", model)] == 1250
    for reason, n in (("bad-label", 2), ("too-many-features", 1)):
        key = ("streamtrain_trainer_dead_lettered_total", (("model", "m"), ("reason", reason)))
        assert samples[key] == n
    for partition, n in (("0", 17), ("1", 0)):
        key = ("streamtrain_trainer_lag", (("model", "m"), ("partition", partition)))
        assert samples[key] == n


def test_no_trainer_series_before_the_first_record_nor_from_mistyped_fields() -> None:
    hub = MetricsHub()
    assert not any(name.startswith("streamtrain_trainer") for name, _ in _scrape(hub))
    hub.publish(_record(ts="yesterday", events_learned=None, lag=[3], dead_letter_reasons=7))
    samples = _scrape(hub)
    assert ("streamtrain_model_loaded", (("model", "m"),)) in samples  # the scrape worked
    assert not any(name.startswith("streamtrain_trainer") for name, _ in samples)


def test_a_record_from_a_clock_ahead_gives_age_zero_not_negative() -> None:
    hub = MetricsHub()
    hub.publish(_record(ts=time.time() + 60))
    age = _scrape(hub)[("streamtrain_trainer_record_age_seconds", (("model", "m"),))]
    assert age == pytest.approx(0.0)
