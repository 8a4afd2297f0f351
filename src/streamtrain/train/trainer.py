"""The :class:`Trainer`: one object that owns a running training job from start to stop.

Per record: decode and validate, then predict-then-learn (progressive validation); a record
that cannot be learned from goes to the dead-letter topic instead, and the loop goes on.

Two modes:

* **Named** (``settings.name``): durable, exactly-once state. The model, its metrics, counters
  and input offsets are checkpointed in Kafka transactions (see
  :mod:`streamtrain.train.checkpointing`); a restart resumes from the last checkpoint.
* **Unnamed**: the model lives in memory only, so no consumer offsets are committed —
  committing them would make a restarted, empty model skip data (the seed's flaw). Each run
  reads from ``start`` under a fresh consumer group unless ``group`` is given.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from streamtrain.config import KafkaSettings
from streamtrain.data.events import InvalidEvent, decode_event
from streamtrain.errors import StreamtrainError
from streamtrain.kafka.clients import client_config, ensure_topic, require_topic
from streamtrain.models.spec import estimator_registry, parse_spec
from streamtrain.state.envelope import CheckpointHeader
from streamtrain.state.keys import load_signing_key
from streamtrain.state.store import CheckpointStore, ensure_checkpoint_topic
from streamtrain.train.checkpointing import Checkpointing, TrainState, TransactionAborted
from streamtrain.train.deadletter import MODEL_ERROR, DeadLetterSink
from streamtrain.train.faults import crash_point
from streamtrain.train.progress import Progress, Summary, TrainerListener
from streamtrain.train.progressive import ProgressiveEvaluator, build_metrics, build_rolling
from streamtrain.train.settings import TrainSettings

__all__ = ["Trainer"]

log = logging.getLogger(__name__)

_FLUSH_TIMEOUT = 30.0


class Trainer:
    """Consume ``settings.topic``, learn each valid event, dead-letter the rest.

    ``model`` (a River estimator) and ``metrics`` (name → River metric) override the specs in
    ``settings``, for library use; a named model restored from a checkpoint ignores both.
    :meth:`run` blocks until stopped by :meth:`stop` (from any thread or a signal handler),
    ``exit_when_idle`` or ``max_events``.
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
        # How the model is named in summaries: its spec, or River's one-line repr.
        self.model_text = self.settings.model if model is None else " ".join(repr(model).split())
        if model is None:
            model = parse_spec(self.settings.model, estimator_registry())
        if metrics is None:
            metrics = build_metrics(self.settings.metrics, model)
        self.evaluator = ProgressiveEvaluator(
            model, metrics, build_rolling(metrics, self.settings.rolling_window)
        )
        self.listeners = list(listeners)
        if self.settings.group:
            self.group = self.settings.group
        elif self.settings.name:
            self.group = f"streamtrain.{self.settings.name}"
        else:
            self.group = f"streamtrain.ephemeral.{uuid.uuid4().hex[:12]}"
        self.events_learned = 0
        self.restored_from: CheckpointHeader | None = None
        self._stop = threading.Event()
        self._stopped_because = "stopped"
        self._assignment: list[TopicPartition] = []
        self._broker_error: str | None = None
        self._fatal_error: KafkaError | None = None
        self._dead_letters: DeadLetterSink | None = None
        self._checkpointing: Checkpointing | None = None
        self._offsets: dict[int, int] = {}  # durable mode: partition -> next offset to learn
        self._learned_at_checkpoint = 0
        self._first_event_after: float | None = None
        self._learned_before_run = 0
        # The idle clock starts at the last assignment: joining a group can take longer than
        # the idle limit, and a trainer must not call itself caught up before it has fetched.
        self._assigned_at = float("inf")

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
        producer_conf: dict[str, Any] = {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
        }
        if settings.name:
            ensure_checkpoint_topic(self.kafka, settings.checkpoint_topic)
            producer_conf["transactional.id"] = f"streamtrain.{settings.name}"
            producer_conf["transaction.timeout.ms"] = int(settings.transaction_timeout * 1000)
            producer_conf["message.max.bytes"] = 64 * 1024 * 1024
            producer_conf["compression.type"] = "zstd"
        producer = Producer(
            client_config(self.kafka, **producer_conf, error_cb=self._on_client_error)
        )
        dead_letters = DeadLetterSink(producer, settings.dlq_topic)
        self._dead_letters = dead_letters
        started = time.monotonic()
        if settings.name:
            self._start_durable(producer)
        self._learned_before_run = self.events_learned
        consumer_conf: dict[str, Any] = {}
        if settings.name:
            # Static membership (KIP-345): a restarted trainer takes over its predecessor's
            # place in the group at once, instead of waiting out a killed member's session.
            consumer_conf["group.instance.id"] = f"streamtrain.{settings.name}"
        consumer = Consumer(
            client_config(
                self.kafka,
                **consumer_conf,
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
        clean = False
        try:
            consumer.subscribe(
                [settings.topic], on_assign=self._on_assign, on_revoke=self._on_revoke
            )
            self._loop(consumer, producer, dead_letters, started)
            if self._checkpointing is not None:
                self._checkpoint(consumer)  # the final checkpoint of a clean stop
            clean = True
        finally:
            if self._checkpointing is not None:
                if not clean:
                    self._checkpointing.abort_quietly()
            else:
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

    def _start_durable(self, producer: Producer) -> None:
        settings = self.settings
        assert settings.name is not None
        key = load_signing_key(settings.secret_file)
        checkpointing = Checkpointing(
            name=settings.name,
            topic=settings.topic,
            model_spec=self.model_text,
            producer=producer,
            store=CheckpointStore(self.kafka, key, settings.checkpoint_topic),
            key=key,
            interval=settings.checkpoint_interval,
            every=settings.checkpoint_every,
            timeout=max(self.kafka.connect_timeout, 10.0),
            should_stop=self._stop,
            fatal_error=lambda: self._fatal_error,
        )
        evaluator = self.evaluator
        state, header = checkpointing.start(
            lambda: TrainState(evaluator.model, evaluator.metrics, 0, {}, {}, evaluator.rolling)
        )
        self._checkpointing = checkpointing
        self.restored_from = header
        if header is not None:
            self.model_text = header.model_spec
        self._apply(state)

    def _apply(self, state: TrainState) -> None:
        """Make ``state`` the trainer's current state (after a restore)."""
        rolling = state.rolling
        if not rolling and self.settings.rolling_window:  # resumed from a state without them
            rolling = build_rolling(state.metrics, self.settings.rolling_window)
        self.evaluator = ProgressiveEvaluator(state.model, state.metrics, rolling)
        self.events_learned = state.events_learned
        self._learned_at_checkpoint = state.events_learned
        self._offsets = dict(state.offsets)
        if self._dead_letters is not None:
            self._dead_letters.by_reason = Counter(state.dead_letter_reasons)

    def _loop(
        self,
        consumer: Consumer,
        producer: Producer,
        dead_letters: DeadLetterSink,
        started: float,
    ) -> None:
        settings = self.settings
        max_events = settings.max_events
        idle_after = settings.exit_when_idle
        interval = settings.progress_interval
        checkpointing = self._checkpointing
        next_report = started + interval
        last_report_count = self.events_learned
        last_report_time = started
        last_message = started
        stop = self._stop
        while not stop.is_set():
            batch_size = settings.batch_size
            if max_events is not None:
                batch_size = max(1, min(batch_size, max_events - self.events_learned))
            messages = consumer.consume(batch_size, timeout=0.2)
            now = time.monotonic()
            if messages:
                last_message = now
                self._broker_error = None
                if self._first_event_after is None:
                    self._first_event_after = now - started
                try:
                    self._learn_batch(messages, dead_letters)
                except KafkaException as err:  # a dead letter refused by the transaction
                    if checkpointing is None:
                        raise
                    self._recover(consumer, functools.partial(checkpointing.fail, err))
                    continue
                crash_point("after-learn")
            producer.poll(0)
            if checkpointing is not None and checkpointing.due(
                now, self.events_learned - self._learned_at_checkpoint
            ):
                self._checkpoint(consumer)
            if max_events is not None and self.events_learned >= max_events:
                self.stop("max-events")
            elif (
                idle_after is not None
                and not messages
                and now - max(last_message, self._assigned_at) >= idle_after
                and self._caught_up(consumer)
            ):
                self.stop("idle")
            if now >= next_report or stop.is_set():
                rate = (self.events_learned - last_report_count) / max(now - last_report_time, 1e-9)
                self._report(consumer, dead_letters, now - started, rate)
                last_report_count, last_report_time = self.events_learned, now
                next_report = now + interval

    def _learn_batch(self, messages: list[Any], dead_letters: DeadLetterSink) -> None:
        # The per-event path: keep it to a decode, a learn step and a counter.
        task = self.evaluator.task
        learn = self.evaluator.learn
        decode = decode_event
        learned = self.events_learned
        try:
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
        finally:
            self.events_learned = learned

    # -- checkpoints (named models) ----------------------------------------------------------

    def _checkpoint(self, consumer: Consumer) -> None:
        checkpointing = self._checkpointing
        assert checkpointing is not None
        self._offsets.update(self._positions(consumer))
        evaluator = self.evaluator
        dead_letters = self._dead_letters
        assert dead_letters is not None
        state = TrainState(
            evaluator.model,
            evaluator.metrics,
            self.events_learned,
            dict(dead_letters.by_reason),
            dict(self._offsets),
            evaluator.rolling,
        )
        self._recover(consumer, lambda: checkpointing.commit(state, consumer, evaluator.values()))
        self._learned_at_checkpoint = self.events_learned

    def _recover(self, consumer: Consumer, action: Any) -> None:
        """Run a transactional ``action``; on abort, restore the last committed state."""
        checkpointing = self._checkpointing
        assert checkpointing is not None and checkpointing.committed is not None
        try:
            action()
        except TransactionAborted:
            self._apply(checkpointing.committed.thaw())
            self._seek_to_offsets(consumer)

    def _seek_to_offsets(self, consumer: Consumer) -> None:
        """Rewind every assigned partition to the restored state's offsets."""
        for tp in self._assignment:
            offset = self._offsets.get(tp.partition, self._start_offset())
            try:
                consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
            except KafkaException:
                # Not fetching yet: re-assigning with explicit offsets does the same.
                consumer.assign(self._with_offsets(self._assignment))
                return

    def _start_offset(self) -> int:
        return OFFSET_BEGINNING if self.settings.start == "earliest" else OFFSET_END

    def _with_offsets(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, self._offsets.get(tp.partition, tp.offset))
            for tp in partitions
        ]

    # -- consumer callbacks and helpers ------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        ts = self.settings.from_timestamp
        if ts is not None:
            missing = [tp for tp in partitions if tp.partition not in self._offsets]
            if missing:
                wanted = [TopicPartition(tp.topic, tp.partition, ts) for tp in missing]
                found = consumer.offsets_for_times(wanted, timeout=self.kafka.connect_timeout)
                by_partition = {tp.partition: tp.offset for tp in found}
                partitions = [
                    TopicPartition(tp.topic, tp.partition, by_partition.get(tp.partition, -1))
                    if tp.partition in by_partition
                    else tp
                    for tp in partitions
                ]
        if self._checkpointing is not None or ts is not None:
            # Resume exactly at the checkpoint; the group's own offsets are informational.
            partitions = [
                TopicPartition(
                    tp.topic,
                    tp.partition,
                    self._offsets.get(
                        tp.partition, tp.offset if tp.offset >= 0 else self._start_offset()
                    ),
                )
                for tp in partitions
            ]
            consumer.assign(partitions)
        self._assignment = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        self._assigned_at = time.monotonic()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._checkpointing is not None and not self._stop.is_set():
            # Losing partitions: make what was learned from them durable first.
            self._checkpoint(consumer)
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self._assignment = [tp for tp in self._assignment if (tp.topic, tp.partition) not in gone]

    def _on_client_error(self, err: KafkaError) -> None:
        self._broker_error = err.str()
        if err.fatal():
            self._fatal_error = err
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
        except KafkaException:  # the consumer may already be unusable on a fatal error
            return {}
        return {tp.partition: tp.offset for tp in positions if tp.offset != OFFSET_INVALID}

    def _lag(self, consumer: Consumer, *, cached: bool) -> dict[int, int] | None:
        """Records left per partition; ``None`` when the broker could not be asked."""
        lag: dict[int, int] = {}
        positions = consumer.position(self._assignment) if self._assignment else []
        for tp in positions:
            try:
                _low, high = consumer.get_watermark_offsets(
                    tp, timeout=self.kafka.connect_timeout, cached=cached
                )
            except KafkaException:
                return None
            if high < 0:
                return None
            position = tp.offset if tp.offset >= 0 else self._offsets.get(tp.partition, high)
            lag[tp.partition] = max(high - position, 0)
        return lag

    def _caught_up(self, consumer: Consumer) -> bool:
        """Every assigned partition consumed up to its end, as the broker says right now.

        Asking the broker also proves it answers: a broker that went away is quiet too. A
        partition whose position is still unknown (nothing fetched since assignment, e.g.
        when starting at the end) counts as caught up, since the quiet period has passed.
        """
        if not self._assignment:
            return False
        lag = self._lag(consumer, cached=False)
        return lag is not None and not any(lag.values())

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
            rolling_metrics=self.evaluator.rolling_values(),
            positions={**self._offsets, **self._positions(consumer)},
            name=self.settings.name,
            group=self.group,
        )
        for listener in self.listeners:
            listener.on_progress(progress)

    def _summary(
        self, dead_letters: DeadLetterSink, positions: dict[int, int], elapsed: float
    ) -> Summary:
        checkpointing = self._checkpointing
        return Summary(
            topic=self.settings.topic,
            group=self.group,
            model=self.model_text,
            name=self.settings.name,
            events_learned=self.events_learned,
            dead_lettered=dead_letters.count,
            dead_letter_reasons=dict(dead_letters.by_reason),
            dead_letter_failures=len(dead_letters.failures),
            metrics=self.evaluator.values(),
            positions={**self._offsets, **positions},
            elapsed_seconds=elapsed,
            events_per_second=(
                (self.events_learned - self._learned_before_run) / elapsed if elapsed > 0 else 0.0
            ),
            stopped_because=self._stopped_because,
            checkpoints=checkpointing.checkpoints if checkpointing else 0,
            restored_from=self.restored_from.model_version if self.restored_from else None,
            first_event_after_seconds=self._first_event_after,
        )
