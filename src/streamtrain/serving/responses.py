"""JSON answers, and :class:`RequestRefused`, the exception every error answer comes from."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

__all__ = ["RequestRefused", "json_response", "refusal_response"]


class RequestRefused(Exception):
    """A request answered with an error status and a JSON reason."""

    def __init__(
        self, status: int, reason: str, message: str, *, instance: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.instance = instance

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message, "reason": self.reason}
        if self.instance is not None:
            body["instance"] = self.instance
        return body


def json_response(content: Any, status: int = 200) -> Response:
    # orjson writes NaN as null, so an odd model output still yields valid JSON.
    return Response(
        orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS),
        status_code=status,
        media_type="application/json",
    )


async def refusal_response(_request: Request, exc: Exception) -> Response:
    """The app's handler for :class:`RequestRefused`: ``{"error", "reason"[, "instance"]}``."""
    assert isinstance(exc, RequestRefused)
    return json_response(exc.body(), exc.status)
