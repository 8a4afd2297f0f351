"""The dashboard: its page, settings and static files, and the /events stream it draws from."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from streamtrain.serving.follower import MetricsHub, Subscription
from streamtrain.serving.responses import json_response

__all__ = ["SSE_HEARTBEAT_SECONDS", "STATIC_DIR", "add_dashboard"]

STATIC_DIR = Path(__file__).parent / "static"
SSE_HEARTBEAT_SECONDS = 15.0
# The dashboard loads nothing but its own files: a CDN reference would simply be blocked.
_DASHBOARD_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def add_dashboard(app: FastAPI, name: str, feed: MetricsHub) -> None:
    """Add ``GET /events``, ``GET /``, ``GET /dashboard.json`` and ``/static`` to ``app``."""

    @app.get("/events", summary="Server-sent events of the trainer's metrics records")
    async def events(request: Request) -> StreamingResponse:
        history, sub = feed.subscribe()
        return StreamingResponse(
            _sse(history, sub, feed, request.is_disconnected),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.get("/", include_in_schema=False)
    async def dashboard() -> Response:
        return FileResponse(
            STATIC_DIR / "index.html",
            headers={"Content-Security-Policy": _DASHBOARD_CSP, "Cache-Control": "no-cache"},
        )

    @app.get("/dashboard.json", include_in_schema=False)
    async def dashboard_config() -> Response:
        return json_response(
            {
                "name": name,
                "max_records": feed.capacity,
                "metrics_topic": getattr(feed, "topic", None),
            }
        )

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


async def _sse(
    history: list[dict[str, Any]],
    sub: Subscription,
    feed: MetricsHub,
    disconnected: Callable[[], Awaitable[bool]],
) -> AsyncIterator[bytes]:
    """One ``history`` event, then a ``record`` event per new record until the feed ends."""
    try:
        yield b"retry: 2000\nevent: history\ndata: " + orjson.dumps(history) + b"\n\n"
        while not sub.overflowed:
            try:
                record = await asyncio.wait_for(sub.queue.get(), SSE_HEARTBEAT_SECONDS)
            except TimeoutError:
                if await disconnected():
                    return
                yield b": keep-alive\n\n"  # also how a vanished client is noticed
                continue
            if record is None:
                return
            yield b"event: record\ndata: " + orjson.dumps(record) + b"\n\n"
    finally:
        feed.unsubscribe(sub)
