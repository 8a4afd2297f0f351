"""Options shared by the commands that talk to Kafka, and the logging they imply."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import logging
import math
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

from streamtrain.config import KafkaSettings, load_config_file, resolve_kafka
from streamtrain.formats.settings import FormatSettings, resolve_format_settings

__all__ = [
    "add_format_options",
    "add_kafka_options",
    "configure_logging",
    "format_settings_from_args",
    "kafka_settings_from_args",
    "non_negative_float",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "timestamp_ms",
]

LIBRDKAFKA_LOGGER_NAME = "streamtrain.librdkafka"  # the logger kafka.clients routes it to


def lazy_handler(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """A command handler that imports ``module`` only when its command runs.

    Every start builds every command's parser, so a parser module must stay light: the
    handlers' imports (the server, River, the broker tools) would otherwise cost each command
    the others' start-up, a trainer process about 0.7 s.
    """

    def handler(args: argparse.Namespace) -> int:
        return int(getattr(importlib.import_module(module), name)(args))

    return handler


def add_kafka_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--bootstrap-servers``, ``--connect-timeout``, ``-X``, ``--config``, ``--verbose``.

    Their destinations are ``bootstrap_servers``, ``connect_timeout``, ``raw_options``,
    ``config`` and ``verbose``, as :func:`kafka_settings_from_args` expects.
    """
    group = parser.add_argument_group("Kafka connection")
    group.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT",
        help="broker address(es), comma-separated [default: localhost:9092]",
    )
    group.add_argument(
        "--connect-timeout",
        type=positive_float,
        metavar="SECONDS",
        help="give up when no broker answers within this time [default: 10]",
    )
    group.add_argument(
        "-X",
        dest="raw_options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="raw librdkafka option (security.protocol=SASL_SSL, ...), repeatable",
    )
    group.add_argument(
        "--config",
        metavar="FILE",
        help="TOML config file [default: $STREAMTRAIN_CONFIG]",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log progress details and librdkafka's own messages to stderr",
    )


def add_format_options(
    parser: argparse.ArgumentParser, formats: tuple[str, ...], *, reader: bool = True
) -> None:
    """Add ``--format``, ``--schema-registry``, ``-S`` and (for a ``reader``)
    ``--registry-wait``, as :func:`format_settings_from_args` expects."""
    group = parser.add_argument_group("record format")
    group.add_argument(
        "--format",
        choices=formats,
        help=(
            "how record values are encoded: avro, protobuf and jsonschema in the schema-registry "
            "wire format"
            + ("; auto tells the wire format (magic byte 0) from JSON" if "auto" in formats else "")
            + " [default: json]"
        ),
    )
    group.add_argument(
        "--schema-registry",
        metavar="URL",
        help="Confluent-compatible schema registry API root (streamtrain registry up runs one)",
    )
    if reader:
        group.add_argument(
            "--registry-wait",
            type=positive_float,
            metavar="SECONDS",
            help="stop when the registry does not answer within this time [default: 30]",
        )
    group.add_argument(
        "-S",
        dest="registry_options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="raw schema-registry client option (basic.auth.user.info=..., ssl.ca.location=...)",
    )


def format_settings_from_args(
    args: argparse.Namespace, file: dict[str, Any], section: str
) -> FormatSettings:
    """The record-format settings from the flags :func:`add_format_options` added."""
    return resolve_format_settings(
        {
            "format": args.format,
            "schema_registry": args.schema_registry,
            "registry_wait": getattr(args, "registry_wait", None),
        },
        file=file,
        section=section,
        raw_flags=args.registry_options or (),
    )


def kafka_settings_from_args(args: argparse.Namespace) -> tuple[KafkaSettings, dict[str, Any]]:
    """Configure logging from ``--verbose``, then return the Kafka settings and the config file.

    The config file is ``--config`` or ``$STREAMTRAIN_CONFIG``; ``{}`` when neither is set.
    """
    configure_logging(verbose=bool(getattr(args, "verbose", False)))
    path = args.config or os.environ.get("STREAMTRAIN_CONFIG") or None
    file = load_config_file(path)
    kafka = resolve_kafka(
        {"bootstrap_servers": args.bootstrap_servers, "connect_timeout": args.connect_timeout},
        file=file,
        raw_flags=args.raw_options or (),
    )
    return kafka, file


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is at the time, so replacing it later still works."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


_PLAIN = logging.Formatter("streamtrain: %(message)s")
_DETAILED = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")


def configure_logging(*, verbose: bool) -> None:
    """``streamtrain`` loggers to stderr: warnings only, or everything when ``verbose``.

    librdkafka's own messages are dropped unless ``verbose``: it logs every failed connection
    attempt, which buries the one-line error a command prints.
    """
    package = logging.getLogger("streamtrain")
    handler = next((h for h in package.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        package.addHandler(handler)
    handler.setFormatter(_DETAILED if verbose else _PLAIN)
    handler.setLevel(logging.DEBUG if verbose else logging.WARNING)
    # Filtering happens in the handler; the logger level stays unset unless verbose, so
    # embedding code (and pytest's caplog) keeps control of what is recorded.
    package.setLevel(logging.DEBUG if verbose else logging.NOTSET)

    librdkafka = logging.getLogger(LIBRDKAFKA_LOGGER_NAME)
    librdkafka.propagate = verbose
    if not any(isinstance(h, logging.NullHandler) for h in librdkafka.handlers):
        librdkafka.addHandler(logging.NullHandler())


def _number(text: str, kind: type[int] | type[float]) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    value = int(_number(text, int))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(_number(text, int))
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def timestamp_ms(text: str) -> int:
    """Milliseconds since the epoch from ISO-8601 (UTC unless it says otherwise) or digits."""
    if text.isdigit():
        return int(text)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither ISO-8601 nor milliseconds since the epoch"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)
