"""A named model with challengers survives kill -9: every model resumes from the one
checkpoint and ends where River's ``progressive_val_score`` does for its spec."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from river import datasets, evaluate, linear_model, metrics, naive_bayes, preprocessing, tree
from topics import fill
from trainers import train_command, trainer_env

from streamtrain.config import KafkaSettings
from streamtrain.data.events import decode_event, encode_event
from streamtrain.models.problem import Problem
from streamtrain.serving.report import read_metrics_records
from streamtrain.state.envelope import load_state
from streamtrain.state.keys import SigningKey
from streamtrain.state.payload import model_of
from streamtrain.state.store import CheckpointStore
from streamtrain.train.settings import TrainSettings
from streamtrain.train.trainer import Trainer

pytestmark = pytest.mark.kafka

SECRET = "challengers-test-secret-0123456789"
KEY = SigningKey(SECRET.encode(), "STREAMTRAIN_SECRET")
# label -> (flag, a fresh oracle model)
MODELS: dict[str, tuple[str | None, Callable[[], Any]]] = {
    "champion": (None, lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression()),
    "c1": ("HoeffdingTreeClassifier", tree.HoeffdingTreeClassifier),
    "lr": (
        "lr=StandardScaler | LogisticRegression(l2=0.01)",
        lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression(l2=0.01),
    ),
}
METRICS = {"ROCAUC": metrics.ROCAUC, "LogLoss": metrics.LogLoss}


def _river(values: list[bytes]) -> dict[str, dict[str, float]]:
    stream = [decode_event(v, Problem.CLASSIFICATION) for v in values]
    return {
        label: {
            name: evaluate.progressive_val_score(stream, make(), metric()).get()
            for name, metric in METRICS.items()
        }
        for label, (_flag, make) in MODELS.items()
    }


def test_kill_9_resumes_champion_and_challengers_exactly(
    kafka_bootstrap: str, unique_name: Callable[..., str], tmp_path: Path
) -> None:
    topic, name, ckpt = unique_name("chal"), unique_name("model"), unique_name("ckpt")
    values = fill(kafka_bootstrap, topic, [encode_event(x, y) for x, y in datasets.Phishing()])[0]
    flags = [f for label, (flag, _) in MODELS.items() if flag for f in ("--challenger", flag)]
    cmd = train_command(
        kafka_bootstrap,
        topic,
        name,
        ckpt,
        *flags,
        *("--metric", "ROCAUC", "--metric", "LogLoss", "--checkpoint-every", "200"),
    )
    env = trainer_env(SECRET)
    # SIGKILL at the 12th learned batch: mid-stream, with work learned since the last commit.
    crashed = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env={**env, "STREAMTRAIN_FAULT": "after-learn:12"},
        timeout=120,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    store = CheckpointStore(KafkaSettings(bootstrap_servers=kafka_bootstrap), KEY, ckpt)
    opened = store.latest(name)
    assert opened is not None
    at_crash = opened.header.events_learned
    assert 0 < at_crash < len(values)
    saved = load_state(opened)["challengers"]
    assert list(saved) == ["c1", "lr"]
    assert [saved[c]["events_learned"] for c in saved] == [at_crash, at_crash]

    summary_path = tmp_path / "summary.json"
    done = subprocess.run(
        [*cmd, "--exit-when-idle", "2", "--summary", str(summary_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(summary_path.read_text())
    river = _river(values)
    assert summary["restored_from"] is not None
    assert summary["events_learned"] == len(values)
    assert summary["metrics"] == river["champion"]  # the champion to the last bit
    assert list(summary["challengers"]) == ["c1", "lr"]
    for label, report in summary["challengers"].items():
        assert report["spec"] == MODELS[label][0].removeprefix("lr=")  # type: ignore[union-attr]
        assert report["events_learned"] == len(values)
        assert (report["model_errors"], report["started_at"]) == (0, 0)
        assert report["metrics"] == pytest.approx(river[label], abs=1e-12, rel=0)

    # The checkpoint holds every model; what serving loads is the champion.
    final = store.latest(name)
    assert final is not None and final.header.events_learned == len(values)
    champion = MODELS["champion"][1]()
    for x, y in (decode_event(v, Problem.CLASSIFICATION) for v in values):
        champion.learn_one(x, y)
    served = model_of(final)
    for value in values[::25]:
        x = decode_event(value, Problem.CLASSIFICATION)[0]
        assert served.predict_proba_one(x) == champion.predict_proba_one(x)
    # The metrics records carry the challengers too.
    records = read_metrics_records(KafkaSettings(bootstrap_servers=kafka_bootstrap), name)
    last = [r for r in records if r.get("kind") == "final"][-1]
    assert last["challengers"]["lr"]["metrics"] == summary["challengers"]["lr"]["metrics"]
    assert last["metrics"] == summary["metrics"]


def test_each_replica_of_a_partitioned_model_has_its_challengers(
    kafka_bootstrap: str, unique_name: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each partition's replica scores each model on its own stream, as River would."""
    monkeypatch.setenv("STREAMTRAIN_SECRET", SECRET)
    topic, name = unique_name("chalp"), unique_name("model")
    values = [encode_event(x, y) for x, y in datasets.Phishing()]
    logged = fill(kafka_bootstrap, topic, values, partitions=2)
    settings = TrainSettings(
        topic=topic,
        name=name,
        partitioned=True,
        checkpoint_topic=unique_name("ckpt"),
        challengers=("GaussianNB",),
        exit_when_idle=2,
    )
    summary = Trainer(KafkaSettings(bootstrap_servers=kafka_bootstrap), settings).run()
    assert summary.challengers["c1"]["events_learned"] == len(values)
    for p in (0, 1):
        stream = [decode_event(v, Problem.CLASSIFICATION) for v in logged[p]]
        replica = summary.tasks[f"{name}/p{p}"]
        river = evaluate.progressive_val_score(stream, naive_bayes.GaussianNB(), metrics.ROCAUC())
        report = replica["challengers"]["c1"]["metrics"]["ROCAUC"]
        assert report == pytest.approx(river.get(), abs=1e-12, rel=0)
        assert replica["challengers"]["c1"]["events_learned"] == len(logged[p])
