"""Joined labels exactly once, on a real broker with real processes: a partitioned model's tasks
moving between two processes, and a trainer killed at instrumented points inside and around
the join, each end with River's ``progressive_val_score(moment=..., delay=...)`` to the bit."""

from __future__ import annotations

import json
import random
import signal
import subprocess
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
import pytest
from joined import START, named_joined
from river import datasets, evaluate, linear_model, metrics, preprocessing
from trainers import trainer_env
from unlabelled import read_predictions

from streamtrain.config import KafkaSettings
from streamtrain.join.state import JoinState
from streamtrain.state.envelope import load_state
from streamtrain.state.keys import SigningKey
from streamtrain.state.store import CheckpointStore

pytestmark = pytest.mark.kafka

SECRET = "join-exactly-once-test-secret-0123"
KEY = SigningKey(SECRET.encode(), "STREAMTRAIN_SECRET")


def _river(stream: list[Any], times: list[int], delays: list[int]) -> tuple[float, Any]:
    """ROCAUC and model of River's progressive validation over ``stream``: event i asked at
    ``times[i]``, answered ``delays[i]`` later."""
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    metric = metrics.ROCAUC()
    # River asks moment(x) and delay(x, y) once per event, of the features dict the stream
    # holds (before it copies it for the model), so a map keyed by the dict's identity gives
    # each event its time and delay without adding a field the model would learn.
    when = {id(x): t for (x, _y), t in zip(stream, times, strict=True)}
    late = {id(x): d for (x, _y), d in zip(stream, delays, strict=True)}
    evaluate.progressive_val_score(
        stream, model, metric, moment=lambda x: when[id(x)], delay=lambda x, _y: late[id(x)]
    )
    return metric.get(), model


def _store(bootstrap: str, ckpt: str) -> CheckpointStore:
    return CheckpointStore(KafkaSettings(bootstrap_servers=bootstrap), KEY, ckpt)


def test_two_processes_join_co_partitioned_topics_as_river_does_per_partition(
    kafka_bootstrap: str, unique_name: Callable[..., str], tmp_path: Path
) -> None:
    stream = list(datasets.Phishing())
    rng = random.Random(5)
    delays = [rng.randint(0, 100) for _ in stream]
    # Checkpoints every 10 events, in small batches: the stream takes seconds to learn, so
    # the process that joins second takes tasks over in the middle of it.
    features, labels, name, ckpt, cmd = named_joined(
        kafka_bootstrap,
        unique_name,
        stream,
        delays,
        3,
        "--partitioned",
        "--checkpoint-every",
        "3",
        "--batch-size",
        "10",
        "--session-timeout",
        "6",
    )
    logs = [tmp_path / f"train-{k}.log" for k in range(2)]
    summaries = [tmp_path / f"summary-{k}.json" for k in range(2)]
    procs = []
    for log, summary in zip(logs, summaries, strict=True):
        with log.open("wb") as err:
            procs.append(
                subprocess.Popen(
                    [*cmd, "--exit-when-idle", "3", "--summary", str(summary)],
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    env=trainer_env(SECRET),
                )
            )
    try:
        codes = [proc.wait(120) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert codes == [0, 0], [log.read_text()[-3000:] for log in logs]
    reports = [json.loads(s.read_text()) for s in summaries]
    assert [r["stopped_because"] for r in reports] == ["idle", "idle"]
    # Both took part: tasks moved from the first to join to the second while they learned.
    assert all(r["learned_this_run"] > 0 for r in reports), reports

    store = _store(kafka_bootstrap, ckpt)
    for p in range(3):
        mine = [i for i in range(len(stream)) if i % 3 == p]
        opened = store.latest(f"{name}/p{p}")
        assert opened is not None, p
        header = opened.header
        assert header.events_learned == len(mine), p
        assert header.offsets == {features: {p: len(mine)}, labels: {p: len(mine)}}
        auc, oracle = _river(
            [stream[i] for i in mine], [START + i for i in mine], [delays[i] for i in mine]
        )
        assert header.metrics["ROCAUC"] == auc, p  # to the last bit
        state = load_state(opened)
        join = JoinState.from_plain(state["join"])
        assert join.pending == {} and join.held == {}
        assert join.counts["joined"] == len(mine)
        for x, _y in islice(datasets.Phishing(), 50):
            assert state["model"].predict_proba_one(x) == oracle.predict_proba_one(x)


BATCH = 37


def _armed(point: str, hits: random.Random, features_left: int, records_left: int) -> str:
    """``point:n`` with n drawn from ``hits`` among the counts a run that resumes with
    ``features_left`` feature events and ``records_left`` records in all to take reaches
    before its last commit, so that it is killed before the end of the stream."""
    if point == "after-join-predict" and features_left:  # once per feature event predicted
        return f"{point}:{hits.randint(1, features_left)}"
    if point in ("after-join-predict", "after-learn"):  # once per batch of records consumed
        return f"after-learn:{hits.randint(1, -(-records_left // BATCH))}"
    # Once per checkpoint: the first comes with the first batch, then every 20 events
    # learned (or 0.3 s, idle too); the first commits little.
    return f"{point}:{hits.randint(1, 2)}"


def test_killed_at_points_in_and_around_the_join_it_ends_as_river(
    kafka_bootstrap: str, unique_name: Callable[..., str], tmp_path: Path
) -> None:
    stream = list(datasets.Phishing())
    rng = random.Random(23)
    delays = [rng.randint(0, 300) for _ in stream]
    features, labels, name, ckpt, cmd = named_joined(
        kafka_bootstrap,
        unique_name,
        stream,
        delays,
        1,
        "--checkpoint-every",
        "20",
        "--batch-size",
        str(BATCH),
    )
    store = _store(kafka_bootstrap, ckpt)
    points = ["after-join-predict", "after-learn", "after-checkpoint-produced", "before-commit"]
    hits = random.Random(31)
    progress = []
    at = {features: 0, labels: 0}  # committed positions
    for cycle in range(10):
        left = {topic: len(stream) - offset for topic, offset in at.items()}
        armed = _armed(points[cycle % len(points)], hits, left[features], sum(left.values()))
        crashed = subprocess.run(
            [*cmd, "--exit-when-idle", "5"],
            capture_output=True,
            text=True,
            env=trainer_env(SECRET, STREAMTRAIN_FAULT=armed),
            timeout=90,
        )
        assert crashed.returncode == -signal.SIGKILL, (armed, crashed.stderr[-3000:])
        latest = store.latest(name)
        if latest is not None:
            at = {topic: latest.header.offsets[topic].get(0, 0) for topic in at}
            progress.append(latest.header.events_learned)
    # The events learned as committed after each kill: at several places, never back, and
    # short of the end.
    assert progress == sorted(progress) and progress[-1] < len(stream), progress
    assert len(set(progress)) >= 2, progress

    summary_path = tmp_path / "summary.json"
    finished = subprocess.run(
        [*cmd, "--exit-when-idle", "2", "--summary", str(summary_path)],
        capture_output=True,
        text=True,
        env=trainer_env(SECRET),
        timeout=90,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    auc, oracle = _river(stream, [START + i for i in range(len(stream))], delays)
    assert summary["metrics"]["ROCAUC"] == auc  # to the last bit, after ten kills
    assert summary["events_learned"] == len(stream)
    assert summary["join"]["joined"] == len(stream)
    assert summary["join"]["pending"] == summary["join"]["held_labels"] == 0
    opened = store.latest(name)
    assert opened is not None
    assert opened.header.offsets == {features: {0: len(stream)}, labels: {0: len(stream)}}
    model = load_state(opened)["model"]
    for x, _y in islice(datasets.Phishing(), 50):
        assert model.predict_proba_one(x) == oracle.predict_proba_one(x)
    # Each feature event's prediction committed once, across the kills.
    predictions = read_predictions(kafka_bootstrap, f"{features}.predictions", len(stream))
    ids = sorted(int(orjson.loads(m.value())["id"]) for m in predictions)
    assert ids == list(range(len(stream)))
