"""The campaign itself: input produced all along, trainers of one partitioned named model, and
the seed's faults injected on schedule; then every trainer stopped and the run accounted for.

The faults run one after another on the calling thread (a broker fault ends with the broker
back and answering before the next starts, so at most one broker of three is ever down); a
trainer's pause ends on a timer, so faults go on meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import ElectionType, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from kafka import TopicPartition as KafkaTopicPartition
from kafka.admin import KafkaAdminClient
from topics import create_topic

from chaos.schedule import POISON, Fault, record, schedule
from streamtrain.broker import LocalCluster
from streamtrain.kafka.transactions import TransactionFatal
from streamtrain.state.store import checkpoint_partition

SECRET = "chaos-campaign-secret-0123456789abcdef"
PARTITIONS = 4
RATE = 400  # input records a second
SESSION_TIMEOUT_S = 6  # a trainer paused longer loses its tasks (and is fenced on waking)
# The exit of a trainer sent SIGTERM (None: still leaving). TransactionFatal's code: it was
# told to stop while a transactional call was being retried (a coordinator moving after a
# broker fault), having committed nothing new; the next owner of its tasks resumes from the
# last checkpoint, which the accounting checks. -SIGTERM: it was told before it had set its
# signal handlers (just started), having joined nothing yet.
LEFT_CLEANLY = (None, 0, TransactionFatal.exit_code, -signal.SIGTERM)


@dataclass
class Run:
    """What a campaign did, for the accounting (:mod:`chaos.accounting`)."""

    seed: int
    seconds: float
    bootstrap: str
    topic: str
    name: str
    ckpt: str
    workdir: Path
    sent: dict[int, list[bytes]] = field(default_factory=dict)
    faults: Counter[str] = field(default_factory=Counter)
    producer_retries: int = 0
    trainers_started: int = 0
    finisher_summary: dict[str, Any] = field(default_factory=dict)
    wall_seconds: float = 0.0


class Feeder(threading.Thread):
    """Produces the seed's records at :data:`RATE` through an idempotent producer (ordered,
    each record once per partition, whatever the retries) until stopped; counts the
    producer's retried requests from librdkafka's statistics."""

    def __init__(self, run: Run) -> None:
        super().__init__(daemon=True)
        self.run_ = run
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._retries: dict[str, int] = {}
        self._rng = random.Random(f"chaos-records-{run.seed}")  # as schedule.records draws

    def _stats(self, raw: str) -> None:
        stats = json.loads(raw)
        for broker, b in stats.get("brokers", {}).items():
            self._retries[broker] = max(self._retries.get(broker, 0), b.get("txretries", 0))

    def run(self) -> None:
        try:
            self._feed()
        except BaseException as err:  # reported by the campaign, which fails on it
            self.error = err

    def _feed(self) -> None:
        run = self.run_
        producer = Producer(
            {
                "bootstrap.servers": run.bootstrap,
                "enable.idempotence": True,
                "linger.ms": 20,
                # Short, so a paused broker makes in-flight requests time out and be re-sent
                # (the broker, once woken, must drop the duplicates by sequence number).
                "request.timeout.ms": 1000,
                "socket.timeout.ms": 1500,
                "statistics.interval.ms": 500,
                "stats_cb": self._stats,
                "log_level": 0,
                "error_cb": lambda _err: None,
            }
        )
        run.sent = {p: [] for p in range(PARTITIONS)}
        started, i = time.monotonic(), 0
        value = record(self._rng)
        while not self.stop.is_set():
            due = int((time.monotonic() - started) * RATE)
            while i < due:
                try:
                    producer.produce(run.topic, value=value, partition=i % PARTITIONS)
                except BufferError:
                    producer.poll(0.1)
                    continue
                run.sent[i % PARTITIONS].append(value)
                value = record(self._rng)
                i += 1
            producer.poll(0.05)
        left = producer.flush(180)
        producer.poll(1.0)  # a last statistics report
        if left:
            raise RuntimeError(f"{left} input records still unsent at the end")
        run.producer_retries = sum(self._retries.values())


class Trainers:
    """The trainer processes of the model: spawned, killed, paused, removed."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.live: list[subprocess.Popen[bytes]] = []
        self.paused: set[int] = set()  # pids
        self.leaving: list[subprocess.Popen[bytes]] = []  # sent SIGTERM: must exit 0
        self._logs = run.workdir / "trainers"
        self._logs.mkdir(parents=True, exist_ok=True)
        self._numbers: dict[int, int] = {}  # pid -> the number in its log's name

    def command(self, *extra: str) -> list[str]:
        run = self.run
        return [
            sys.executable, "-m", "streamtrain", "train", "--partitioned",
            "--name", run.name, "--topic", run.topic, "--checkpoint-topic", run.ckpt,
            "--checkpoint-interval", "0.5", "--checkpoint-every", "2000",
            "--batch-size", "200", "--session-timeout", str(SESSION_TIMEOUT_S),
            "--metrics-topic", "", "--view", "none", "--bootstrap-servers", run.bootstrap,
            *extra,
        ]  # fmt: skip

    def spawn(self, *extra: str) -> subprocess.Popen[bytes]:
        self.run.trainers_started += 1
        env = {k: v for k, v in os.environ.items() if k != "STREAMTRAIN_FAULT"}
        env["STREAMTRAIN_SECRET"] = SECRET
        # stderr to a file: a pipe nobody reads until the end could fill up and block it.
        with open(self._logs / f"trainer-{self.run.trainers_started}.log", "wb") as log:
            proc = subprocess.Popen(
                self.command(*extra), stdout=subprocess.DEVNULL, stderr=log, env=env
            )
        self._numbers[proc.pid] = self.run.trainers_started
        self.live.append(proc)
        return proc

    def pick(self, fault: Fault, *, awake: bool = True) -> subprocess.Popen[bytes] | None:
        candidates = [p for p in self.live if not (awake and p.pid in self.paused)]
        return candidates[fault.pick % len(candidates)] if candidates else None

    def resume(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.pid in self.paused:
            self.paused.discard(proc.pid)
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)

    def dead(self) -> list[str]:
        """Trainers that exited on their own, or failed to leave cleanly (none should)."""
        died = [p for p in self.live if p.poll() is not None]
        died += [p for p in self.leaving if p.poll() not in LEFT_CLEANLY]
        return [f"pid {p.pid} exit {p.returncode}: {self._tail(p)}" for p in died]

    def _tail(self, proc: subprocess.Popen[bytes]) -> str:
        """The last lines the trainer wrote to its log: why it exited."""
        log = self._logs / f"trainer-{self._numbers[proc.pid]}.log"
        lines = log.read_text(errors="replace").strip().splitlines()
        return " | ".join(lines[-6:]) or "(nothing logged)"

    def close(self) -> None:
        for proc in [*self.live, *self.leaving]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait()


def move_leader(run: Run, pick: int) -> bool:
    """Move the leader of the checkpoint topic's partition holding replica ``pick``'s
    checkpoints to the next broker of its replica list: reassign its replicas rotated
    (kafka-python: confluent-kafka has no reassignment call), then elect the new preferred
    leader (confluent-kafka). False if the partition has a single replica."""
    admin = AdminClient({"bootstrap.servers": run.bootstrap, "log_level": 0})
    deadline = time.monotonic() + 60
    # Right after a broker fault the metadata may lack the topic's partitions for a while.
    while not (meta := admin.list_topics(run.ckpt, timeout=30).topics[run.ckpt]).partitions:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    partition = checkpoint_partition(f"{run.name}/p{pick % PARTITIONS}", len(meta.partitions))
    replicas = list(meta.partitions[partition].replicas)
    if len(replicas) < 2:
        return False
    rotated = replicas[1:] + replicas[:1]
    mover = KafkaAdminClient(bootstrap_servers=run.bootstrap.split(","))
    try:
        refused = mover.alter_partition_reassignments(
            {KafkaTopicPartition(run.ckpt, partition): rotated}, timeout_ms=30_000
        )
        if any(error is not None for error in refused.values()):
            raise RuntimeError(f"reassigning {run.ckpt}[{partition}] refused: {refused}")
        deadline = time.monotonic() + 60
        while mover.list_partition_reassignments([KafkaTopicPartition(run.ckpt, partition)]):
            if time.monotonic() > deadline:
                raise RuntimeError(f"reassigning {run.ckpt}[{partition}] never completed")
            time.sleep(0.5)
    finally:
        mover.close()
    # The election fails while the new preferred replica is out of sync (a broker just back
    # catching up): try again for a while.
    tp = TopicPartition(run.ckpt, partition)
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(KafkaException):
            admin.elect_leaders(ElectionType.PREFERRED, [tp]).result()
        topic = admin.list_topics(run.ckpt, timeout=30).topics[run.ckpt]
        if topic.partitions[partition].leader == rotated[0]:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(1)


def _broker_pid(cluster: LocalCluster, node: int) -> int | None:
    return cluster.running_pids().get(node)


def inject(fault: Fault, run: Run, cluster: LocalCluster, trainers: Trainers) -> str | None:
    """Inject one fault; the kind actually injected (a removal with one trainer left becomes
    an addition), or None if it could not be."""
    kind = fault.kind
    if kind == "trainer-remove" and len(trainers.live) < 2:
        kind = "trainer-add"
    if kind == "trainer-add":
        trainers.spawn()
    elif kind == "trainer-remove":
        proc = trainers.pick(fault)
        if proc is None:
            return None
        trainers.live.remove(proc)
        trainers.leaving.append(proc)
        proc.send_signal(signal.SIGTERM)  # a clean leave: it commits and hands its tasks over
    elif kind == "trainer-kill-9":
        proc = trainers.pick(fault, awake=False)
        if proc is None:
            return None
        trainers.resume(proc)
        proc.kill()
        proc.wait()
        trainers.live.remove(proc)
        if not trainers.live:
            trainers.spawn()  # as a supervisor would
    elif kind == "trainer-pause":
        proc = trainers.pick(fault)
        if proc is None:
            return None
        proc.send_signal(signal.SIGSTOP)
        trainers.paused.add(proc.pid)
        timer = threading.Timer(fault.seconds, trainers.resume, [proc])
        timer.daemon = True
        timer.start()
    elif kind in ("broker-kill-9", "broker-pause"):
        node = cluster.node_ids[fault.pick % len(cluster.node_ids)]
        pid = _broker_pid(cluster, node)
        if pid is None:
            return None
        if kind == "broker-kill-9":
            cluster.stop_node(node, hard=True)
            time.sleep(fault.seconds)
            cluster.start_node(node, wait_seconds=120)
        else:
            os.kill(pid, signal.SIGSTOP)
            time.sleep(fault.seconds)
            os.kill(pid, signal.SIGCONT)
    elif kind == "leader-move" and not move_leader(run, fault.pick):
        return None
    return kind


def campaign(
    cluster: LocalCluster,
    seed: int,
    seconds: float,
    *,
    workdir: Path | None = None,
    say: Callable[[str], None] = print,
) -> Run:
    """Run the campaign of ``seed`` for ``seconds`` on ``cluster`` (3 nodes, all up); return
    what happened. Leaves every node running and no trainer behind."""
    tag = f"{seed}-{random.Random().randrange(16**8):08x}"  # fresh topics on a reused cluster
    run = Run(
        seed=seed,
        seconds=seconds,
        bootstrap=cluster.bootstrap,
        topic=f"chaos-in-{tag}",
        name=f"chaos-model-{tag}",
        ckpt=f"chaos-ckpt-{tag}",
        workdir=workdir or Path(tempfile.mkdtemp(prefix="chaos-")),
    )
    create_topic(run.bootstrap, run.topic, PARTITIONS, replication=3)
    began = time.monotonic()
    feeder = Feeder(run)
    trainers = Trainers(run)
    try:
        feeder.start()
        trainers.spawn()
        trainers.spawn()
        for fault in schedule(seed, seconds):
            time.sleep(max(0.0, began + fault.at - time.monotonic()))
            if feeder.error is not None:
                raise RuntimeError("the input producer failed") from feeder.error
            done = inject(fault, run, cluster, trainers)
            say(f"{time.monotonic() - began:7.1f}s  {fault.kind:<15} -> {done or 'skipped'}")
            if done is not None:
                run.faults[done] += 1
            if dead := trainers.dead():
                raise RuntimeError(f"a trainer exited on its own: {dead}")
        time.sleep(max(0.0, began + seconds - time.monotonic()))
        feeder.stop.set()
        feeder.join(240)
        if feeder.error is not None:
            raise RuntimeError("the input producer failed") from feeder.error
        run.faults["poison-record"] = sum(
            v in POISON for values in run.sent.values() for v in values
        )
        _finish(run, trainers, say)
    finally:
        feeder.stop.set()
        feeder.join(30)
        trainers.close()
        if not cluster.status().healthy:
            cluster.up(wait_seconds=180)
    run.wall_seconds = round(time.monotonic() - began, 1)
    return run


def _finish(run: Run, trainers: Trainers, say: Callable[[str], None]) -> None:
    """Wake every paused trainer and stop them all (SIGTERM: each commits and leaves), then
    start one more that learns what is left and exits once idle: its last checkpoints are
    the final replicas."""
    for proc in list(trainers.live):
        trainers.resume(proc)
        trainers.live.remove(proc)
        trainers.leaving.append(proc)
        proc.send_signal(signal.SIGTERM)
    for proc in trainers.leaving:
        proc.wait(timeout=180)
    if dead := trainers.dead():
        raise RuntimeError(f"a trainer did not leave cleanly: {dead}")
    say("the faults are over; a last trainer learns what is left")
    summary = run.workdir / "finisher.json"
    finisher = trainers.spawn("--exit-when-idle", "5", "--summary", str(summary))
    finisher.wait(timeout=600)
    if finisher.returncode != 0:
        raise RuntimeError(f"the last trainer failed (exit {finisher.returncode})")
    run.finisher_summary = json.loads(summary.read_text())
