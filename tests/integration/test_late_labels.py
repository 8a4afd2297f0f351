"""Labels that arrive later, on a real broker: the trainer joins them to the predictions it
made, scores exactly as River's ``progressive_val_score(delay=...)`` does, and ends where an
uninterrupted run ends after kill -9."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from joined import fill_features, fill_joined, named_joined
from river import datasets, evaluate, linear_model, metrics, preprocessing
from topics import create_topic
from trainers import train_command, trainer_env

from streamtrain.config import KafkaSettings
from streamtrain.state.envelope import load_state
from streamtrain.state.keys import SigningKey
from streamtrain.state.store import CheckpointStore

SECRET = "late-labels-test-secret-0123456789"
KEY = SigningKey(SECRET.encode(), "STREAMTRAIN_SECRET")


def _stream() -> list[Any]:
    return list(datasets.Phishing())


def _river(stream: list[Any], delays: list[int]) -> tuple[float, Any]:
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    metric = metrics.ROCAUC()
    it = iter(delays)
    evaluate.progressive_val_score(stream, model, metric, delay=lambda _x, _y: next(it))
    return metric.get(), model


def _unnamed_joined(bootstrap: str, features: str, labels: str, *extra: str) -> list[str]:
    """An unnamed trainer joining ``labels`` to ``features`` (no checkpoint to resume from);
    ``extra`` flags come last, so they override these."""
    return [
        sys.executable,
        "-m",
        "streamtrain",
        "train",
        "--topic",
        features,
        "--labels-topic",
        labels,
        "--view",
        "none",
        "--bootstrap-servers",
        bootstrap,
        *extra,
    ]


def _run(cmd: list[str], summary: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [*cmd, "--exit-when-idle", "2", "--summary", str(summary)],
        capture_output=True,
        text=True,
        env=trainer_env(SECRET),
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(summary.read_text()))


def _read_committed(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "late-labels-reader",
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    out: list[dict[str, Any]] = []
    try:
        _low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
        consumer.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            batch = consumer.consume(1000, 0.5)
            out += [json.loads(m.value()) for m in batch if m.error() is None]
            position = consumer.position([TopicPartition(topic, 0)])[0].offset
            if not batch and position >= high:
                break
    finally:
        consumer.close()
    return out


def test_delayed_labels_score_as_river_and_survive_kill_9(
    kafka_bootstrap: str, unique_name: Callable[..., str], tmp_path: Path
) -> None:
    stream = _stream()
    rng = random.Random(11)
    delays = [rng.randint(0, 300) for _ in stream]
    features, labels, name, ckpt, cmd = named_joined(
        kafka_bootstrap, unique_name, stream, delays, 1, "--checkpoint-every", "97"
    )
    store = CheckpointStore(KafkaSettings(bootstrap_servers=kafka_bootstrap), KEY, ckpt)
    kills = 0
    for cycle in range(3):
        proc = subprocess.Popen(
            [*cmd, "--batch-size", "37"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=trainer_env(SECRET),
        )
        before = store.latest(name)
        learned_before = before.header.events_learned if before else 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            now = store.latest(name)
            learned = now.header.events_learned if now is not None else 0
            # New progress, or none to come: the stream was learned to its end already.
            if learned > learned_before or learned_before >= len(stream):
                break
            time.sleep(0.05)
        time.sleep(random.Random(cycle).uniform(0, 0.3))
        if proc.poll() is None:
            proc.kill()
            kills += 1
        proc.communicate(timeout=30)
    assert kills >= 1

    summary = _run(cmd, tmp_path / "summary.json")
    auc, oracle = _river(stream, delays)
    assert summary["metrics"]["ROCAUC"] == auc  # to the last bit, after the kills
    assert summary["events_learned"] == len(stream)
    assert summary["join"]["joined"] == len(stream) and summary["join"]["pending"] == 0
    opened = store.latest(name)
    assert opened is not None
    assert opened.header.offsets == {features: {0: len(stream)}, labels: {0: len(stream)}}
    model = load_state(opened)["model"]
    for x, _y in islice(datasets.Phishing(), 100):
        assert model.predict_proba_one(x) == oracle.predict_proba_one(x)
    # One prediction per feature event, exactly once across the kills, each naming its id.
    predictions = _read_committed(kafka_bootstrap, f"{features}.predictions")
    assert sorted(int(p["id"]) for p in predictions) == list(range(len(stream)))


def test_the_same_logs_give_the_same_model_whatever_the_write_order_and_fetch_size(
    kafka_bootstrap: str, unique_name: Callable[..., str], tmp_path: Path
) -> None:
    """Unnamed trainers (no checkpoint to resume from): labels written before or after the
    features, batches of 7 or 500 records; each run scores exactly as River."""
    stream = _stream()[:800]
    rng = random.Random(21)
    delays = [rng.randint(0, 200) for _ in stream]
    auc, _oracle = _river(stream, delays)
    for labels_first, batch in ((False, "500"), (True, "7")):
        features, labels = unique_name("feat"), unique_name("lab")
        fill_joined(kafka_bootstrap, features, labels, stream, delays, 1, labels_first)
        summary_path = tmp_path / f"summary-{batch}.json"
        cmd = _unnamed_joined(kafka_bootstrap, features, labels, "--batch-size", batch)
        summary = _run(cmd, summary_path)
        assert summary["metrics"]["ROCAUC"] == auc, (labels_first, batch)
        assert summary["join"]["joined"] == len(stream)


def test_a_regressor_with_labels_a_constant_delay_later_scores_as_river(
    kafka_bootstrap: str, unique_name: Callable[..., str], tmp_path: Path
) -> None:
    """A regression dataset, each label 25 events after its features: MAE as River's
    ``progressive_val_score(delay=25)``, to the last bit."""
    stream = list(datasets.TrumpApproval())
    delays = [25] * len(stream)
    model = preprocessing.StandardScaler() | linear_model.LinearRegression()
    mae = metrics.MAE()
    evaluate.progressive_val_score(stream, model, mae, delay=25)
    features, labels = unique_name("feat"), unique_name("lab")
    fill_joined(kafka_bootstrap, features, labels, stream, delays, parts=1)
    cmd = _unnamed_joined(
        kafka_bootstrap, features, labels, "--model", "StandardScaler | LinearRegression"
    )
    summary = _run(cmd, tmp_path / "summary.json")
    assert summary["metrics"]["MAE"] == mae.get()
    inline = metrics.MAE()  # the delay is what this checks: with none, MAE would differ
    evaluate.progressive_val_score(
        stream, preprocessing.StandardScaler() | linear_model.LinearRegression(), inline
    )
    assert inline.get() != mae.get()
    assert summary["join"]["joined"] == len(stream) and summary["events_learned"] == len(stream)


def test_partitioned_join_refuses_topics_not_co_partitioned(
    kafka_bootstrap: str, unique_name: Callable[..., str]
) -> None:
    features, labels = unique_name("feat"), unique_name("lab")
    create_topic(kafka_bootstrap, features, partitions=3)
    create_topic(kafka_bootstrap, labels, partitions=2)
    cmd = train_command(
        kafka_bootstrap,
        features,
        unique_name("joined"),
        unique_name("ckpt"),
        "--labels-topic",
        labels,
        "--partitioned",
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, env=trainer_env(SECRET), timeout=60)
    assert proc.returncode == 2
    assert "co-partitioned" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_partitioned_join_expires_what_waits_past_the_ttl_in_each_task(
    kafka_bootstrap: str, unique_name: Callable[..., str], tmp_path: Path
) -> None:
    stream = _stream()[:900]
    rng = random.Random(3)
    delays = [rng.randint(0, 120) for _ in stream]
    _features, _labels, name, _ckpt, cmd = named_joined(
        kafka_bootstrap, unique_name, stream, delays, 3, "--partitioned", "--label-ttl", "100ms"
    )
    summary = _run(cmd, tmp_path / "summary.json")
    for p in range(3):
        mine = [i for i in range(len(stream)) if i % 3 == p]
        # A label due later than the TTL finds its prediction expired (and is then held,
        # unmatched, or waits at the end); the others join.
        sub = [stream[i] for i in mine]
        joined = [i for i in mine if delays[i] <= 100]
        task = summary["tasks"][f"{name}/p{p}"]
        assert task["join"]["joined"] == len(joined)
        assert task["join"]["expired"] == len(mine) - len(joined)
        assert task["dead_letter_reasons"].get("label-expired", 0) == len(mine) - len(joined)
        assert task["events_predicted"] == len(sub)
    assert summary["events_learned"] == sum(1 for d in delays if d <= 100)


def test_an_empty_labels_topic_does_not_hold_the_features_back(
    kafka_bootstrap: str, unique_name: Callable[..., str], tmp_path: Path
) -> None:
    """An empty partition is caught up as soon as a fetch response says so (its cached high
    watermark), not after the merge's stall bound; its predictions wait for labels."""
    stream = _stream()[:300]
    features, labels = unique_name("feat"), unique_name("lab")
    fill_features(kafka_bootstrap, features, stream, 1)
    create_topic(kafka_bootstrap, labels, partitions=1)
    cmd = _unnamed_joined(
        kafka_bootstrap,
        features,
        labels,
        "--view",
        "log",
        "--exit-when-idle",
        "2",
        "--summary",
        str(tmp_path / "summary.json"),
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, env=trainer_env(SECRET), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "merging without them" not in proc.stderr  # the stall warning
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["events_predicted"] == len(stream), (summary, proc.stderr[-3000:])
    assert summary["events_learned"] == 0
    assert summary["join"]["pending"] == len(stream)
