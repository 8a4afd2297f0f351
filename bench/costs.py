"""Contenders for what a run costs besides its steady rate: cold start and challengers.

``coldstart``: process start → first event learned, for a trainer process (per-event or fast
path), with numba's on-disk cache warm or empty (the caller sets ``NUMBA_CACHE_DIR``).
``challengers``: a named per-event trainer with 0, 1 or 3 challengers (issue 12): events/s and
the checkpoint payload of its task. ``checkpoint``: one checkpoint transaction's time vs the
model's size.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

# The specs `make bench` adds as challengers, in order (all parse with `train --challenger`).
CHALLENGER_SPECS = (
    "lr=StandardScaler | LogisticRegression(l2=0.001)",
    "tree=HoeffdingTreeClassifier",
    "pa=StandardScaler | PAClassifier",
)


def coldstart(args: dict[str, Any]) -> dict[str, Any]:
    """Wall time from ``spawned_at`` (the parent's clock just before it started this process)
    to the end of the first batch learned, with one event asked for."""
    imported = time.time()
    from contenders import _timed_trainer_class

    from streamtrain.config import KafkaSettings
    from streamtrain.fastpath import kernel_load_seconds
    from streamtrain.train.settings import TrainSettings
    from streamtrain.train.trainer import Trainer

    trainer_imported = time.time()
    fast = bool(args.get("fast"))
    t = _timed_trainer_class(Trainer)(
        KafkaSettings(bootstrap_servers=args["bootstrap"]),
        TrainSettings(topic=args["topic"], max_events=1, fast_path=fast),
    )
    wall_at_perf = time.time() - time.perf_counter()  # maps perf_counter onto the wall clock
    summary = t.run()
    assert t.last_batch_done is not None and summary.events_learned == 1
    if fast and not any(getattr(task, "fast", None) for task in t.tasks.values()):
        raise SystemExit("the fast path was not used: the benchmark model is not eligible")
    learned = wall_at_perf + t.last_batch_done
    spawned = float(args["spawned_at"])
    kernel_ready = None
    if fast:  # the first events are River's while the kernel loads in the background
        from streamtrain.fastpath.evaluator import _wait_for_kernel

        _wait_for_kernel()
        kernel_ready = time.time() - spawned
    return {
        "first_learned_seconds": learned - spawned,
        "kernel_ready_seconds": kernel_ready,
        "interpreter_seconds": imported - spawned,
        "imports_seconds": trainer_imported - imported,
        "kernel_load_seconds": kernel_load_seconds() or 0.0,
        "first_event_after_run_seconds": summary.first_event_after_seconds,
    }


def challengers(args: dict[str, Any]) -> dict[str, Any]:
    """A named per-event trainer (checkpoint every second) with ``args["challengers"]``."""
    from contenders import _timed_trainer_class

    from streamtrain.config import KafkaSettings
    from streamtrain.state.payload import freeze
    from streamtrain.train.settings import TrainSettings
    from streamtrain.train.trainer import Trainer

    n = args["events"]
    t = _timed_trainer_class(Trainer)(
        KafkaSettings(bootstrap_servers=args["bootstrap"]),
        TrainSettings(
            topic=args["topic"],
            name=f"bench-ch-{uuid.uuid4().hex[:10]}",
            max_events=n,
            challengers=tuple(args["challengers"]),
            checkpoint_interval=1.0,
            checkpoint_every=10**9,
            fast_path=False,  # a challenger needs River's per-event path; so 0 is that too
        ),
    )
    summary = t.run()
    assert t.first_batch_at is not None and t.last_batch_done is not None
    (task,) = t.tasks.values()
    return {
        "events": summary.events_learned,
        "seconds": t.last_batch_done - t.first_batch_at,
        "river_seconds": _river_loop_seconds(n, [s.split("=", 1)[1] for s in args["challengers"]]),
        "challengers": len(args["challengers"]),
        "payload_bytes": len(freeze(task.state())),
        "checkpoints": summary.checkpoints,
        "metric": summary.metrics["ROCAUC"],
    }


def _river_loop_seconds(n: int, specs: list[str]) -> float:
    """River's own loop over the same ``n`` events with the champion and ``specs``, each with
    its ROCAUC: what the models themselves cost, without streamtrain."""
    from contenders import _pipeline, phishing_events, seed_bytes
    from river import metrics

    from streamtrain.data.events import decode_event
    from streamtrain.models.problem import Problem
    from streamtrain.models.spec import estimator_registry, parse_spec

    events = [decode_event(seed_bytes(x, y), Problem.CLASSIFICATION) for x, y in phishing_events(n)]
    registry = estimator_registry()
    models = [_pipeline(), *(parse_spec(spec, registry) for spec in specs)]
    scored = [(m, metrics.ROCAUC()) for m in models]
    started = time.perf_counter()
    for x, y in events:
        for model, metric in scored:
            metric.update(y, model.predict_proba_one(x))
            model.learn_one(x, y)
    return time.perf_counter() - started


def checkpoint(args: dict[str, Any]) -> dict[str, Any]:
    """Time of one checkpoint transaction (pickle, sign, produce, offsets, commit) vs model size."""
    from confluent_kafka import Consumer, Producer
    from contenders import _pipeline, synthetic_events
    from river import metrics

    from streamtrain.config import KafkaSettings
    from streamtrain.kafka.clients import client_config, ensure_topic
    from streamtrain.kafka.transactions import TransactionalProducer
    from streamtrain.state.keys import load_signing_key
    from streamtrain.state.payload import TrainState, freeze
    from streamtrain.state.store import CheckpointStore, ensure_checkpoint_topic
    from streamtrain.stopping import StopFlag
    from streamtrain.train.checkpointing import Checkpointing

    kafka = KafkaSettings(bootstrap_servers=args["bootstrap"])
    topic = f"bench-ckpt-{uuid.uuid4().hex[:8]}"
    ensure_topic(kafka, topic, partitions=1)
    ckpt_topic = args.get("checkpoint_topic", "streamtrain.checkpoints")
    ensure_checkpoint_topic(kafka, ckpt_topic)
    p = Producer({"bootstrap.servers": args["bootstrap"]})
    p.produce(topic, value=b"{}", partition=0)
    p.flush(10)
    out: dict[str, Any] = {}
    for d in args["sizes"]:
        name = f"bench-ckpt-{d}-{uuid.uuid4().hex[:6]}"
        model = _pipeline()
        metric = metrics.ROCAUC()
        for x, y in synthetic_events(20, d):
            metric.update(y, model.predict_proba_one(x))
            model.learn_one(x, y)
        consumer = Consumer(
            client_config(
                kafka,
                **{
                    "group.id": f"streamtrain.{name}",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "isolation.level": "read_committed",
                },
            )
        )
        consumer.subscribe([topic])
        deadline = time.time() + 30
        while not consumer.assignment() and time.time() < deadline:
            consumer.poll(0.2)
        key = load_signing_key()
        conf = client_config(
            kafka,
            **{
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 20,
                "transactional.id": f"streamtrain.{name}",
                "transaction.timeout.ms": 60000,
                "message.max.bytes": 64 * 1024 * 1024,
                "compression.type": "zstd",
            },
        )
        txn = TransactionalProducer(
            lambda on_error, conf=conf: Producer({**conf, "error_cb": on_error}),
            label=name,
            timeout=10.0,
            should_stop=StopFlag(),
        )
        cp = Checkpointing(
            topic=topic,
            model_spec="StandardScaler | LogisticRegression",
            txn=txn,
            store=CheckpointStore(kafka, key, ckpt_topic),
            key=key,
            interval=1.0,
            every=10_000,
        )
        cp.start()
        state = TrainState(model, {"ROCAUC": metric}, 20, {}, {0: 1}, {})
        times = []
        pickle_times = []
        for _ in range(args.get("reps", 7)):
            started = time.perf_counter()
            payload = freeze(state)
            pickle_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            cp.commit(
                {name: state},
                {name: {"ROCAUC": metric.get()}},
                (),
                consumer.consumer_group_metadata(),
            )
            times.append(time.perf_counter() - started)
        times.sort()
        pickle_times.sort()
        out[str(d)] = {
            "commit_ms_median": times[len(times) // 2] * 1000,
            "commit_ms_min": times[0] * 1000,
            "commit_ms_max": times[-1] * 1000,
            "pickle_ms_median": pickle_times[len(pickle_times) // 2] * 1000,
            "payload_bytes": len(payload),
        }
        txn.abort_quietly()
        consumer.close()
    return out
