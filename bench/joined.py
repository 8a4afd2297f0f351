"""The late-label contender: the same Phishing stream with every label 1,000 events later, on
its own topic, joined by the trainer (``train --labels-topic``); and the memory the pending
side of the join takes per waiting prediction.
"""

from __future__ import annotations

import pickle
import time
import tracemalloc
import uuid
from typing import Any

import orjson

DELAY = 1000  # events (1 ms apart in event time)
# Event time of the first feature event (ms): recent, since the broker deletes records older
# than its retention (7 days) at its next retention check, even from a topic's active segment.
START = int(time.time() * 1000) - 600_000


def _fill(bootstrap: str, features: str, labels: str, stream: list[Any]) -> None:
    from confluent_kafka import Producer

    from streamtrain.config import KafkaSettings
    from streamtrain.kafka.clients import ensure_topic

    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    for topic in (features, labels):
        ensure_topic(kafka, topic, partitions=1)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 20}
    )

    def send(topic: str, value: bytes, key: bytes, ts: int) -> None:
        while True:
            try:
                producer.produce(topic, value, key, partition=0, timestamp=ts)
                return
            except BufferError:
                producer.poll(0.1)

    for i, (x, y) in enumerate(stream):
        key = str(i).encode()
        send(features, orjson.dumps({"id": str(i), "x": x}), key, START + i)
        send(labels, orjson.dumps({"id": str(i), "y": y}), key, START + i + DELAY)
    assert producer.flush(120) == 0


def joined(args: dict[str, Any]) -> dict[str, Any]:
    """Trainer throughput with labels 1,000 events late (unnamed, River's per-event path)."""
    from contenders import _timed_trainer_class, phishing_events

    from streamtrain.config import KafkaSettings
    from streamtrain.train.settings import TrainSettings
    from streamtrain.train.trainer import Trainer

    n = args["events"]
    suffix = uuid.uuid4().hex[:8]
    features, labels = f"bench-features-{suffix}", f"bench-labels-{suffix}"
    _fill(args["bootstrap"], features, labels, phishing_events(n))
    settings = TrainSettings(topic=features, labels_topic=labels, max_events=n, fast_path=False)
    t = _timed_trainer_class(Trainer)(KafkaSettings(bootstrap_servers=args["bootstrap"]), settings)
    summary = t.run()
    assert t.first_batch_at is not None and t.last_batch_done is not None
    seconds = t.last_batch_done - t.first_batch_at
    return {
        "events": summary.events_learned,
        "seconds": seconds,
        "events_per_second": summary.events_learned / seconds,
        "metric": summary.metrics["ROCAUC"],
        "river_metric": _river_delayed(phishing_events(n)),
        "join": dict(summary.join or {}),
    }


def _river_delayed(stream: list[Any]) -> float:
    """River's progressive_val_score on the same events, each label DELAY events later."""
    from river import evaluate, linear_model, metrics, preprocessing

    metric = metrics.ROCAUC()
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    evaluate.progressive_val_score(stream, model, metric, delay=DELAY)
    return float(metric.get())


def pending_memory(args: dict[str, Any]) -> dict[str, Any]:
    """Bytes per waiting prediction: Python heap (tracemalloc) and in the checkpoint."""
    from contenders import phishing_events
    from river import linear_model, metrics, preprocessing

    from streamtrain.join.state import JoinPolicy
    from streamtrain.state.payload import TrainState
    from streamtrain.train.tasks import JoinSpec, Task

    n = args["pending"]
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    state = TrainState(model, {"ROCAUC": metrics.ROCAUC()}, 0, {}, {})
    task = Task.from_state("t", state, join=JoinSpec("labels", JoinPolicy()))
    task.set_inputs([("features", 0)])

    class Rec:
        def __init__(self, i: int, value: bytes) -> None:
            self.i, self.v = i, value

        def topic(self) -> str:
            return "features"

        def partition(self) -> int:
            return 0

        def offset(self) -> int:
            return self.i

        def value(self) -> bytes:
            return self.v

        def key(self) -> bytes:
            return str(self.i).encode()

        def headers(self) -> None:
            return None

        def timestamp(self) -> tuple[int, int]:
            return 1, START + self.i

    records = [
        Rec(i, orjson.dumps({"id": str(i), "x": x})) for i, (x, _y) in enumerate(phishing_events(n))
    ]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    task.learn(records)
    task.drain(0.0, lambda _key, _fetched: True)
    task.take_outputs()  # the predictions leave at the commit: not pending state
    seconds = time.perf_counter() - started
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    join = task.join_state
    assert join is not None and len(join.pending) == n
    checkpoint = len(pickle.dumps(join.to_plain(), protocol=pickle.HIGHEST_PROTOCOL))
    return {
        "pending": n,
        "heap_bytes_per_pending": held / n,
        "checkpoint_bytes_per_pending": checkpoint / n,
        "predict_seconds": seconds,
    }
