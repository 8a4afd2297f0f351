"""``--on-drift promote-best`` on a real broker: Agrawal with its classification function
switched after 2,000 events; the trainer promotes exactly the model the rule, applied offline
with River alone (tests/integration/promotions.py), names, at the same event and offset,
across a kill -9."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from promotions import offline_promote_best
from river import drift, linear_model, naive_bayes, preprocessing, tree
from river.datasets import synth
from topics import fill
from trainers import run_to_end, train_command, trainer_env

from streamtrain.config import KafkaSettings
from streamtrain.data.events import encode_event
from streamtrain.kafka.reader import TopicReader
from streamtrain.state.keys import SigningKey
from streamtrain.state.store import CheckpointStore

pytestmark = pytest.mark.kafka

SECRET = "promote-best-secret-0123456789abc"
CHANGE, AFTER, WINDOW = 2_000, 1_000, 200
LR = "StandardScaler | LogisticRegression"


def _stream() -> list[tuple[dict[str, Any], bool]]:
    def part(function: int, seed: int, n: int) -> list[tuple[dict[str, Any], bool]]:
        gen = synth.Agrawal(classification_function=function, seed=seed)
        return [(x, bool(y)) for x, y in itertools.islice(gen, n)]

    return part(0, 7, CHANGE) + part(4, 8, AFTER)


def test_promote_best_promotes_the_model_the_rule_names_where_it_says(
    kafka_bootstrap: str, unique_name: Callable[..., str], tmp_path: Path
) -> None:
    stream = _stream()
    expected = offline_promote_best(
        stream,
        lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression(),
        {"nb": naive_bayes.GaussianNB, "ht": tree.HoeffdingTreeClassifier},
        window=WINDOW,
        detector=drift.ADWIN,
    )
    # The change is detected after it, and the pick comes a window later.
    assert expected and all(n > CHANGE + WINDOW for n, _f, _t in expected)
    topic, name, ckpt, events = (unique_name(p) for p in ("pbest", "model", "ckpt", "events"))
    fill(kafka_bootstrap, topic, [encode_event(x, y) for x, y in stream])
    cmd = train_command(
        kafka_bootstrap,
        topic,
        name,
        ckpt,
        *("--model", LR, "--challenger", "nb=GaussianNB"),
        *("--challenger", "ht=HoeffdingTreeClassifier", "--events-topic", events),
        *("--on-drift", "promote-best", "--promote", "manual"),
        *("--promote-window", str(WINDOW), "--metrics-topic", ""),
        *("--batch-size", "50", "--checkpoint-every", "300", "--connect-timeout", "30"),
    )
    env = trainer_env(SECRET)
    killed = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env={**env, "STREAMTRAIN_FAULT": "after-learn:50"},  # 2,500 events in: mid-window
        timeout=180,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    summary = run_to_end(cmd, tmp_path / "summary.json", env, timeout=240)
    assert summary["events_learned"] == len(stream)

    reader = TopicReader(KafkaSettings(bootstrap_servers=kafka_bootstrap), events, what="events")
    records = [json.loads(r.value or b"") for r in reader.read_to_end()]
    promotions = [r for r in records if r["kind"] == "promotion"]
    assert [(r["events"], r["from"], r["to"]) for r in promotions] == expected
    for r in promotions:
        assert r["by"] == "drift" and r["offsets"] == {"0": r["events"]}
        assert r["window"] == WINDOW and r["values"][r["to"]] > r["values"][r["from"]]
    detections = [r for r in records if r["kind"] == "drift" and r["label"] == "champion"]
    assert detections and {r["action"] for r in detections} == {"promote-best"}
    assert summary["promotion"]["champion"] == expected[-1][2]
    assert "after a drift of the champion" in summary["promotion"]["rule"]
    store = CheckpointStore(
        KafkaSettings(bootstrap_servers=kafka_bootstrap), SigningKey(SECRET.encode(), "s"), ckpt
    )
    opened = store.latest(name)
    assert opened is not None and opened.header.champion == expected[-1][2]
