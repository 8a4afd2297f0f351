"""Training on a 3-broker cluster survives losing a broker, with nothing lost or doubled."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from oracle import check_history, offline
from river import datasets
from streams import agrawal_like
from topics import fill

from streamtrain.broker import LocalCluster
from streamtrain.config import KafkaSettings
from streamtrain.state.envelope import load_state
from streamtrain.state.keys import SigningKey
from streamtrain.state.store import CheckpointStore

pytestmark = pytest.mark.kafka

SECRET = "failover-test-secret-0123456789"
KEY = SigningKey(SECRET.encode(), "STREAMTRAIN_SECRET")
PARTITIONS = 3


def _learned(store: CheckpointStore, keys: list[str]) -> int:
    """Events learned in all, as the newest committed checkpoints of ``keys`` say."""
    return sum(opened.header.events_learned for opened in store.latest_many(keys).values())


def test_losing_a_broker_mid_stream_loses_and_doubles_nothing(
    kafka_cluster: LocalCluster, unique_name: Callable[..., str], tmp_path: Path
) -> None:
    bootstrap = kafka_cluster.bootstrap
    topic, name, ckpt = unique_name("fo"), unique_name("model"), unique_name("ckpt")
    values = agrawal_like(150_000, seed=31)  # streams.py: River's generator is ~20x slower
    per_partition = fill(bootstrap, topic, values, partitions=PARTITIONS, replication=3)

    summary_path = tmp_path / "summary.json"
    env = {**os.environ, "STREAMTRAIN_SECRET": SECRET}
    cmd = [
        sys.executable, "-m", "streamtrain", "train", "--partitioned", "--name", name,
        "--topic", topic, "--checkpoint-topic", ckpt, "--checkpoint-interval", "0.5",
        "--metrics-topic", "", "--view", "none", "--bootstrap-servers", bootstrap,
        "--exit-when-idle", "3", "--summary", str(summary_path),
        "--no-fast-path",  # River's pace: the broker fails while the stream is being learned
    ]  # fmt: skip
    # stderr to a file: the trainer logs through the outage, and a pipe nobody reads until
    # the end could fill up and block it.
    log_path = tmp_path / "trainer.log"
    with open(log_path, "w") as log_file:
        trainer = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=log_file, text=True, env=env
        )
    store = CheckpointStore(KafkaSettings(bootstrap_servers=bootstrap), KEY, ckpt)
    keys = [f"{name}/p{p}" for p in range(PARTITIONS)]
    try:
        deadline = time.monotonic() + 120
        while not store.latest_many(keys) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert store.latest_many(keys), "no checkpoint before the broker failure"
        before = _learned(store, keys)
        kafka_cluster.stop_node(2, hard=True)  # a crash, not a clean shutdown
        stopped = time.monotonic()
        # Training goes on with two brokers of three: checkpoints committed during the
        # outage hold more events than before it (once the controller has moved node 2's
        # leaderships, 9 s after the crash at most). This replaced a check that the trainer
        # still ran after 8 s, which an --exit-when-idle of 15 s had to guarantee at a cost
        # of those 15 s at the end of every run. The node stays down 8 s at least, as before.
        while _learned(store, keys) <= before:
            assert trainer.poll() is None, log_path.read_text()[-5000:]
            assert time.monotonic() < stopped + 120, "no progress with two brokers of three"
            time.sleep(0.5)
        time.sleep(max(0.0, stopped + 8 - time.monotonic()))
        assert trainer.poll() in (None, 0), log_path.read_text()[-5000:]
        kafka_cluster.start_node(2, wait_seconds=120)  # back, with no operator action
        trainer.wait(timeout=600)
        assert trainer.returncode == 0, log_path.read_text()[-5000:]
    finally:
        if trainer.poll() is None:
            trainer.kill()
        if not kafka_cluster.status().healthy:
            kafka_cluster.up(wait_seconds=120)

    summary = json.loads(summary_path.read_text())
    print("trainer log tail:", log_path.read_text()[-2000:])
    assert summary["events_learned"] == sum(len(v) for v in per_partition.values())
    opened = store.latest_many(keys)
    for p, key in enumerate(keys):
        header = opened[key].header
        values = per_partition[p]
        assert header.offsets == {topic: {p: len(values)}}
        assert header.events_learned == len(values)
        model, auc = offline(values)
        replica = load_state(opened[key])
        assert replica["metrics"]["ROCAUC"].get() == auc
        for x, _ in itertools.islice(datasets.synth.Agrawal(seed=5), 30):
            assert replica["model"].predict_proba_one(x) == model.predict_proba_one(x)
    check_history(store, topic, {key: p for p, key in enumerate(keys)}, per_partition)
