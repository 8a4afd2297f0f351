"""The handlers of ``streamtrain predict`` and ``streamtrain models`` (parsers in
:mod:`streamtrain.cli.models`, which imports this module only when one of them runs)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import IO, Any

import orjson
from confluent_kafka import Producer
from rich.console import Console
from rich.table import Table

from streamtrain.cli.common import kafka_settings_from_args
from streamtrain.config import KafkaSettings
from streamtrain.data.events import InvalidEvent, Reason
from streamtrain.errors import ConfigError, StreamtrainError
from streamtrain.formats import replica_partition
from streamtrain.kafka.clients import client_config, ensure_topic
from streamtrain.models.problem import problem_of
from streamtrain.models.spec import estimator_registry, parse_spec
from streamtrain.serving.snapshot import ModelNotFound, ModelSnapshot, ReplicaSet, load_model
from streamtrain.state.envelope import CheckpointRejected, load_state, open_envelope
from streamtrain.state.history import history_topic
from streamtrain.state.keys import load_signing_key
from streamtrain.state.store import CheckpointStore
from streamtrain.train.challengers import CHAMPION, FOUNDER, LABEL
from streamtrain.train.requests import ADD_CHALLENGER, PROMOTE, REMOVE_CHALLENGER, request


def _store(args: argparse.Namespace) -> CheckpointStore:
    kafka, _file = kafka_settings_from_args(args)
    key = load_signing_key(Path(args.secret_file) if args.secret_file else None)
    return CheckpointStore(kafka, key, args.checkpoint_topic)


def run_predict(args: argparse.Namespace) -> int:
    store = _store(args)
    snapshot: ModelSnapshot | ReplicaSet
    if args.pin is None:
        snapshot = load_model(store, args.name)
    else:
        history = CheckpointStore(store.kafka, store.key, history_topic(store.topic))
        snapshot = ModelSnapshot.pinned(history, args.name, args.pin)
    if args.input:
        try:
            source: IO[str] = open(args.input, encoding="utf-8")  # noqa: SIM115
        except OSError as err:
            raise ConfigError(f"cannot read {args.input}: {err.strerror}") from None
    else:
        source = sys.stdin
    errors = 0
    out = sys.stdout
    with source:
        for number, line in enumerate(source, 1):
            if not line.strip():
                continue
            try:
                answer = snapshot.predict(_features(line))
            except InvalidEvent as bad:
                errors += 1
                answer = {"error": bad.message, "reason": bad.reason.value, "line": number}
            out.write(orjson.dumps(answer, option=orjson.OPT_NON_STR_KEYS).decode() + "\n")
    if errors:
        print(f"streamtrain: {errors} input line(s) could not be predicted", file=sys.stderr)
        return 1
    return 0


def _features(line: str) -> Any:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as err:
        raise InvalidEvent(Reason.UNDECODABLE, f"not valid JSON: {err}") from None
    if isinstance(obj, dict) and "x" in obj:
        return obj["x"]
    return obj


def run_models(args: argparse.Namespace) -> int:
    store = _store(args)
    rows: list[dict[str, Any]] = []
    for name, raw in sorted(store.all_latest().items()):
        try:
            opened = open_envelope(raw, store.key, what=f"checkpoint of model {name!r}")
        except CheckpointRejected as err:
            rows.append({"name": name, "error": str(err)})
            continue
        h = opened.header
        challengers = {
            label: _challenger_row(plain)
            for label, plain in load_state(opened).get("challengers", {}).items()
        }
        rows.append(
            {
                "name": name,
                "spec": h.model_spec,
                "champion": h.champion,
                "promotion_rule": h.promotion_rule,
                "version": h.model_version,
                "events_learned": h.events_learned,
                "dead_lettered": h.dead_lettered,
                "metrics": dict(h.metrics),
                "challengers": challengers,
                "checkpoint_age_seconds": round(max(time.time() - h.created_at, 0.0), 3),
            }
        )
    if args.json:
        for row in rows:
            print(json.dumps(row, sort_keys=True))
        return 0
    if not rows:
        print(f"no models in {store.topic}")
        return 0
    table = Table(title=f"models in {store.topic}")
    for column in ("name", "spec", "champion", "version", "events", "metrics", "age"):
        table.add_column(column)
    for row in rows:
        if "error" in row:
            table.add_row(row["name"], f"[red]{row['error']}[/]", "", "", "", "", "")
            continue
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in row["metrics"].items())
        table.add_row(
            row["name"],
            row["spec"],
            row["champion"] or "",
            row["version"],
            f"{row['events_learned']:,}",
            metrics,
            _age(row["checkpoint_age_seconds"]),
        )
    console = Console()
    console.print(table)
    for row in rows:
        for label, c in row.get("challengers", {}).items():
            since = f"event {c['started_at']:,}"
            if c.get("started_offsets"):
                offsets = ", ".join(f"p{p}@{o}" for p, o in c["started_offsets"].items())
                since += f" ({offsets}, added {_when(c['started_time'])})"
            metrics = ", ".join(f"{k} {v:.4f}" for k, v in c["metrics"].items())
            console.print(
                f"{row['name']}: challenger {label} = {c['spec']} since {since}; "
                f"{c['events_learned']:,} events; {metrics}",
                highlight=False,
            )
        if row.get("promotion_rule"):
            console.print(f"{row['name']}: {row['promotion_rule']}", highlight=False)
    return 0


def _challenger_row(plain: dict[str, Any]) -> dict[str, Any]:
    """What ``models`` shows of a challenger in a checkpoint payload."""
    row = {
        "spec": plain["spec"],
        "events_learned": int(plain.get("events_learned", 0)),
        "started_at": int(plain.get("started_at", 0)),
        "metrics": {name: float(m.get()) for name, m in plain.get("metrics", {}).items()},
    }
    if plain.get("started_time") is not None:
        row["started_offsets"] = dict(plain.get("started_offsets") or {})
        row["started_time"] = float(plain["started_time"])
    return row


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def run_promote(args: argparse.Namespace) -> int:
    """Check that NAME has a challenger LABEL, then write the request (nothing otherwise)."""
    store = _store(args)
    champion, labels = _roster_of(store, args.name)
    if args.label == champion:
        raise ConfigError(f"{args.label!r} is already the champion of model {args.name!r}")
    _require_challenger(args.name, args.label, labels)
    _send(args, PROMOTE, args.label)
    print(
        f"asked the trainer of {args.name!r} to promote {args.label!r}: it applies the request "
        f"at its next checkpoint (see {args.events_topic})"
    )
    return 0


def run_add_challenger(args: argparse.Namespace) -> int:
    """Check the spec, the label and NAME's model kind, then write the request."""
    try:
        model = parse_spec(args.spec, estimator_registry())
    except ConfigError as err:
        raise ConfigError(f"challenger spec {args.spec!r}: {err}") from err
    store = _store(args)
    champion, labels, payload = _roster(store, args.name)
    taken = {CHAMPION, champion or FOUNDER, *labels}
    label = args.label
    if label is None:
        label = next(f"c{i}" for i in range(1, len(taken) + 2) if f"c{i}" not in taken)
    elif not LABEL.fullmatch(label):
        raise ConfigError(f"label {label!r}: use 1 to 64 letters, digits, '.', '_' or '-'")
    elif label in taken:
        raise ConfigError(f"model {args.name!r} has a model labelled {label!r} already")
    kind, theirs = problem_of(model), problem_of(payload["model"])
    if kind is not theirs:
        raise ConfigError(
            f"{args.spec!r} is a {kind.value} model; model {args.name!r} is a {theirs.value} one"
        )
    _send(args, ADD_CHALLENGER, label, args.spec)
    print(
        f"asked the trainer of {args.name!r} to add challenger {label!r} ({args.spec}): it "
        f"starts at the trainer's next checkpoint (see {args.events_topic})"
    )
    return 0


def run_remove_challenger(args: argparse.Namespace) -> int:
    """Check that NAME has a challenger LABEL (not its champion), then write the request."""
    store = _store(args)
    champion, labels, _payload = _roster(store, args.name)
    if args.label == (champion or FOUNDER):
        raise ConfigError(
            f"{args.label!r} is the champion of model {args.name!r}: promote another first"
        )
    _require_challenger(args.name, args.label, labels)
    _send(args, REMOVE_CHALLENGER, args.label)
    print(
        f"asked the trainer of {args.name!r} to remove challenger {args.label!r}: it applies "
        f"the request at its next checkpoint (see {args.events_topic})"
    )
    return 0


def _require_challenger(name: str, label: str, labels: list[str]) -> None:
    if label not in labels:
        known = ", ".join(labels) or "none"
        raise ConfigError(f"model {name!r} has no challenger {label!r} (its challengers: {known})")


def _send(args: argparse.Namespace, kind: str, label: str, spec: str | None = None) -> None:
    kafka, _file = kafka_settings_from_args(args)
    value = request(kind, args.name, label, time.time(), spec)
    _send_request(kafka, args.events_topic, args.name, value)


def _send_request(kafka: KafkaSettings, topic: str, key: str, value: bytes) -> None:
    """Write one request to partition 0 of ``topic`` (made if missing), waiting for the ack."""
    ensure_topic(kafka, topic, partitions=1)
    producer = Producer(client_config(kafka, **{"enable.idempotence": True, "acks": "all"}))
    failed: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(str(err))

    producer.produce(topic, value, key, partition=0, on_delivery=on_delivery)
    if producer.flush(kafka.connect_timeout + 10) or failed:
        why = failed[0] if failed else "no acknowledgement in time"
        raise StreamtrainError(f"the request could not be written to {topic!r}: {why}")


def _roster_of(store: CheckpointStore, name: str) -> tuple[str | None, list[str]]:
    champion, labels, _payload = _roster(store, name)
    return champion, labels


def _roster(store: CheckpointStore, name: str) -> tuple[str | None, list[str], dict[str, Any]]:
    """The champion's label, the challengers' labels and the payload of a named model's latest
    checkpoint (a partitioned model's first replica: every replica has the same challengers)."""
    opened = store.latest(name)
    if opened is None:
        for key, raw in sorted(store.all_latest().items()):
            if replica_partition(key, name) is not None:
                opened = open_envelope(raw, store.key, what=f"checkpoint of model {key!r}")
                break
    if opened is None:
        raise ModelNotFound(f"no checkpoint of model {name!r} in {store.topic!r}")
    payload = load_state(opened)
    champion = (payload.get("promotion") or {}).get("champion")
    return champion, list(payload.get("challengers", {})), payload


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
