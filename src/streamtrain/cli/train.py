"""``streamtrain train``: consume a topic and learn from it, event by event."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from streamtrain.cli.common import (
    add_format_options,
    add_kafka_options,
    format_settings_from_args,
    kafka_settings_from_args,
    timestamp_ms,
)
from streamtrain.config import resolve
from streamtrain.formats.settings import FORMATS
from streamtrain.stopping import stop_on_signals
from streamtrain.train.defaults import ACTIONS, DEFAULT_DETECTOR, DEFAULT_MODEL, DEFAULT_TOPIC

if TYPE_CHECKING:
    from streamtrain.train.settings import TrainSettings


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train",
        help="learn a model from a topic, predicting each event before learning it",
        description="Consume a topic of {x, y} JSON events (or flat records, with --target); "
        "for each, predict then learn (progressive validation). Records that cannot be learned "
        "go to a dead-letter topic.",
    )
    parser.add_argument("--topic", help=f"topic to learn from [default: {DEFAULT_TOPIC}]")
    parser.add_argument(
        "--model", help=f"River model spec [default: {DEFAULT_MODEL!r}]", metavar="SPEC"
    )
    parser.add_argument(
        "--challenger",
        dest="challengers",
        action="append",
        metavar="[LABEL=]SPEC",
        help="another model learning every event beside --model, with its own metrics; "
        "repeatable, labelled c1, c2... unless LABEL= is given (the served model stays --model)",
    )
    gate = parser.add_argument_group(
        "promotion gate (with --challenger; the rule: README, `streamtrain models`)"
    )
    gate.add_argument(
        "--promote",
        choices=("auto", "manual"),
        help="auto: the gate promotes a challenger that wins; manual: only "
        "`streamtrain models promote NAME LABEL` does [default: manual]",
    )
    gate.add_argument(
        "--promote-on", metavar="METRIC", help="the metric compared [default: the first --metric]"
    )
    gate.add_argument(
        "--promote-window",
        type=int,
        metavar="N",
        help="compare the metric over each model's last N events [default: 1000]",
    )
    gate.add_argument(
        "--promote-margin",
        type=float,
        metavar="X",
        help="a win is a lead of at least X (and more than 0) [default: 0]",
    )
    gate.add_argument(
        "--promote-after",
        type=int,
        metavar="K",
        help="promote after K wins in a row [default: 3]",
    )
    gate.add_argument(
        "--promote-min-events",
        type=int,
        metavar="M",
        help="a challenger wins only once it has learned M events [default: the window]",
    )
    gate.add_argument(
        "--promote-every",
        type=int,
        metavar="E",
        help="evaluate after every E-th labelled event [default: window / 10]",
    )
    gate.add_argument(
        "--events-topic",
        metavar="TOPIC",
        help="drift detections, promotion records and requests [default: streamtrain.events]",
    )
    parser.add_argument(
        "--drift",
        metavar="SPEC",
        help="drift detector fed each model's per-event error (0/1 for classifiers, absolute "
        "for regressors): a river.drift spec (streamtrain list detectors), or none "
        f"[default: {DEFAULT_DETECTOR}]",
    )
    parser.add_argument(
        "--on-drift",
        choices=ACTIONS,
        help="what a detection does besides its record on streamtrain.events, a counter and "
        "a log line: alert, reset-challengers (a champion's drift restarts every "
        "challenger from its spec), or promote-best (--promote-window events after a "
        "champion's drift, the model best on those events becomes champion) [default: alert]",
    )
    parser.add_argument(
        "--metric",
        dest="metrics",
        action="append",
        metavar="SPEC",
        help="progressive metric, repeatable [default: ROCAUC, or MAE for regressors]",
    )
    parser.add_argument(
        "--name",
        help="durable model name: exactly-once checkpoints, resumed on restart "
        "[default: none, the model lives in memory only]",
    )
    parser.add_argument(
        "--partitioned",
        action="store_const",
        const=True,
        help="one replica per input partition, shared out over every process with this "
        "--name (needs --name)",
    )
    parser.add_argument(
        "--group", help="consumer group [default: streamtrain.NAME, or a fresh one per run]"
    )
    parser.add_argument(
        "--dead-letter-topic", metavar="TOPIC", help="where bad records go [default: TOPIC.dlq]"
    )
    parser.add_argument(
        "--predictions-topic",
        metavar="TOPIC",
        help='where predictions of unlabelled events (no "y") go [default: TOPIC.predictions]',
    )
    start = parser.add_mutually_exclusive_group()
    start.add_argument(
        "--from-beginning",
        dest="start",
        action="store_const",
        const="earliest",
        help="start at the oldest record (the default)",
    )
    start.add_argument(
        "--from-end", dest="start", action="store_const", const="latest", help="only new records"
    )
    start.add_argument(
        "--from-timestamp",
        metavar="WHEN",
        type=timestamp_ms,
        help="start at records from this time (ISO-8601, or ms since the epoch)",
    )
    parser.add_argument(
        "--exit-when-idle",
        type=float,
        metavar="SECONDS",
        help="stop once caught up and no record arrived for this long",
    )
    parser.add_argument("--max-events", type=int, metavar="N", help="stop after learning N events")
    parser.add_argument("--summary", metavar="PATH", help="write a JSON summary here at exit")
    parser.add_argument("--batch-size", type=int, metavar="N", help="records per consume call")
    parser.add_argument(
        "--max-record-bytes",
        type=int,
        metavar="N",
        help="dead-letter larger records as record-too-large [default: 1048576]",
    )
    parser.add_argument(
        "--max-features",
        type=int,
        metavar="N",
        help="dead-letter events with more features as too-many-features [default: 10000]",
    )
    parser.add_argument(
        "--rolling-window",
        type=int,
        metavar="N",
        help="also track each metric over the last N events [default: 0, off]",
    )
    parser.add_argument(
        "--no-fast-path",
        dest="fast_path",
        action="store_const",
        const=False,
        help="learn with River event by event even when the compiled batch path applies",
    )
    parser.add_argument(
        "--metrics-topic",
        metavar="TOPIC",
        help="publish progress records here; '' turns it off [default: streamtrain.metrics]",
    )
    durable = parser.add_argument_group("durable state (with --name)")
    durable.add_argument(
        "--checkpoint-interval",
        type=float,
        metavar="SECONDS",
        help="checkpoint at least this often [default: 5]",
    )
    durable.add_argument(
        "--checkpoint-every",
        type=int,
        metavar="N",
        help="checkpoint after N learned events at the latest [default: 100000]",
    )
    durable.add_argument(
        "--commit-in-background",
        action=argparse.BooleanOptionalAction,
        help="keep learning while a checkpoint commits (no: wait for each commit) [default: yes]",
    )
    durable.add_argument(
        "--transaction-timeout",
        type=float,
        metavar="SECONDS",
        help="transaction.timeout.ms of the checkpoint transactions [default: 20]",
    )
    durable.add_argument(
        "--checkpoint-topic",
        metavar="TOPIC",
        help="compacted topic holding checkpoints [default: streamtrain.checkpoints]",
    )
    durable.add_argument(
        "--keep-versions-for",
        metavar="DURATION",
        help="keep every checkpoint version this long in <checkpoint-topic>.history, for "
        "`streamtrain models history/rollback` and `serve --pin`; set when that topic is "
        "created [default: 168h]",
    )
    durable.add_argument(
        "--keep-versions",
        type=int,
        metavar="N",
        help="also keep only each model's newest N versions for history, rollback and --pin "
        "(older records stay on the topic until --keep-versions-for drops them) "
        "[default: no count]",
    )
    durable.add_argument(
        "--session-timeout",
        type=float,
        metavar="SECONDS",
        help="with --partitioned: how soon a dead process's tasks move [default: 10]",
    )
    durable.add_argument(
        "--secret-file",
        metavar="PATH",
        help="key file signing checkpoints [default: $STREAMTRAIN_SECRET, else "
        "~/.config/streamtrain/secret.key, created 0600]",
    )
    joined = parser.add_argument_group("labels that arrive later (with --labels-topic)")
    joined.add_argument(
        "--labels-topic",
        metavar="TOPIC",
        help='join {"id", "y"} label events from TOPIC (may be --topic) to the {"id", "x"} '
        "feature events they complete; the metrics score the prediction made on arrival",
    )
    joined.add_argument(
        "--id-from",
        choices=("value", "key"),
        help='the event id: the "id" field, or the record key [default: value]',
    )
    joined.add_argument(
        "--label-ttl",
        metavar="DURATION",
        help="event time a prediction waits for its label (e.g. 30m); then it is "
        "dead-lettered label-expired [default: for ever, within --max-pending]",
    )
    joined.add_argument(
        "--default-label",
        metavar="JSON",
        help="learn an expired prediction with this label instead (e.g. false: no click "
        "within the TTL is a negative)",
    )
    joined.add_argument(
        "--label-grace",
        metavar="DURATION",
        help="event time a label waits for its features; then unmatched-label [default: 0]",
    )
    joined.add_argument(
        "--max-pending",
        type=int,
        metavar="N",
        help="predictions (and labels) kept waiting at most; the oldest expire early "
        "[default: 1000000]",
    )
    joined.add_argument(
        "--max-wait",
        metavar="DURATION",
        help="how long a caught-up input may hold back the event-time merge [default: 0]",
    )
    flat = parser.add_argument_group(
        "flat records (one object per event, its label in a field, instead of {x, y})"
    )
    flat.add_argument(
        "--target",
        metavar="FIELD",
        help="the label's field (a.b when nested); turns flat records on. A record without "
        "it is unlabelled: predicted, not learned",
    )
    flat.add_argument(
        "--id-field",
        metavar="FIELD",
        help="the event id's field: never a feature; with --labels-topic, the join key",
    )
    flat.add_argument(
        "--features",
        action="append",
        metavar="NAMES",
        help="features: names or globs (device.*), comma-separated, repeatable "
        "[default: every field but the target and id]",
    )
    flat.add_argument(
        "--drop",
        action="append",
        metavar="NAMES",
        help="fields never taken as features: names or globs, comma-separated, repeatable",
    )
    parser.add_argument(
        "--view",
        choices=("auto", "live", "log", "none"),
        default="auto",
        help="live panel (terminal), log lines, or nothing [default: auto]",
    )
    add_format_options(parser, FORMATS)
    add_kafka_options(parser)
    parser.set_defaults(handler=run, replays_signals=True)


def settings_from_args(args: argparse.Namespace, file: dict[str, Any]) -> TrainSettings:
    from streamtrain.train.settings import TrainSettings

    flags = {
        "topic": args.topic,
        "model": args.model,
        "metrics": tuple(args.metrics) if args.metrics else None,
        "challengers": tuple(args.challengers) if args.challengers else None,
        "drift": args.drift,
        "on_drift": args.on_drift,
        "promote": args.promote,
        "promote_on": args.promote_on,
        "promote_window": args.promote_window,
        "promote_margin": args.promote_margin,
        "promote_after": args.promote_after,
        "promote_min_events": args.promote_min_events,
        "promote_every": args.promote_every,
        "events_topic": args.events_topic,
        "group": args.group,
        "dead_letter_topic": args.dead_letter_topic,
        "predictions_topic": args.predictions_topic,
        "start": args.start,
        "from_timestamp": args.from_timestamp,
        "exit_when_idle": args.exit_when_idle,
        "max_events": args.max_events,
        "summary": args.summary,
        "batch_size": args.batch_size,
        "name": args.name,
        "partitioned": args.partitioned,
        "session_timeout": args.session_timeout,
        "rolling_window": args.rolling_window,
        "fast_path": args.fast_path,
        "checkpoint_interval": args.checkpoint_interval,
        "checkpoint_every": args.checkpoint_every,
        "commit_in_background": args.commit_in_background,
        "checkpoint_topic": args.checkpoint_topic,
        "keep_versions_for": args.keep_versions_for,
        "keep_versions": args.keep_versions,
        "transaction_timeout": args.transaction_timeout,
        "secret_file": args.secret_file,
        "labels_topic": args.labels_topic,
        "id_from": args.id_from,
        "label_ttl": args.label_ttl,
        "default_label": args.default_label,
        "label_grace": args.label_grace,
        "max_pending": args.max_pending,
        "max_wait": args.max_wait,
        "target": args.target,
        "id_field": args.id_field,
        "features": _names(args.features),
        "drop": _names(args.drop),
        "max_record_bytes": args.max_record_bytes,
        "max_features": args.max_features,
    }
    formats = format_settings_from_args(args, file, "train")
    return resolve(TrainSettings, flags, file=file, section="train", formats=formats)


def _names(values: list[str] | None) -> tuple[str, ...] | None:
    """Repeated, comma-separated names as one tuple (None: not given).

    >>> _names(["a,b", "device.*"])
    ('a', 'b', 'device.*')
    """
    if not values:
        return None
    return tuple(n.strip() for v in values for n in v.split(",") if n.strip())


def run(args: argparse.Namespace) -> int:
    # Imported here: the parser above is built at every start of every command.
    from streamtrain.train.telemetry import DEFAULT_METRICS_TOPIC, MetricsPublisher
    from streamtrain.train.trainer import Trainer
    from streamtrain.train.view import choose_view

    kafka, file = kafka_settings_from_args(args)
    settings = settings_from_args(args, file)
    view = choose_view(args.view, f"streamtrain · {settings.topic} → {settings.model}")
    # Built first: a bad model or metric spec is misuse, reported before any network wait.
    trainer = Trainer(kafka, settings, listeners=[view] if view else [])
    metrics_topic = DEFAULT_METRICS_TOPIC if args.metrics_topic is None else args.metrics_topic
    if metrics_topic:
        trainer.listeners.append(MetricsPublisher(kafka, metrics_topic))
    with stop_on_signals(lambda sig: trainer.stop(sig.name)):
        trainer.run()
    return 0
