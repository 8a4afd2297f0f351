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
    the wrong shape or features that are not finite numbers, ``too-many-features`` for an
    instance over ``max_features``; 503 until a model is loaded; 404
    for another model's name.
    An instance may carry an ``"id"`` (a string of 1-256 characters, or an integer taken as its
    decimal string); its answer echoes it first: ``{"id": ..., "prediction": ...}``. 422
    ``bad-id`` for any other id, ``duplicate-id`` for one given twice in a request.
``POST /predict`` with a log topic (``serve --log-topic TOPIC``)
    As above, and every instance is written to TOPIC as a feature event keyed by its id (format
    in :mod:`streamtrain.serving.records`); an instance without an id gets a generated one
    (uuid4, hex), returned in its answer. The answer (200) comes only once the broker has
    acknowledged the records; 503 with a reason when it did not within the delivery timeout.
``POST /labels`` (also ``POST /models/{name}/labels``), with ``serve --labels-topic TOPIC``
    Body: ``{"id": ..., "y": label}``, or ``{"labels": [{"id": ..., "y": ...}, ...]}`` (at most
    ``max_instances``). ``y`` must suit the served model: a boolean, integer or string for a
    classifier, a finite number for a regressor (422 ``bad-label`` otherwise; 503 while no model
    is loaded). Each label is written to TOPIC as a label event keyed by its id; the answer is
    ``{"accepted": n}`` once the broker has acknowledged them. 404 ``labels-off`` without
    ``--labels-topic``.
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

With tokens (``serve --token-file``), every route but ``/healthz`` answers only a bearer token:
401 without a valid one, 403 for a read-only token on ``POST`` (see :mod:`.auth`).

The loop for labels that arrive later: a client predicts with an id (or keeps the generated
one), learns the outcome later and posts it to ``/labels``; a trainer run with
``--topic LOG --labels-topic LABELS`` joins feature and label events by id and learns; its next
checkpoint is hot-swapped in here.

This module wires the app; the predict path is in ``predict`` and ``validation``, labels in
``labels``, the records written in ``records`` through ``eventlog``'s one producer, the metrics
in ``prometheus``, the dashboard and its events in ``dashboard``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from streamtrain.config import KafkaSettings
from streamtrain.errors import NotAuthorized
from streamtrain.formats import DEFAULT_CHECKPOINT_TOPIC, DEFAULT_METRICS_TOPIC
from streamtrain.serving.auth import BearerAuth, document_bearer
from streamtrain.serving.dashboard import add_dashboard
from streamtrain.serving.eventlog import DEFAULT_DELIVERY_TIMEOUT, EventLog, Sink
from streamtrain.serving.follower import (
    CheckpointFollower,
    MetricsFollower,
    MetricsHub,
    ModelKeys,
    SnapshotSource,
    StaticSnapshotSource,
)
from streamtrain.serving.labels import LabelTaker
from streamtrain.serving.predict import Predictor
from streamtrain.serving.prometheus import ServingMetrics
from streamtrain.serving.responses import RequestRefused, json_response, refusal_response
from streamtrain.serving.server import BackgroundServer
from streamtrain.serving.snapshot import ModelSnapshot
from streamtrain.serving.tokens import TokenSet
from streamtrain.serving.validation import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_FEATURES,
    DEFAULT_MAX_INSTANCES,
    labels_openapi,
    parse_instances,
    predict_openapi,
)
from streamtrain.state.history import history_topic
from streamtrain.state.keys import SigningKey
from streamtrain.state.store import CheckpointStore

__all__ = [
    "BackgroundServer",
    "RequestRefused",
    "create_app",
    "create_kafka_app",
    "parse_instances",
]


def create_app(
    name: str,
    source: SnapshotSource,
    metrics_feed: MetricsHub | None = None,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_instances: int = DEFAULT_MAX_INSTANCES,
    max_features: int = DEFAULT_MAX_FEATURES,
    event_log: EventLog | None = None,
    log_topic: str | None = None,
    labels_topic: str | None = None,
    tokens: TokenSet | None = None,
    secure_cookie: bool = False,
) -> FastAPI:
    """The app serving model ``name`` from ``source``; its lifespan starts and stops both feeds.

    ``source`` is usually a :class:`CheckpointFollower`, ``metrics_feed`` a
    :class:`MetricsFollower`; tests inject a :class:`StaticSnapshotSource` and a bare
    :class:`MetricsHub`. ``log_topic`` and ``labels_topic`` are written through ``event_log``
    (required with either), which the app closes at shutdown. With ``tokens``, every route but
    ``/healthz`` needs one (:mod:`streamtrain.serving.auth`); ``secure_cookie`` for HTTPS.
    """
    if (log_topic or labels_topic) and event_log is None:
        raise ValueError("log_topic and labels_topic need an event_log to write through")
    feed = metrics_feed if metrics_feed is not None else MetricsHub()
    metrics = ServingMetrics(name, source, feed)
    predictor = Predictor(
        name,
        source,
        metrics,
        max_body_bytes=max_body_bytes,
        max_instances=max_instances,
        max_features=max_features,
        log=Sink(event_log, log_topic, "feature events") if event_log and log_topic else None,
    )
    taker = LabelTaker(
        name,
        source,
        metrics,
        Sink(event_log, labels_topic, "labels") if event_log and labels_topic else None,
        max_body_bytes=max_body_bytes,
        max_labels=max_instances,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        source.start()
        feed.start()
        try:
            yield
        finally:
            # Followers join threads that poll Kafka, the log flushes: off the event loop.
            await asyncio.to_thread(_stop_all, source, feed, predictor, event_log)

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
    app.add_exception_handler(RequestRefused, refusal_response)
    _add_model_routes(app, name, source, predictor, predict_openapi(max_instances))
    _add_label_routes(app, name, taker, labels_openapi(max_instances))
    _add_probe_routes(app, source, metrics)
    add_dashboard(app, name, feed)
    if tokens is not None:
        app.add_middleware(BearerAuth, tokens=tokens, secure_cookie=secure_cookie)
        document_bearer(app)
    return app


def _add_model_routes(
    app: FastAPI,
    name: str,
    source: SnapshotSource,
    predictor: Predictor,
    predict_doc: dict[str, Any],
) -> None:
    """Predict and describe, at ``/predict`` and ``/model`` and under ``/models/{name}``."""

    @app.post("/predict", openapi_extra=predict_doc, summary="Predict one instance or a batch")
    async def predict_default(request: Request) -> Response:
        return await predictor.answer(request)

    @app.post("/models/{model}/predict", openapi_extra=predict_doc, summary="Predict, by name")
    async def predict_named(model: str, request: Request) -> Response:
        _check_name(model, name)
        return await predictor.answer(request)

    def describe() -> Response:
        snapshot = source.current()
        status = source.status()
        if snapshot is None:
            return json_response(
                {
                    "name": name,
                    "loaded": False,
                    "reason": f"model {name!r} has no verified checkpoint yet",
                    **_follower_fields(status),
                },
                503,
            )
        return json_response({**snapshot.describe(), "loaded": True, **_follower_fields(status)})

    @app.get("/model", summary="The served model's state")
    async def model_default() -> Response:
        return describe()

    @app.get("/models/{model}", summary="The served model's state, by name")
    async def model_named(model: str) -> Response:
        _check_name(model, name)
        return describe()


def _add_label_routes(
    app: FastAPI, name: str, taker: LabelTaker, labels_doc: dict[str, Any]
) -> None:
    """``/labels`` and ``/models/{name}/labels``: outcomes of earlier predictions."""

    @app.post("/labels", openapi_extra=labels_doc, summary="Post the outcome of a prediction")
    async def labels_default(request: Request) -> Response:
        return await taker.answer(request)

    @app.post("/models/{model}/labels", openapi_extra=labels_doc, summary="Post labels, by name")
    async def labels_named(model: str, request: Request) -> Response:
        _check_name(model, name)
        return await taker.answer(request)


def _check_name(requested: str, name: str) -> None:
    if requested != name:
        raise RequestRefused(
            404, "unknown-model", f"no model {requested!r} here; this server serves {name!r}"
        )


def _follower_fields(status: dict[str, Any]) -> dict[str, Any]:
    return {
        "swaps": status.get("swaps", 0),
        "last_rejection": status.get("last_rejection"),
        "follower": status,
    }


def _add_probe_routes(app: FastAPI, source: SnapshotSource, prometheus: ServingMetrics) -> None:
    """``/healthz``, ``/readyz`` and ``/metrics``: what orchestrators and Prometheus poll."""
    started = time.time()

    @app.get("/healthz", summary="The process is up")
    async def healthz() -> Response:
        return json_response({"status": "ok", "uptime_seconds": round(time.time() - started, 3)})

    @app.get("/readyz", summary="A model is loaded")
    async def readyz() -> Response:
        snapshot = source.current()
        if snapshot is None:
            reason = source.status().get("denied") or "no model loaded yet"
            return json_response({"ready": False, "reason": reason}, 503)
        return json_response({"ready": True, "model_version": snapshot.version})

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:  # the name makes the OpenAPI operationId
        return prometheus.response()


def _stop_all(
    source: SnapshotSource, feed: MetricsHub, predictor: Predictor, event_log: EventLog | None
) -> None:
    feed.stop()
    source.stop()
    predictor.shutdown()
    if event_log is not None:
        event_log.close()


def create_kafka_app(
    kafka: KafkaSettings,
    key: SigningKey,
    name: str,
    *,
    checkpoint_topic: str = DEFAULT_CHECKPOINT_TOPIC,
    metrics_topic: str | None = DEFAULT_METRICS_TOPIC,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_instances: int = DEFAULT_MAX_INSTANCES,
    max_features: int = DEFAULT_MAX_FEATURES,
    log_topic: str | None = None,
    labels_topic: str | None = None,
    delivery_timeout: float = DEFAULT_DELIVERY_TIMEOUT,
    tokens: TokenSet | None = None,
    secure_cookie: bool = False,
    on_denied: Callable[[NotAuthorized], None] | None = None,
    pin: int | None = None,
) -> FastAPI:
    """:func:`create_app` following ``name`` in Kafka; ``metrics_topic=None`` skips metrics.

    ``pin`` serves that kept version (:mod:`streamtrain.state.history`) instead of following
    the newest checkpoint; :class:`~streamtrain.state.history.VersionNotKept` if it is not kept.

    ``log_topic`` and ``labels_topic`` turn on the prediction log and ``POST /labels``,
    written through one :class:`EventLog` waiting at most ``delivery_timeout`` seconds.
    A follower refused a right stops and calls ``on_denied`` (from its thread); ``/readyz``
    then names the right.
    """
    keys = ModelKeys(name)
    follower: SnapshotSource
    if pin is None:
        follower = CheckpointFollower(
            CheckpointStore(kafka, key, checkpoint_topic), keys, on_denied
        )
    else:
        history = CheckpointStore(kafka, key, history_topic(checkpoint_topic))
        follower = StaticSnapshotSource(ModelSnapshot.pinned(history, name, pin))
    feed = (
        MetricsFollower(kafka, keys, metrics_topic, on_denied=on_denied) if metrics_topic else None
    )
    writes = bool(log_topic or labels_topic)
    return create_app(
        name,
        follower,
        feed,
        max_body_bytes=max_body_bytes,
        max_instances=max_instances,
        max_features=max_features,
        event_log=EventLog(kafka, delivery_timeout=delivery_timeout) if writes else None,
        log_topic=log_topic,
        labels_topic=labels_topic,
        tokens=tokens,
        secure_cookie=secure_cookie,
    )
