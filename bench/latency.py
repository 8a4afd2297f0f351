"""Contender for end-to-end latency: record timestamp -> learned, at a steady rate.

A producer writes to a fresh topic at ``rate`` events/s while a trainer (per-event or fast path,
named or not, optionally with one core kept busy by another process) learns it in this process.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from typing import Any

_WARM_UP_EVENTS = 10


def _busy_core() -> Any:
    """A process that keeps one core busy (the issue's "one core kept busy" figures)."""
    import subprocess

    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def latency(args: dict[str, Any]) -> dict[str, Any]:
    """Record timestamp → learned, while a producer writes at a steady rate to a fresh topic."""
    from confluent_kafka import Producer
    from contenders import phishing_events, seed_bytes

    from streamtrain.config import KafkaSettings
    from streamtrain.kafka.clients import ensure_topic
    from streamtrain.train.settings import TrainSettings

    kafka = KafkaSettings(bootstrap_servers=args["bootstrap"])
    topic = f"bench-latency-{uuid.uuid4().hex[:8]}"
    ensure_topic(kafka, topic, partitions=1)
    rate = args["rate"]
    seconds = args["seconds"]
    from streamtrain.train.trainer import Trainer

    base: type = Trainer
    samples: list[float] = []
    # Where a slow event's time went: before the learning thread had it (the broker, the fetch,
    # a thread that held the GIL) or in the learn call itself.
    delivered: list[float] = []
    learn_calls: list[float] = []
    # The learning thread's CPU between two learn calls: its loop's own work (checkpoint
    # hand-over, reports), as opposed to waiting in consume, which takes no CPU.
    between: list[float] = []
    last_cpu = [time.thread_time()]

    class Measured(base):  # type: ignore[misc, valid-type]
        def _learn(self, consumer: Any, messages: list[Any], now: float, started: float) -> None:
            handed_ms = time.time() * 1000.0
            cpu = time.thread_time()
            between.append((cpu - last_cpu[0]) * 1000.0)
            super()._learn(consumer, messages, now, started)
            last_cpu[0] = time.thread_time()
            now_ms = time.time() * 1000.0
            learn_calls.append(now_ms - handed_ms)
            for msg in messages:
                kind, ts = msg.timestamp()
                if kind != 0 and msg.error() is None:
                    samples.append(now_ms - ts)
                    delivered.append(handed_ms - ts)

    name = f"bench-lat-{uuid.uuid4().hex[:8]}" if args.get("named") else None
    t = Measured(
        kafka,
        TrainSettings(
            topic=topic,
            name=name,
            start="earliest",
            checkpoint_interval=1.0,
            fast_path=bool(args.get("fast")),
        ),
    )
    runner = threading.Thread(target=t.run, daemon=True)
    runner.start()
    producer = Producer(
        {"bootstrap.servers": args["bootstrap"], "linger.ms": 0, "enable.idempotence": True}
    )
    events = phishing_events(int(rate * seconds) + _WARM_UP_EVENTS)
    payloads = [seed_bytes(x, y) for x, y in events]
    # Steady state only: the clock starts once the trainer has its partition and has learned a
    # few records (a fixed sleep measured the group join instead whenever the machine was slow:
    # seconds of backlog at the start, counted as latency).
    deadline = time.time() + 120
    for payload in payloads[:_WARM_UP_EVENTS]:
        producer.produce(topic, value=payload, partition=0)
    producer.flush(30)
    while len(samples) < _WARM_UP_EVENTS and time.time() < deadline:
        time.sleep(0.05)
    if len(samples) < _WARM_UP_EVENTS:
        raise SystemExit("the latency trainer learned nothing within 120 s")
    time.sleep(1.0)  # past the first checkpoint of a named trainer
    del samples[:], delivered[:], learn_calls[:], between[:]
    payloads = payloads[_WARM_UP_EVENTS:]
    interval = 1.0 / rate
    spinner = _busy_core() if args.get("busy") else None
    next_at = time.perf_counter()
    for payload in payloads:
        now = time.perf_counter()
        if next_at > now:
            time.sleep(next_at - now)
        producer.produce(topic, value=payload, partition=0)
        producer.poll(0)
        next_at += interval
    producer.flush(30)
    deadline = time.time() + 30
    while len(samples) < len(payloads) and time.time() < deadline:
        time.sleep(0.1)
    if spinner is not None:
        spinner.kill()
        spinner.wait()
    t.stop()
    runner.join(30)
    warm = sorted(samples[int(rate) :])  # the first second warms up
    handed = sorted(delivered[int(rate) :])

    def pct(values: list[float], p: float) -> float:
        return values[min(len(values) - 1, int(p * len(values)))] if values else float("nan")

    return {
        "events": len(samples),
        "p50_ms": pct(warm, 0.50),
        "p99_ms": pct(warm, 0.99),
        "max_ms": warm[-1] if warm else float("nan"),
        "p99_delivered_ms": pct(handed, 0.99),
        "slowest_learn_ms": max(learn_calls, default=float("nan")),
        "most_cpu_between_learns_ms": max(between, default=float("nan")),
    }
