"""Drift detection on a stream with a known concept change: Agrawal's classification function
0 for 2,000 events, then function 4. Each model's detections are those an offline River run
gives (the same detector fed the same errors of the same progressive model), each once on the
events topic under read_committed, across a kill -9."""

from __future__ import annotations

import itertools
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from river import drift, evaluate, linear_model, metrics, naive_bayes, preprocessing, tree
from river.datasets import synth
from topics import fill
from trainers import run_to_end, train_command, trainer_env

from streamtrain.config import KafkaSettings
from streamtrain.data.events import encode_event
from streamtrain.formats import DEFAULT_EVENTS_TOPIC
from streamtrain.state.envelope import load_state
from streamtrain.state.keys import SigningKey
from streamtrain.state.store import CheckpointStore
from streamtrain.train.settings import TrainSettings
from streamtrain.train.trainer import Trainer

pytestmark = pytest.mark.kafka

SECRET = "drift-test-secret-0123456789abcdef"
CHANGE = 2_000  # events of the first concept
AFTER = 1_000  # events of the second
WITHIN = 100  # the champion detects the change within this many events
Stream = list[tuple[dict[str, Any], bool]]


def _stream() -> Stream:
    def part(function: int, seed: int, n: int) -> Stream:
        gen = synth.Agrawal(classification_function=function, seed=seed)
        return [(x, bool(y)) for x, y in itertools.islice(gen, n)]

    return part(0, 7, CHANGE) + part(4, 8, AFTER)


def _champion() -> Any:
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


def _detections(stream: Stream, model: Any, start: int = 0) -> list[int]:
    """The offline oracle: ``model`` learns progressively from event ``start`` on; an ADWIN
    is fed its 0/1 error (arg-max of predict_proba_one); the event counts where it fires."""
    detector = drift.ADWIN()
    fired = []
    for i, (x, y) in enumerate(stream[start:], start=start + 1):
        proba = model.predict_proba_one(x)
        model.learn_one(x, y)
        if proba:
            detector.update(0.0 if max(proba, key=proba.get) == y else 1.0)
            if detector.drift_detected:
                fired.append(i)
    return fired


def _events(bootstrap: str, name: str, timeout: float = 60) -> list[dict[str, Any]]:
    """The committed records of ``name`` on the events topic, in log order."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "test-events-reader",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    tp = TopicPartition(DEFAULT_EVENTS_TOPIC, 0)
    out = []
    try:
        end = consumer.get_watermark_offsets(tp, 30)[1]
        consumer.assign([TopicPartition(DEFAULT_EVENTS_TOPIC, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + timeout
        while consumer.position([tp])[0].offset < end:
            assert time.monotonic() < deadline, "reading the events topic back"
            for msg in consumer.consume(1000, 0.2):
                assert msg.error() is None, msg.error()
                if msg.key() == name.encode():
                    out.append(orjson.loads(msg.value()))
    finally:
        consumer.close()
    return out


def test_detections_match_river_and_are_written_once_across_kill_9(
    kafka_bootstrap: str, unique_name: Callable[..., str], tmp_path: Path
) -> None:
    stream = _stream()
    topic, name, ckpt = unique_name("drift"), unique_name("model"), unique_name("ckpt")
    fill(kafka_bootstrap, topic, [encode_event(x, y) for x, y in stream])
    champion = _detections(stream, _champion())
    challenger = _detections(stream, tree.HoeffdingTreeClassifier())
    # The stream is what the test says: stable, then detected soon after the change.
    assert champion and all(CHANGE < at <= CHANGE + WITHIN for at in champion[:1])
    assert all(at > CHANGE for at in champion)

    cmd = train_command(
        kafka_bootstrap,
        topic,
        name,
        ckpt,
        *("--challenger", "ht=HoeffdingTreeClassifier", "--checkpoint-every", "300"),
        # River's path only: no kernel to load in each process (the compiled path's errors
        # are the same: tests/unit/test_drift.py).
        "--no-fast-path",
    )
    env = trainer_env(SECRET)
    # SIGKILL at the 21st learned batch (of at most 100 events): mid-stream, near the change.
    crashed = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env={**env, "STREAMTRAIN_FAULT": "after-learn:21"},
        timeout=120,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    key = SigningKey(SECRET.encode(), "STREAMTRAIN_SECRET")
    store = CheckpointStore(KafkaSettings(bootstrap_servers=kafka_bootstrap), key, ckpt)
    opened = store.latest(name)
    assert opened is not None and 0 < opened.header.events_learned < len(stream)
    assert "detectors" in load_state(opened)["drift"]  # the detectors are checkpointed

    summary = run_to_end(cmd, tmp_path / "summary.json", env, timeout=180)
    assert summary["events_learned"] == len(stream)
    written = _events(kafka_bootstrap, name)
    by_label = {
        label: [r["events"] for r in written if r["label"] == label] for label in ("champion", "ht")
    }
    assert by_label == {"champion": champion, "ht": challenger}  # each exactly once
    assert summary["drift"]["detections"] == {
        label: len(at) for label, at in by_label.items() if at
    }
    first = next(r for r in written if r["label"] == "champion")
    assert first["kind"] == "drift" and first["model"] == name
    assert first["detector"] == "ADWIN" and first["action"] == "alert"
    assert first["source"]["offset"] == champion[0] - 1  # one partition: offset = count - 1
    assert first["source"]["timestamp"] > 0 and first["state"]["width"] > 0


def test_reset_challengers_restarts_them_at_the_champions_drift(
    kafka_bootstrap: str, unique_name: Callable[..., str]
) -> None:
    stream = _stream()
    topic = unique_name("drift-reset")
    fill(kafka_bootstrap, topic, [encode_event(x, y) for x, y in stream])
    settings = TrainSettings(
        topic=topic,
        challengers=("nb=GaussianNB",),
        on_drift="reset-challengers",
        exit_when_idle=2,
        fast_path=False,
    )
    summary = Trainer(KafkaSettings(bootstrap_servers=kafka_bootstrap), settings).run()
    champion = _detections(stream, _champion())
    last = champion[-1]
    report = summary.challengers["nb"]
    assert report["started_at"] == last
    assert report["events_learned"] == len(stream) - last
    river = evaluate.progressive_val_score(
        stream[last:], naive_bayes.GaussianNB(), metrics.ROCAUC()
    )
    assert report["metrics"]["ROCAUC"] == pytest.approx(river.get(), abs=1e-12, rel=0)
    assert summary.drift is not None
    assert summary.drift["detections"]["champion"] == len(champion)
    assert [r["events"] for r in summary.drift["recent"] if r["label"] == "champion"] == champion
    assert {r["action"] for r in summary.drift["recent"] if r["label"] == "champion"} == {
        "reset-challengers"
    }
