"""``serve`` against a real broker and a real trainer process: hot swaps under load.

The app runs in uvicorn on a thread (a real socket); the trainer is ``python -m streamtrain
train`` learning from a topic this test keeps producing to.
"""

from __future__ import annotations

import itertools
import json
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families
from river import datasets
from trainers import train_command, trainer_env

from streamtrain.cli.main import main
from streamtrain.config import KafkaSettings
from streamtrain.data.events import encode_event
from streamtrain.serving.app import BackgroundServer, create_app, create_kafka_app
from streamtrain.serving.follower import MetricsFollower, ModelKeys, StaticSnapshotSource
from streamtrain.serving.snapshot import ModelSnapshot
from streamtrain.state.envelope import CheckpointHeader, seal
from streamtrain.state.keys import SigningKey
from streamtrain.state.store import CheckpointStore, checkpoint_partition

SECRET = "serve-test-secret-0123456789abcdef"
KEY = SigningKey(SECRET.encode(), "STREAMTRAIN_SECRET")
PROBES = [x for x, _ in itertools.islice(datasets.synth.Agrawal(seed=999), 40)]


class Feeder(threading.Thread):
    """Produces Agrawal events to ``topic`` at about ``rate`` per second until stopped."""

    def __init__(self, bootstrap: str, topic: str, rate: int, seed: int = 7) -> None:
        super().__init__(daemon=True)
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
        self.topic = topic
        self.per_tick = max(rate // 10, 1)
        self.stream = iter(datasets.synth.Agrawal(seed=seed))
        self.halt = threading.Event()
        self.sent = 0

    def produce(self, n: int) -> None:
        for x, y in itertools.islice(self.stream, n):
            self.producer.produce(self.topic, value=encode_event(x, y))
            self.sent += 1
        self.producer.poll(0)

    def run(self) -> None:
        while not self.halt.is_set():
            self.produce(self.per_tick)
            self.halt.wait(0.1)
        self.producer.flush(30)

    def stop(self) -> None:
        self.halt.set()
        self.join(30)


def create_topic(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)


def spawn_trainer(
    bootstrap: str, topic: str, name: str, ckpt: str, metrics_topic: str
) -> subprocess.Popen[str]:
    cmd = train_command(
        bootstrap, topic, name, ckpt, "--metrics-topic", metrics_topic, "--rolling-window", "200"
    )
    env = trainer_env(SECRET)
    return subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
    )


def stop_trainer(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def offset_of(version: str) -> int:
    """``topic:0@1234`` → 1234 (single-partition topics here)."""
    return int(version.rpartition("@")[2])


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


class Hammer(threading.Thread):
    """Posts single predictions in a loop; records (status, model offset) of each answer."""

    def __init__(self, url: str, index: int) -> None:
        super().__init__(daemon=True)
        self.client = httpx.Client(base_url=url, timeout=10)
        self.probe = {"x": PROBES[index % len(PROBES)]}
        self.halt = threading.Event()
        self.answers: list[tuple[int, int | None]] = []

    def run(self) -> None:
        with self.client:
            while not self.halt.is_set():
                response = self.client.post("/predict", json=self.probe)
                version = response.json().get("model_version") if response.is_success else None
                self.answers.append((response.status_code, offset_of(version) if version else None))


@pytest.mark.kafka
def test_serve_follows_a_learning_model(
    kafka_bootstrap: str, unique_name: Callable[..., str], tmp_path: Path
) -> None:
    topic, name = unique_name("serve"), unique_name("model")
    ckpt, metrics_topic = unique_name("ckpt"), unique_name("metrics")
    create_topic(kafka_bootstrap, topic)
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    store = CheckpointStore(kafka, KEY, ckpt)
    app = create_kafka_app(kafka, KEY, name, checkpoint_topic=ckpt, metrics_topic=metrics_topic)
    feeder = Feeder(kafka_bootstrap, topic, rate=3000)
    trainer: subprocess.Popen[str] | None = None
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        try:
            # No checkpoint topic, no model: up but not ready, and predictions say why.
            assert http.get("/healthz").status_code == 200
            assert http.get("/readyz").status_code == 503
            refused = http.post("/predict", json={"x": PROBES[0]})
            assert (refused.status_code, refused.json()["reason"]) == (503, "no-model")
            assert http.get("/model").status_code == 503

            feeder.produce(1000)
            feeder.start()
            trainer = spawn_trainer(kafka_bootstrap, topic, name, ckpt, metrics_topic)
            wait_for("a loaded model", lambda: http.get("/readyz").status_code == 200)

            # Hot swaps under concurrent requests: none fails, none goes back in time.
            hammers = [Hammer(server.url, i) for i in range(4)]
            for h in hammers:
                h.start()
            start = http.get("/model").json()
            first, swaps = offset_of(start["version"]), start["swaps"]

            def advanced() -> bool:
                now = http.get("/model").json()
                return offset_of(now["version"]) > first + 3000 and now["swaps"] >= swaps + 3

            wait_for("the served version to advance several times", advanced, timeout=60)
            for h in hammers:
                h.halt.set()
            for h in hammers:
                h.join(30)
            feeder.stop()
            assert trainer.poll() is None, trainer.stderr.read() if trainer.stderr else ""
            wait_for(
                "a checkpoint of every event produced",
                lambda: offset_of(http.get("/model").json()["version"]) == feeder.sent,
            )

            answered = 0
            seen_versions: set[int] = set()
            for h in hammers:
                assert h.answers, "a hammer thread got no answer at all"
                assert {status for status, _ in h.answers} == {200}
                offsets = [offset for _, offset in h.answers]
                assert offsets == sorted(offsets), "a thread saw the model version go back"
                seen_versions.update(o for o in offsets if o is not None)
                answered += len(h.answers)
            assert len(seen_versions) >= 3, seen_versions

            # After a clean stop, serve converges on the final checkpoint and answers exactly
            # as that checkpoint loaded directly does.
            stop_trainer(trainer)
            assert trainer.returncode == 0, trainer.stderr.read() if trainer.stderr else ""
            final = ModelSnapshot.latest(store, name)
            wait_for(
                "serve to load the final checkpoint",
                lambda: http.get("/model").json()["version"] == final.version,
            )
            batch = http.post("/predict", json=[{"x": x} for x in PROBES])
            assert batch.status_code == 200
            assert batch.json() == [final.predict(x) for x in PROBES]
            assert {a["model_version"] for a in batch.json()} == {final.version}
            described = http.get(f"/models/{name}").json()
            assert described["events_learned"] == final.header.events_learned == feeder.sent
            assert described["spec"] == final.header.model_spec
            assert 0.5 < described["metrics"]["ROCAUC"] <= 1.0

            # Prometheus: parses, and counts what this test did.
            metrics = samples(http.get("/metrics").text)
            (predictions,) = metrics["streamtrain_predictions_total"]
            assert predictions[1] == answered + len(PROBES)
            (swaps,) = metrics["streamtrain_model_swaps_total"]
            assert swaps[1] >= len(seen_versions)
            (info,) = metrics["streamtrain_model_info"]
            assert info[0]["version"] == final.version
            (latency_count,) = metrics["streamtrain_predict_latency_seconds_count"]
            assert latency_count[1] >= answered + 1
            (learned,) = metrics["streamtrain_model_events_learned"]
            assert learned[1] == feeder.sent

            # Another model's name is not found; this one is.
            unknown = http.post(f"/models/{unique_name('nobody')}/predict", json={"x": PROBES[0]})
            assert (unknown.status_code, unknown.json()["reason"]) == (404, "unknown-model")
            assert http.post(f"/models/{name}/predict", json={"x": PROBES[0]}).status_code == 200

            # The trainer's metrics records reached the event stream's history.
            history = first_sse_event(server.url)
            assert history[0] == "history"
            assert history[1][-1]["kind"] == "final"
            assert history[1][-1]["events_learned"] == feeder.sent
            assert all(r["model"] == name for r in history[1])

            # A forged checkpoint is refused and shown; the verified model stays served.
            forged = seal(
                CheckpointHeader(
                    model_name=name,
                    model_spec="forged",
                    offsets={topic: {0: 10**9}},
                    events_learned=10**9,
                    dead_lettered=0,
                    metrics={},
                    created_at=time.time(),
                    versions={},
                ),
                b"not a pickle",
                SigningKey(b"an-attacker-key-0123456789", "attacker"),
            )
            producer = Producer({"bootstrap.servers": kafka_bootstrap})
            count = store.partitions()
            assert count is not None
            producer.produce(
                ckpt, key=name, value=forged, partition=checkpoint_partition(name, count)
            )
            assert producer.flush(30) == 0
            rejection = wait_for(
                "the forged checkpoint to be rejected",
                lambda: http.get("/model").json()["last_rejection"],
            )
            assert "signature does not verify" in rejection["error"]
            after = http.post("/predict", json={"x": PROBES[0]})
            assert after.json()["model_version"] == final.version
        finally:
            feeder.stop()
            if trainer is not None:
                stop_trainer(trainer)

    # A serve process started later catches up from the beginning and rejects the same
    # forged newest record, so it has no model to serve: it says so rather than guess.
    late = create_kafka_app(kafka, KEY, name, checkpoint_topic=ckpt, metrics_topic=None)
    with BackgroundServer(late) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        model = wait_for(
            "the late server to read the topic",
            lambda: (r := http.get("/model").json())["follower"]["caught_up"] and r,
        )
        assert model["loaded"] is False
        assert "signature does not verify" in model["last_rejection"]["error"]
        assert http.get("/readyz").status_code == 503

    # The report of this run, from the metrics topic.
    report = tmp_path / "report.html"
    code = main(
        [
            "report",
            "--name",
            name,
            "--metrics-topic",
            metrics_topic,
            "--bootstrap-servers",
            kafka_bootstrap,
            "-o",
            str(report),
        ]
    )
    assert code == 0
    page = report.read_text()
    assert f"{feeder.sent:,}" in page  # the final events learned
    assert page.count("data-chart='") >= 3  # ROCAUC curve, throughput, lag (uPlot, inline)
    assert "final report" in page
    assert (
        main(
            [
                "report",
                "--name",
                unique_name("nobody"),
                "--metrics-topic",
                metrics_topic,
                "--bootstrap-servers",
                kafka_bootstrap,
                "-o",
                str(tmp_path / "x.html"),
            ]
        )
        == 1
    )


def first_sse_event(url: str) -> tuple[str, Any]:
    with httpx.Client(base_url=url, timeout=10) as client, client.stream("GET", "/events") as r:
        kind = ""
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                return kind, json.loads(line.removeprefix("data: "))
    raise AssertionError("the event stream ended without an event")


@pytest.fixture
def static_server() -> Iterator[BackgroundServer]:
    app = create_app("static", StaticSnapshotSource(None), max_body_bytes=64 * 1024)
    with BackgroundServer(app) as server:
        yield server


def test_an_endless_chunked_body_is_cut_off(static_server: BackgroundServer) -> None:
    """413 arrives while the client is still sending: the server stopped reading at the limit."""
    host, port = static_server.url.removeprefix("http://").split(":")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"%x\r\n%s\r\n" % (8192, b" " * 8192)
        reply = b""
        while sent < 256 * 1024 * 1024:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                reply = sock.recv(65536)
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 8192
        while b"}" not in reply:  # the rest of the headers and the JSON body
            more = sock.recv(65536)
            if not more:
                break
            reply += more
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"body-too-large" in reply
    # Kernel socket buffers on loopback take several MiB before the server reads anything;
    # a server that read the whole body first would only answer after all 256 MiB.
    assert sent < 32 * 1024 * 1024, f"the server let {sent} bytes in before refusing"


def test_metrics_of_several_processes_follow_as_one_series(
    kafka_bootstrap: str, unique_name: Callable[..., str]
) -> None:
    topic, name = unique_name("metrics"), unique_name("model")
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})

    def report(process: str, ts: float, partition: int, learned: int) -> None:
        summary = {"events_learned": learned, "dead_lettered": 0, "metrics": {"ROCAUC": 0.5}}
        value = {
            "format": 1,
            "kind": "progress",
            "ts": ts,
            "model": name,
            "topic": "input",
            "process": process,
            "events_per_second": 10.0,
            "events_learned": learned,
            "lag": {str(partition): 0},
            "positions": {str(partition): learned},
            "tasks": {f"{name}/p{partition}": summary},
        }
        producer.produce(topic, key=name, value=json.dumps(value).encode())

    # Two processes of one partitioned model, each reporting its own replica.
    for step in range(1, 6):
        report("host:1", step, 0, 100 * step)
        report("host:2", step + 0.5, 1, 10 * step)
    assert producer.flush(30) == 0
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    follower = MetricsFollower(kafka, ModelKeys(name), topic)
    follower.start()
    try:
        deadline = time.monotonic() + 30
        while follower.received < 10 and time.monotonic() < deadline:
            time.sleep(0.1)
        history = follower.history()
    finally:
        follower.stop()
    assert len(history) == 10
    learned = [r["events_learned"] for r in history]
    assert learned == sorted(learned) and learned[-1] == 550
    assert history[-1]["processes"] == 2 and history[-1]["events_per_second"] == 20.0
    assert history[-1]["model_version"] == "input:0@500,input:1@50"
