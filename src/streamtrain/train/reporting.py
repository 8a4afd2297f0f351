"""What a trainer says about itself: lag, combined metrics, progress records and the summary."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException

from streamtrain.errors import NotAuthorized
from streamtrain.kafka.authz import is_denied, not_authorized
from streamtrain.train import drift
from streamtrain.train.progress import Progress, Summary
from streamtrain.train.registry import TaskRegistry
from streamtrain.train.settings import TrainSettings

__all__ = [
    "ClientErrors",
    "ThrottledLog",
    "challenger_summary",
    "combined_metrics",
    "drift_summary",
    "lag",
    "progress",
    "summary",
]

log = logging.getLogger("streamtrain.train.trainer")


def lag(
    consumer: Consumer, registry: TaskRegistry, timeout: float, *, cached: bool
) -> dict[int, int] | None:
    """Records left per assigned partition number (a separate labels topic's partition counts
    with the input's of the same number); ``None`` when the broker could not be asked."""
    out: dict[int, int] = {}
    positions = consumer.position(registry.assignment) if registry.assignment else []
    for tp in positions:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout, cached=cached)
        except KafkaException:
            return None
        if high < 0:
            return None
        task = registry.by_input.get((tp.topic, tp.partition))
        if task and task.merge and task.merge.buffered(tp_key(tp)):
            # Consumed, but waiting in a join's merge: not learned yet.
            position = registry.next_offset(tp.topic, tp.partition, low, high)
        elif tp.offset >= 0:
            position = tp.offset
        else:  # not consumed yet
            position = task.offsets_of(tp.topic).get(tp.partition, high) if task else high
        out[tp.partition] = out.get(tp.partition, 0) + max(high - position, 0)
    return out


def tp_key(tp: Any) -> tuple[str, int]:
    return tp.topic, tp.partition


def combined_metrics(registry: TaskRegistry) -> tuple[dict[str, float], dict[str, float]]:
    """Metrics of the single task, or the event-weighted mean over a partitioned model's
    replicas (documented as an approximation: each replica is scored on its own stream)."""
    tasks = list(registry.tasks.values())
    if len(tasks) == 1:
        ev = tasks[0].sync()
        return ev.values(), ev.rolling_values()
    total = sum(t.events_learned for t in tasks)
    if not tasks or total == 0:
        return {}, {}
    metrics: dict[str, float] = {}
    rolling: dict[str, float] = {}
    for t in tasks:
        weight = t.events_learned / total
        for name, value in t.sync().values().items():
            metrics[name] = metrics.get(name, 0.0) + weight * value
        for name, value in t.evaluator.rolling_values().items():
            rolling[name] = rolling.get(name, 0.0) + weight * value
    return metrics, rolling


def challenger_summary(registry: TaskRegistry) -> dict[str, dict[str, Any]]:
    """Each challenger's report (:meth:`Challenger.summary`) by label: the single task's, or
    over a partitioned model's replicas the counters summed and the metrics weighted by
    events learned, as :func:`combined_metrics` does for the champion."""
    parts: dict[str, list[dict[str, Any]]] = {}
    for task in registry.tasks.values():
        for label, challenger in task.challengers.items():
            parts.setdefault(label, []).append(challenger.summary())
    return {label: _combine(reports) for label, reports in parts.items()}


def drift_summary(registry: TaskRegistry) -> dict[str, Any] | None:
    """The drift detections of every task (:meth:`TaskDrift.summary`, combined); None: off."""
    return drift.combine([t.drift.summary() for t in registry.tasks.values() if t.drift])


def _combine(reports: list[dict[str, Any]]) -> dict[str, Any]:
    if len(reports) == 1:
        return reports[0]
    total = sum(r["events_learned"] for r in reports)
    out = {
        "spec": reports[0]["spec"],
        "events_learned": total,
        "model_errors": sum(r["model_errors"] for r in reports),
        "started_at": min(r["started_at"] for r in reports),
    }
    for field in ("metrics", "rolling"):
        combined: dict[str, float] = {}
        for r in reports:
            weight = r["events_learned"] / total if total else 0.0
            for name, value in r[field].items():
                combined[name] = combined.get(name, 0.0) + weight * value
        out[field] = combined
    return out


def _reasons(registry: TaskRegistry) -> dict[str, int]:
    total: dict[str, int] = {}
    for task in registry.tasks.values():
        for reason, n in task.dead_letter_reasons.items():
            total[reason] = total.get(reason, 0) + n
    return total


def _task_summaries(registry: TaskRegistry) -> dict[str, dict[str, Any]]:
    if not registry.partitioned:
        return {}
    return {k: t.summary() for k, t in registry.tasks.items()}


def join_summary(registry: TaskRegistry) -> dict[str, Any] | None:
    """The join counters summed over tasks (delay quantiles: the largest task's, a replica's
    own stream being the only exact one); None when labels are not joined."""
    joins = [t.join_state.summary() for t in registry.tasks.values() if t.join_state is not None]
    if not joins:
        return None
    total: dict[str, Any] = {}
    for part in joins:
        for name, value in part.items():
            if not name.startswith("label_delay"):
                total[name] = total.get(name, 0) + value
    largest = max(joins, key=lambda j: j["joined"])
    return {**total, **{k: v for k, v in largest.items() if k.startswith("label_delay")}}


def _offsets(registry: TaskRegistry) -> dict[int, int]:
    return {p: o for t in registry.tasks.values() for p, o in t.offsets.items()}


def progress(
    registry: TaskRegistry,
    consumer: Consumer,
    *,
    common: dict[str, Any],
    elapsed: float,
    rate: float,
    timeout: float,
) -> Progress:
    metrics, rolling = combined_metrics(registry)
    reasons = _reasons(registry)
    positions = _offsets(registry)
    labels = {t.labels_topic for t in registry.tasks.values()}
    for (topic, partition), offset in registry.positions(consumer).items():
        task = registry.by_input.get((topic, partition))
        if topic not in labels and not (
            task and task.merge and task.merge.buffered((topic, partition))
        ):
            positions[partition] = offset
    return Progress(
        **common,
        events_learned=sum(t.events_learned for t in registry.tasks.values()),
        dead_lettered=sum(reasons.values()),
        events_per_second=rate,
        elapsed_seconds=elapsed,
        metrics=metrics,
        lag=lag(consumer, registry, timeout, cached=True) or {},
        dead_letter_reasons=reasons,
        rolling_metrics=rolling,
        positions=positions,
        tasks=_task_summaries(registry),
        events_predicted=sum(t.events_predicted for t in registry.tasks.values()),
        join=join_summary(registry),
        challengers=challenger_summary(registry),
        drift=drift_summary(registry),
        **champion_of(registry),
    )


def champion_of(registry: TaskRegistry) -> dict[str, Any]:
    """``champion`` (label), ``champion_since`` (the gate's event count at its promotion) and
    ``champion_spec`` of a single task's promotion gate; nothing without a gate, or for a
    partitioned model (each replica's gate decides alone)."""
    if registry.partitioned or len(registry.tasks) != 1:
        return {}
    gate = next(iter(registry.tasks.values())).gate
    if gate is None:
        return {}
    state = gate.state
    return {"champion": state.champion, "champion_since": state.since, "champion_spec": state.spec}


def promotion_summary(registry: TaskRegistry) -> dict[str, Any] | None:
    """The promotion gate's report (:meth:`Gate.summary`): the single task's, or each
    replica's under ``replicas``; None without challengers."""
    gates = {key: t.gate.summary() for key, t in registry.tasks.items() if t.gate is not None}
    if not gates:
        return None
    if not registry.partitioned:
        return next(iter(gates.values()))
    return {"replicas": gates}


def summary(registry: TaskRegistry, *, common: dict[str, Any], elapsed: float) -> Summary:
    metrics, _rolling = combined_metrics(registry)
    reasons = _reasons(registry)
    learned_here = registry.learned_this_run()
    restored = sorted(h.model_version for h in registry.restored_from.values())
    disabled = [t.fast_disabled for t in registry.tasks.values() if t.fast_disabled]
    return Summary(
        **common,
        events_learned=sum(t.events_learned for t in registry.tasks.values()),
        dead_lettered=sum(reasons.values()),
        dead_letter_reasons=reasons,
        metrics=metrics,
        positions=_offsets(registry),
        elapsed_seconds=elapsed,
        events_per_second=learned_here / elapsed if elapsed > 0 else 0.0,
        restored_from=",".join(restored) if restored else None,
        tasks=_task_summaries(registry),
        learned_this_run=learned_here,
        events_predicted=sum(t.events_predicted for t in registry.tasks.values()),
        fast_path_disabled=disabled[0] if disabled else None,
        join=join_summary(registry),
        challengers=challenger_summary(registry),
        drift=drift_summary(registry),
        promotion=promotion_summary(registry),
    )


class ThrottledLog:
    """Warns once per distinct message per ``every`` seconds, then says how many it held back."""

    def __init__(self, logger: logging.Logger, every: float) -> None:
        self.logger = logger
        self.every = every
        self._last: dict[str, tuple[float, int]] = {}  # message -> (last logged, held back)

    def warn(self, template: str, text: str) -> None:
        now = time.monotonic()
        logged_at, held = self._last.get(text, (-float("inf"), 0))
        if now - logged_at < self.every:
            self._last[text] = (logged_at, held + 1)
            return
        suffix = f" ({held} more like it in the last {self.every:g}s)" if held else ""
        self.logger.warning(template + "%s", text, suffix)
        self._last[text] = (now, 0)


class ClientErrors:
    """What the trainer's Kafka clients report: the last error (shown in progress records),
    throttled warnings, a failed consumer (the trainer replaces it, or stops), and a stop for
    the other errors a trainer cannot go on after."""

    def __init__(self, stop: Callable[[str], None]) -> None:
        self.stop = stop
        self.last: str | None = None
        self.consumer_failed: KafkaError | None = None
        # The first right the broker refused, and whether the consumer or the producer asked.
        self.denied: tuple[str, KafkaError] | None = None
        # A broker that is down makes librdkafka report every reconnect attempt.
        self._throttled = ThrottledLog(log, every=30.0)

    def on_error(self, err: KafkaError) -> None:
        """An unnamed trainer's producer's errors."""
        self.last = err.str()
        if self._denied("producer", err):
            return
        if err.fatal():
            log.error("fatal Kafka client error: %s", err.str())
            self.stop("fatal-error")
        else:
            self._throttled.warn("Kafka client error: %s", err.str())

    def on_consumer_error(self, err: KafkaError) -> None:
        self.last = err.str()
        if self._denied("consumer", err):
            return
        if err.fatal():
            self._consumer_failed(err)
        else:
            self._throttled.warn("Kafka client error: %s", err.str())

    def on_transactional_error(self, err: KafkaError) -> None:
        """Non-fatal errors of the transactional producer (it handles its fatal ones)."""
        self.last = err.str()
        self._throttled.warn("Kafka client error: %s", err.str())

    def on_message_error(self, err: KafkaError) -> None:
        code = err.code()
        if code == KafkaError._PARTITION_EOF:
            return
        self.last = err.str()
        if self._denied("consumer", err):
            return
        # A consumer's fatal error comes as a message with code _FATAL (not flagged fatal).
        if err.fatal() or code == KafkaError._FATAL:
            self._consumer_failed(err)
            return
        log.warning("consume error: %s", err.str())
        if code in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.TOPIC_AUTHORIZATION_FAILED):
            self.stop("consume-error")

    def _denied(self, who: str, err: KafkaError) -> bool:
        """A missing right stops the trainer at once (retrying would wait for ever), and the
        run ends with :class:`~streamtrain.errors.NotAuthorized`."""
        if not is_denied(err):
            return False
        if self.denied is None:
            self.denied = (who, err)
            self.stop("not-authorized")
        return True

    def refusal(self, settings: TrainSettings, group: str, txn_id: str | None) -> NotAuthorized:
        """The error the run ends with after :attr:`denied`, naming the resource."""
        assert self.denied is not None
        who, err = self.denied
        if who == "consumer":
            topics = [settings.topic, *filter(None, [settings.separate_labels_topic])]
            right = "READ"
        else:
            topics = [settings.dlq_topic, settings.predictions_out]
            right = "WRITE"
        return not_authorized(
            err,
            f"train's {who}",
            topics=topics,
            topic_right=right,
            group=group,
            transactional_id=txn_id,
        )

    def _consumer_failed(self, err: KafkaError) -> None:
        if self.consumer_failed is None:
            log.error("fatal Kafka consumer error: %s", err.str())
            self.consumer_failed = err
