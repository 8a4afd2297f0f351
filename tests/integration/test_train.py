"""The trainer against a real broker: River's oracle, dead letters, stopping, errors."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from river import base, datasets, evaluate, linear_model, metrics, preprocessing
from topics import fill

from streamtrain.cli.main import main
from streamtrain.config import KafkaSettings
from streamtrain.errors import BrokerUnreachable, TopicMissing
from streamtrain.train.settings import TrainSettings
from streamtrain.train.trainer import Trainer

pytestmark = pytest.mark.kafka


def _create_topic(bootstrap: str, topic: str, partitions: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)


def _produce_raw(bootstrap: str, topic: str, values: Iterable[bytes | None]) -> int:
    """Write values the way a plain client would, in order, to partition 0."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    n = 0
    for value in values:
        producer.produce(topic, value=value, partition=0)
        producer.poll(0)
        n += 1
    assert producer.flush(30) == 0
    return n


def _seed_json(x: dict[str, Any], y: Any) -> bytes:
    # Exactly what the seed's kafka-python producer sends: json.dumps of {"x", "y"}.
    return json.dumps({"x": x, "y": y}).encode("utf-8")


def _oracle(stream: Iterable[tuple[dict[str, Any], Any]]) -> float:
    return evaluate.progressive_val_score(
        stream, preprocessing.StandardScaler() | linear_model.LogisticRegression(), metrics.ROCAUC()
    ).get()


def _read_all(bootstrap: str, topic: str, expected: int, timeout: float = 30) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(out) < expected and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            out.append(msg)
    # A little longer, to catch records that should not be there.
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        msg = consumer.poll(0.2)
        if msg is not None and msg.error() is None:
            out.append(msg)
    consumer.close()
    return out


def test_oracle_phishing_defaults(kafka_bootstrap: str, unique_name: Callable[..., str]) -> None:
    topic = unique_name("phishing")
    _create_topic(kafka_bootstrap, topic)
    _produce_raw(kafka_bootstrap, topic, (_seed_json(x, y) for x, y in datasets.Phishing()))
    trainer = Trainer(
        KafkaSettings(bootstrap_servers=kafka_bootstrap),
        TrainSettings(topic=topic, exit_when_idle=2.0),
    )
    summary = trainer.run()
    assert summary.events_learned == 1250
    assert summary.dead_lettered == 0
    assert summary.stopped_because == "idle"
    assert summary.positions == {0: 1250}
    assert summary.metrics["ROCAUC"] == pytest.approx(_oracle(datasets.Phishing()), abs=1e-12)


POISON: list[tuple[bytes | None, str]] = [
    (b"\x00\xff not json", "undecodable"),
    (None, "undecodable"),
    (b'{"x": {"a": NaN}, "y": true}', "undecodable"),
    (b"[1, 2, 3]", "not-an-object"),
    (b'{"y": true}', "bad-features"),
    (b'{"x": {"is_popular": "high"}, "y": true}', "bad-features"),
    (b'{"x": {"is_popular": 1e300}, "y": false}', "feature-out-of-range"),
    (b'{"x": {"is_popular": 0.5}, "y": {"label": 1}}', "bad-label"),
    (b'{"x": {"is_popular": 0.5}, "y": 0.25}', "bad-label"),
]


def test_poison_records_go_to_the_dead_letter_topic_once(
    kafka_bootstrap: str, unique_name: Callable[..., str], tmp_path: Path
) -> None:
    topic = unique_name("poison")
    _create_topic(kafka_bootstrap, topic)
    good = list(datasets.Phishing())[:400]
    values: list[bytes | None] = []
    poison_offsets: dict[int, str] = {}
    poison = iter(POISON)
    for i, (x, y) in enumerate(good):
        if i % 37 == 5:
            bad = next(poison, None)
            if bad is not None:
                poison_offsets[len(values)] = bad[1]
                values.append(bad[0])
        values.append(_seed_json(x, y))
    assert len(poison_offsets) == len(POISON)
    _produce_raw(kafka_bootstrap, topic, values)

    summary_path = tmp_path / "summary.json"
    code = main(
        [
            "train",
            "--topic",
            topic,
            "--exit-when-idle",
            "2",
            "--summary",
            str(summary_path),
            "--view",
            "none",
            "--bootstrap-servers",
            kafka_bootstrap,
        ]
    )
    assert code == 0
    summary = json.loads(summary_path.read_text())
    assert summary["events_learned"] == len(good)
    assert summary["dead_lettered"] == len(POISON)
    assert math.isfinite(summary["metrics"]["ROCAUC"])
    assert summary["metrics"]["ROCAUC"] == pytest.approx(_oracle(good), abs=1e-12)

    letters = _read_all(kafka_bootstrap, f"{topic}.dlq", len(POISON))
    assert len(letters) == len(POISON)  # each exactly once
    seen: dict[int, str] = {}
    for msg in letters:
        headers = {k: v.decode() for k, v in msg.headers()}
        offset = int(headers["streamtrain.source.offset"])
        assert headers["streamtrain.source.topic"] == topic
        assert headers["streamtrain.source.partition"] == "0"
        assert headers["streamtrain.error.message"]
        assert "streamtrain.source.timestamp" in headers
        assert msg.value() == values[offset]  # the original bytes, untouched
        seen[offset] = headers["streamtrain.error.reason"]
    assert seen == poison_offsets


class _ExplodingClassifier(base.Classifier):
    """Learns nothing, and raises on one feature value: a model bug, not bad data."""

    def learn_one(self, x: dict[str, Any], y: Any) -> None:
        if x.get("boom") == 1:
            raise ZeroDivisionError("model bug")

    def predict_proba_one(self, x: dict[str, Any]) -> dict[Any, float]:
        return {True: 0.5, False: 0.5}


def test_model_error_is_dead_lettered_and_training_goes_on(
    kafka_bootstrap: str, unique_name: Callable[..., str]
) -> None:
    topic = unique_name("boom")
    _create_topic(kafka_bootstrap, topic)
    events = [_seed_json({"boom": int(i == 3), "v": float(i)}, i % 2 == 0) for i in range(10)]
    _produce_raw(kafka_bootstrap, topic, events)
    trainer = Trainer(
        KafkaSettings(bootstrap_servers=kafka_bootstrap),
        TrainSettings(topic=topic, exit_when_idle=1.5, metrics=("Accuracy",)),
        model=_ExplodingClassifier(),
    )
    summary = trainer.run()
    assert summary.events_learned == 9
    assert summary.dead_letter_reasons == {"model-error": 1}
    (letter,) = _read_all(kafka_bootstrap, f"{topic}.dlq", 1)
    headers = dict(letter.headers())
    assert headers["streamtrain.error.reason"] == b"model-error"
    assert b"ZeroDivisionError" in headers["streamtrain.error.message"]


def test_max_events_and_library_model(
    kafka_bootstrap: str, unique_name: Callable[..., str]
) -> None:
    topic = unique_name("max")
    _create_topic(kafka_bootstrap, topic)
    _produce_raw(kafka_bootstrap, topic, (_seed_json(x, y) for x, y in datasets.Phishing()))
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression(l2=0.01)
    trainer = Trainer(
        KafkaSettings(bootstrap_servers=kafka_bootstrap),
        TrainSettings(topic=topic, max_events=300, batch_size=64),
        model=model,
        metrics={"Accuracy": metrics.Accuracy()},
    )
    summary = trainer.run()
    assert summary.events_learned == 300
    assert summary.stopped_because == "max-events"
    assert trainer.model is model
    expected = evaluate.progressive_val_score(
        list(datasets.Phishing())[:300],
        preprocessing.StandardScaler() | linear_model.LogisticRegression(l2=0.01),
        metrics.Accuracy(),
    ).get()
    assert summary.metrics["Accuracy"] == pytest.approx(expected, abs=1e-12)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_broker_fails_fast_and_clearly(capsys: pytest.CaptureFixture[str]) -> None:
    bootstrap = f"127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    with pytest.raises(BrokerUnreachable, match="no Kafka broker answered"):
        Trainer(KafkaSettings(bootstrap_servers=bootstrap, connect_timeout=2.0)).run()
    assert time.monotonic() - started < 6

    started = time.monotonic()
    code = main(["train", "--bootstrap-servers", bootstrap, "--connect-timeout", "2"])
    assert time.monotonic() - started < 6
    assert code == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "no Kafka broker answered" in err
    assert "Traceback" not in err


def test_missing_topic_is_a_clear_error(
    kafka_bootstrap: str, unique_name: Callable[..., str]
) -> None:
    with pytest.raises(TopicMissing, match="does not exist"):
        Trainer(
            KafkaSettings(bootstrap_servers=kafka_bootstrap),
            TrainSettings(topic=unique_name("absent")),
        ).run()


def test_sigterm_stops_cleanly_with_summary(
    kafka_bootstrap: str, unique_name: Callable[..., str], tmp_path: Path
) -> None:
    topic = unique_name("sigterm")
    _create_topic(kafka_bootstrap, topic)
    _produce_raw(kafka_bootstrap, topic, (_seed_json(x, y) for x, y in datasets.Phishing()))
    summary_path = tmp_path / "summary.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamtrain",
            "train",
            "--topic",
            topic,
            "--summary",
            str(summary_path),
            "--view",
            "log",
            "--bootstrap-servers",
            kafka_bootstrap,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        # Generous: on a loaded machine a Python process takes many seconds just to start.
        deadline = time.monotonic() + 180
        # Wait until it has learned everything (it never exits on its own: no idle limit).
        assert proc.stderr is not None
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if "learned=1250" in line:
                break
        else:
            pytest.fail("trainer did not learn the topic in time")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    summary = json.loads(summary_path.read_text())
    assert summary["events_learned"] == 1250
    assert summary["stopped_because"] == "SIGTERM"


def test_fast_path_is_chosen_and_equals_river(
    kafka_bootstrap: str, unique_name: Callable[..., str]
) -> None:
    topic = unique_name("fast")
    _create_topic(kafka_bootstrap, topic)
    stream = list(datasets.Phishing()) * 16  # 20,000 events: long enough to go compiled
    _produce_raw(kafka_bootstrap, topic, (_seed_json(x, y) for x, y in stream))
    trainer = Trainer(
        KafkaSettings(bootstrap_servers=kafka_bootstrap),
        TrainSettings(topic=topic, exit_when_idle=2.0, metrics=("ROCAUC", "LogLoss")),
    )
    summary = trainer.run()
    fast = trainer.tasks[""].fast
    assert fast is not None and fast.events > 0  # eligible, and it did learn batches
    assert summary.events_learned == len(stream)
    oracle = evaluate.progressive_val_score(
        stream, preprocessing.StandardScaler() | linear_model.LogisticRegression(), metrics.ROCAUC()
    ).get()
    assert summary.metrics["ROCAUC"] == pytest.approx(oracle, abs=1e-9)
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    for x, y in stream:
        model.learn_one(x, y)
    for x, _ in stream[:50]:
        assert trainer.model.predict_proba_one(x) == pytest.approx(
            model.predict_proba_one(x), abs=1e-12
        )


@pytest.mark.parametrize("fast_path", [True, False])
def test_oversized_records_and_feature_floods_are_dead_lettered_not_learned(
    fast_path: bool, kafka_bootstrap: str, unique_name: Callable[..., str]
) -> None:
    """Phishing with a 300 kB record and a 600-feature event among it (limits 200 kB and 500
    features): both dead-lettered with their reasons, the rest learned exactly as River; the
    oversized record's dead letter names its size instead of copying it."""
    stream = list(datasets.Phishing())
    values = [orjson.dumps({"x": x, "y": y}) for x, y in stream]
    huge = orjson.dumps({"x": {"a": 1.0}, "y": True, "pad": "p" * 300_000})
    flood = orjson.dumps({"x": {f"f{i}": 1.0 for i in range(600)}, "y": False})
    topic = unique_name("hostile")
    fill(kafka_bootstrap, topic, [*values[:500], huge, *values[500:900], flood, *values[900:]])
    summary = Trainer(
        KafkaSettings(bootstrap_servers=kafka_bootstrap),
        TrainSettings(
            topic=topic,
            exit_when_idle=1.5,
            max_record_bytes=200_000,
            max_features=500,
            fast_path=fast_path,
        ),
    ).run()
    assert summary.events_learned == len(stream)
    assert summary.dead_letter_reasons == {"record-too-large": 1, "too-many-features": 1}
    assert summary.metrics["ROCAUC"] == pytest.approx(_oracle(stream), abs=1e-12)
    letters = {
        dict(m.headers())["streamtrain.error.reason"]: m
        for m in _read_all(kafka_bootstrap, f"{topic}.dlq", 2)
    }
    too_large = letters[b"record-too-large"]
    assert too_large.value() is None
    assert dict(too_large.headers())["streamtrain.error.original-bytes"] == str(len(huge)).encode()
    assert letters[b"too-many-features"].value() == flood  # small enough to keep as it came
