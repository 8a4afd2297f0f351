"""The :class:`Trainer`: one object that owns a running training job from start to stop.

Per record: decode and validate, then predict-then-learn (progressive validation); a record
that cannot be learned from goes to the dead-letter topic instead, and the loop goes on.

Delivery semantics of this (stateless) trainer: its model lives in memory, so it commits no
consumer offsets — committing them would skip data a restarted, empty model never saw (the
seed's flaw). Each run reads from ``start`` (earliest by default) under a fresh consumer group
unless ``group`` is given. Durable, exactly-once state belongs to named models.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, Producer, TopicPartition

from streamtrain.config import KafkaSettings
from streamtrain.data.events import InvalidEvent, decode_event
from streamtrain.errors import StreamtrainError
from streamtrain.kafka.clients import client_config, ensure_topic, require_topic, wait_for_cluster
from streamtrain.models.spec import estimator_registry, parse_spec
from streamtrain.train.deadletter import MODEL_ERROR, DeadLetterSink
from streamtrain.train.progress import Progress, Summary, TrainerListener
from streamtrain.train.progressive import ProgressiveEvaluator, build_metrics
from streamtrain.train.settings import TrainSettings

__all__ = ["Trainer"]

log = logging.getLogger(__name__)

_FLUSH_TIMEOUT = 30.0


class Trainer:
    """Consume ``settings.topic``, learn each valid event, dead-letter the rest.

    ``model`` (a River estimator) and ``metrics`` (name → River metric) override the specs in
    ``settings``, for library use. :meth:`run` blocks until stopped by :meth:`stop` (from any
    thread or a signal handler), ``exit_when_idle`` or ``max_events``.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: TrainSettings | None = None,
        *,
        model: Any = None,
        metrics: dict[str, Any] | None = None,
        listeners: Sequence[TrainerListener] = (),
    ) -> None:
        self.kafka = kafka
        self.settings = settings or TrainSettings()
        if model is None:
            model = parse_spec(self.settings.model, estimator_registry())
        if metrics is None:
            metrics = build_metrics(self.settings.metrics, model)
        self.evaluator = ProgressiveEvaluator(model, metrics)
        self.listeners = list(listeners)
        self.group = self.settings.group or f"streamtrain.ephemeral.{uuid.uuid4().hex[:12]}"
        self._stop = threading.Event()
        self._stopped_because = "stopped"
        self._assignment: list[TopicPartition] = []
        self._broker_error: str | None = None
        self.events_learned = 0

    @property
    def model(self) -> Any:
        return self.evaluator.model

    def stop(self, reason: str = "stopped") -> None:
        """Ask the loop to finish its current batch and stop; safe from any thread."""
        if not self._stop.is_set():
            self._stopped_because = reason
        self._stop.set()

    # -- lifecycle ---------------------------------------------------------------------------

    def run(self) -> Summary:
        settings = self.settings
        partitions = require_topic(self.kafka, settings.topic)
        ensure_topic(self.kafka, settings.dlq_topic, partitions=partitions)
        producer = Producer(
            client_config(
                self.kafka,
                **{"enable.idempotence": True, "acks": "all", "linger.ms": 20},
                error_cb=self._on_client_error,
            )
        )
        consumer = Consumer(
            client_config(
                self.kafka,
                **{
                    "group.id": self.group,
                    "enable.auto.commit": False,
                    "auto.offset.reset": settings.start,
                    # Never learn from records of aborted transactions.
                    "isolation.level": "read_committed",
                },
                error_cb=self._on_client_error,
            )
        )
        dead_letters = DeadLetterSink(producer, settings.dlq_topic)
        started = time.monotonic()
        try:
            consumer.subscribe(
                [settings.topic], on_assign=self._on_assign, on_revoke=self._on_revoke
            )
            self._loop(consumer, producer, dead_letters, started)
        finally:
            remaining = producer.flush(_FLUSH_TIMEOUT)
            if remaining:
                dead_letters.failures.append(f"{remaining} dead letters undelivered at exit")
            positions = self._positions(consumer)
            consumer.close()
        summary = self._summary(dead_letters, positions, time.monotonic() - started)
        if settings.summary is not None:
            summary.write(settings.summary)
        for listener in self.listeners:
            listener.on_finish(summary)
        if dead_letters.failures:
            raise StreamtrainError(
                f"{len(dead_letters.failures)} dead letters could not be delivered to "
                f"{settings.dlq_topic}: {dead_letters.failures[0]}"
            )
        return summary

    def _loop(
        self,
        consumer: Consumer,
        producer: Producer,
        dead_letters: DeadLetterSink,
        started: float,
    ) -> None:
        settings = self.settings
        task = self.evaluator.task
        learn = self.evaluator.learn
        decode = decode_event
        max_events = settings.max_events
        idle_after = settings.exit_when_idle
        interval = settings.progress_interval
        next_report = started + interval
        last_report_count = 0
        last_report_time = started
        last_message = started
        learned = self.events_learned
        stop = self._stop
        while not stop.is_set():
            batch_size = settings.batch_size
            if max_events is not None:
                batch_size = min(batch_size, max_events - learned)
            messages = consumer.consume(batch_size, timeout=0.2)
            now = time.monotonic()
            if messages:
                last_message = now
                self._broker_error = None
            for msg in messages:
                if msg.error() is not None:
                    self._on_message_error(msg.error())
                    continue
                try:
                    x, y = decode(msg.value(), task)
                except InvalidEvent as bad:
                    dead_letters.send(msg, bad.reason.value, bad.message)
                    continue
                try:
                    learn(x, y)
                except Exception as err:  # a model must not take the trainer down
                    dead_letters.send(msg, MODEL_ERROR, f"{type(err).__name__}: {err}")
                    continue
                learned += 1
            self.events_learned = learned
            producer.poll(0)
            if max_events is not None and learned >= max_events:
                self.stop("max-events")
            elif (
                idle_after is not None
                and not messages
                and now - last_message >= idle_after
                and self._caught_up(consumer)
            ):
                self.stop("idle")
            if now >= next_report or stop.is_set():
                rate = (learned - last_report_count) / max(now - last_report_time, 1e-9)
                self._report(consumer, dead_letters, now - started, rate)
                last_report_count, last_report_time = learned, now
                next_report = now + interval

    # -- consumer callbacks and helpers ------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        ts = self.settings.from_timestamp
        if ts is not None:
            wanted = [TopicPartition(tp.topic, tp.partition, ts) for tp in partitions]
            partitions = consumer.offsets_for_times(wanted, timeout=self.kafka.connect_timeout)
            consumer.assign(partitions)
        self._assignment = [TopicPartition(tp.topic, tp.partition) for tp in partitions]

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self._assignment = [tp for tp in self._assignment if (tp.topic, tp.partition) not in gone]

    def _on_client_error(self, err: KafkaError) -> None:
        self._broker_error = err.str()
        if err.fatal():
            log.error("fatal Kafka client error: %s", err.str())
            self.stop("fatal-error")
        else:
            log.warning("Kafka client error: %s", err.str())

    def _on_message_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._PARTITION_EOF:
            return
        self._broker_error = err.str()
        log.warning("consume error: %s", err.str())
        if err.fatal() or err.code() in (
            KafkaError.UNKNOWN_TOPIC_OR_PART,
            KafkaError.TOPIC_AUTHORIZATION_FAILED,
        ):
            self.stop("consume-error")

    def _positions(self, consumer: Consumer) -> dict[int, int]:
        if not self._assignment:
            return {}
        try:
            positions = consumer.position(self._assignment)
        except Exception:  # the consumer may already be unusable on a fatal error
            return {}
        return {tp.partition: tp.offset for tp in positions if tp.offset != OFFSET_INVALID}

    def _lag(self, consumer: Consumer, *, cached: bool) -> dict[int, int] | None:
        """Records left per partition; ``None`` when the broker could not be asked."""
        lag: dict[int, int] = {}
        positions = consumer.position(self._assignment) if self._assignment else []
        for tp in positions:
            try:
                low, high = consumer.get_watermark_offsets(
                    tp, timeout=self.kafka.connect_timeout, cached=cached
                )
            except Exception:
                return None
            if high < 0:
                return None
            position = tp.offset if tp.offset >= 0 else low
            lag[tp.partition] = max(high - position, 0)
        return lag

    def _caught_up(self, consumer: Consumer) -> bool:
        # Quiet alone is not enough: a broker that went away is also quiet. Asking it for
        # the watermarks proves it answers; nothing fetched for the whole idle period then
        # means nothing committed is left (a transactional input may leave a control record
        # past the last data record, so position < high can still be caught up).
        if not self._assignment:
            return False
        return self._lag(consumer, cached=False) is not None

    def _report(
        self, consumer: Consumer, dead_letters: DeadLetterSink, elapsed: float, rate: float
    ) -> None:
        if not self.listeners:
            return
        progress = Progress(
            topic=self.settings.topic,
            model=self.settings.model,
            events_learned=self.events_learned,
            dead_lettered=dead_letters.count,
            events_per_second=rate,
            elapsed_seconds=elapsed,
            metrics=self.evaluator.values(),
            lag=self._lag(consumer, cached=True) or {},
            dead_letter_reasons=dict(dead_letters.by_reason),
            broker_error=self._broker_error,
        )
        for listener in self.listeners:
            listener.on_progress(progress)

    def _summary(
        self, dead_letters: DeadLetterSink, positions: dict[int, int], elapsed: float
    ) -> Summary:
        return Summary(
            topic=self.settings.topic,
            group=self.group,
            model=self._model_text(),
            events_learned=self.events_learned,
            dead_lettered=dead_letters.count,
            dead_letter_reasons=dict(dead_letters.by_reason),
            dead_letter_failures=len(dead_letters.failures),
            metrics=self.evaluator.values(),
            positions=positions,
            elapsed_seconds=elapsed,
            events_per_second=self.events_learned / elapsed if elapsed > 0 else 0.0,
            stopped_because=self._stopped_because,
        )

    def _model_text(self) -> str:
        # repr of a River pipeline is its spec-like form: "StandardScaler | LogisticRegression"
        return " ".join(repr(self.model).split())
