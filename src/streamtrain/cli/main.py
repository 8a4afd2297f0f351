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


class OneLineArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are a single line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from streamtrain.cli import broker, catalog, demo, models, produce, serve, train

    parser = OneLineArgumentParser(
        prog="streamtrain",
        description="Train River models online on Apache Kafka streams.",
    )
    parser.add_argument("--version", action="version", version=_version())
    subparsers = parser.add_subparsers(
        title="commands", metavar="COMMAND", parser_class=OneLineArgumentParser
    )
    for module in (demo, produce, train, models, serve, broker, catalog):
        module.register(subparsers)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"streamtrain {version('streamtrain')}"
    except PackageNotFoundError:  # running from a source tree without install
        return "streamtrain (not installed)"


# Signals that arrived while the CLI was still starting (importing River takes a while): a
# long-running command replays them once its own handlers are in place, so a SIGTERM sent
# right after spawning still means "stop cleanly", not "die with nothing saved".
EARLY_SIGNALS: list[int] = []


def take_early_signals() -> list[int]:
    """The signals caught before the command installed its handlers (and forget them)."""
    caught = list(EARLY_SIGNALS)
    EARLY_SIGNALS.clear()
    return caught


def _remember(signum: int, _frame: object) -> None:
    EARLY_SIGNALS.append(signum)


def main(argv: Sequence[str] | None = None) -> int:
    in_main_thread = _install_early_handlers()
    try:
        return _main(argv)
    finally:
        if in_main_thread:
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) is _remember:
                    signal.signal(
                        sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
                    )


def _install_early_handlers() -> bool:
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _remember)
    except ValueError:  # not the main thread (main() called from a library thread)
        return False
    return True


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    early = take_early_signals()
    if early and not getattr(args, "replays_signals", False):
        # A short command interrupted while starting: behave as the default handlers would.
        return 130 if signal.SIGINT in early else 143
    if early:
        EARLY_SIGNALS.extend(early)
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
