"""``streamtrain models history`` and ``models rollback``: a named model's kept versions."""

from __future__ import annotations

import argparse
import datetime
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamtrain.cli.common import kafka_settings_from_args
from streamtrain.errors import ConfigError
from streamtrain.state.envelope import CheckpointHeader
from streamtrain.state.history import history_topic, kept_versions
from streamtrain.state.keys import load_signing_key
from streamtrain.state.store import CheckpointStore


def register(actions: Any, state_options: Callable[[argparse.ArgumentParser], None]) -> None:
    history = actions.add_parser(
        "history",
        help="list a named model's kept versions, oldest first",
        description="One line per version kept in <checkpoint-topic>.history (train "
        "--keep-versions-for): version, time, events learned, metrics, offsets.",
    )
    history.add_argument("name", help="model name")
    history.add_argument("--json", action="store_true", help="one JSON object per version")
    _shared_options(history, state_options)
    history.set_defaults(handler=run_history)

    rollback = actions.add_parser(
        "rollback",
        help="make a kept version the model's newest checkpoint again",
        description="Writes the version's state as a new checkpoint, as the model's own "
        "transactional writer: a running trainer is fenced (exit code 6) and, restarted, "
        "resumes from it. --replay goes on from the version's offsets (learning again every "
        "event since), --skip from the current ones.",
    )
    rollback.add_argument("name", help="model name")
    rollback.add_argument("--to", type=int, required=True, metavar="VERSION", dest="version")
    resume = rollback.add_mutually_exclusive_group(required=True)
    resume.add_argument(
        "--replay", dest="resume", action="store_const", const="replay", help="old offsets"
    )
    resume.add_argument(
        "--skip", dest="resume", action="store_const", const="skip", help="current offsets"
    )
    _shared_options(rollback, state_options)
    rollback.set_defaults(handler=run_rollback)


def _shared_options(
    parser: argparse.ArgumentParser, add: Callable[[argparse.ArgumentParser], None]
) -> None:
    """``add``'s options, also taken before the action (``models --checkpoint-topic T history``):
    an action's defaults would overwrite what ``models`` itself parsed, so it has none."""
    before = len(parser._actions)
    add(parser)
    for action in parser._actions[before:]:
        action.default = argparse.SUPPRESS


def version_line(h: CheckpointHeader) -> str:
    """One version as ``models history`` prints it.

    >>> h = CheckpointHeader("m", "LR", {"t": {0: 1000}}, 1000, 0, {"ROCAUC": 0.91234},
    ...                      0.0, {}, sequence=3, restored_from=1)
    >>> version_line(h)
    'v3  1970-01-01T00:00:00Z  1,000 events  ROCAUC 0.9123  t:0@1000  (rolled back to v1)'
    """
    when = datetime.datetime.fromtimestamp(h.created_at, datetime.UTC)
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in h.metrics.items()) or "-"
    note = f"  (rolled back to v{h.restored_from})" if h.restored_from is not None else ""
    return (
        f"v{h.sequence}  {when:%Y-%m-%dT%H:%M:%SZ}  {h.events_learned:,} events  "
        f"{metrics}  {h.model_version}{note}"
    )


def _stores(args: argparse.Namespace) -> tuple[Any, Any, CheckpointStore]:
    kafka, _file = kafka_settings_from_args(args)
    key = load_signing_key(Path(args.secret_file) if args.secret_file else None)
    return kafka, key, CheckpointStore(kafka, key, history_topic(args.checkpoint_topic))


def run_history(args: argparse.Namespace) -> int:
    _kafka, _key, history = _stores(args)
    for opened in kept_versions(history, args.name):
        h = opened.header
        if args.json:
            row: dict[str, Any] = {
                "version": h.sequence,
                "created_at": h.created_at,
                "events_learned": h.events_learned,
                "metrics": dict(h.metrics),
                "offsets": h.model_version,
                "restored_from": h.restored_from,
            }
            print(json.dumps(row, sort_keys=True))
        else:
            print(version_line(h))
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    from streamtrain.train.rollback import Resume, rollback

    if args.version < 1:
        raise ConfigError(f"--to takes a version number from `models history`, not {args.version}")
    kafka, key, _history = _stores(args)
    header = rollback(
        kafka, key, args.checkpoint_topic, args.name, args.version, Resume(args.resume)
    )
    print(f"streamtrain: model {args.name!r} is now {version_line(header)}")
    return 0
