"""The HTTP face of a live model: predictions, state, health, Prometheus metrics, a dashboard.

One app serves one named model (``streamtrain serve --name NAME``). Routes:

``POST /predict`` (also ``POST /models/{name}/predict``)
    Body: one instance ``{"x": {"feature": number, ...}}`` answered by one object, or a JSON
    array of instances answered by an array in the same order. Each answer holds
    ``prediction``, ``probabilities`` (classifiers), ``model_version`` and
    ``events_learned``; all answers of a request come from the same model version. Bad input
    is refused whole with ``{"error": ..., "reason": ...}`` (plus ``"instance": i`` for an
    element of a batch): 400 when the body is not JSON (NaN and Infinity are not JSON), 413
    for a body over ``max_body_bytes`` or more than ``max_instances`` instances, 422 for JSON of
    the wrong shape or features that are not finite numbers; 503 until a model is loaded; 404
    for another model's name.
``GET /model`` (also ``GET /models/{name}``)
    Name, spec, version, events learned, metrics, checkpoint age, swaps, last rejected
    checkpoint. 503 with the same status fields while no model is loaded.
``GET /healthz``, ``GET /readyz``
    The process answers; a model is loaded (503 until then).
``GET /metrics``
    Prometheus text format, from a registry of the app's own.
``GET /openapi.json``
    The API description (FastAPI's /docs page is off: it loads scripts from a CDN).
``GET /``, ``GET /events``, ``/static/...``
    The dashboard, and its server-sent events: one ``history`` event (a JSON array of the
    metrics records kept so far) then one ``record`` event per new record.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Histogram
from prometheus_client.registry import Collector

from streamtrain.config import KafkaSettings
from streamtrain.data.events import InvalidEvent, Reason
from streamtrain.formats import DEFAULT_CHECKPOINT_TOPIC, DEFAULT_METRICS_TOPIC
from streamtrain.serving.follower import (
    CheckpointFollower,
    MetricsFollower,
    MetricsHub,
    ModelKeys,
    Servable,
    SnapshotSource,
    Subscription,
)
from streamtrain.serving.snapshot import ModelSnapshot, ReplicaSet
from streamtrain.state.keys import SigningKey
from streamtrain.state.store import CheckpointStore

__all__ = [
    "BackgroundServer",
    "RequestRefused",
    "create_app",
    "create_kafka_app",
    "parse_instances",
]

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_MAX_INSTANCES = 1_000
SSE_HEARTBEAT_SECONDS = 15.0
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# The dashboard loads nothing but its own files: a CDN reference would simply be blocked.
_DASHBOARD_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


_INSTANCE_SCHEMA = {
    "type": "object",
    "required": ["x"],
    "properties": {"x": {"type": "object", "additionalProperties": {"type": "number"}}},
}


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


def _json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # orjson writes NaN as null, so an odd model output still yields valid JSON.
    return Response(
        orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def parse_instances(body: bytes, max_instances: int) -> tuple[list[Any], bool]:
    """Decode a predict body into feature objects; True when it was a batch (an array).

    Only the shape is checked here; features are validated by the snapshot's ``predict``.
    """
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


async def _read_body(request: Request, limit: int) -> bytes:
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


class _ModelCollector(Collector):
    """Model gauges computed at scrape time, so a swapped-out version leaves no stale series."""

    def __init__(self, name: str, source: SnapshotSource) -> None:
        self.name = name
        self.source = source

    def collect(self) -> Any:
        snapshot = self.source.current()
        loaded = GaugeMetricFamily(
            "streamtrain_model_loaded", "1 when a model is loaded and served", labels=["model"]
        )
        loaded.add_metric([self.name], 0.0 if snapshot is None else 1.0)
        yield loaded
        swaps = CounterMetricFamily(
            "streamtrain_model_swaps", "Checkpoints swapped in", labels=["model"]
        )
        swaps.add_metric([self.name], self.source.swaps)
        yield swaps
        rejected = CounterMetricFamily(
            "streamtrain_checkpoints_rejected",
            "Checkpoints that failed verification and were not served",
            labels=["model"],
        )
        rejected.add_metric([self.name], self.source.rejections)
        yield rejected
        if snapshot is None:
            return
        info = GaugeMetricFamily(
            "streamtrain_model_info",
            "The served model version (value always 1)",
            labels=["model", "version", "spec"],
        )
        info.add_metric([self.name, snapshot.version, _spec(snapshot)], 1.0)
        yield info
        age = GaugeMetricFamily(
            "streamtrain_model_checkpoint_age_seconds",
            "Seconds since the served checkpoint was written",
            labels=["model"],
        )
        age.add_metric([self.name], snapshot.age_seconds())
        yield age
        learned = GaugeMetricFamily(
            "streamtrain_model_events_learned",
            "Events the served model has learned",
            labels=["model"],
        )
        learned.add_metric([self.name], _events_learned(snapshot))
        yield learned
        metric = GaugeMetricFamily(
            "streamtrain_model_metric",
            "Progressive validation metrics of the served checkpoint (of each replica)",
            labels=["model", "replica", "metric"],
        )
        for snap in snapshot.replicas if isinstance(snapshot, ReplicaSet) else (snapshot,):
            for key, value in snap.header.metrics.items():
                metric.add_metric([self.name, snap.header.model_name, key], value)
        yield metric


def create_app(
    name: str,
    source: SnapshotSource,
    metrics_feed: MetricsHub | None = None,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_instances: int = DEFAULT_MAX_INSTANCES,
) -> FastAPI:
    """The app serving model ``name`` from ``source``; its lifespan starts and stops both feeds.

    ``source`` is usually a :class:`CheckpointFollower`, ``metrics_feed`` a
    :class:`MetricsFollower`; tests inject a :class:`StaticSnapshotSource` and a bare
    :class:`MetricsHub`.
    """
    feed = metrics_feed if metrics_feed is not None else MetricsHub()
    # One thread runs every prediction: River models are not documented as thread-safe,
    # and keeping them off the event loop keeps /healthz and /metrics answering.
    predictor = ThreadPoolExecutor(1, thread_name_prefix=f"predict:{name}")
    registry = CollectorRegistry(auto_describe=True)
    instances_total = Counter(
        "streamtrain_predictions",
        "Instances predicted",
        ["model"],
        registry=registry,
    )
    requests_total = Counter(
        "streamtrain_predict_requests",
        "Predict requests by HTTP status",
        ["model", "code"],
        registry=registry,
    )
    latency = Histogram(
        "streamtrain_predict_latency_seconds",
        "Time to answer a predict request, from reading the body to the response",
        ["model"],
        buckets=_LATENCY_BUCKETS,
        registry=registry,
    )
    registry.register(_ModelCollector(name, source))
    started = time.time()

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        source.start()
        feed.start()
        try:
            yield
        finally:
            # Followers join threads that poll Kafka: do that off the event loop.
            await asyncio.to_thread(_stop_all, source, feed, predictor)

    app = FastAPI(
        title=f"streamtrain · {name}",
        summary="Predictions from a model that keeps learning from Kafka",
        lifespan=lifespan,
        # FastAPI's /docs and /redoc pages load their scripts from a CDN; the OpenAPI
        # document itself (/openapi.json) is served from here.
        docs_url=None,
        redoc_url=None,
    )
    app.state.source = source
    app.state.metrics_feed = feed
    app.state.model_name = name

    @app.exception_handler(RequestRefused)
    async def refused(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestRefused)
        return _json(exc.body(), exc.status)

    def check_name(requested: str) -> None:
        if requested != name:
            raise RequestRefused(
                404, "unknown-model", f"no model {requested!r} here; this server serves {name!r}"
            )

    def loaded() -> Servable:
        snapshot = source.current()
        if snapshot is None:
            raise RequestRefused(
                503,
                "no-model",
                f"model {name!r} has no verified checkpoint yet",
            )
        return snapshot

    async def predict(request: Request) -> Response:
        t0 = time.perf_counter()
        code = 500
        try:
            body = await _read_body(request, max_body_bytes)
            features, batch = parse_instances(body, max_instances)
            snapshot = loaded()  # read once: every answer of this request uses it
            loop = asyncio.get_running_loop()
            answers = await loop.run_in_executor(predictor, _predict_all, snapshot, features, batch)
            instances_total.labels(name).inc(len(answers))
            code = 200
            return _json(answers if batch else answers[0])
        except RequestRefused as refusal:
            code = refusal.status
            raise
        finally:
            requests_total.labels(name, str(code)).inc()
            latency.labels(name).observe(time.perf_counter() - t0)

    predict_doc = {
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

    @app.post("/predict", openapi_extra=predict_doc, summary="Predict one instance or a batch")
    async def predict_default(request: Request) -> Response:
        return await predict(request)

    @app.post("/models/{model}/predict", openapi_extra=predict_doc, summary="Predict, by name")
    async def predict_named(model: str, request: Request) -> Response:
        check_name(model)
        return await predict(request)

    def describe() -> Response:
        snapshot = source.current()
        status = source.status()
        if snapshot is None:
            return _json(
                {
                    "name": name,
                    "loaded": False,
                    "reason": f"model {name!r} has no verified checkpoint yet",
                    **_follower_fields(status),
                },
                503,
            )
        return _json({**snapshot.describe(), "loaded": True, **_follower_fields(status)})

    @app.get("/model", summary="The served model's state")
    async def model_default() -> Response:
        return describe()

    @app.get("/models/{model}", summary="The served model's state, by name")
    async def model_named(model: str) -> Response:
        check_name(model)
        return describe()

    @app.get("/healthz", summary="The process is up")
    async def healthz() -> Response:
        return _json({"status": "ok", "uptime_seconds": round(time.time() - started, 3)})

    @app.get("/readyz", summary="A model is loaded")
    async def readyz() -> Response:
        snapshot = source.current()
        if snapshot is None:
            return _json({"ready": False, "reason": "no model loaded yet"}, 503)
        return _json({"ready": True, "model_version": snapshot.version})

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

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
        return _json(
            {
                "name": name,
                "max_records": feed.capacity,
                "metrics_topic": getattr(feed, "topic", None),
            }
        )

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _spec(snapshot: Servable) -> str:
    first = snapshot.replicas[0] if isinstance(snapshot, ReplicaSet) else snapshot
    return first.header.model_spec


def _events_learned(snapshot: Servable) -> int:
    if isinstance(snapshot, ModelSnapshot):
        return snapshot.header.events_learned
    return snapshot.events_learned


def _follower_fields(status: dict[str, Any]) -> dict[str, Any]:
    return {
        "swaps": status.get("swaps", 0),
        "last_rejection": status.get("last_rejection"),
        "follower": status,
    }


def _predict_all(snapshot: Servable, features: list[Any], batch: bool) -> list[dict[str, Any]]:
    answers = []
    for i, x in enumerate(features):
        try:
            answers.append(snapshot.predict(x))
        except InvalidEvent as bad:
            raise RequestRefused(
                422, bad.reason.value, bad.message, instance=i if batch else None
            ) from None
        except Exception as err:  # the model itself failed: a server error, said in JSON
            raise RequestRefused(
                500, "model-error", f"{type(err).__name__}: {err}", instance=i if batch else None
            ) from None
    return answers


async def _sse(
    history: list[dict[str, Any]],
    sub: Subscription,
    feed: MetricsHub,
    disconnected: Callable[[], Awaitable[bool]],
) -> AsyncIterator[bytes]:
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


def _stop_all(source: SnapshotSource, feed: MetricsHub, predictor: ThreadPoolExecutor) -> None:
    feed.stop()
    source.stop()
    predictor.shutdown(wait=True, cancel_futures=True)


def create_kafka_app(
    kafka: KafkaSettings,
    key: SigningKey,
    name: str,
    *,
    checkpoint_topic: str = DEFAULT_CHECKPOINT_TOPIC,
    metrics_topic: str | None = DEFAULT_METRICS_TOPIC,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_instances: int = DEFAULT_MAX_INSTANCES,
) -> FastAPI:
    """:func:`create_app` following ``name`` in Kafka; ``metrics_topic=None`` skips metrics."""
    keys = ModelKeys(name)
    follower = CheckpointFollower(CheckpointStore(kafka, key, checkpoint_topic), keys)
    feed = MetricsFollower(kafka, keys, metrics_topic) if metrics_topic else None
    return create_app(
        name, follower, feed, max_body_bytes=max_body_bytes, max_instances=max_instances
    )


class BackgroundServer:
    """Run an app with uvicorn on a thread (tests, notebooks); ``port=0`` picks a free port."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2
        )
        self.server = uvicorn.Server(self.config)
        self._thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    @property
    def url(self) -> str:
        sock = self.server.servers[0].sockets[0]
        host, port = sock.getsockname()[:2]
        return f"http://{host}:{port}"

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the HTTP server did not start")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
