"""A named trainer killed while a checkpoint commits on its committer thread and learning has
gone on past that checkpoint's snapshot: the restarted trainer resumes from the last commit
that landed and ends bit for bit where an uninterrupted run and River end."""

from __future__ import annotations

import itertools
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from oracle import check_history, offline
from river import datasets
from topics import fill
from trainers import run_to_end, train_command, trainer_env

from streamtrain.config import KafkaSettings
from streamtrain.data.events import encode_event
from streamtrain.state.envelope import load_state
from streamtrain.state.keys import SigningKey
from streamtrain.state.store import CheckpointStore

pytestmark = pytest.mark.kafka

SECRET = "commit-in-flight-test-secret-0123456789"
KEY = SigningKey(SECRET.encode(), "STREAMTRAIN_SECRET")


def _latest(bootstrap: str, name: str, ckpt: str) -> tuple[Any, Any] | None:
    store = CheckpointStore(KafkaSettings(bootstrap_servers=bootstrap), KEY, ckpt)
    opened = store.latest(name)
    return None if opened is None else (opened.header, load_state(opened)["model"])


def _params(model: Any) -> tuple[Any, ...]:
    scaler, lr = model["StandardScaler"], model["LogisticRegression"]
    return (
        dict(scaler.counts),
        dict(scaler.means),
        dict(scaler.vars),
        dict(lr.weights),
        lr.intercept,
    )


def test_killed_with_a_commit_in_flight_and_learning_ahead(
    kafka_bootstrap: str, unique_name: Callable[..., str], tmp_path: Path
) -> None:
    topic, ckpt = unique_name("inflight"), unique_name("ckpt")
    killed, whole = unique_name("killed"), unique_name("whole")
    stream = itertools.islice(datasets.synth.Agrawal(seed=17), 8_000)
    values = [encode_event(x, y) for x, y in stream]
    fill(kafka_bootstrap, topic, values)
    cmd = train_command(kafka_bootstrap, topic, killed, ckpt)

    # The third commit: filled on the committer thread, not committed, the learning thread a
    # batch or more past its snapshot. The point fires only once learning is ahead.
    crashed = subprocess.run(
        [*cmd, "--exit-when-idle", "5"],
        capture_output=True,
        text=True,
        env=trainer_env(SECRET, STREAMTRAIN_FAULT="commit-behind-learning:3"),
        timeout=180,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    at_crash = _latest(kafka_bootstrap, killed, ckpt)
    assert at_crash is not None  # two commits landed before the kill ...
    assert 0 < at_crash[0].events_learned < len(values)  # ... and the stream was not done

    summary = run_to_end(cmd, tmp_path / "killed.json", trainer_env(SECRET))
    uninterrupted = run_to_end(
        train_command(kafka_bootstrap, topic, whole, ckpt),
        tmp_path / "whole.json",
        trainer_env(SECRET),
    )
    offline_model, offline_auc = offline(values)
    assert summary["restored_from"] is not None
    assert summary["events_learned"] == uninterrupted["events_learned"] == len(values)
    assert summary["metrics"] == uninterrupted["metrics"] == {"ROCAUC": offline_auc}
    after_kill, straight = (
        _latest(kafka_bootstrap, killed, ckpt),
        _latest(kafka_bootstrap, whole, ckpt),
    )
    assert after_kill is not None and straight is not None
    assert after_kill[0].offsets == straight[0].offsets == {topic: {0: len(values)}}
    assert _params(after_kill[1]) == _params(straight[1]) == _params(offline_model)
    # Every checkpoint ever committed, the killed run's included, lies on River's curve.
    store = CheckpointStore(KafkaSettings(bootstrap_servers=kafka_bootstrap), KEY, ckpt)
    assert check_history(store, topic, {killed: 0}, {0: values}) >= 3
