"""One benchmark measurement per process: ``python bench/contenders.py NAME 'JSON-ARGS'``.

Prints one JSON object on its last stdout line. Each run is its own process so that peak RSS,
JIT state and garbage are its own. Timed windows start at the first record received (or the
first batch learned) and end when the N-th event is done: connecting and joining a group are
not part of a throughput figure.
"""

from __future__ import annotations

import gc
import json
import os
import random
import resource
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

RESULT_PREFIX = "BENCH-RESULT "
BATCH = 500


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _pipeline() -> Any:
    from river import linear_model, preprocessing

    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


# -- workload -------------------------------------------------------------------------------------


def phishing_events(n: int) -> list[tuple[dict[str, Any], bool]]:
    """``n`` Phishing events: the dataset (1,250 events, 9 features) repeated."""
    from river import datasets

    base = list(datasets.Phishing())
    return [base[i % len(base)] for i in range(n)]


def seed_bytes(x: dict[str, Any], y: Any) -> bytes:
    """Exactly what the seed's kafka-python producer sends."""
    return json.dumps({"x": x, "y": y}).encode("utf-8")


def synthetic_events(n: int, d: int, seed: int = 42) -> list[tuple[dict[str, float], bool]]:
    rng = random.Random(seed)
    coefs = [rng.uniform(-1, 1) for _ in range(d)]
    names = [f"f{j}" for j in range(d)]
    out = []
    for _ in range(n):
        values = [rng.gauss(0, 1) for _ in range(d)]
        score = sum(c * v for c, v in zip(coefs, values, strict=True)) + rng.gauss(0, 0.5)
        out.append((dict(zip(names, values, strict=True)), score > 0))
    return out


# -- contenders -----------------------------------------------------------------------------------


def limit(args: dict[str, Any]) -> dict[str, Any]:
    """River's own loop over already-decoded events (from the same JSON bytes)."""
    from river import metrics

    n = args["events"]
    events = [json.loads(seed_bytes(x, y)) for x, y in phishing_events(n)]
    decoded = [(e["x"], e["y"]) for e in events]
    del events
    model = _pipeline()
    metric = metrics.ROCAUC()
    gc.collect()
    started = time.perf_counter()
    for x, y in decoded:
        y_pred = model.predict_proba_one(x)
        model.learn_one(x, y)
        metric.update(y, y_pred)
    elapsed = time.perf_counter() - started
    return {"events": n, "seconds": elapsed, "metric": metric.get()}


def in_process(args: dict[str, Any]) -> dict[str, Any]:
    """Decode + learn from the same bytes without Kafka: River's path or the fast path."""
    from river import metrics

    from streamtrain.data.events import decode_event
    from streamtrain.fastpath import fast_evaluator_for
    from streamtrain.fastpath.decode import decode_batch
    from streamtrain.models.problem import Problem
    from streamtrain.train.progressive import ProgressiveEvaluator

    n = args["events"]
    raw = [seed_bytes(x, y) for x, y in phishing_events(n)]
    model, mets = _pipeline(), {"ROCAUC": metrics.ROCAUC()}
    gc.collect()
    if args.get("fast"):
        fast = fast_evaluator_for(model, mets)
        assert fast is not None
        started = time.perf_counter()
        for i in range(0, n, BATCH):
            batch = decode_batch(raw[i : i + BATCH], Problem.CLASSIFICATION)
            fast.learn_many(batch.xs, batch.ys, batch.matrix)
        elapsed = time.perf_counter() - started
        value = fast.values()["ROCAUC"]
    else:
        evaluator = ProgressiveEvaluator(model, mets)
        learn = evaluator.learn
        started = time.perf_counter()
        for value_bytes in raw:
            x, y = decode_event(value_bytes, Problem.CLASSIFICATION)
            learn(x, y)
        elapsed = time.perf_counter() - started
        value = evaluator.values()["ROCAUC"]
    return {"events": n, "seconds": elapsed, "metric": value}


def consume_only(args: dict[str, Any]) -> dict[str, Any]:
    """confluent-kafka batch consume + orjson decode, no learning."""
    import orjson
    from confluent_kafka import Consumer

    n = args["events"]
    consumer = Consumer(
        {
            "bootstrap.servers": args["bootstrap"],
            "group.id": f"bench-consume-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **args.get("consumer", {}),
        }
    )
    consumer.subscribe([args["topic"]])
    loads = orjson.loads
    seen = 0
    started = None
    checksum = 0
    # Time spent waiting on a local queue that ran dry (a short batch) once records flowed: the
    # fetcher pausing shows here, while a busy machine slows this process without it.
    starved = 0.0
    while seen < n:
        asked = time.perf_counter()
        messages = consumer.consume(BATCH, timeout=0.2)
        if started is not None and len(messages) < BATCH and seen + len(messages) < n:
            starved += time.perf_counter() - asked
        if messages and started is None:
            started = time.perf_counter()
        for msg in messages:
            if msg.error() is not None:
                continue
            event = loads(msg.value())
            checksum += event["y"] is True
            seen += 1
    elapsed = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    return {"events": seen, "seconds": elapsed, "positives": checksum, "starved_seconds": starved}


def seed(args: dict[str, Any]) -> dict[str, Any]:
    """The seed article's consumer, as written there (kafka-python, print(metric) per event)."""
    from kafka import KafkaConsumer
    from river import linear_model, metrics, preprocessing

    n = args["events"]
    consumer = KafkaConsumer(
        args["topic"],
        bootstrap_servers=args["bootstrap"],
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        group_id=f"bench-seed-{uuid.uuid4().hex[:8]}",
        value_deserializer=lambda x: json.loads(x.decode("utf-8")),
    )
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    metric = metrics.ROCAUC()
    seen = 0
    started = None
    with open(os.devnull, "w") as devnull:
        stdout = sys.stdout
        sys.stdout = devnull  # the seed prints the metric after every event
        try:
            for event in consumer:
                if started is None:
                    started = time.perf_counter()
                try:
                    x, y = event.value["x"], event.value["y"]
                    y_pred = model.predict_proba_one(x)
                    model.learn_one(x, y)
                    metric.update(y, y_pred)
                    print(metric)
                except Exception as err:  # the seed's try/except around each event
                    print(f"error: {err}")
                seen += 1
                if seen >= n:
                    break
        finally:
            sys.stdout = stdout
    elapsed = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    return {"events": seen, "seconds": elapsed, "metric": metric.get()}


def _timed_trainer_class(base: type) -> type:
    """``base`` with a clock around ``_learn``, the learning of one batch (no change in
    behaviour)."""

    class Timed(base):  # type: ignore[misc, valid-type]
        first_batch_at: float | None = None
        last_batch_done: float | None = None
        # The first batch the compiled kernel learned: when it began, and the events learned
        # before it (by River, while the kernel loaded in the background).
        compiled_from: tuple[float, int] | None = None
        # This (the learning) thread's CPU time at the same two points: what a busy machine
        # inflates least (other processes take wall time, not this thread's CPU time).
        cpu_from: float | None = None
        cpu_done: float | None = None

        def _learn(self, consumer: Any, messages: list[Any], now: float, started: float) -> None:
            if not messages:  # called on every turn of the loop; only batches are timed
                super()._learn(consumer, messages, now, started)
                return
            began, cpu = time.perf_counter(), time.thread_time()
            if self.first_batch_at is None:
                self.first_batch_at = began
            learned = self.events_learned if self.compiled_from is None else 0
            super()._learn(consumer, messages, now, started)
            self.last_batch_done, self.cpu_done = time.perf_counter(), time.thread_time()
            if self.compiled_from is None and any(
                task.fast is not None and task.fast.batches for task in self.tasks.values()
            ):
                self.compiled_from, self.cpu_from = (began, learned), cpu

    return Timed


def trainer(args: dict[str, Any]) -> dict[str, Any]:
    """streamtrain's Trainer: per-event (stock) or fast path, unnamed or named."""
    from streamtrain.config import KafkaSettings
    from streamtrain.fastpath import kernel_load_seconds
    from streamtrain.train.settings import TrainSettings

    n = args["events"]
    fast = args.get("fast", False)
    from streamtrain.train.trainer import Trainer

    cls = _timed_trainer_class(Trainer)
    name = f"bench-{uuid.uuid4().hex[:10]}" if args.get("named") else None
    settings = TrainSettings(
        topic=args["topic"],
        name=name,
        max_events=n,
        checkpoint_interval=args.get("checkpoint_interval", 1.0),
        checkpoint_every=args.get("checkpoint_every", 10_000),
        fast_path=fast,
    )
    started = time.perf_counter()
    t = cls(KafkaSettings(bootstrap_servers=args["bootstrap"]), settings)
    setup = time.perf_counter() - started
    summary = t.run()
    if fast and not any(getattr(task, "fast", None) for task in t.tasks.values()):
        raise SystemExit("the fast path was not used: the benchmark model is not eligible")
    assert t.first_batch_at is not None and t.last_batch_done is not None
    elapsed = t.last_batch_done - t.first_batch_at
    steady: dict[str, Any] = {}
    if t.compiled_from is not None:  # the compiled path's own pace, after the cold start
        began, before = t.compiled_from
        steady = {
            "steady_events": summary.events_learned - before,
            "steady_seconds": t.last_batch_done - began,
            "steady_cpu_seconds": t.cpu_done - t.cpu_from,
            "river_events_before_kernel": before,
        }
    return {
        "events": summary.events_learned,
        "seconds": elapsed,
        **steady,
        "wall_seconds": time.perf_counter() - started,
        "setup_seconds": setup,
        "kernel_load_seconds": kernel_load_seconds(),
        "metric": summary.metrics["ROCAUC"],
        "checkpoints": summary.checkpoints,
        "dead_lettered": summary.dead_lettered,
    }


def features(args: dict[str, Any]) -> dict[str, Any]:
    """Per-event cost vs number of features: River's loop, the fast path, decoding."""
    from river import metrics

    from streamtrain.data.events import decode_event
    from streamtrain.fastpath import fast_evaluator_for
    from streamtrain.fastpath.decode import decode_batch
    from streamtrain.models.problem import Problem

    out: dict[str, Any] = {}
    for d, n_river, n_fast in args["sizes"]:
        events = synthetic_events(max(n_river, n_fast), d)
        model, metric = _pipeline(), metrics.ROCAUC()
        started = time.perf_counter()
        for x, y in events[:n_river]:
            y_pred = model.predict_proba_one(x)
            model.learn_one(x, y)
            metric.update(y, y_pred)
        river_us = (time.perf_counter() - started) / n_river * 1e6
        fast = fast_evaluator_for(_pipeline(), {"ROCAUC": metrics.ROCAUC()})
        assert fast is not None
        fast.learn_many([events[0][0]], [events[0][1]])  # layout set, state loaded
        rest = events[1:n_fast]
        started = time.perf_counter()
        for i in range(0, len(rest), BATCH):
            chunk = rest[i : i + BATCH]
            fast.learn_many([x for x, _ in chunk], [y for _, y in chunk])
        fast_us = (time.perf_counter() - started) / len(rest) * 1e6
        raw = [seed_bytes(x, y) for x, y in events[:n_fast]]
        started = time.perf_counter()
        for value in raw:
            decode_event(value, Problem.CLASSIFICATION)
        decode_us = (time.perf_counter() - started) / len(raw) * 1e6
        # The fast path's decoding: batches of BATCH, straight into the feature matrix.
        started = time.perf_counter()
        for i in range(0, len(raw), BATCH):
            decode_batch(raw[i : i + BATCH], Problem.CLASSIFICATION)
        batch_us = (time.perf_counter() - started) / len(raw) * 1e6
        out[str(d)] = {
            "river_us": river_us,
            "fast_us": fast_us,
            "decode_us": decode_us,
            "decode_batch_us": batch_us,
        }
    return out


def rss(args: dict[str, Any]) -> dict[str, Any]:
    """RSS after 100k and after 1M events: decode + learn in process, per-event or fast."""
    from river import metrics

    from streamtrain.data.events import decode_event
    from streamtrain.fastpath import fast_evaluator_for
    from streamtrain.models.problem import Problem
    from streamtrain.train.progressive import ProgressiveEvaluator

    n = args["events"]
    checkpoints = sorted(set(args["at"]))
    base = [seed_bytes(x, y) for x, y in phishing_events(1250)]
    model, mets = _pipeline(), {"ROCAUC": metrics.ROCAUC()}
    fast = fast_evaluator_for(model, mets) if args.get("fast") else None
    evaluator = ProgressiveEvaluator(model, mets)
    rss_at: dict[str, float] = {}
    done = 0
    i = 0
    started = time.perf_counter()
    while done < n:
        values = [base[(i + k) % len(base)] for k in range(BATCH)]
        i += BATCH
        decoded = [decode_event(v, Problem.CLASSIFICATION) for v in values]
        if fast is not None:
            fast.learn_many([x for x, _ in decoded], [y for _, y in decoded])
        else:
            for x, y in decoded:
                evaluator.learn(x, y)
        done += BATCH
        for at in checkpoints:
            if done == at:
                gc.collect()
                rss_at[str(at)] = _rss_mb()
    values_now = fast.values() if fast is not None else evaluator.values()
    return {
        "events": done,
        "rss_mb": rss_at,
        "seconds": time.perf_counter() - started,
        "metric": values_now["ROCAUC"],
    }


def jit(args: dict[str, Any]) -> dict[str, Any]:
    """Import numba and compile (or load from cache) the kernel."""
    started = time.perf_counter()
    from river import linear_model, metrics

    from streamtrain.fastpath import fast_evaluator_for, kernel_load_seconds

    fast = fast_evaluator_for(linear_model.LogisticRegression(), {"ROCAUC": metrics.ROCAUC()})
    return {
        "kernel_load_seconds": kernel_load_seconds(),
        "total_seconds": time.perf_counter() - started,
        "eligible": fast is not None,
    }


CONTENDERS = {
    "limit": limit,
    "consume_only": consume_only,
    "in_process": in_process,
    "seed": seed,
    "trainer": trainer,
    "features": features,
    "rss": rss,
    "jit": jit,
}


def _joined_contenders() -> None:
    from costs import challengers, checkpoint, coldstart
    from formats import format_contender
    from joined import joined, pending_memory
    from latency import latency

    CONTENDERS.update(
        {
            "joined": joined,
            "pending_memory": pending_memory,
            "format": format_contender,
            "coldstart": coldstart,
            "latency": latency,
            "challengers": challengers,
            "checkpoint": checkpoint,
        }
    )


_joined_contenders()


def main() -> None:
    name, raw = sys.argv[1], sys.argv[2]
    result = CONTENDERS[name](json.loads(raw))
    result["peak_rss_mb"] = _peak_rss_mb()
    sys.stdout.flush()
    print(RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
