"""Prometheus metrics of one served model, in a registry of the app's own: requests, the served
checkpoint, and the trainer (progress, lag, dead letters, the join of labels) as its newest
metrics record tells it. ``deploy/`` has alert rules and a Grafana dashboard over these series."""

from __future__ import annotations

import time
from typing import Any, TypeGuard

from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Histogram
from prometheus_client.registry import Collector

from streamtrain.serving.follower import MetricsHub, Servable, SnapshotSource
from streamtrain.serving.snapshot import ModelSnapshot, ReplicaSet

__all__ = ["ServingMetrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServingMetrics:
    """Predict and labels requests counted, predict timed, feature events and labels written
    counted, and the served model's state (and its trainer's join, from ``feed``) read at
    scrape time."""

    def __init__(self, name: str, source: SnapshotSource, feed: MetricsHub | None = None) -> None:
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
        if feed is not None:
            self.registry.register(_TrainerCollector(name, feed))
            self.registry.register(_JoinCollector(name, feed))

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


class _TrainerCollector(Collector):
    """The trainer as its newest metrics record (of all its processes, merged) tells it: how
    long ago it reported, what it learned and dead-lettered, its lag. No series before the
    first record, so an alert can tell "no trainer record" from "lag 0"."""

    def __init__(self, name: str, feed: MetricsHub) -> None:
        self.name = name
        self.feed = feed

    def collect(self) -> Any:
        record = self.feed.latest()
        if record is None:
            return
        age = GaugeMetricFamily(
            "streamtrain_trainer_record_age_seconds",
            "Seconds since the trainer's newest metrics record (grows when it stops or hangs)",
            labels=["model"],
        )
        ts = record.get("ts")
        _add(age, [self.name], max(time.time() - ts, 0.0) if _is_number(ts) else None)
        learned = CounterMetricFamily(
            "streamtrain_trainer_events_learned",
            "Events learned, as the trainer last reported (ahead of the served checkpoint)",
            labels=["model"],
        )
        _add(learned, [self.name], record.get("events_learned"))
        dead = CounterMetricFamily(
            "streamtrain_trainer_dead_lettered",
            "Records dead-lettered, by reason, as the trainer last reported",
            labels=["model", "reason"],
        )
        reasons = record.get("dead_letter_reasons")
        for reason, n in (reasons if isinstance(reasons, dict) else {}).items():
            _add(dead, [self.name, str(reason)], n)
        lag = GaugeMetricFamily(
            "streamtrain_trainer_lag",
            "Records in the input partition not yet consumed, as the trainer last reported",
            labels=["model", "partition"],
        )
        partitions = record.get("lag")
        for partition, n in (partitions if isinstance(partitions, dict) else {}).items():
            _add(lag, [self.name, str(partition)], n)
        drifts = CounterMetricFamily(
            "streamtrain_drift_detections",
            "Drift detections, by model label (champion or challenger), as the trainer last "
            "reported (train --drift)",
            labels=["model", "label"],
        )
        drift = record.get("drift")
        counts = drift.get("detections") if isinstance(drift, dict) else None
        for label, n in (counts if isinstance(counts, dict) else {}).items():
            _add(drifts, [self.name, str(label)], n)
        yield from (f for f in (age, learned, dead, lag, drifts) if f.samples)


# The join's counters in metrics records (streamtrain.formats), as Prometheus counters.
_JOIN_COUNTERS = {
    "joined": "Labels joined to their prediction and learned (joins per second: rate() of it)",
    "expired": "Predictions whose label did not come within --label-ttl, dead-lettered",
    "defaulted": "Predictions whose label did not come in time, learned with --default-label",
    "unmatched": "Labels whose features did not come within --label-grace, dead-lettered",
    "duplicate": "Second labels for an id, dead-lettered",
    "evicted": "Predictions and labels ended early by --max-pending (counted above too)",
}


class _JoinCollector(Collector):
    """The trainer's join, from the newest metrics record (of all its processes, merged); no
    series for a model whose trainer does not join labels, or before its first record."""

    def __init__(self, name: str, feed: MetricsHub) -> None:
        self.name = name
        self.feed = feed

    def collect(self) -> Any:
        record = self.feed.latest()
        join = record.get("join") if record is not None else None
        if not isinstance(join, dict):
            return
        waiting = {
            "pending": "Predictions waiting for their label, as the trainer last reported",
            "held_labels": "Labels waiting for their features, as the trainer last reported",
        }
        families: list[GaugeMetricFamily | CounterMetricFamily] = []
        for field, text in waiting.items():
            gauge = GaugeMetricFamily(f"streamtrain_join_{field}", text, labels=["model"])
            _add(gauge, [self.name], join.get(field))
            families.append(gauge)
        for field, text in _JOIN_COUNTERS.items():
            counter = CounterMetricFamily(f"streamtrain_join_{field}", text, labels=["model"])
            _add(counter, [self.name], join.get(field))
            families.append(counter)
        delay = GaugeMetricFamily(
            "streamtrain_join_label_delay_seconds",
            "Label event time minus its features' event time, quantiles over joined labels",
            labels=["model", "quantile"],
        )
        for quantile, field in (("0.5", "label_delay_p50_ms"), ("0.99", "label_delay_p99_ms")):
            ms = join.get(field)
            _add(delay, [self.name, quantile], ms / 1000 if _is_number(ms) else None)
        families.append(delay)
        # A field the record lacks (no delay before the first join) makes no empty family.
        yield from (family for family in families if family.samples)


def _add(family: GaugeMetricFamily | CounterMetricFamily, labels: list[str], value: Any) -> None:
    """A sample when ``value`` is a number: records are read, not trusted (see formats)."""
    if _is_number(value):
        family.add_metric(labels, float(value))


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)
