"""Events of a joined stream: features that wait for their label, labels that come later.

With ``train --labels-topic``, a record of either input is one of:

* a **feature event** ``{"id": "...", "x": {...}}``: predicted on arrival, then pending until
  its label comes (other fields, such as the ``served`` block ``serve --log-topic`` writes,
  are ignored);
* a **label event** ``{"id": "...", "y": ...}`` (no ``x``): completes the feature event with
  the same id;
* an **inline event** ``{"x": {...}, "y": ...}``: learned at once, as without a labels topic;
* an unlabelled event with no id: predicted, never learned (nothing could complete it).

The id is the ``"id"`` field, or with ``--id-from key`` the record key (UTF-8). It is a
non-empty string of at most :data:`MAX_ID_LENGTH` characters, or an integer (taken as its
decimal text, so ``7`` and ``"7"`` are the same id). Anything else is refused with reason
``bad-id``; the other rules and reasons are :mod:`streamtrain.data.events`'.

>>> from streamtrain.models.problem import Problem
>>> decode_item(b'{"id": "a1", "x": {"f": 1.0}}', None, Problem.CLASSIFICATION, "value")
('feature', 'a1', {'f': 1.0}, None)
>>> decode_item(b'{"id": 7, "y": true}', None, Problem.CLASSIFICATION, "value")
('label', '7', None, True)
>>> decode_item(b'{"y": true}', b"a1", Problem.CLASSIFICATION, "key")
('label', 'a1', None, True)
"""

from __future__ import annotations

from typing import Any

from streamtrain.data.events import (
    InvalidEvent,
    Reason,
    check_event,
    json_type,
    load_object,
    validate_label,
)
from streamtrain.models.problem import Problem

__all__ = [
    "FEATURE",
    "INLINE",
    "LABEL",
    "MAX_ID_LENGTH",
    "UNLABELLED",
    "decode_item",
    "resolve_id",
]

FEATURE = "feature"
LABEL = "label"
INLINE = "inline"
UNLABELLED = "unlabelled"  # no id, no label: predicted only
MAX_ID_LENGTH = 256


def decode_item(
    value: bytes | None, key: bytes | None, problem: Problem, id_from: str
) -> tuple[str, str | None, dict[str, float] | None, Any]:
    """``(kind, id, x, y)`` of one record, or :class:`InvalidEvent`."""
    event = load_object(value)
    if "x" not in event and "y" in event:
        y = event["y"]
        if y is None:
            raise InvalidEvent(Reason.BAD_LABEL, 'a label event\'s "y" is null')
        return LABEL, _id_of(event, key, id_from, required=True), None, validate_label(y, problem)
    x, y = check_event(event, problem)
    if y is not None:
        return INLINE, None, x, y
    event_id = _id_of(event, key, id_from, required=False)
    return (FEATURE if event_id is not None else UNLABELLED), event_id, x, None


def _id_of(event: dict[str, Any], key: bytes | None, id_from: str, *, required: bool) -> str | None:
    return resolve_id(
        event.get("id"), key, id_from, required=required, missing='a label event needs an "id"'
    )


def resolve_id(
    raw: Any, key: bytes | None, id_from: str, *, required: bool, missing: str
) -> str | None:
    """The id of a record: ``raw`` (the id field's value, None if absent) or with ``id_from``
    ``key`` the record key; None when absent and not ``required``, else :class:`InvalidEvent`
    (``missing`` is the message for an absent id field)."""
    if id_from == "key":
        if key is None:
            if not required:
                return None
            raise InvalidEvent(Reason.BAD_ID, "the record has no key to take the id from")
        try:
            raw = key.decode()
        except UnicodeDecodeError:
            raise InvalidEvent(Reason.BAD_ID, "the record key is not UTF-8 text") from None
    elif raw is None:
        if not required:
            return None
        raise InvalidEvent(Reason.BAD_ID, missing)
    if type(raw) is int:
        return str(raw)
    if type(raw) is not str:
        raise InvalidEvent(
            Reason.BAD_ID, f"an id must be a string or an integer, got {json_type(raw)}"
        )
    if not raw or len(raw) > MAX_ID_LENGTH:
        raise InvalidEvent(Reason.BAD_ID, f"an id must be 1 to {MAX_ID_LENGTH} characters")
    return raw
