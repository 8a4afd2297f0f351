"""Partitioned training: one replica per partition, spread over processes, exactly once."""

from __future__ import annotations

import itertools
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from oracle import check_history, offline
from river import datasets
from streams import agrawal_like
from topics import fill

from streamtrain.config import KafkaSettings
from streamtrain.serving.snapshot import ReplicaSet, load_model
from streamtrain.state.envelope import load_state
from streamtrain.state.keys import SigningKey
from streamtrain.state.store import CheckpointStore

pytestmark = pytest.mark.kafka

SECRET = "partitioned-test-secret-0123456789"
KEY = SigningKey(SECRET.encode(), "STREAMTRAIN_SECRET")
PARTITIONS = 6


def _fill(bootstrap: str, topic: str, n: int, seed: int) -> dict[int, list[bytes]]:
    """``n`` Agrawal-like events (streams.py: River's generator is ~20x slower) round-robin
    over the partitions; each partition's values in order."""
    return fill(bootstrap, topic, agrawal_like(n, seed), partitions=PARTITIONS)


def _cmd(bootstrap: str, topic: str, name: str, ckpt: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "streamtrain", "train", "--partitioned",
        "--name", name, "--topic", topic, "--checkpoint-topic", ckpt,
        "--checkpoint-interval", "0.5", "--checkpoint-every", "2000", "--batch-size", "200",
        "--metrics-topic", "", "--view", "none", "--bootstrap-servers", bootstrap,
        *extra,
    ]  # fmt: skip


def _spawn(cmd: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "STREAMTRAIN_SECRET": SECRET}
    env.pop("STREAMTRAIN_FAULT", None)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _replicas(bootstrap: str, name: str, ckpt: str) -> dict[int, tuple[Any, Any]]:
    store = CheckpointStore(KafkaSettings(bootstrap_servers=bootstrap), KEY, ckpt)
    keys = [f"{name}/p{p}" for p in range(PARTITIONS)]
    opened = store.latest_many(keys)
    return {p: (opened[k].header, load_state(opened[k])) for p, k in enumerate(keys) if k in opened}


def _check_exactly_once(
    bootstrap: str, name: str, ckpt: str, topic: str, per_partition: dict[int, list[bytes]]
) -> None:
    store = CheckpointStore(KafkaSettings(bootstrap_servers=bootstrap), KEY, ckpt)
    check_history(store, topic, {f"{name}/p{p}": p for p in range(PARTITIONS)}, per_partition)
    replicas = _replicas(bootstrap, name, ckpt)
    assert sorted(replicas) == list(range(PARTITIONS))
    probe = [x for x, _ in itertools.islice(datasets.synth.Agrawal(seed=4242), 50)]
    for p, (header, state) in replicas.items():
        values = per_partition[p]
        assert header.offsets == {topic: {p: len(values)}}, p
        assert header.events_learned == len(values), p  # each event once
        model, auc = offline(values)
        assert state["metrics"]["ROCAUC"].get() == auc, p
        for x in probe:
            assert state["model"].predict_proba_one(x) == model.predict_proba_one(x), p


def test_processes_join_leave_and_die_yet_every_event_is_learned_once(
    kafka_bootstrap: str, unique_name: Callable[..., str], tmp_path: Path
) -> None:
    topic, name, ckpt = unique_name("part"), unique_name("model"), unique_name("ckpt")
    per_partition = _fill(kafka_bootstrap, topic, 60_000, seed=21)
    cmd = _cmd(kafka_bootstrap, topic, name, ckpt)
    rng = random.Random(3)
    procs = [_spawn(cmd), _spawn(cmd)]
    try:
        for cycle in range(3):
            time.sleep(rng.uniform(3.0, 5.0))
            victim = procs.pop(rng.randrange(len(procs)))
            if cycle == 1:
                victim.send_signal(signal.SIGTERM)  # leaves cleanly, committing its tasks
                victim.communicate(timeout=60)
                assert victim.returncode == 0, victim.stderr
            else:
                victim.kill()  # its tasks move after the session timeout
                victim.communicate(timeout=30)
            procs.append(_spawn(cmd))  # a new process joins and takes tasks
        summary = tmp_path / "last.json"
        last = _spawn([*cmd, "--exit-when-idle", "4", "--summary", str(summary)])
        time.sleep(4)  # the newest processes join, so the leavers hand their tasks over
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
        _, err = last.communicate(timeout=240)
        assert last.returncode == 0, err
        result = json.loads(summary.read_text())
        assert result["events_learned"] == sum(len(v) for v in per_partition.values())
    finally:
        for proc in [*procs]:
            if proc.poll() is None:
                proc.kill()
    _check_exactly_once(kafka_bootstrap, name, ckpt, topic, per_partition)

    # Serving the partitioned model: the replicas answer together (mean of probabilities).
    store = CheckpointStore(KafkaSettings(bootstrap_servers=kafka_bootstrap), KEY, ckpt)
    combined = load_model(store, name)
    assert isinstance(combined, ReplicaSet) and len(combined.replicas) == PARTITIONS
    replicas = _replicas(kafka_bootstrap, name, ckpt)
    for x, _ in itertools.islice(datasets.synth.Agrawal(seed=77), 20):
        answer = combined.predict(x)
        mean_true = (
            sum(state["model"].predict_proba_one(x)[True] for _, state in replicas.values())
            / PARTITIONS
        )
        assert answer["probabilities"]["true"] == pytest.approx(mean_true, abs=1e-12)
        assert len(answer["replicas"]) == PARTITIONS


def test_paused_process_is_fenced_after_its_tasks_moved(
    kafka_bootstrap: str, unique_name: Callable[..., str], tmp_path: Path
) -> None:
    topic, name, ckpt = unique_name("pause"), unique_name("model"), unique_name("ckpt")
    # 60,000 events: at River's pace (5-30k events/s) every replica has a checkpoint within
    # a second or two of the start, well before the stream ends; the pause must come while
    # the process is still learning, and the test checks that it does. (It was 200,000, a
    # third of the test's time spent making, learning and replaying events.)
    per_partition = _fill(kafka_bootstrap, topic, 60_000, seed=22)
    total = sum(len(v) for v in per_partition.values())
    # River's pace: the process must still be learning when it is paused.
    cmd = _cmd(kafka_bootstrap, topic, name, ckpt, "--session-timeout", "6", "--no-fast-path")
    paused = _spawn(cmd)
    lines: queue.Queue[str] = queue.Queue()
    stderr = paused.stderr
    assert stderr is not None
    threading.Thread(target=lambda: [lines.put(x) for x in stderr], daemon=True).start()
    summary = tmp_path / "s.json"
    taker: subprocess.Popen[str] | None = None
    try:
        # It owns every task and is learning once every replica has a checkpoint (a fixed
        # sleep could end inside start-up on a loaded machine).
        deadline = time.monotonic() + 120
        while len(_replicas(kafka_bootstrap, name, ckpt)) < PARTITIONS:
            assert paused.poll() is None and time.monotonic() < deadline, "no checkpoints"
            time.sleep(0.2)
        paused.send_signal(signal.SIGSTOP)
        paused_at = time.time()  # wall clock, as in checkpoint headers
        learned = sum(h.events_learned for h, _ in _replicas(kafka_bootstrap, name, ckpt).values())
        print(f"events learned at the pause: {learned} of {total}")
        assert learned < total, "the stream was learned before the pause: nothing to fence"
        taker = _spawn([*cmd, "--exit-when-idle", "4", "--summary", str(summary)])
        # The session times out (6 s) and the taker restores every task and learns: each
        # replica has a checkpoint made after the pause, which only the taker can have made
        # (a fixed 20 s sleep before waited as long on any machine).
        deadline = time.monotonic() + 120
        while True:
            replicas = _replicas(kafka_bootstrap, name, ckpt)
            if all(h.created_at > paused_at for h, _ in replicas.values()):
                break
            assert taker.poll() is None, taker.communicate()[1]
            assert time.monotonic() < deadline, "the taker took no task over within 120 s"
            time.sleep(0.2)
        paused.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 90
        seen: list[str] = []

        # Either librdkafka already knows the session expired (partitions "lost": dropped
        # uncommitted) or the first commit is refused by the group generation ("fenced").
        def refused(line: str) -> bool:
            return "fenced" in line or "lost to the group" in line

        while time.monotonic() < deadline and not any(refused(s) for s in seen):
            try:
                seen.append(lines.get(timeout=1))
            except queue.Empty:
                if paused.poll() is not None:
                    break
        assert any(refused(line) for line in seen), seen
        paused.send_signal(signal.SIGTERM)
        paused.wait(timeout=60)
        _, err = taker.communicate(timeout=400)
        assert taker.returncode == 0, err
    finally:
        for proc in (paused, taker):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
    _check_exactly_once(kafka_bootstrap, name, ckpt, topic, per_partition)
