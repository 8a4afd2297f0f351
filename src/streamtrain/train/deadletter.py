"""Dead letters: records the trainer cannot learn from, kept with the reason and their origin.

A dead letter carries the original key, value and headers unchanged, plus these headers
(values UTF-8 text):

``streamtrain.error.reason``    stable code (:class:`~streamtrain.data.events.Reason` or
                                ``model-error``, :data:`streamtrain.train.step.MODEL_ERROR`)
``streamtrain.error.message``   human-readable explanation
``streamtrain.source.topic``    topic the record was consumed from
``streamtrain.source.partition``
``streamtrain.source.offset``
``streamtrain.source.timestamp``  the record's timestamp (ms since epoch), when it had one

A record refused as ``record-too-large`` is the exception: its dead letter has no value (the
dead-letter topic may not take what the input topic did) and a header
``streamtrain.error.original-bytes`` with its size; the source headers locate the original.
"""

from __future__ import annotations

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

__all__ = ["ORIGINAL_BYTES", "TOO_LARGE", "Headers", "dead_letter_headers", "origin_headers"]

HEADER_PREFIX = "streamtrain."
TOO_LARGE = "record-too-large"  # Reason.RECORD_TOO_LARGE: its value is not copied
ORIGINAL_BYTES = "streamtrain.error.original-bytes"
_MAX_MESSAGE = 1000  # keep a runaway exception text from bloating every dead letter


Headers = list[tuple[str, str | bytes | None]]


def origin_headers(msg: Message) -> Headers:
    """Where a record came from: source topic, partition, offset and timestamp headers."""
    ts_type, ts = msg.timestamp()
    headers: Headers = [
        ("streamtrain.source.topic", (msg.topic() or "").encode()),
        ("streamtrain.source.partition", str(msg.partition()).encode()),
        ("streamtrain.source.offset", str(msg.offset()).encode()),
    ]
    if ts_type != TIMESTAMP_NOT_AVAILABLE:
        headers.append(("streamtrain.source.timestamp", str(ts).encode()))
    return headers


def dead_letter_headers(msg: Message, reason: str, message: str) -> Headers:
    """The original headers followed by streamtrain's reason and origin headers."""
    original = msg.headers() or []
    headers: Headers = list(original.items() if isinstance(original, dict) else original)
    headers += [
        ("streamtrain.error.reason", reason.encode()),
        ("streamtrain.error.message", message[:_MAX_MESSAGE].encode("utf-8", "replace")),
    ]
    return headers + origin_headers(msg)
