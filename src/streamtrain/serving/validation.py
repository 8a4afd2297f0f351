"""What a predict or labels request may be: size limits and shape, refused whole when wrong.

Only the shape is checked here; features are validated by the snapshot's ``predict``, labels
by :func:`streamtrain.data.events.validate_label` once the served model's problem is known.

An ``id`` names an instance across the loop (its feature event, its later label): a non-empty
string of at most :data:`MAX_ID_LENGTH` characters, or an integer, taken as its decimal string
(``7`` and ``"7"`` are the same id). Booleans and other types are refused (``bad-id``), and so
is an id given twice in one request (``duplicate-id``): its feature event or label would be
ambiguous.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson
from fastapi import Request

from streamtrain.data.events import Reason, json_type
from streamtrain.serving.responses import RequestRefused
from streamtrain.serving.settings import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_FEATURES,
    DEFAULT_MAX_INSTANCES,
)

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_FEATURES",
    "DEFAULT_MAX_INSTANCES",
    "MAX_ID_LENGTH",
    "Instance",
    "Label",
    "labels_openapi",
    "parse_id",
    "parse_instances",
    "parse_labels",
    "predict_openapi",
    "read_body",
]

# Ids become record keys: long enough for any UUID or composite key, short enough to index.
MAX_ID_LENGTH = 256

_ID_SCHEMA = {
    "oneOf": [{"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH}, {"type": "integer"}]
}
_INSTANCE_SCHEMA = {
    "type": "object",
    "required": ["x"],
    "properties": {
        # Numbers; strings, booleans and null too when the model is not numbers-only (it
        # encodes categorical values), as a flat record gives them in training.
        "x": {
            "type": "object",
            "additionalProperties": {"type": ["number", "string", "boolean", "null"]},
        },
        "id": _ID_SCHEMA,
    },
}
_LABEL_SCHEMA = {
    "type": "object",
    "required": ["id", "y"],
    "properties": {"id": _ID_SCHEMA, "y": {"type": ["boolean", "integer", "number", "string"]}},
}


class Instance(NamedTuple):
    """One instance of a predict request: its id (None when the client gave none) and ``x``."""

    id: str | None
    x: Any


class Label(NamedTuple):
    """One label of a labels request; ``y`` is checked against the model's problem later."""

    id: str
    y: Any


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) as soon as it exceeds ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:  # a chunked body has no length up front: stop reading here
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> RequestRefused:
    return RequestRefused(413, "body-too-large", f"request body is over {limit} bytes")


def parse_instances(
    body: bytes, max_instances: int, max_features: int = DEFAULT_MAX_FEATURES
) -> tuple[list[Instance], bool]:
    """Decode a predict body into its instances; True when it was a batch (an array).

    >>> parse_instances(b'{"x": {"a": 1, "b": 2}}', 10, max_features=1)
    Traceback (most recent call last):
    streamtrain.serving.responses.RequestRefused: 2 features in one instance; the limit is 1
    """
    data = _json(body)
    if isinstance(data, list):
        _check_batch_size(len(data), max_instances, "instances")
        instances = [_instance_of(item, i, max_features) for i, item in enumerate(data)]
        _check_unique([inst.id for inst in instances])
        return instances, True
    return [_instance_of(data, None, max_features)], False


def parse_labels(body: bytes, max_labels: int) -> tuple[list[Label], bool]:
    """Decode a labels body, ``{"id", "y"}`` or ``{"labels": [...]}``; True for the batch."""
    data = _json(body)
    if isinstance(data, dict) and "labels" in data:
        _refuse_extra(data, {"labels"}, '{"labels": [{"id": ..., "y": ...}, ...]}', None)
        items = data["labels"]
        if not isinstance(items, list):
            raise RequestRefused(422, "not-a-list", '"labels" must be a JSON array')
        _check_batch_size(len(items), max_labels, "labels")
        labels = [_label_of(item, i) for i, item in enumerate(items)]
        _check_unique([label.id for label in labels])
        return labels, True
    return [_label_of(data, None)], False


def parse_id(value: Any, index: int | None = None) -> str:
    """An instance's or label's id as the string its records are keyed by, or a 422.

    >>> parse_id(42), parse_id("order-7")
    ('42', 'order-7')
    """
    if type(value) is int:  # not bool: true as an id is a client's mistake
        return str(value)
    if type(value) is not str:
        raise RequestRefused(
            422,
            "bad-id",
            f'"id" must be a string or an integer, got {json_type(value)}',
            instance=index,
        )
    if not 1 <= len(value) <= MAX_ID_LENGTH:
        raise RequestRefused(
            422,
            "bad-id",
            f'"id" must be 1-{MAX_ID_LENGTH} characters, got {len(value)}',
            instance=index,
        )
    return value


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise RequestRefused(400, Reason.UNDECODABLE.value, f"body is not JSON: {err}") from None


def _check_batch_size(size: int, limit: int, what: str) -> None:
    if not size:
        raise RequestRefused(422, "empty-batch", f"the batch has no {what}")
    if size > limit:
        raise RequestRefused(
            413, f"too-many-{what}", f"{size} {what} in one request; the limit is {limit}"
        )


def _check_unique(ids: list[str | None]) -> None:
    seen: set[str] = set()
    for i, id_ in enumerate(ids):
        if id_ is None:
            continue
        if id_ in seen:
            raise RequestRefused(
                422, "duplicate-id", f"id {id_!r} is given twice in one request", instance=i
            )
        seen.add(id_)


def _instance_of(item: Any, index: int | None, max_features: int) -> Instance:
    if not isinstance(item, dict):
        raise RequestRefused(
            422,
            Reason.NOT_AN_OBJECT.value,
            'an instance must be a JSON object {"x": {...}}',
            instance=index,
        )
    if "x" not in item:
        raise RequestRefused(
            422, Reason.BAD_FEATURES.value, 'an instance needs an "x" field', instance=index
        )
    _refuse_extra(item, {"x", "id"}, "{'x': {...}[, 'id': ...]}", index)
    if isinstance(item["x"], dict) and len(item["x"]) > max_features:
        raise RequestRefused(
            422,
            "too-many-features",
            f"{len(item['x'])} features in one instance; the limit is {max_features}",
            instance=index,
        )
    id_ = parse_id(item["id"], index) if "id" in item else None
    return Instance(id_, item["x"])


def _label_of(item: Any, index: int | None) -> Label:
    if not isinstance(item, dict):
        raise RequestRefused(
            422,
            Reason.NOT_AN_OBJECT.value,
            'a label must be a JSON object {"id": ..., "y": ...}'
            + ("" if index is not None else ', or a batch {"labels": [...]}'),
            instance=index,
        )
    if "id" not in item:
        raise RequestRefused(422, "bad-id", 'a label needs an "id" field', instance=index)
    _refuse_extra(item, {"id", "y"}, "{'id': ..., 'y': ...}", index)
    id_ = parse_id(item["id"], index)
    if item.get("y") is None:  # a null y would be an unlabelled event: nothing to learn
        raise RequestRefused(
            422, Reason.BAD_LABEL.value, 'a label needs a "y" that is not null', instance=index
        )
    return Label(id_, item["y"])


def _refuse_extra(item: dict[str, Any], allowed: set[str], shape: str, index: int | None) -> None:
    extra = sorted(set(item) - allowed)
    if extra:
        raise RequestRefused(
            422,
            "unknown-field",
            f"unexpected field(s) {', '.join(map(repr, extra))}; expected {shape}",
            instance=index,
        )


def predict_openapi(max_instances: int) -> dict[str, Any]:
    """The predict body as the OpenAPI document describes it (the route reads raw bytes)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            _INSTANCE_SCHEMA,
                            {"type": "array", "items": _INSTANCE_SCHEMA, "maxItems": max_instances},
                        ]
                    },
                    "example": {"id": "order-7", "x": {"feature_a": 0.5, "feature_b": 12}},
                }
            },
        }
    }


def labels_openapi(max_labels: int) -> dict[str, Any]:
    """The labels body as the OpenAPI document describes it."""
    batch = {
        "type": "object",
        "required": ["labels"],
        "properties": {"labels": {"type": "array", "items": _LABEL_SCHEMA, "maxItems": max_labels}},
    }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"oneOf": [_LABEL_SCHEMA, batch]},
                    "example": {"id": "order-7", "y": True},
                }
            },
        }
    }
