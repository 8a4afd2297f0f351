"""``streamtrain predict`` and ``streamtrain models``: use and list named models' state, and
ask a named model's trainer to promote, add or remove a challenger (``models promote NAME
LABEL``, ``models add-challenger NAME SPEC``, ``models remove-challenger NAME LABEL``): each
request is checked against the model's newest checkpoint here, written only if it fits, and
applied once by the trainer at its next checkpoint (:mod:`streamtrain.train.requests`)."""

from __future__ import annotations

import argparse
from typing import Any

from streamtrain.cli import history
from streamtrain.cli.common import add_kafka_options, lazy_handler
from streamtrain.formats import DEFAULT_CHECKPOINT_TOPIC, DEFAULT_EVENTS_TOPIC

# The handlers, with what they import (River, the model server), live in model_commands.
_COMMANDS = "streamtrain.cli.model_commands"


def _state_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint-topic",
        default=DEFAULT_CHECKPOINT_TOPIC,
        metavar="TOPIC",
        help=f"[default: {DEFAULT_CHECKPOINT_TOPIC}]",
    )
    parser.add_argument(
        "--secret-file", metavar="PATH", help="key file verifying checkpoints (see train --help)"
    )
    add_kafka_options(parser)


def register(subparsers: Any) -> None:
    predict = subparsers.add_parser(
        "predict",
        help="predict JSON lines with a named model's latest committed checkpoint",
        description='Reads one {"x": {...}} (or a bare features object) per line and writes one '
        "JSON answer per line: prediction, class probabilities, model version. A bad line "
        'gets {"error": ...} in its place, so answers stay aligned with inputs.',
    )
    predict.add_argument("--name", required=True, help="model name")
    predict.add_argument("--input", metavar="FILE", help="read from FILE [default: stdin]")
    predict.add_argument(
        "--pin",
        type=int,
        metavar="VERSION",
        help="predict with this kept version (`models history NAME`) [default: the newest]",
    )
    _state_options(predict)
    predict.set_defaults(handler=lazy_handler(_COMMANDS, "run_predict"))

    models = subparsers.add_parser(
        "models",
        help="list named models and their state (champion, promotion rule); promote a "
        "challenger; history and rollback of one",
        description="Without an action: every named model's newest checkpoint.",
    )
    models.add_argument("--json", action="store_true", help="one JSON object per model")
    _state_options(models)
    models.set_defaults(handler=lazy_handler(_COMMANDS, "run_models"))
    actions = models.add_subparsers(dest="action", metavar="ACTION")
    history.register(actions, _state_options)
    promote = actions.add_parser(
        "promote",
        help="ask the trainer of model NAME to make challenger LABEL its champion",
        description="Writes a promotion request to the events topic; the model's trainer "
        "applies it once, at its next checkpoint (in that checkpoint's transaction), and "
        "records the promotion there.",
    )
    promote.add_argument("name", metavar="NAME", help="model name")
    promote.add_argument("label", metavar="LABEL", help="the challenger's label (see `models`)")
    _request_options(promote)
    promote.set_defaults(handler=lazy_handler(_COMMANDS, "run_promote"))
    add = actions.add_parser(
        "add-challenger",
        help="ask the trainer of model NAME to start a challenger of SPEC",
        description="Writes a request to the events topic; the model's trainer applies it "
        "once, at its next checkpoint: the challenger starts fresh there (its start is "
        "recorded in its state and on the events topic), the other models go on unchanged.",
    )
    add.add_argument("name", metavar="NAME", help="model name")
    add.add_argument("spec", metavar="SPEC", help="the challenger's model spec (as --model)")
    add.add_argument("--label", help="its label [default: the first free c1, c2, ...]")
    _request_options(add)
    add.set_defaults(handler=lazy_handler(_COMMANDS, "run_add_challenger"))
    remove = actions.add_parser(
        "remove-challenger",
        help="ask the trainer of model NAME to drop challenger LABEL",
        description="Writes a request to the events topic; the model's trainer applies it "
        "once, at its next checkpoint. The champion cannot be removed (promote another first).",
    )
    remove.add_argument("name", metavar="NAME", help="model name")
    remove.add_argument("label", metavar="LABEL", help="the challenger's label (see `models`)")
    _request_options(remove)
    remove.set_defaults(handler=lazy_handler(_COMMANDS, "run_remove_challenger"))


def _request_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--events-topic",
        default=DEFAULT_EVENTS_TOPIC,
        metavar="TOPIC",
        help=f"where the trainer reads requests [default: {DEFAULT_EVENTS_TOPIC}]",
    )
    _state_options(parser)
