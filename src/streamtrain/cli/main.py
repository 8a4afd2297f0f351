"""``streamtrain`` entry point.

Each sub-command lives in its own module exposing ``register(subparsers)``; the parser it adds
sets ``handler`` to a function ``(args) -> int``. Expected failures (:class:`StreamtrainError`)
and misuse print one line to stderr and exit non-zero, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from streamtrain.errors import StreamtrainError


class OneLineArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are a single line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from streamtrain.cli import broker, catalog, demo, models, produce, train

    parser = OneLineArgumentParser(
        prog="streamtrain",
        description="Train River models online on Apache Kafka streams.",
    )
    parser.add_argument("--version", action="version", version=_version())
    subparsers = parser.add_subparsers(
        title="commands", metavar="COMMAND", parser_class=OneLineArgumentParser
    )
    for module in (demo, produce, train, models, broker, catalog):
        module.register(subparsers)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"streamtrain {version('streamtrain')}"
    except PackageNotFoundError:  # running from a source tree without install
        return "streamtrain (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_usage(sys.stderr)
        print("streamtrain: error: a command is required (see --help)", file=sys.stderr)
        return 2
    try:
        return int(handler(args))
    except StreamtrainError as err:
        print(f"streamtrain: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("streamtrain: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
