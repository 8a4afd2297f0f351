"""``streamtrain`` entry point.

Each sub-command lives in its own module exposing ``register(subparsers)``; the parser it adds
sets ``handler`` to a function ``(args) -> int``. Expected failures (:class:`StreamtrainError`)
and misuse print one line to stderr and exit non-zero, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

from streamtrain.errors import StreamtrainError
from streamtrain.stopping import catch_early_signals, early_signals, release_early_signals


class OneLineArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are a single line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from streamtrain.cli import broker, catalog, demo, models, produce, registry, serve, train

    parser = OneLineArgumentParser(
        prog="streamtrain",
        description="Train River models online on Apache Kafka streams.",
    )
    parser.add_argument("--version", action="version", version=_version())
    subparsers = parser.add_subparsers(
        title="commands", metavar="COMMAND", parser_class=OneLineArgumentParser
    )
    for module in (demo, produce, train, models, serve, broker, registry, catalog):
        module.register(subparsers)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"streamtrain {version('streamtrain')}"
    except PackageNotFoundError:  # running from a source tree without install
        return "streamtrain (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    catch_early_signals()  # before the slow imports: see streamtrain.stopping
    try:
        return _main(argv)
    finally:
        release_early_signals()


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    early = early_signals()
    if early and not getattr(args, "replays_signals", False):
        # A command interrupted while starting that does not replay the signal (it would
        # start only to stop): behave as the default handlers would.
        return 130 if signal.SIGINT in early else 143
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
    except Exception as err:  # a bug, or an error nobody expected: one line, never a traceback
        logging.getLogger("streamtrain").debug("unexpected error", exc_info=True)
        print(
            f"streamtrain: internal error: {type(err).__name__}: {err} "
            "(--verbose logs the traceback)",
            file=sys.stderr,
        )
        return 1


def entry() -> NoReturn:
    """The ``streamtrain`` executable: :func:`main`, then exit with its code."""
    code = main()
    from streamtrain.kafka.transactions import abandoned_producers

    if abandoned_producers():
        # A producer given up on while a transactional call was stuck could hold up the
        # interpreter's teardown (destroying it waits for that call): leave at once, with
        # everything written and flushed; the trainer has already closed what it owns.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)


if __name__ == "__main__":
    entry()
