"""Trainer metrics as a Kafka stream: one record per progress report (see
:mod:`streamtrain.formats` for the topic, key and record format).

Records go through their own idempotent, non-transactional producer, so followers (the
dashboard) see them as they happen rather than at checkpoint commits. They describe the
trainer's live state, which can run ahead of the last committed checkpoint.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Producer

from streamtrain.config import KafkaSettings
from streamtrain.formats import (
    DEFAULT_METRICS_TOPIC,
    FINAL,
    METRICS_FORMAT,
    PROGRESS,
    encode_metrics_record,
)
from streamtrain.kafka.clients import client_config, ensure_topic
from streamtrain.state.envelope import model_version
from streamtrain.train.progress import Progress, Summary, joins_per_second

# DEFAULT_METRICS_TOPIC stays importable from here for the train and demo commands.
__all__ = [
    "DEFAULT_METRICS_TOPIC",
    "PROCESS_ID",
    "MetricsPublisher",
    "final_record",
    "join_record",
    "progress_record",
]

log = logging.getLogger(__name__)


# Several processes may train one (partitioned) model: each record says which one wrote it.
PROCESS_ID = f"{socket.gethostname()}:{os.getpid()}"


def progress_record(
    progress: Progress, kind: str = PROGRESS, previous: Progress | None = None
) -> dict[str, Any]:
    """The metrics record of ``progress``; ``previous`` (the report before it) gives the join
    rate. A ``join`` object only when labels are joined, so other records keep their shape."""
    positions = {str(p): o for p, o in sorted(progress.positions.items())}
    record: dict[str, Any] = {
        "format": METRICS_FORMAT,
        "kind": kind,
        "ts": time.time(),
        "model": progress.name,
        "group": progress.group,
        "topic": progress.topic,
        "spec": progress.model,
        "events_learned": progress.events_learned,
        "events_per_second": progress.events_per_second,
        "elapsed_seconds": progress.elapsed_seconds,
        "dead_lettered": progress.dead_lettered,
        "dead_letter_reasons": dict(progress.dead_letter_reasons),
        "events_predicted": progress.events_predicted,
        "metrics": dict(progress.metrics),
        "rolling": dict(progress.rolling_metrics),
        "lag": {str(p): n for p, n in sorted(progress.lag.items())},
        "total_lag": progress.total_lag,
        "positions": positions,
        "model_version": model_version(progress.topic, progress.positions),
        "broker_error": progress.broker_error,
        "process": PROCESS_ID,
        "tasks": {key: dict(task) for key, task in progress.tasks.items()},
    }
    if progress.join is not None:
        record["join"] = join_record(progress.join, joins_per_second(previous, progress))
    if progress.challengers:
        record["challengers"] = challengers_record(progress.challengers)
    if progress.drift is not None:
        record["drift"] = dict(progress.drift)
    if progress.champion is not None:  # the dashboard marks a promotion where it happened
        record["champion"] = progress.champion
        record["champion_since"] = progress.champion_since
        record["champion_spec"] = progress.champion_spec
    return record


def challengers_record(challengers: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A report's challengers as the metrics record carries them (see streamtrain.formats)."""
    return {label: dict(report) for label, report in challengers.items()}


def join_record(join: Mapping[str, Any], rate: float | None) -> dict[str, Any]:
    """A report's join counters (:func:`~streamtrain.train.reporting.join_summary`) plus the
    labels joined per second since the report before."""
    return {**join, "joins_per_second": rate}


def final_record(last: Progress, summary: Summary, join_rate: float | None) -> dict[str, Any]:
    """A run's last record: the last progress report's, with the summary's counts.

    The stop comes right after the last report, so a join rate over that sliver of time would
    be noise: the final record repeats ``join_rate``, the last progress record's.
    """
    final = progress_record(last, kind=FINAL)
    final.update(
        events_learned=summary.events_learned,
        dead_lettered=summary.dead_lettered,
        dead_letter_reasons=dict(summary.dead_letter_reasons),
        events_predicted=summary.events_predicted,
        metrics=dict(summary.metrics),
        events_per_second=summary.events_per_second,
        elapsed_seconds=summary.elapsed_seconds,
        total_lag=0 if summary.stopped_because == "idle" else final["total_lag"],
    )
    final.pop("join", None)
    if summary.join is not None:
        final["join"] = join_record(summary.join, join_rate)
    final.pop("challengers", None)
    if summary.challengers:
        final["challengers"] = challengers_record(summary.challengers)
    final.pop("drift", None)
    if summary.drift is not None:
        final["drift"] = dict(summary.drift)
    return final


class MetricsPublisher:
    """A trainer listener that writes every progress report to the metrics topic."""

    def __init__(self, kafka: KafkaSettings, topic: str = DEFAULT_METRICS_TOPIC) -> None:
        self.topic = topic
        ensure_topic(
            kafka,
            topic,
            partitions=1,
            # Followers want recent history (a dashboard's curve), not all of it forever.
            config={"retention.ms": str(7 * 24 * 3600 * 1000)},
        )
        self._producer = Producer(
            client_config(kafka, **{"enable.idempotence": True, "linger.ms": 50})
        )
        self._last: Progress | None = None
        self._join_rate: float | None = None  # of the last progress record
        self.failures = 0

    def on_progress(self, progress: Progress) -> None:
        record = progress_record(progress, previous=self._last)
        self._join_rate = record.get("join", {}).get("joins_per_second")
        self._last = progress
        self._send(record, progress)

    def on_finish(self, summary: Summary) -> None:
        if self._last is not None:
            self._send(final_record(self._last, summary, self._join_rate), self._last)
        if self._producer.flush(10):
            log.warning("some metric records were not delivered to %s", self.topic)

    def _send(self, record: dict[str, Any], progress: Progress) -> None:
        key = progress.name or progress.group
        try:
            self._producer.produce(
                self.topic,
                key=key,
                value=encode_metrics_record(record),
                on_delivery=self._delivered,
            )
        except BufferError:
            # Telemetry must never slow learning down: a full queue drops this report.
            self.failures += 1
        self._producer.poll(0)

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.failures += 1
