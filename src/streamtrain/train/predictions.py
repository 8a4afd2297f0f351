"""Predictions for unlabelled events: the trainer's answers, written to a predictions topic.

An event in the training topic without a label (no ``"y"``, or ``"y": null``) is predicted by
the model as it stands at that point of the stream — after every earlier event of its
partition, before any later one — and not learned. Its prediction goes to the predictions
topic (default ``<topic>.predictions``), keyed like the event, value (format 1)::

    {"format": 1, "model": "NAME" | null, "prediction": true,
     "probabilities": {"false": 0.12, "true": 0.88},
     "model_version": "ml_training_data:0@1250", "events_learned": 1250,
     "id": <the event's "id" field (flat records: its --id-field), when it has one>,
     "source": {"topic": "ml_training_data", "partition": 0, "offset": 1250,
                "timestamp": 1764150000123}}

``model_version`` names the model state that answered, in the form checkpoints and the HTTP
API use: for each partition the model learns, the offset of the next event it would learn
(those of a separate labels topic included, when labels are joined later).
The headers carry the event's origin like a dead letter's (``streamtrain.source.*``).

A named model writes predictions inside its checkpoint transactions, so a reader with
``isolation.level=read_committed`` sees each unlabelled event's prediction exactly once, even
across crashes; an unnamed trainer's are at-least-once, like its dead letters.
"""

from __future__ import annotations

from typing import Any

import orjson
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE

from streamtrain.data.events import InvalidEvent
from streamtrain.records.shape import flatten
from streamtrain.state.envelope import model_version
from streamtrain.train.deadletter import Headers, origin_headers
from streamtrain.train.step import Prediction

__all__ = ["FORMAT", "prediction_record"]

FORMAT = 1


def prediction_record(
    item: Prediction,
    model_name: str | None,
    topic: str,
    labels_topic: str | None = None,
    id_field: str | None = "id",
) -> tuple[bytes, Any, Headers]:
    """``(value, key, headers)`` of the record for one prediction (see the module doc)."""
    version = model_version(topic, item.positions)
    if labels_topic is not None and item.label_positions:
        # Offsets of every topic the model learned from, in topic order, as checkpoints do.
        parts = {topic: version, labels_topic: model_version(labels_topic, item.label_positions)}
        version = ",".join(v for _t, v in sorted(parts.items()) if v)
    msg = item.record
    ts_type, ts = msg.timestamp()
    record: dict[str, Any] = {
        "format": FORMAT,
        "model": model_name,
        **item.answer,
        "model_version": version,
        "events_learned": item.events_learned,
    }
    event_id = None if id_field is None else _event_id(msg.value(), id_field)
    if event_id is not None:
        record["id"] = event_id
    record["source"] = {
        "topic": msg.topic(),
        "partition": msg.partition(),
        "offset": msg.offset(),
        "timestamp": ts if ts_type != TIMESTAMP_NOT_AVAILABLE else None,
    }
    return orjson.dumps(record), msg.key(), origin_headers(msg)


def _event_id(value: bytes | None, id_field: str) -> Any:
    # Decoded again here rather than carried through the learning path: unlabelled events
    # are the exception in a training topic, and the hot path stays free of it.
    try:
        event = orjson.loads(value or b"")
    except orjson.JSONDecodeError:  # pragma: no cover - the event was decoded before
        return None
    if type(event) is not dict:
        return None
    event_id = event.get(id_field)
    if event_id is None and "." in id_field:  # a flat record's nested id (a.b)
        try:
            event_id = flatten(event).get(id_field)
        except InvalidEvent:  # pragma: no cover - the event was decoded before
            return None
    return event_id if isinstance(event_id, str | int) and not isinstance(event_id, bool) else None
