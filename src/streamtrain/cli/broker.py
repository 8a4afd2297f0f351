"""``streamtrain broker up|down|status|fetch``: a local Kafka for development and tests."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from streamtrain.broker import KAFKA_VERSION, LocalBroker, ensure_kafka_jars
from streamtrain.broker.local import DEFAULT_HOST, DEFAULT_PORT


def register(subparsers: Any) -> None:
    """Add the ``broker`` command and its actions to the top-level ``subparsers``."""
    broker_parser = subparsers.add_parser(
        "broker",
        help="run a local Apache Kafka broker (no Docker needed)",
        description=(
            f"Run a single-node Apache Kafka {KAFKA_VERSION} (KRaft) from the official jars. "
            "Needs Java 17+; the first run fetches the jars with Maven."
        ),
    )
    actions = broker_parser.add_subparsers(
        title="actions",
        metavar="ACTION",
        dest="broker_action",
        required=True,
        parser_class=type(broker_parser),
    )

    up = actions.add_parser("up", help="start the broker and wait until it answers")
    _add_location_options(up)
    up.add_argument(
        "--wait",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for the broker to answer (default: 60)",
    )
    up.add_argument("--heap", default="512m", help="JVM heap size (default: 512m)")
    up.set_defaults(handler=_up)

    down = actions.add_parser("down", help="stop the broker")
    _add_location_options(down)
    down.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="graceful shutdown time before SIGKILL (default: 30)",
    )
    down.set_defaults(handler=_down)

    status = actions.add_parser(
        "status", help="show whether the broker runs and answers (exit 0 only if it answers)"
    )
    _add_location_options(status)
    status.set_defaults(handler=_status)

    fetch = actions.add_parser(
        "fetch", help=f"only download the Kafka {KAFKA_VERSION} jars (needs mvn)"
    )
    fetch.set_defaults(handler=_fetch)


def _add_location_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=(
            "broker state directory (default: $STREAMTRAIN_BROKER_DIR or "
            "~/.local/share/streamtrain/broker)"
        ),
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"host to listen on and advertise (default: {DEFAULT_HOST})",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"client port; the controller uses the next one (default: {DEFAULT_PORT})",
    )


def _broker(args: argparse.Namespace) -> LocalBroker:
    return LocalBroker(
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        heap=getattr(args, "heap", "512m"),
    )


def _up(args: argparse.Namespace) -> int:
    broker = _broker(args)
    ensure_kafka_jars(quiet=False)  # so a first-run download is announced, not a silent wait
    if broker.up(wait_seconds=args.wait):
        print(
            f"Kafka {KAFKA_VERSION} is up at {broker.bootstrap} "
            f"(data: {broker.data_dir}, log: {broker.log_path})"
        )
    else:
        print(f"Kafka is already running at {broker.bootstrap} (pid {broker.running_pid()})")
    return 0


def _down(args: argparse.Namespace) -> int:
    broker = _broker(args)
    pid = broker.running_pid()
    if broker.down(timeout=args.timeout):
        print(f"Stopped Kafka at {broker.bootstrap} (pid {pid})")
    else:
        print(f"No broker running from {broker.data_dir}")
    return 0


def _status(args: argparse.Namespace) -> int:
    state = _broker(args).status()
    running = f"running (pid {state.pid})" if state.running else "not running"
    answering = "answering" if state.answering else "not answering"
    print(
        f"Kafka at {state.bootstrap}: {running}, {answering} "
        f"(data: {state.data_dir}, log: {state.log_path})"
    )
    return 0 if state.answering else 1


def _fetch(args: argparse.Namespace) -> int:
    libs = ensure_kafka_jars(quiet=False)
    count = sum(1 for _ in libs.glob("*.jar"))
    print(f"Kafka {KAFKA_VERSION}: {count} jars in {libs}")
    return 0
