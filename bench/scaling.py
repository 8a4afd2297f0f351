"""Scale-out benchmark: partitioned training with 1 vs 2 trainer processes, and rebalance pauses.

A 6-partition topic is preloaded; ``streamtrain train --partitioned`` runs with one process,
then with two started together (the group spreads the six tasks over them). Throughput is
the events learned divided by the time between the first and the last learned event, read
from the trainers' own progress records on a metrics topic (one record per 0.5 s per
process), so start-up and the idle wait at the end are not counted.

The rebalance pause is the longest stretch in which no process learned anything while a
second process joins a running one; after one of two processes is killed, its tasks wait for
its session timeout (``--session-timeout``, 10 s here) before they move, and the time until
another process learns on them again is reported.

Run alone: ``python bench/scaling.py --bootstrap HOST:PORT`` (or from ``bench/run.py``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if (ROOT / "src").is_dir():
    sys.path.insert(0, str(ROOT / "src"))

from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

PARTITIONS = 6
SESSION_TIMEOUT = 10


def _fill(bootstrap: str, topic: str, events: int) -> None:
    from river import datasets

    from streamtrain.data.events import encode_event

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50})
    stream = itertools.islice(datasets.synth.Agrawal(seed=8), events)
    for i, (x, y) in enumerate(stream):
        while True:
            try:
                producer.produce(topic, value=encode_event(x, y), partition=i % PARTITIONS)
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(120)


def _trainer(bootstrap: str, topic: str, name: str, metrics_topic: str) -> subprocess.Popen[str]:
    cmd = [
        sys.executable, "-m", "streamtrain", "train", "--partitioned", "--name", name,
        "--topic", topic, "--checkpoint-topic", f"{name}.ckpt", "--checkpoint-interval", "1",
        "--metrics-topic", metrics_topic, "--view", "none", "--bootstrap-servers", bootstrap,
        "--exit-when-idle", "4", "--session-timeout", str(SESSION_TIMEOUT),
    ]  # fmt: skip
    env = {**os.environ, "STREAMTRAIN_SECRET": "bench-scaling-secret-0123456789"}
    if (ROOT / "src").is_dir():
        env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
    )


def _records(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    out: list[dict[str, Any]] = []
    while True:
        msg = consumer.poll(5)
        if msg is None or (msg.error() is not None):
            break
        out.append(json.loads(msg.value()))
    consumer.close()
    return out


def _timeline(records: list[dict[str, Any]]) -> list[tuple[float, int]]:
    """(time, events learned by all processes together), one point per progress record.

    A task's count includes what its checkpoint had learned before, so a task that moved is
    counted once: at the highest count any process reported for it.
    """
    latest: dict[str, dict[str, int]] = {}  # process -> task -> events learned
    points = []
    for record in sorted(records, key=lambda r: r["ts"]):
        tasks = record.get("tasks") or {}
        latest[record["process"]] = {k: int(v["events_learned"]) for k, v in tasks.items()}
        merged: dict[str, int] = {}
        for snapshot in latest.values():
            for key, n in snapshot.items():
                merged[key] = max(merged.get(key, 0), n)
        points.append((record["ts"], sum(merged.values())))
    return points


def _throughput(points: list[tuple[float, int]], total: int) -> float:
    moving = [(t, n) for t, n in points if n > 0]
    start = next(((t, n) for t, n in moving), None)
    end = next(((t, n) for t, n in moving if n >= total), None)
    if start is None or end is None or end[0] <= start[0]:
        return float("nan")
    return (end[1] - start[1]) / (end[0] - start[0])


def _longest_stall(points: list[tuple[float, int]], after: float, total: int) -> float:
    stall, last_t, last_n = 0.0, None, None
    for t, n in points:
        if t < after or n >= total:
            continue
        if (last_n is not None and n > last_n) or last_n is None:
            last_t, last_n = t, n
        else:
            assert last_t is not None
            stall = max(stall, t - last_t)
    return stall


def run_scaling(bootstrap: str, events: int = 300_000) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    topic = f"bench.scaling.{run_id}"
    _fill(bootstrap, topic, events)
    results: dict[str, Any] = {"events": events, "partitions": PARTITIONS}
    for processes in (1, 2):
        name = f"bench-scale-{processes}-{run_id}"
        metrics_topic = f"{name}.metrics"
        procs = [_trainer(bootstrap, topic, name, metrics_topic) for _ in range(processes)]
        for proc in procs:
            proc.communicate(timeout=900)
        points = _timeline(_records(bootstrap, metrics_topic))
        results[f"events_per_second_{processes}p"] = _throughput(points, events)
    results["scaling_ratio"] = results["events_per_second_2p"] / results["events_per_second_1p"]

    # Rebalance pauses: a second process joins a running one, later one of them is killed.
    name = f"bench-scale-rebalance-{run_id}"
    metrics_topic = f"{name}.metrics"
    first = _trainer(bootstrap, topic, name, metrics_topic)
    time.sleep(5)
    joined_at = time.time()
    second = _trainer(bootstrap, topic, name, metrics_topic)
    time.sleep(5)
    killed_at = time.time()
    first.send_signal(signal.SIGKILL)
    second.communicate(timeout=900)
    first.wait()
    records = _records(bootstrap, metrics_topic)
    points = _timeline(records)
    results["pause_on_join_s"] = _longest_stall(
        [p for p in points if p[0] < killed_at], joined_at, events
    )
    results["dead_tasks_resumed_after_s"] = _resumed_after(records, first.pid, killed_at)
    results["session_timeout_s"] = SESSION_TIMEOUT
    return results


def _resumed_after(records: list[dict[str, Any]], dead_pid: int, killed_at: float) -> float:
    """Seconds from the kill until another process learned again on the dead one's tasks."""
    dead = [r for r in records if r["process"].endswith(f":{dead_pid}")]
    if not dead:
        return float("nan")
    last = max(dead, key=lambda r: r["ts"])
    held = {k: int(v["events_learned"]) for k, v in (last.get("tasks") or {}).items()}
    for record in sorted(records, key=lambda r: r["ts"]):
        if record["ts"] <= killed_at or record["process"] == last["process"]:
            continue
        tasks = record.get("tasks") or {}
        if any(int(tasks[k]["events_learned"]) > n for k, n in held.items() if k in tasks):
            return float(record["ts"] - killed_at)
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--events", type=int, default=300_000)
    args = parser.parse_args()
    print(json.dumps(run_scaling(args.bootstrap, args.events), indent=2))


if __name__ == "__main__":
    main()
