"""``streamtrain demo``: the seed article's system end to end on a local Kafka, served and watched.

Starts the local broker if none answers, serves the model (predictions, dashboard) from its
checkpoints, replays Phishing into a fresh topic at a visible rate in a background thread,
trains a named model on it with the live view (``--format avro|protobuf|jsonschema``: as flat
records through a local schema registry), then checks the final ROC AUC against River's
own ``progressive_val_score`` on the same stream. On a terminal the dashboard stays up until
Ctrl-C; otherwise (``--serve-for``) for a bounded time.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from streamtrain.errors import ConfigError
from streamtrain.formats.settings import JSON, REGISTRY_FORMATS

if TYPE_CHECKING:
    from rich.console import Console

# The label's field in the flat records of a registry format.
TARGET = "is_phishing"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole system on a local Kafka: broker, producer, trainer, dashboard",
        description=__doc__,
    )
    parser.add_argument(
        "--rate", type=float, default=150.0, help="events/s replayed [default: 150]"
    )
    parser.add_argument("--port", type=int, default=9092, help="local broker port [default: 9092]")
    parser.add_argument(
        "--http-port", type=int, default=8000, help="dashboard and API port [default: 8000]"
    )
    parser.add_argument(
        "--serve-for",
        type=float,
        metavar="SECONDS",
        help="keep the dashboard up this long after training [default: until Ctrl-C on a "
        "terminal, else 0]",
    )
    parser.add_argument(
        "--keep-broker",
        action="store_true",
        help="leave a broker (and schema registry) this demo started running afterwards",
    )
    parser.add_argument(
        "--format",
        choices=(JSON, *REGISTRY_FORMATS),
        default=JSON,
        help="record format: the seed's JSON, or flat records in a registry format through a "
        "local schema registry (started if none answers) [default: json]",
    )
    parser.set_defaults(handler=run, replays_signals=True)


def run(args: argparse.Namespace) -> int:
    # Imported here, not at the top: every command's parser is built at each start, and these
    # (the server, the broker, the trainer) would cost every other command a second.
    from rich.console import Console

    from streamtrain.broker import LocalBroker
    from streamtrain.config import KafkaSettings
    from streamtrain.formats.encoding import event_encoder
    from streamtrain.formats.settings import FormatSettings
    from streamtrain.kafka.clients import ensure_topic
    from streamtrain.produce import ProduceSettings, Replayer
    from streamtrain.schema_registry import LocalSchemaRegistry
    from streamtrain.serving.app import BackgroundServer, create_kafka_app
    from streamtrain.state.keys import load_signing_key
    from streamtrain.state.store import ensure_checkpoint_topic
    from streamtrain.stopping import StopFlag, stop_on_signals
    from streamtrain.train.settings import DEFAULT_MODEL, TrainSettings
    from streamtrain.train.telemetry import DEFAULT_METRICS_TOPIC, MetricsPublisher
    from streamtrain.train.trainer import Trainer
    from streamtrain.train.view import choose_view

    if args.rate < 0:
        raise ConfigError("--rate must be >= 0")
    console = Console(stderr=True)
    broker = LocalBroker(port=args.port)
    started_broker = False
    if not broker.status().answering:
        console.print(f"starting a local Kafka at {broker.bootstrap} …")
        started_broker = broker.up()
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    topic, name = f"demo.phishing.{stamp}", f"demo-{stamp}"
    stop = StopFlag()  # set from the signal handler: see streamtrain.stopping
    server: BackgroundServer | None = None
    registry: LocalSchemaRegistry | None = None
    formats = FormatSettings()
    encode = None
    if args.format != JSON:
        local = LocalSchemaRegistry()
        if not local.status().answering:  # else running already, and not ours to stop
            console.print("starting a local schema registry …")
            local.up()
            registry = local
        url = local.url
        formats = FormatSettings(format=args.format, schema_registry=url)
        from river import datasets

        encode = event_encoder(formats, topic, datasets.Phishing(), TARGET)
        console.print(f"Phishing as flat {args.format} records (target {TARGET!r}) via {url}")
    replay = ProduceSettings(topic=topic, dataset="Phishing", rate=args.rate)
    replayer = Replayer(kafka, replay) if encode is None else Replayer(kafka, replay, encode=encode)
    trainer: Trainer | None = None

    def on_signal(sig: signal.Signals) -> None:
        stop.set()
        replayer.stop()
        if trainer is not None:
            trainer.stop(sig.name)

    with stop_on_signals(on_signal) as caught:
        producer_error: list[BaseException] = []
        thread: threading.Thread | None = None
        try:
            # Topics first: the trainer subscribes to the input, the server follows the others.
            ensure_topic(kafka, topic)
            ensure_checkpoint_topic(kafka)
            server = BackgroundServer(
                create_kafka_app(kafka, load_signing_key(), name), port=args.http_port
            ).start()
            console.print(
                f"dashboard and API of model [bold]{name}[/]: [bold cyan]{server.url}/[/]  "
                f"(POST {server.url}/predict)"
            )
            console.print(
                f"replaying Phishing into [bold]{topic}[/] at {args.rate:g} events/s; "
                f"training {DEFAULT_MODEL} on it"
            )

            def produce() -> None:
                try:
                    replayer.run()
                except BaseException as err:  # surfaced after the trainer stops
                    producer_error.append(err)

            thread = threading.Thread(target=produce, name="demo-producer", daemon=True)
            thread.start()
            view = choose_view("auto", f"streamtrain demo · {topic} → {name}")
            trainer = Trainer(
                kafka,
                TrainSettings(
                    topic=topic,
                    name=name,
                    exit_when_idle=3.0,
                    metrics=("ROCAUC", "Accuracy", "LogLoss"),
                    rolling_window=250,
                    checkpoint_interval=1.0,
                    target=None if encode is None else TARGET,
                    formats=formats,
                ),
                listeners=[view] if view else [],
            )
            trainer.listeners.append(MetricsPublisher(kafka, DEFAULT_METRICS_TOPIC))
            if caught:  # a signal came before the trainer existed
                trainer.stop(caught[0].name)
            summary = trainer.run()
            if producer_error:
                raise producer_error[0]
            code = _compare_with_river(console, summary.events_learned, summary.metrics)
            linger = args.serve_for
            if linger is None:
                linger = float("inf") if sys.stdin.isatty() and sys.stderr.isatty() else 0.0
            if linger > 0 and not stop.is_set():
                console.print(
                    f"the dashboard stays at {server.url}/ "
                    + ("until Ctrl-C" if linger == float("inf") else f"for {linger:g}s")
                )
                stop.wait(None if linger == float("inf") else linger)
            return code
        finally:
            replayer.stop()
            if thread is not None:
                thread.join(timeout=30)
            if server is not None:
                server.stop()
            if started_broker and not args.keep_broker:
                broker.down()
                console.print("stopped the local Kafka this demo started")
            if registry is not None and not args.keep_broker:
                registry.down()
                console.print("stopped the schema registry this demo started")


def _compare_with_river(console: Console, learned: int, values: Mapping[str, float]) -> int:
    from river import datasets, evaluate, linear_model, metrics, preprocessing

    if learned != 1250:
        console.print(f"stopped early after {learned} events")
        return 0
    oracle = evaluate.progressive_val_score(
        datasets.Phishing(),
        preprocessing.StandardScaler() | linear_model.LogisticRegression(),
        metrics.ROCAUC(),
    ).get()
    ours = values["ROCAUC"]
    verdict = "equal" if abs(ours - oracle) <= 1e-12 else "DIFFERENT"
    console.print(
        f"ROC AUC over Kafka {ours:.6f}; River's progressive_val_score on the same stream "
        f"{oracle:.6f}: {verdict}"
    )
    return 0 if verdict == "equal" else 1
