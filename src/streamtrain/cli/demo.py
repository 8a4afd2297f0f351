"""``streamtrain demo``: the seed article's system end to end on a local Kafka.

Starts the local broker if none answers, replays Phishing into a fresh topic at a visible rate
in a background thread, trains on it with the live view, then checks the final ROC AUC against
River's own ``progressive_val_score`` on the same stream.
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from types import FrameType
from typing import Any

from rich.console import Console

from streamtrain.broker import LocalBroker
from streamtrain.config import KafkaSettings
from streamtrain.errors import ConfigError
from streamtrain.kafka.clients import ensure_topic
from streamtrain.produce import ProduceSettings, Replayer
from streamtrain.train.settings import DEFAULT_MODEL, TrainSettings
from streamtrain.train.trainer import Trainer
from streamtrain.train.view import choose_view


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole system on a local Kafka: broker, producer, live trainer",
        description=__doc__,
    )
    parser.add_argument(
        "--rate", type=float, default=150.0, help="events/s replayed [default: 150]"
    )
    parser.add_argument("--port", type=int, default=9092, help="local broker port [default: 9092]")
    parser.add_argument(
        "--keep-broker",
        action="store_true",
        help="leave a broker this demo started running afterwards",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from river import datasets, evaluate, linear_model, metrics, preprocessing

    if args.rate < 0:
        raise ConfigError("--rate must be >= 0")
    console = Console(stderr=True)
    broker = LocalBroker(port=args.port)
    started_broker = False
    if not broker.status().answering:
        console.print(f"starting a local Kafka at {broker.bootstrap} …")
        started_broker = broker.up()
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
    topic = f"demo.phishing.{time.strftime('%Y%m%d-%H%M%S')}"
    console.print(
        f"replaying Phishing into [bold]{topic}[/] at {args.rate:g} events/s; "
        f"training {DEFAULT_MODEL} on it"
    )
    replayer = Replayer(kafka, ProduceSettings(topic=topic, dataset="Phishing", rate=args.rate))
    producer_error: list[BaseException] = []

    def produce() -> None:
        try:
            replayer.run()
        except BaseException as err:  # surfaced after the trainer stops
            producer_error.append(err)

    # The topic must exist before the trainer subscribes: create it up front.
    ensure_topic(kafka, topic)
    thread = threading.Thread(target=produce, name="demo-producer", daemon=True)
    thread.start()
    view = choose_view("auto", f"streamtrain demo · {topic}")
    trainer = Trainer(
        kafka,
        TrainSettings(
            topic=topic, exit_when_idle=3.0, metrics=("ROCAUC", "Accuracy"), rolling_window=250
        ),
        listeners=[view] if view else [],
    )

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        replayer.stop()
        trainer.stop(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        summary = trainer.run()
    finally:
        replayer.stop()
        thread.join(timeout=30)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if started_broker and not args.keep_broker:
            broker.down()
            console.print("stopped the local Kafka this demo started")
    if producer_error:
        raise producer_error[0]
    if summary.events_learned == 1250:
        oracle = evaluate.progressive_val_score(
            datasets.Phishing(),
            preprocessing.StandardScaler() | linear_model.LogisticRegression(),
            metrics.ROCAUC(),
        ).get()
        ours = summary.metrics["ROCAUC"]
        verdict = "equal" if abs(ours - oracle) <= 1e-12 else "DIFFERENT"
        console.print(
            f"ROC AUC over Kafka {ours:.6f}; River's progressive_val_score on the same stream "
            f"{oracle:.6f}: {verdict}"
        )
        return 0 if verdict == "equal" else 1
    console.print(f"stopped early after {summary.events_learned} events")
    return 0
