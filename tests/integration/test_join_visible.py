"""A joined run on a real broker: the final metrics record's ``join`` counts what was produced,
and ``serve``'s Prometheus endpoint shows the same figures."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from topics import fill
from trainers import train_command, trainer_env

from streamtrain.config import KafkaSettings
from streamtrain.serving.app import create_kafka_app
from streamtrain.serving.report import read_metrics_records
from streamtrain.state.keys import SigningKey

pytestmark = pytest.mark.kafka

SECRET = "join-visible-test-secret-0123456789"
# Event time of the first feature event (ms): recent, since the broker deletes records older
# than its retention (7 days) at its next retention check, even from a topic's active segment.
START = int(time.time() * 1000) - 600_000
EVENTS = 200
DELAY_MS = 5  # each label comes this long after its features, in event time
TTL_MS = 50
MISSING = {i for i in range(EVENTS) if i % 10 == 9}  # features whose label never comes
ORPHANS = [10, 20, 30]  # times (ms after START) of labels whose features never come


def _produce(bootstrap: str, features: str, labels: str) -> int:
    """Features i at START + i, labels at + DELAY_MS (none for MISSING), orphan labels; the
    labels topic in event-time order, as `produce --labels-topic` writes it. Returns the
    stream time the trainer ends at: the newest record's timestamp."""
    fill(
        bootstrap,
        features,
        [orjson.dumps({"id": str(i), "x": {"a": i % 7, "b": i / EVENTS}}) for i in range(EVENTS)],
        keys=[str(i).encode() for i in range(EVENTS)],
        timestamps=[START + i for i in range(EVENTS)],
    )
    due = [(i + DELAY_MS, str(i), i % 3 == 0) for i in range(EVENTS) if i not in MISSING]
    due += [(t, f"orphan-{t}", True) for t in ORPHANS]
    due.sort()
    fill(
        bootstrap,
        labels,
        [orjson.dumps({"id": event_id, "y": y}) for _t, event_id, y in due],
        keys=[event_id.encode() for _t, event_id, _y in due],
        timestamps=[START + t for t, _id, _y in due],
    )
    return START + max(max(t for t, _id, _y in due), EVENTS - 1)


def _join_samples(text: str) -> dict[tuple[str, str | None], float]:
    return {
        (s.name, s.labels.get("quantile")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("streamtrain_join")
    }


def test_a_joined_run_reports_its_join(
    kafka_bootstrap: str, unique_name: Callable[..., str], tmp_path: Path
) -> None:
    features, labels = unique_name("feat"), unique_name("lab")
    name, ckpt, metrics_topic = unique_name("joinvis"), unique_name("ckpt"), unique_name("met")
    end = _produce(kafka_bootstrap, features, labels)
    summary_path = tmp_path / "summary.json"
    cmd = train_command(
        kafka_bootstrap,
        features,
        name,
        ckpt,
        "--labels-topic",
        labels,
        "--label-ttl",
        f"{TTL_MS}ms",
        "--metrics-topic",
        metrics_topic,
        "--exit-when-idle",
        "2",
        "--summary",
        str(summary_path),
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, env=trainer_env(SECRET), timeout=180)
    assert proc.returncode == 0, proc.stderr

    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    records = read_metrics_records(kafka, name, metrics_topic)
    final = records[-1]
    assert final["kind"] == "final"
    join: dict[str, Any] = final["join"]
    # A prediction expires once stream time passes its features' time plus the TTL.
    expired = sum(1 for i in MISSING if START + i + TTL_MS < end)
    assert 0 < expired < len(MISSING)  # the test covers both: expired and still waiting
    assert join["joined"] == EVENTS - len(MISSING)  # every label whose features came
    assert join["expired"] == expired
    assert join["pending"] == len(MISSING) - expired
    assert join["unmatched"] == len(ORPHANS)
    assert join["held_labels"] == join["duplicate"] == join["evicted"] == join["defaulted"] == 0
    assert join["label_delay_p50_ms"] == join["label_delay_p99_ms"] == DELAY_MS
    summary = json.loads(summary_path.read_text())
    assert {k: v for k, v in join.items() if k != "joins_per_second"} == summary["join"]
    assert all("join" in r for r in records)  # every record of a joined run has one

    # serve's Prometheus endpoint reads the same record from the metrics topic.
    app = create_kafka_app(
        kafka,
        SigningKey(SECRET.encode(), "test"),
        name,
        checkpoint_topic=ckpt,
        metrics_topic=metrics_topic,
    )
    with TestClient(app) as client:
        deadline = time.monotonic() + 60
        samples = _join_samples(client.get("/metrics").text)
        while ("streamtrain_join_joined_total", None) not in samples:
            assert time.monotonic() < deadline, "no join series within 60 s"
            time.sleep(0.2)
            samples = _join_samples(client.get("/metrics").text)
    assert samples[("streamtrain_join_joined_total", None)] == join["joined"]
    assert samples[("streamtrain_join_expired_total", None)] == join["expired"]
    assert samples[("streamtrain_join_unmatched_total", None)] == join["unmatched"]
    assert samples[("streamtrain_join_pending", None)] == join["pending"]
    assert samples[("streamtrain_join_label_delay_seconds", "0.99")] == DELAY_MS / 1000
