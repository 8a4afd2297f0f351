"""Named models survive kill -9, takeovers and broker restarts with exactly-once state.

Every trainer here is a real process killed for real; the oracle is River trained offline on
the same events in the same order.
"""

from __future__ import annotations

import itertools
import json
import pickle
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from oracle import check_history, offline
from river import datasets, linear_model, preprocessing
from streams import agrawal_like
from topics import fill as fill_values
from trainers import train_command, trainer_env, wait_until_learning
from unlabelled import (
    check_predictions,
    fill,
    labelled,
    mixed_stream,
    read_predictions,
    replay_with_predictions,
)

from streamtrain.config import KafkaSettings
from streamtrain.state.envelope import CheckpointHeader, load_state, seal
from streamtrain.state.keys import SigningKey
from streamtrain.state.store import CheckpointStore, checkpoint_partition
from streamtrain.train.settings import TrainSettings
from streamtrain.train.trainer import Trainer

pytestmark = pytest.mark.kafka

SECRET = "exactly-once-test-secret-0123456789"
KEY = SigningKey(SECRET.encode(), "STREAMTRAIN_SECRET")


@pytest.fixture
def ckpt_topic(unique_name: Callable[..., str]) -> str:
    # A checkpoint topic per test keeps the tests independent of each other.
    return unique_name("ckpt")


def _events(n: int, seed: int = 11) -> list[bytes]:
    # Cheap Agrawal-like events (streams.py): River's generator took a minute of this
    # module's time on a loaded machine, and what is proved here does not depend on the data.
    return agrawal_like(n, seed)


def _env(**extra: str) -> dict[str, str]:
    return trainer_env(SECRET, **extra)


def _spawn(cmd: list[str], **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(**env)
    )


def _finish(cmd: list[str], summary: Path, timeout: float = 120) -> dict[str, Any]:
    proc = subprocess.run(
        [*cmd, "--exit-when-idle", "2", "--summary", str(summary)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(summary.read_text()))


def _latest(bootstrap: str, name: str, ckpt: str) -> tuple[CheckpointHeader, Any]:
    store = CheckpointStore(KafkaSettings(bootstrap_servers=bootstrap), KEY, ckpt)
    opened = store.latest(name)
    assert opened is not None
    return opened.header, load_state(opened)["model"]


def _probe() -> list[dict[str, float]]:
    return [x for x, _ in itertools.islice(datasets.synth.Agrawal(seed=999), 200)]


def _high_watermarks(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks"})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        }
    finally:
        consumer.close()


def _events_learned(bootstrap: str, name: str, ckpt: str) -> int:
    store = CheckpointStore(KafkaSettings(bootstrap_servers=bootstrap), KEY, ckpt)
    opened = store.latest(name)
    return opened.header.events_learned if opened else 0


def _kill_cycles(
    cmd: list[str], where: tuple[str, str, str], kills: int, total: int, seed: int
) -> list[int]:
    """Start and SIGKILL the trainer ``kills`` times; return events learned after each kill.

    Each kill lands at a random moment up to half a second *after* the trainer's first new
    checkpoint, not at a fixed time after start: start-up (imports, a cold numba cache on a
    fresh clone, joining the group) can take longer than any fixed delay on a loaded machine,
    and a kill before the first commit tests nothing. ``where`` is (bootstrap, name, ckpt
    topic); ``total`` is the number of events to learn, past which no progress can show.
    """
    rng = random.Random(seed)
    progress = []
    for kill in range(kills):
        proc = _spawn(cmd)
        # Read what is committed only once the next trainer is starting: a read_committed read
        # cannot pass a transaction the last kill left open, which the broker aborts after
        # the 20 s transaction timeout (and its 10 s sweep), or the new trainer as soon as its
        # producer starts (same transactional.id). Read before the spawn, it waited up to
        # 30 s a kill. The trainer cannot have committed anything yet: it is still importing
        # when the read's log end is taken.
        before = _events_learned(*where)
        if kill:
            progress.append(before)  # what the last kill left
        deadline = time.monotonic() + 120
        while before < total and _events_learned(*where) == before:
            if proc.poll() is not None:
                pytest.fail(f"trainer exited early ({proc.returncode}): {proc.communicate()[1]}")
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.1)
        time.sleep(rng.uniform(0.0, 0.5))
        proc.kill()
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
    progress.append(_events_learned(*where))  # after the last kill: no trainer to hurry it
    print("events learned after each kill:", progress)
    return progress


def test_kill_9_at_random_moments_one_partition(
    kafka_bootstrap: str, unique_name: Callable[..., str], ckpt_topic: str, tmp_path: Path
) -> None:
    topic, name = unique_name("eos1"), unique_name("model")
    values = _events(60_000)
    fill_values(kafka_bootstrap, topic, values)
    cmd = train_command(kafka_bootstrap, topic, name, ckpt_topic)

    progress = _kill_cycles(cmd, (kafka_bootstrap, name, ckpt_topic), 3, len(values), seed=5)
    # Kills landed mid-stream: some state was committed, and not all of it. (The fast path
    # may finish the stream before the last kills; those still test a restart at the end.)
    assert any(0 < p < len(values) for p in progress), progress

    summary = _finish(cmd, tmp_path / "summary.json")
    assert summary["events_learned"] == len(values)
    assert summary["restored_from"] is not None

    offline_model, offline_auc = offline(values)
    assert summary["metrics"]["ROCAUC"] == offline_auc  # to the last bit
    header, model = _latest(kafka_bootstrap, name, ckpt_topic)
    assert header.offsets == {topic: {0: len(values)}}
    assert header.events_learned == len(values)
    for x in _probe():
        assert model.predict_proba_one(x) == offline_model.predict_proba_one(x)
    # And every checkpoint on the way, each killed run's included, was a prefix of the stream.
    store = CheckpointStore(KafkaSettings(bootstrap_servers=kafka_bootstrap), KEY, ckpt_topic)
    assert check_history(store, topic, {name: 0}, {0: values}) > len(progress)


def test_kill_9_three_partitions_every_event_once(
    kafka_bootstrap: str, unique_name: Callable[..., str], ckpt_topic: str, tmp_path: Path
) -> None:
    topic, name = unique_name("eos3"), unique_name("model")
    values = _events(24_000, seed=12)
    fill_values(kafka_bootstrap, topic, values, partitions=3)
    cmd = train_command(kafka_bootstrap, topic, name, ckpt_topic)
    progress = _kill_cycles(cmd, (kafka_bootstrap, name, ckpt_topic), 3, len(values), seed=9)
    assert any(0 < p < len(values) for p in progress), progress

    summary = _finish(cmd, tmp_path / "summary.json")
    ends = _high_watermarks(kafka_bootstrap, topic, 3)
    assert sum(ends.values()) == len(values)
    assert summary["events_learned"] == len(values)  # no event twice, none lost
    header, _ = _latest(kafka_bootstrap, name, ckpt_topic)
    assert header.offsets == {topic: ends}
    assert {int(p): o for p, o in summary["positions"].items()} == ends


def test_kill_9_unlabelled_events_answered_exactly_once(
    kafka_bootstrap: str, unique_name: Callable[..., str], ckpt_topic: str, tmp_path: Path
) -> None:
    # Predictions of unlabelled events share the checkpoint's transaction: a committed reader
    # sees one answer per event, the one River gives at that point of the stream.
    topic, name = unique_name("eospred"), unique_name("model")
    records = mixed_stream(30_000, seed=21)
    fill(kafka_bootstrap, topic, records)
    cmd = train_command(kafka_bootstrap, topic, name, ckpt_topic)
    learnable = len(labelled([v for _, v in records]))
    progress = _kill_cycles(cmd, (kafka_bootstrap, name, ckpt_topic), 3, learnable, seed=4)
    assert any(0 < p < learnable for p in progress), progress  # the kills landed mid-stream

    summary = _finish(cmd, tmp_path / "summary.json")
    _model, expected = replay_with_predictions([v for _, v in records])
    assert summary["events_predicted"] == len(expected)
    got = read_predictions(kafka_bootstrap, f"{topic}.predictions", len(expected))
    check_predictions(topic, records, got, name)


def test_a_stuck_commit_replaces_the_producer_and_loses_nothing(
    kafka_bootstrap: str, unique_name: Callable[..., str], ckpt_topic: str, tmp_path: Path
) -> None:
    # librdkafka can block for good in a transactional call after a broker restart; the
    # hang-commit fault point does that to the third commit, every time.
    topic, name = unique_name("stuck"), unique_name("model")
    records = mixed_stream(20_000, seed=8)
    fill(kafka_bootstrap, topic, records)
    cmd = train_command(kafka_bootstrap, topic, name, ckpt_topic, "--checkpoint-every", "2000")
    summary_path = tmp_path / "summary.json"
    proc = subprocess.run(
        [*cmd, "--exit-when-idle", "3", "--summary", str(summary_path)],
        capture_output=True,
        text=True,
        env=_env(STREAMTRAIN_FAULT="hang-commit:3"),
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "replacing the producer" in proc.stderr
    summary = json.loads(summary_path.read_text())
    assert summary["producer_replacements"] == 1
    values = [v for _, v in records]
    offline_model, expected = replay_with_predictions(values)
    assert summary["events_learned"] == len(labelled(values))  # none twice, none lost
    assert summary["events_predicted"] == len(expected)
    header, model = _latest(kafka_bootstrap, name, ckpt_topic)
    assert header.offsets == {topic: {0: len(values)}}
    for x in _probe():
        assert model.predict_proba_one(x) == offline_model.predict_proba_one(x)
    got = read_predictions(kafka_bootstrap, f"{topic}.predictions", len(expected))
    check_predictions(topic, records, got, name)


class SlowOnceLogisticRegression(linear_model.LogisticRegression):
    """River's LogisticRegression, except that one learn step takes ``pause`` seconds."""

    calls = 0
    slow_call = 300
    pause = 14.0

    def learn_one(self, x: dict[str, Any], y: Any, w: float = 1.0) -> None:
        type(self).calls += 1
        if type(self).calls == self.slow_call:
            time.sleep(self.pause)
        super().learn_one(x, y, w)


def test_a_learn_step_longer_than_the_transaction_timeout_corrupts_nothing(
    kafka_bootstrap: str,
    unique_name: Callable[..., str],
    ckpt_topic: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 14 s > transaction timeout (2 s) + the broker's 10 s sweep for timed-out transactions.
    # Were the transaction open while learning (dead letters and predictions are produced all
    # along), the broker would abort it and fence the trainer.
    monkeypatch.setenv("STREAMTRAIN_SECRET", SECRET)
    topic, name = unique_name("slowlearn"), unique_name("model")
    records = mixed_stream(3000, seed=5)
    fill(kafka_bootstrap, topic, records)
    SlowOnceLogisticRegression.calls = 0
    trainer = Trainer(
        KafkaSettings(bootstrap_servers=kafka_bootstrap),
        TrainSettings(
            topic=topic,
            name=name,
            checkpoint_topic=ckpt_topic,
            transaction_timeout=2,
            checkpoint_interval=0.3,
            exit_when_idle=3,
            fast_path=False,
            batch_size=50,
        ),
        model=preprocessing.StandardScaler() | SlowOnceLogisticRegression(),
    )
    summary = trainer.run()
    assert SlowOnceLogisticRegression.calls >= SlowOnceLogisticRegression.slow_call
    values = [v for _, v in records]
    _model, expected = replay_with_predictions(values)
    assert summary.stopped_because == "idle"
    assert summary.events_learned == len(labelled(values))
    assert summary.events_predicted == len(expected)
    got = read_predictions(kafka_bootstrap, f"{topic}.predictions", len(expected))
    check_predictions(topic, records, got, name)


@pytest.mark.parametrize(
    "point", ["after-learn:3", "after-checkpoint-produced:2", "before-commit:2"]
)
def test_kill_at_instrumented_points(
    point: str,
    kafka_bootstrap: str,
    unique_name: Callable[..., str],
    ckpt_topic: str,
    tmp_path: Path,
) -> None:
    topic, name = unique_name("fault"), unique_name("model")
    values = _events(6_000, seed=13)
    fill_values(kafka_bootstrap, topic, values)
    cmd = train_command(kafka_bootstrap, topic, name, ckpt_topic)
    crashed = subprocess.run(
        [*cmd, "--exit-when-idle", "5"],
        capture_output=True,
        text=True,
        env=_env(STREAMTRAIN_FAULT=point),
        timeout=120,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr

    summary = _finish(cmd, tmp_path / "summary.json")
    offline_model, offline_auc = offline(values)
    assert summary["events_learned"] == len(values)
    assert summary["metrics"]["ROCAUC"] == offline_auc
    _, model = _latest(kafka_bootstrap, name, ckpt_topic)
    for x in _probe()[:50]:
        assert model.predict_proba_one(x) == offline_model.predict_proba_one(x)


def test_sigterm_commits_a_final_checkpoint_quickly(
    kafka_bootstrap: str, unique_name: Callable[..., str], ckpt_topic: str, tmp_path: Path
) -> None:
    topic, name = unique_name("term"), unique_name("model")
    values = _events(200_000, seed=14)
    fill_values(kafka_bootstrap, topic, values)
    summary_path = tmp_path / "summary.json"
    # Checkpoints rarely on their own, so the one found afterwards is the final one.
    cmd = train_command(kafka_bootstrap, topic, name, ckpt_topic)
    cmd[cmd.index("--checkpoint-every") + 1] = "10000000"
    cmd[cmd.index("--checkpoint-interval") + 1] = "3600"
    # River's per-event path: the compiled one would finish the stream before the signal.
    proc = _spawn([*cmd, "--no-fast-path", "--summary", str(summary_path)])
    wait_until_learning(kafka_bootstrap, name, proc)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - sent < 10
    assert proc.returncode == 0, err
    summary = json.loads(summary_path.read_text())
    assert 0 < summary["events_learned"] < len(values)
    assert summary["stopped_because"] == "SIGTERM"
    header, _ = _latest(kafka_bootstrap, name, ckpt_topic)
    assert header.events_learned == summary["events_learned"]
    assert header.offsets[topic][0] == summary["events_learned"]


def test_second_trainer_fences_the_first(
    kafka_bootstrap: str, unique_name: Callable[..., str], ckpt_topic: str, tmp_path: Path
) -> None:
    topic, name = unique_name("fence"), unique_name("model")
    values = _events(150_000, seed=15)
    fill_values(kafka_bootstrap, topic, values)
    cmd = train_command(kafka_bootstrap, topic, name, ckpt_topic)
    first = _spawn(cmd)
    wait_until_learning(kafka_bootstrap, name, first)
    second = _spawn([*cmd, "--exit-when-idle", "3", "--summary", str(tmp_path / "s.json")])
    _, first_err = first.communicate(timeout=120)
    assert first.returncode == 6, first_err
    assert "taken over by another trainer" in first_err
    assert "Traceback" not in first_err
    _, second_err = second.communicate(timeout=300)
    assert second.returncode == 0, second_err
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["events_learned"] == len(values)
    _, offline_auc = offline(values)
    assert summary["metrics"]["ROCAUC"] == offline_auc


def _forge(bootstrap: str, ckpt: str, name: str, value: bytes) -> None:
    """Write ``value`` as the newest checkpoint of ``name`` (an attacker's write)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    meta = admin.list_topics(timeout=10).topics[ckpt]
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(
        ckpt, key=name, value=value, partition=checkpoint_partition(name, len(meta.partitions))
    )
    assert producer.flush(10) == 0


class _Canary:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        import pathlib

        return (pathlib.Path.touch, (self.path,))


@pytest.mark.parametrize("forgery", ["unsigned", "wrong-key", "tampered", "truncated"])
def test_forged_checkpoints_are_refused_before_unpickling(
    forgery: str,
    kafka_bootstrap: str,
    unique_name: Callable[..., str],
    ckpt_topic: str,
    tmp_path: Path,
) -> None:
    topic, name = unique_name("forge"), unique_name("model")
    values = _events(500, seed=16)
    fill_values(kafka_bootstrap, topic, values)
    cmd = train_command(kafka_bootstrap, topic, name, ckpt_topic)
    _finish(cmd, tmp_path / "first.json")  # a genuine checkpoint exists now
    header, _ = _latest(kafka_bootstrap, name, ckpt_topic)

    canary = tmp_path / "canary-ran"
    payload = pickle.dumps(_Canary(canary))
    if forgery == "unsigned":
        value = payload
    elif forgery == "wrong-key":
        value = seal(header, payload, SigningKey(b"w" * 32, "attacker"))
    else:
        genuine = seal(header, payload, KEY)
        if forgery == "tampered":
            value = genuine[:-60] + bytes([genuine[-60] ^ 0xFF]) + genuine[-59:]
        else:
            value = genuine[: len(genuine) - 10]
    _forge(kafka_bootstrap, ckpt_topic, name, value)

    proc = subprocess.run(
        [*cmd, "--exit-when-idle", "2"], capture_output=True, text=True, env=_env(), timeout=60
    )
    assert proc.returncode == 5, proc.stderr
    assert "checkpoint" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not canary.exists()
