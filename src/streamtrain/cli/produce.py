"""``streamtrain produce``: replay a dataset or a file into a topic.

``--labels-topic T`` splits each event i into a feature event ``{"id", "x"}`` on the topic and
a label event ``{"id", "y"}`` on T, both keyed by the id (``--id-prefix`` + i) and stamped with
event time: feature i at start + i * (1000 / rate, or 1 without a rate) ms, its label
``--label-delay`` later (a duration, ``feature:NAME`` in seconds, or ``random:MIN..MAX``
seeded by ``--seed``); ``--label-drop P`` leaves each label out with probability P. Records go
out in event-time order. :mod:`streamtrain.produce.labels` has the exact rules. With
``--format avro|protobuf|jsonschema`` they are flat records instead: ``id`` and the features on
the topic, ``id`` and the ``--target`` field on T, each topic with its own schema (train them
with ``--target FIELD --id-field id --labels-topic T``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamtrain.cli.common import (
    add_format_options,
    add_kafka_options,
    format_settings_from_args,
    kafka_settings_from_args,
    non_negative_float,
    non_negative_int,
    positive_int,
    timestamp_ms,
)
from streamtrain.config import resolve
from streamtrain.errors import ConfigError, StreamtrainError
from streamtrain.formats.settings import JSON, REGISTRY_FORMATS, FormatSettings
from streamtrain.stopping import stop_on_signals

if TYPE_CHECKING:
    from streamtrain.data.sources import Source
    from streamtrain.produce import ProduceReport, ProduceSettings

DEFAULT_TARGET_FIELD = "y"

# SIGINT is the user interrupting a run: non-zero, as shells expect, so `produce && train`
# does not go on. SIGTERM is a supervisor asking for a clean shutdown, which this is.
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 0}

_EPILOG = """\
Settings not given as flags come from STREAMTRAIN_* environment variables, then the [produce]
table of the config file. SIGINT or SIGTERM stops the replay: what was sent is flushed and
counted, then the command exits with 130 after SIGINT and 0 after SIGTERM (1 if any event
failed to be delivered).
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "produce",
        help="replay a dataset or a file into a topic as {x, y} JSON events",
        description="Replay a River dataset or a JSONL/CSV file into a Kafka topic, one "
        '{"x": {...}, "y": ...} JSON event per message, with an idempotent producer.',
        epilog=_EPILOG,
    )
    parser.add_argument("--topic", help="topic to write to [default: ml_training_data]")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--dataset",
        metavar="SPEC",
        help="River dataset, e.g. Phishing or 'synth.Agrawal(seed=42)' [default: Phishing]",
    )
    source.add_argument(
        "--file",
        type=Path,
        metavar="PATH",
        help="a .jsonl/.ndjson, .csv or .avro (container) file to replay",
    )
    parser.add_argument(
        "--target",
        metavar="COLUMN",
        help=(
            "label column of --file (not needed for JSONL lines that are {x, y} events); with "
            f"--format avro|protobuf|jsonschema, the record's target field [default: "
            f"{DEFAULT_TARGET_FIELD}]"
        ),
    )
    parser.add_argument(
        "--limit", type=non_negative_int, metavar="N", help="replay at most N events"
    )
    parser.add_argument(
        "--rate",
        type=non_negative_float,
        metavar="EPS",
        help="events per second, 0 for as fast as possible [default: 0]",
    )
    parser.add_argument(
        "--key", metavar="FEATURE", help="use this feature's value as the message key"
    )
    parser.add_argument(
        "--partitions",
        type=positive_int,
        metavar="N",
        help="partitions when the topic is created [default: 1]",
    )
    parser.add_argument(
        "--replication-factor",
        type=int,
        metavar="N",
        help="replication factor when the topic is created [default: the broker's]",
    )
    _add_label_options(parser)
    add_format_options(parser, (JSON, *REGISTRY_FORMATS), reader=False)
    add_kafka_options(parser)
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar, only the final line"
    )
    parser.set_defaults(handler=run)


def _add_label_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "labels that arrive later",
        "Split each event into a feature event and a label event written later in event time.",
    )
    group.add_argument(
        "--labels-topic",
        metavar="TOPIC",
        help='write {"id", "x"} to --topic and {"id", "y"} here (may be the same topic)',
    )
    group.add_argument(
        "--label-delay",
        metavar="SPEC",
        help="event time from a feature to its label: a duration (30s, 250ms, 2m, 0), "
        "feature:NAME (its value, in seconds) or random:MIN..MAX [default: 0]",
    )
    group.add_argument(
        "--label-drop",
        type=non_negative_float,
        metavar="P",
        help="leave each label out with probability P, 0 <= P < 1 [default: 0]",
    )
    group.add_argument(
        "--seed",
        type=non_negative_int,
        metavar="N",
        help="seed of the random delays and drops [default: 0]",
    )
    group.add_argument(
        "--id-prefix",
        metavar="TEXT",
        help="event ids are this prefix followed by the event's index from 0 [default: none]",
    )
    group.add_argument(
        "--start-time",
        type=timestamp_ms,
        metavar="WHEN",
        help="event time of the first event (ISO-8601, or ms since the epoch) [default: now]",
    )


def settings_from_args(args: argparse.Namespace, file: dict[str, Any]) -> ProduceSettings:
    """Flags over ``STREAMTRAIN_*`` env vars over the config file's ``[produce]`` table."""
    from streamtrain.produce import ProduceSettings

    if args.target is not None and args.dataset is not None and args.format in (None, JSON):
        raise ConfigError("--target applies to --file only; datasets carry their labels")
    names = [f.name for f in dataclasses.fields(ProduceSettings)]
    settings = resolve(
        ProduceSettings, {n: getattr(args, n) for n in names}, file=file, section="produce"
    )
    if args.dataset is not None:
        # The flag beats a file (and its target) set in the environment or the config file.
        settings = dataclasses.replace(settings, file=None, target=None)
    return settings


def run(args: argparse.Namespace) -> int:
    from streamtrain.data.sources import open_source
    from streamtrain.produce import Replayer

    kafka, file = kafka_settings_from_args(args)
    settings = settings_from_args(args, file)
    formats = format_settings_from_args(args, file, "produce")
    # Opened before connecting, so a bad dataset or file fails fast without a broker.
    source = open_source(
        dataset=None if settings.file is not None else settings.dataset,
        file=settings.file,
        # With --format, --target may name a dataset's target field: not a column to read.
        target=settings.target if settings.file is not None else None,
        limit=settings.limit,
    )
    encoders: dict[str, Any] = {}
    if formats.format != JSON:
        target = args.target if args.target is not None else settings.target
        encoders = _registry_encoders(formats, settings, source, target or DEFAULT_TARGET_FIELD)
    with _progress(source, enabled=not args.quiet) as on_progress:
        replayer = Replayer(kafka, settings, on_progress=on_progress, **encoders)
        # A second SIGINT interrupts, for when the final flush itself hangs.
        with stop_on_signals(lambda _sig: replayer.stop(), second_sigint_interrupts=True) as caught:
            report = replayer.run(source)
    print(_summary(report, caught), flush=True)
    first = report.errors[0] if report.errors else "unknown error"
    if report.failed:
        raise StreamtrainError(
            f"{report.failed} of {report.sent} events were not delivered to {report.topic} "
            f"(first error: {first})"
        )
    if report.labels is not None and report.labels.failed:
        labels = report.labels
        raise StreamtrainError(
            f"{labels.failed} of {labels.sent} labels were not delivered to {labels.topic} "
            f"(first error: {first})"
        )
    return EXIT_CODES[caught[0]] if caught else 0


def _registry_encoders(
    formats: FormatSettings, settings: ProduceSettings, source: Source, target: str
) -> dict[str, Any]:
    """The Replayer's registry wire-format encoders (schemas registered first): of whole
    events, or with ``--labels-topic`` of feature records (``id`` and the features) and label
    records (``id`` and the target)."""
    from streamtrain.formats.encoding import event_encoder, split_encoders

    if settings.labels_topic is None:
        return {"encode": event_encoder(formats, settings.topic, source, target)}
    if settings.labels_topic == settings.topic:
        raise ConfigError(
            f"--format {formats.format} with --labels-topic needs a labels topic of its own: "
            "feature and label records have different schemas"
        )
    topics = (settings.topic, settings.labels_topic)
    return {"encode_split": split_encoders(formats, topics, source, target)}


def _summary(report: ProduceReport, caught: list[signal.Signals]) -> str:
    line = (
        f"produced {report.delivered} events to {report.topic} in "
        f"{report.elapsed_seconds:.1f}s ({report.events_per_second:.0f} ev/s)"
    )
    labels = report.labels
    if labels is not None:
        line += f"; {labels.delivered} labels to {labels.topic}, {labels.dropped} dropped"
        if labels.unlabelled:
            line += f", {labels.unlabelled} events without a label"
        if labels.pending:
            line += f", {labels.pending} not yet due when stopped"
    return f"stopped by {caught[0].name}: {line}" if caught else line


@contextlib.contextmanager
def _progress(source: Source, *, enabled: bool) -> Iterator[Callable[[int], None] | None]:
    """A transient progress display on stderr when it is a terminal; else no callback."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    total = source.size  # may read a whole file to count it: only when a bar shows it
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        SpinnerColumn,
        Task,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text("" if speed is None else f"{speed:,.0f} ev/s", style="progress.data.speed")

    columns: list[ProgressColumn]
    if total is not None:
        columns = [
            TextColumn("producing"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            TimeRemainingColumn(),
        ]
    else:
        columns = [
            SpinnerColumn(),
            TextColumn("producing {task.completed:,.0f} events"),
            RateColumn(),
            TimeElapsedColumn(),
        ]
    progress = Progress(*columns, console=Console(stderr=True), transient=True)
    task_id = progress.add_task("produce", total=total)

    def on_progress(sent: int) -> None:
        progress.update(task_id, completed=sent)

    with progress:
        yield on_progress
