"""Prometheus metrics of one served model, in a registry of the app's own."""

from __future__ import annotations

from typing import Any

from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Histogram
from prometheus_client.registry import Collector

from streamtrain.serving.follower import Servable, SnapshotSource
from streamtrain.serving.snapshot import ModelSnapshot, ReplicaSet

__all__ = ["ServingMetrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServingMetrics:
    """Predict and labels requests counted, predict timed, feature events and labels written
    counted, and the served model's state read at scrape time."""

    def __init__(self, name: str, source: SnapshotSource) -> None:
        self.name = name
        self.registry = CollectorRegistry(auto_describe=True)
        self._instances = Counter(
            "streamtrain_predictions",
            "Instances predicted",
            ["model"],
            registry=self.registry,
        )
        self._requests = Counter(
            "streamtrain_predict_requests",
            "Predict requests by HTTP status",
            ["model", "code"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "streamtrain_predict_latency_seconds",
            "Time to answer a predict request, from reading the body to the response",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._logged = Counter(
            "streamtrain_predictions_logged",
            "Predicted instances written to the log topic as feature events (acknowledged)",
            ["model"],
            registry=self.registry,
        )
        self._labels = Counter(
            "streamtrain_labels_accepted",
            "Labels written to the labels topic (acknowledged)",
            ["model"],
            registry=self.registry,
        )
        self._label_requests = Counter(
            "streamtrain_labels_requests",
            "Labels requests by HTTP status",
            ["model", "code"],
            registry=self.registry,
        )
        self.registry.register(_ModelCollector(name, source))

    def predicted(self, instances: int) -> None:
        self._instances.labels(self.name).inc(instances)

    def answered(self, code: int, seconds: float) -> None:
        """One predict request, whatever its outcome."""
        self._requests.labels(self.name, str(code)).inc()
        self._latency.labels(self.name).observe(seconds)

    def logged(self, instances: int) -> None:
        self._logged.labels(self.name).inc(instances)

    def labels_answered(self, code: int, accepted: int) -> None:
        """One labels request, whatever its outcome, and the labels it wrote."""
        self._label_requests.labels(self.name, str(code)).inc()
        self._labels.labels(self.name).inc(accepted)

    def response(self) -> Response:
        """The registry in the Prometheus text format, for ``GET /metrics``."""
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


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


def _spec(snapshot: Servable) -> str:
    first = snapshot.replicas[0] if isinstance(snapshot, ReplicaSet) else snapshot
    return first.header.model_spec


def _events_learned(snapshot: Servable) -> int:
    if isinstance(snapshot, ModelSnapshot):
        return snapshot.header.events_learned
    return snapshot.events_learned
