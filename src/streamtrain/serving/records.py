"""The records serve writes to close the loop of labels that arrive later.

A *feature event*, one per predicted instance when serve runs with ``--log-topic``::

    key: the id (UTF-8)        timestamp: when serve answered (ms since the epoch)
    {"id": "order-7", "x": {"amount": 12.5, "age": 3},
     "served": {"prediction": true, "probabilities": {"false": 0.2, "true": 0.8},
                "model_version": "clicks:0@1250", "model": "clicks-lr", "at": 1764150000123}}

``probabilities`` is there for classifiers only; ``at`` equals the record's timestamp. The
``prediction`` and ``probabilities`` are the ones the HTTP answer gave.

A *label event*, one per label accepted by ``POST /labels`` with ``--labels-topic``::

    key: the id (UTF-8)        timestamp: when serve accepted it (ms since the epoch)
    {"id": "order-7", "y": true}

A trainer run with ``--topic LOG --labels-topic LABELS`` joins the two by id and learns
``(x, y)``. It reads a feature event's ``x`` like any event's and ignores ``served``, so the log
topic is its input topic as it is. Both are keyed by id, so an id lands on the same partition
of each topic when both have the same partition count.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import orjson

__all__ = ["OutRecord", "feature_event", "label_event", "now_ms"]

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
# The fields of a served answer that a feature event keeps; events_learned and a
# partitioned model's replica versions are the server's state, not the prediction's.
_SERVED_FIELDS = ("prediction", "probabilities", "model_version")


class OutRecord(NamedTuple):
    """One record to produce: key, value, and timestamp in ms since the epoch."""

    key: bytes
    value: bytes
    timestamp: int


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def feature_event(
    id_: str, x: dict[str, Any], answer: dict[str, Any], model: str, at: int
) -> OutRecord:
    """The feature event of one answered instance (``answer`` as the HTTP response gave it).

    >>> record = feature_event(
    ...     "7", {"a": 1.5}, {"prediction": 2.0, "model_version": "t:0@9"}, "m", 1000
    ... )
    >>> record.key, record.timestamp
    (b'7', 1000)
    >>> orjson.loads(record.value)
    {'id': '7', 'x': {'a': 1.5}, 'served': {'prediction': 2.0, 'model_version': 't:0@9', 'model': 'm', 'at': 1000}}
    """  # noqa: E501
    served = {field: answer[field] for field in _SERVED_FIELDS if field in answer}
    served["model"] = model
    served["at"] = at
    value = orjson.dumps({"id": id_, "x": x, "served": served}, option=_OPTIONS)
    return OutRecord(id_.encode(), value, at)


def label_event(id_: str, y: Any, at: int) -> OutRecord:
    """The label event of one accepted label.

    >>> label_event("7", True, 1000)
    OutRecord(key=b'7', value=b'{"id":"7","y":true}', timestamp=1000)
    """
    return OutRecord(id_.encode(), orjson.dumps({"id": id_, "y": y}, option=_OPTIONS), at)
