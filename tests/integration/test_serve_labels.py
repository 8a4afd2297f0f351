"""The serve side of late labels on a real broker: predictions logged as feature events, labels
posted to ``/labels``, both read back from their topics.

``streamtrain serve`` runs as users run it, a process of its own (``--log-topic`` as a flag,
the labels topic from ``STREAMTRAIN_LABELS_TOPIC``); it creates both topics at its first write.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, TIMESTAMP_CREATE_TIME, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families
from river import datasets
from topics import fill

from streamtrain.cli.main import main
from streamtrain.config import KafkaSettings
from streamtrain.data.events import decode_event, encode_event
from streamtrain.models.problem import Problem
from streamtrain.serving.app import BackgroundServer, create_kafka_app
from streamtrain.state.keys import SigningKey

pytestmark = pytest.mark.kafka

SECRET = "serve-labels-test-secret-0123456789"
KEY = SigningKey(SECRET.encode(), "STREAMTRAIN_SECRET")
PHISHING = list(itertools.islice(datasets.Phishing(), 400))
PROBES = [x for x, _ in PHISHING[:3]]


def read_records(bootstrap: str, topic: str, timeout: float = 30) -> list[Any]:
    """Every message of partition 0 of ``topic`` up to its current end, in log order."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "serve-labels-reader",
            "enable.auto.commit": False,
        }
    )
    try:
        end = consumer.get_watermark_offsets(TopicPartition(topic, 0), 30)[1]
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(out) < end:
            assert time.monotonic() < deadline, f"reading {topic}: {len(out)} of {end}"
            for msg in consumer.consume(100, 0.2):
                assert msg.error() is None, msg.error()
                out.append(msg)
        return out
    finally:
        consumer.close()


def wait_ready(http: httpx.Client, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else proc.returncode
        try:
            if http.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.1)
    raise AssertionError("serve loaded no model in time")


def counters(text: str) -> dict[str, float]:
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.endswith("_total") and s.labels.get("code") in (None, "200")
    }


def train_model(bootstrap: str, topic: str, name: str, ckpt: str) -> None:
    fill(bootstrap, topic, [encode_event(x, y) for x, y in PHISHING])
    argv = ["train", "--name", name, "--topic", topic, "--checkpoint-topic", ckpt]
    argv += ["--exit-when-idle", "1.5", "--view", "none", "--bootstrap-servers", bootstrap]
    assert main(argv) == 0


def test_predictions_and_labels_reach_their_topics(
    kafka_bootstrap: str,
    unique_name: Callable[..., str],
    free_ports: Callable[[int], list[int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMTRAIN_SECRET", SECRET)
    topic, name, ckpt = unique_name("events"), unique_name("model"), unique_name("ckpt")
    log_topic, labels_topic = unique_name("served"), unique_name("labels")
    train_model(kafka_bootstrap, topic, name, ckpt)

    (port,) = free_ports(1)
    serve = [sys.executable, "-m", "streamtrain", "serve", "--name", name, "--port", str(port)]
    serve += ["--checkpoint-topic", ckpt, "--metrics-topic", "", "--log-topic", log_topic]
    serve += ["--bootstrap-servers", kafka_bootstrap]
    env = {**os.environ, "STREAMTRAIN_SECRET": SECRET, "STREAMTRAIN_LABELS_TOPIC": labels_topic}
    proc = subprocess.Popen(
        serve, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            wait_ready(http, proc)
            before = time.time_ns() // 1_000_000
            single = http.post("/predict", json={"id": "order-1", "x": PROBES[0]})
            batch = http.post("/predict", json=[{"id": 7, "x": PROBES[1]}, {"x": PROBES[2]}])
            after = time.time_ns() // 1_000_000
            assert single.status_code == batch.status_code == 200, (single.text, batch.text)
            answers = [single.json(), *batch.json()]
            ids = [a["id"] for a in answers]
            assert ids[:2] == ["order-1", "7"] and len(ids[2]) == 32  # a generated uuid4, hex

            logged = read_records(kafka_bootstrap, log_topic)
            assert [m.key() for m in logged] == [i.encode() for i in ids]
            for msg, answer, x in zip(logged, answers, PROBES, strict=True):
                event = orjson.loads(msg.value())
                assert event["id"] == answer["id"] and event["x"] == x
                served = event["served"]
                assert served["prediction"] == answer["prediction"]
                assert served["probabilities"] == answer["probabilities"]
                assert served["model_version"] == answer["model_version"] == f"{topic}:0@400"
                assert served["model"] == name
                assert msg.timestamp() == (TIMESTAMP_CREATE_TIME, served["at"])
                assert before <= served["at"] <= after
                # What the trainer reads of it: an unlabelled event with the same features.
                assert decode_event(msg.value(), Problem.CLASSIFICATION) == (x, None)

            # The outcomes, later, by id.
            one = http.post("/labels", json={"id": "order-1", "y": True})
            assert (one.status_code, one.json()) == (200, {"accepted": 1})
            labels = [{"id": 7, "y": False}, {"id": ids[2], "y": True}]
            more = http.post(f"/models/{name}/labels", json={"labels": labels})
            assert (more.status_code, more.json()) == (200, {"accepted": 2})
            written = read_records(kafka_bootstrap, labels_topic)
            assert [(m.key(), orjson.loads(m.value())) for m in written] == [
                (b"order-1", {"id": "order-1", "y": True}),
                (b"7", {"id": "7", "y": False}),
                (ids[2].encode(), {"id": ids[2], "y": True}),
            ]
            assert all(m.timestamp()[0] == TIMESTAMP_CREATE_TIME for m in written)
            assert before <= written[0].timestamp()[1] <= time.time_ns() // 1_000_000

            # Refused with a reason, and nothing written.
            refusals = [
                http.post("/labels", json={"id": "order-1", "y": 0.5}),  # a classifier's
                http.post("/labels", json={"labels": [{"id": "a", "y": 1}, {"id": "b"}]}),
                http.post("/labels", content=b"{"),
                http.post("/predict", json={"id": True, "x": PROBES[0]}),
                http.post("/predict", json=[{"id": "a", "x": PROBES[0]}] * 2),
            ]
            assert [(r.status_code, r.json()["reason"]) for r in refusals] == [
                (422, "bad-label"),
                (422, "bad-label"),
                (400, "undecodable"),
                (422, "bad-id"),
                (422, "duplicate-id"),
            ]
            assert len(read_records(kafka_bootstrap, labels_topic)) == 3
            assert len(read_records(kafka_bootstrap, log_topic)) == 3

            metrics = counters(http.get("/metrics").text)
            assert metrics["streamtrain_predictions_logged_total"] == 3
            assert metrics["streamtrain_labels_accepted_total"] == 3
            assert metrics["streamtrain_labels_requests_total"] == 2
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0, proc.stderr.read() if proc.stderr else code


def test_labels_off_and_a_refused_record(
    kafka_bootstrap: str, unique_name: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``--labels-topic`` /labels is 404; a record the broker refuses is a 503 with
    its reason, and the next request is served by the same process."""
    monkeypatch.setenv("STREAMTRAIN_SECRET", SECRET)
    topic, name, ckpt = unique_name("events"), unique_name("model"), unique_name("ckpt")
    log_topic = unique_name("small")
    train_model(kafka_bootstrap, topic, name, ckpt)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    small = NewTopic(log_topic, 1, 1, config={"max.message.bytes": "2000"})
    admin.create_topics([small])[log_topic].result(30)

    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    app = create_kafka_app(
        kafka, KEY, name, checkpoint_topic=ckpt, metrics_topic=None, log_topic=log_topic
    )
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        deadline = time.monotonic() + 60
        while http.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "no model loaded"
            time.sleep(0.1)
        off = http.post("/labels", json={"id": "a", "y": True})
        assert (off.status_code, off.json()["reason"]) == (404, "labels-off")

        wide = {f"feature_{i}": float(i) for i in range(200)}  # about 4 kB: over the topic's limit
        refused = http.post("/predict", json={"id": "wide", "x": wide})
        assert (refused.status_code, refused.json()["reason"]) == (503, "not-written")
        assert log_topic in refused.json()["error"]
        fine = http.post("/predict", json={"id": "narrow", "x": PROBES[0]})
        assert fine.status_code == 200, fine.text
    assert [m.key() for m in read_records(kafka_bootstrap, log_topic)] == [b"narrow"]
