"""``streamtrain registry up|down|status|fetch``: a local schema registry for development and
tests (Apicurio Registry, Confluent-compatible API), run like ``broker``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from streamtrain.schema_registry import APICURIO_VERSION, LocalSchemaRegistry, ensure_registry_jar
from streamtrain.schema_registry.local import DEFAULT_HEAP, DEFAULT_PORT


def register(subparsers: Any) -> None:
    """Add the ``registry`` command and its actions to the top-level ``subparsers``."""
    parser = subparsers.add_parser(
        "registry",
        help="run a local schema registry for Avro, Protobuf and JSON Schema topics",
        description=(
            f"Run Apicurio Registry {APICURIO_VERSION} (Confluent-compatible API, schemas kept "
            "in memory, compatibility BACKWARD) on 127.0.0.1. Needs Java 17+; the first run "
            "fetches it with Maven."
        ),
    )
    actions = parser.add_subparsers(
        title="actions",
        metavar="ACTION",
        dest="registry_action",
        required=True,
        parser_class=type(parser),
    )
    up = actions.add_parser("up", help="start the registry and wait until it answers")
    _add_location_options(up)
    up.add_argument(
        "--wait",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for it to answer (default: 60)",
    )
    up.add_argument("--heap", default=DEFAULT_HEAP, help=f"JVM heap (default: {DEFAULT_HEAP})")
    up.set_defaults(handler=_up)

    down = actions.add_parser("down", help="stop the registry (its schemas are lost)")
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
        "status", help="show whether the registry runs and answers (exit 0 only if it answers)"
    )
    _add_location_options(status)
    status.set_defaults(handler=_status)

    fetch = actions.add_parser(
        "fetch", help=f"only download Apicurio Registry {APICURIO_VERSION} (needs mvn)"
    )
    fetch.set_defaults(handler=_fetch)


def _add_location_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=(
            "registry state directory (default: $STREAMTRAIN_REGISTRY_DIR or "
            "~/.local/share/streamtrain/registry)"
        ),
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help=(
            f"port on 127.0.0.1 (default: the running registry's, else {DEFAULT_PORT}; "
            "0 picks a free one)"
        ),
    )


def _target(args: argparse.Namespace) -> LocalSchemaRegistry:
    return LocalSchemaRegistry(
        data_dir=args.data_dir, port=args.port, heap=getattr(args, "heap", DEFAULT_HEAP)
    )


def _up(args: argparse.Namespace) -> int:
    registry = _target(args)
    ensure_registry_jar(quiet=False)  # so a first-run download is announced
    if registry.up(wait_seconds=args.wait):
        print(
            f"Schema registry (Apicurio {APICURIO_VERSION}) is up at {registry.url} "
            f"(log: {registry.log_path}); pass it as --schema-registry"
        )
    else:
        pid = registry.running_pid()
        print(f"Schema registry is already running at {registry.url} (pid {pid})")
    return 0


def _down(args: argparse.Namespace) -> int:
    registry = _target(args)
    pid = registry.running_pid()
    if registry.down(timeout=args.timeout):
        print(f"Stopped the schema registry from {registry.data_dir} (pid {pid})")
    else:
        print(f"No schema registry running from {registry.data_dir}")
    return 0


def _status(args: argparse.Namespace) -> int:
    state = _target(args).status()
    running = f"running (pid {state.pid})" if state.running else "not running"
    answering = "answering" if state.answering else "not answering"
    print(f"Schema registry at {state.url}: {running}, {answering} (log: {state.log_path})")
    return 0 if state.answering else 1


def _fetch(args: argparse.Namespace) -> int:
    jar = ensure_registry_jar(quiet=False)
    print(f"Apicurio Registry {APICURIO_VERSION}: {jar}")
    return 0
