"""What trainers and servers agree on: default topic names, record keys, the metrics format;
and how training records are decoded.

Both sides import these from here, so neither imports the other.

Training records: :func:`decoder` picks the decoder of a
:class:`~streamtrain.formats.settings.FormatSettings`, from :mod:`~streamtrain.formats.decoding`
(JSON, the dead-letter reasons) or :mod:`~streamtrain.formats.registry` (Avro, Protobuf, JSON
Schema through a schema registry).

Checkpoints go to a compacted topic, ``streamtrain.checkpoints`` by default, keyed by model
name; a partitioned model writes one checkpoint per replica under :func:`replica_key`.

Metrics records go to ``streamtrain.metrics`` by default, one JSON object per progress report,
keyed by the model name (or the consumer group of an unnamed trainer). Format 1::

    {"format": 1, "kind": "progress" | "final", "ts": 1764150000.123,
     "model": "NAME" | null, "group": "...", "topic": "ml_training_data", "spec": "...",
     "events_learned": 1250, "events_per_second": 812.5, "elapsed_seconds": 3.1,
     "dead_lettered": 2, "dead_letter_reasons": {"bad-label": 2}, "events_predicted": 3,
     "metrics": {"ROCAUC": 0.95}, "rolling": {"ROCAUC": 0.97},
     "lag": {"0": 0}, "total_lag": 0, "positions": {"0": 1250},
     "model_version": "ml_training_data:0@1250", "broker_error": null,
     "process": "host:pid", "tasks": {"NAME/p0": {"events_learned": 1250, ...}}}

``tasks`` is filled for partitioned models only: one entry per replica the writing process
holds. A ``final`` record is a trainer's last, written when it stops cleanly.

A trainer that joins labels (``train --labels-topic``) adds a ``join`` object; other records
have none (an additive field: still format 1)::

    "join": {"pending": 120, "held_labels": 3, "joined": 9870, "expired": 4, "defaulted": 0,
             "unmatched": 1, "duplicate": 0, "evicted": 0,
             "label_delay_p50_ms": 5000.0, "label_delay_p99_ms": 58000.0,
             "joins_per_second": 195.2}

``pending`` predictions wait for their label and ``held_labels`` for their features; the next
six count since the model's start (a named model's are restored with its checkpoint); the
label delay is the label's event time minus its features' (null before the first join);
``joins_per_second`` is over the interval since the writer's previous record (null in its
first; a ``final`` record repeats its last progress record's). A partitioned model's task
entries carry their own ``join`` (without ``joins_per_second``), and the top-level one sums
them, its delays being those of the task with the most joins.

A trainer with challengers (``train --challenger``) adds a ``challengers`` object, by label,
in their order; the top-level ``spec``, ``metrics`` and ``rolling`` stay the champion's (the
model that ``predict`` and ``serve`` answer with). Another additive field::

    "challengers": {"c1": {"spec": "HoeffdingTreeClassifier", "metrics": {"ROCAUC": 0.93},
                           "rolling": {}, "events_learned": 1250, "model_errors": 0,
                           "started_at": 0}}

``events_learned`` counts the events the challenger learned, ``model_errors`` those it raised
on (not learned, not scored), and ``started_at`` is the champion's ``events_learned`` when the
challenger began (0: it has seen the whole stream). With a promotion gate (a single task), a
``champion`` string names the label of the model served now, ``champion_spec`` its spec (the
top-level ``spec`` stays the run's first model's) and ``champion_since`` the gate's event count
when it was promoted (0 for the model the run began with), where the dashboard marks the
promotion. For a partitioned model these are summed
over the replicas and the metrics weighted by events learned, as the champion's are; each
task entry carries its own ``challengers``, and the serving side's merge of several processes
(:mod:`streamtrain.serving.merge`) combines those the same way.

A trainer with drift detection (``train --drift``, on by default) adds a ``drift`` object: the
detector spec, the action, detections so far by model label (``champion`` or a challenger's),
and the most recent detections (at most 100, oldest first), where the dashboard marks them::

    "drift": {"detector": "ADWIN", "on_drift": "alert", "detections": {"champion": 1},
              "recent": [{"label": "champion", "events": 2032, "action": "alert",
                          "partition": 0, "offset": 2031, "timestamp": 1764150000123}]}

Each detection is also a record on the events topic, ``streamtrain.events`` by default, keyed
by the model name (null for an unnamed trainer), in the checkpoint transaction of a named
model (so exactly once under ``read_committed``). Format 1::

    {"format": 1, "kind": "drift", "model": "NAME", "label": "champion", "events": 2032,
     "source": {"topic": "...", "partition": 0, "offset": 2031, "timestamp": 1764150000123},
     "detector": "ADWIN", "state": {"width": 64.0, "estimation": 0.41, ...},
     "action": "alert" | "reset-challengers"}

``events`` is the task's events learned with the event that fired the detector.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from streamtrain.formats.decoding import Decoder
    from streamtrain.formats.settings import FormatSettings

__all__ = [
    "DEFAULT_CHECKPOINT_TOPIC",
    "DEFAULT_EVENTS_TOPIC",
    "DEFAULT_METRICS_TOPIC",
    "FINAL",
    "METRICS_FORMAT",
    "PROGRESS",
    "PROMOTION_REQUEST",
    "decode_metrics_record",
    "decoder",
    "encode_metrics_record",
    "promotion_request",
    "replica_key",
    "replica_partition",
]

DEFAULT_CHECKPOINT_TOPIC = "streamtrain.checkpoints"
DEFAULT_METRICS_TOPIC = "streamtrain.metrics"
# Drift detections (format above), promotions and requests for them (models with challengers):
# one JSON record each, keyed by the model's name, on partition 0 (streamtrain.train.drift,
# streamtrain.train.promotion, streamtrain.train.requests).
DEFAULT_EVENTS_TOPIC = "streamtrain.events"
PROMOTION_REQUEST = "promotion-request"


def promotion_request(name: str, label: str, at: float) -> bytes:
    """The value of a request to promote challenger ``label`` of model ``name``.

    >>> promotion_request("fraud", "lr", 0.0)
    b'{"kind":"promotion-request","model":"fraud","label":"lr","at":0.0}'
    """
    return orjson.dumps({"kind": PROMOTION_REQUEST, "model": name, "label": label, "at": at})


METRICS_FORMAT = 1
# The two kinds of metrics record.
PROGRESS = "progress"
FINAL = "final"


def replica_key(name: str, partition: int) -> str:
    """The checkpoint (and task) key of partitioned model ``name``'s replica of ``partition``."""
    return f"{name}/p{partition}"


def replica_partition(key: str, name: str) -> int | None:
    """The partition of a replica key of model ``name`` (see :func:`replica_key`), else None."""
    prefix = f"{name}/p"
    if key.startswith(prefix) and key[len(prefix) :].isdigit():
        return int(key[len(prefix) :])
    return None


def encode_metrics_record(record: Mapping[str, Any]) -> bytes:
    """The bytes of a metrics record as it goes on the topic."""
    return orjson.dumps(record)


def decode_metrics_record(value: bytes | None) -> dict[str, Any] | None:
    """A metrics record read from the topic, or None when the value is not a JSON object.

    Fields are not checked: readers treat every field as possibly missing or mistyped.
    """
    try:
        record = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def decoder(settings: FormatSettings) -> Decoder:
    """The decoder of ``settings.format``: record value and topic in, dict out.

    >>> from streamtrain.formats.settings import FormatSettings
    >>> decoder(FormatSettings())(b'{"amount": 3.5, "is_fraud": false}', "payments")
    {'amount': 3.5, 'is_fraud': False}
    """
    # Imported here: the registry client and its serdes are heavy, and most users of this
    # package only want the metrics names.
    from streamtrain.formats.decoding import decode_json
    from streamtrain.formats.settings import JSON

    if settings.format == JSON:
        return decode_json
    from streamtrain.formats.registry import RegistryDecoder

    return RegistryDecoder(settings)
