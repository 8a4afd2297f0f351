"""What a predict request may be: its size limits and shape, refused whole when it is wrong.

Only the shape is checked here; features are validated by the snapshot's ``predict``.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request

from streamtrain.data.events import Reason
from streamtrain.serving.responses import RequestRefused

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_INSTANCES",
    "parse_instances",
    "predict_openapi",
    "read_body",
]

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_MAX_INSTANCES = 1_000

_INSTANCE_SCHEMA = {
    "type": "object",
    "required": ["x"],
    "properties": {"x": {"type": "object", "additionalProperties": {"type": "number"}}},
}


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


def parse_instances(body: bytes, max_instances: int) -> tuple[list[Any], bool]:
    """Decode a predict body into feature objects; True when it was a batch (an array)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise RequestRefused(400, Reason.UNDECODABLE.value, f"body is not JSON: {err}") from None
    if isinstance(data, list):
        if not data:
            raise RequestRefused(422, "empty-batch", "the batch has no instances")
        if len(data) > max_instances:
            raise RequestRefused(
                413,
                "too-many-instances",
                f"{len(data)} instances in one request; the limit is {max_instances}",
            )
        return [_features_of(item, i) for i, item in enumerate(data)], True
    return [_features_of(data, None)], False


def _features_of(item: Any, index: int | None) -> Any:
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
    extra = sorted(set(item) - {"x"})
    if extra:
        raise RequestRefused(
            422,
            "unknown-field",
            f"unexpected field(s) {', '.join(map(repr, extra))}; an instance is {{'x': {{...}}}}",
            instance=index,
        )
    return item["x"]


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
                    "example": {"x": {"feature_a": 0.5, "feature_b": 12}},
                }
            },
        }
    }
