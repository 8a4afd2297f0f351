"""The :class:`Trainer`: one object that owns a running training job from start to stop.

Per record: decode and validate, then predict-then-learn (progressive validation); a record
that cannot be learned from goes to the dead-letter topic instead, and the loop goes on. An
unlabelled record is predicted, not learned, and its prediction goes to the predictions topic
(:mod:`streamtrain.train.predictions`).

A trainer holds *tasks* (:class:`~streamtrain.train.tasks.Task`), each one model replica:

* **Unnamed**: one in-memory task. No consumer offsets are committed — committing them would
  make a restarted, empty model skip data (the seed's flaw). Each run reads from ``start``
  under a fresh consumer group unless ``group`` is given.
* **Named** (``settings.name``): one durable task learning every partition. Its state is
  checkpointed in Kafka transactions (:mod:`streamtrain.train.checkpointing`) under a
  ``transactional.id`` fixed by the name, so a second trainer for the name fences the first,
  and a restart resumes exactly at the last checkpoint.
* **Partitioned** (``settings.partitioned``): every process with the name joins one consumer
  group; each input partition is a task with its own replica and checkpoint key
  ``NAME/p<partition>``. Tasks move with the group's assignment: a revoked task is
  checkpointed first, an assigned one is restored from its checkpoint. Each process has its
  own ``transactional.id``; stale members are fenced by the group metadata sent with the
  offsets (KIP-447).
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from streamtrain.config import KafkaSettings
from streamtrain.data.events import InvalidEvent, decode_event
from streamtrain.errors import StreamtrainError
from streamtrain.fastpath import FastPathFallback
from streamtrain.fastpath.decode import decode_batch
from streamtrain.kafka.clients import client_config, ensure_topic, require_topic
from streamtrain.models.prediction import answer_from_fast_path, predict_answer
from streamtrain.models.spec import estimator_registry, parse_spec
from streamtrain.state.envelope import CheckpointHeader, model_version
from streamtrain.state.keys import load_signing_key
from streamtrain.state.store import CheckpointStore, ensure_checkpoint_topic
from streamtrain.stopping import StopFlag
from streamtrain.train.checkpointing import Checkpointing, TrainState, TransactionAborted
from streamtrain.train.deadletter import MODEL_ERROR, DeadLetterSink
from streamtrain.train.faults import crash_point
from streamtrain.train.predictions import PredictionSink
from streamtrain.train.progress import Progress, Summary, TrainerListener
from streamtrain.train.progressive import ProgressiveEvaluator, build_metrics, build_rolling
from streamtrain.train.settings import TrainSettings
from streamtrain.train.tasks import Task

__all__ = ["Trainer"]

log = logging.getLogger(__name__)

_FLUSH_TIMEOUT = 30.0
# Deferred dead letters and predictions beyond this many bring the next checkpoint forward.
_MAX_PENDING_OUTPUTS = 50_000


def partition_task_key(name: str, partition: int) -> str:
    return f"{name}/p{partition}"


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
        self.settings = settings = settings or TrainSettings()
        # How the model is named in summaries: its spec, or River's one-line repr.
        self.model_text = settings.model if model is None else " ".join(repr(model).split())
        if model is None:
            model = parse_spec(settings.model, estimator_registry())
        if metrics is None:
            metrics = build_metrics(settings.metrics, model)
        # Validates the model/metric pair once, whatever the mode.
        template = ProgressiveEvaluator(
            model, metrics, build_rolling(metrics, settings.rolling_window)
        )
        self._template = template
        self.tasks: dict[str, Task] = {}
        if not settings.partitioned:
            key = settings.name or ""
            self.tasks[key] = Task(key=key, evaluator=template)
            if settings.fast_path:
                self.tasks[key].enable_fast_path()
        self.listeners = list(listeners)
        if settings.group:
            self.group = settings.group
        elif settings.name:
            self.group = f"streamtrain.{settings.name}"
        else:
            self.group = f"streamtrain.ephemeral.{uuid.uuid4().hex[:12]}"
        self.restored_from: dict[str, CheckpointHeader] = {}
        self._stop = StopFlag()  # set from signal handlers: see streamtrain.stopping
        self._stopped_because = "stopped"
        self._assignment: list[TopicPartition] = []
        self._by_partition: dict[int, Task] = {}
        self._broker_error: str | None = None
        self._fatal_error: KafkaError | None = None
        # A broker that is down makes librdkafka report every reconnect attempt.
        self._client_errors = ThrottledLog(log, every=30.0)
        self._dead_letters: DeadLetterSink | None = None
        self._predictions: PredictionSink | None = None
        self._producer: Producer | None = None
        self._producer_generation = 0
        self._transactional_id: str | None = None
        self._checkpointing: Checkpointing | None = None
        self._first_event_after: float | None = None
        self._learned_before_run = 0
        self._learned_by_departed = 0  # partitioned: by tasks that moved to other processes
        self._fast = settings.fast_path
        # The idle clock starts at the last assignment: joining a group can take longer than
        # the idle limit, and a trainer must not call itself caught up before it has fetched.
        self._assigned_at = float("inf")

    # -- public state ------------------------------------------------------------------------

    @property
    def evaluator(self) -> ProgressiveEvaluator:
        """The single task's evaluator (not defined for a partitioned trainer)."""
        if self.settings.partitioned:
            raise AttributeError("a partitioned trainer has one evaluator per task")
        return next(iter(self.tasks.values())).sync()

    @property
    def model(self) -> Any:
        return self.evaluator.model

    @property
    def events_learned(self) -> int:
        return sum(t.events_learned for t in self.tasks.values())

    @property
    def events_predicted(self) -> int:
        return sum(t.events_predicted for t in self.tasks.values())

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
        ensure_topic(self.kafka, settings.predictions_out, partitions=partitions)
        producer = self._new_producer()
        # A named model's outputs join its checkpoint transactions (see OutputSink).
        deferred = settings.durable
        dead_letters = DeadLetterSink(producer, settings.dlq_topic, deferred=deferred)
        self._dead_letters = dead_letters
        self._predictions = PredictionSink(
            producer, settings.predictions_out, settings.name, deferred=deferred
        )
        started = time.monotonic()
        if settings.name:
            self._start_durable(producer)
        self._learned_before_run = self.events_learned
        consumer = Consumer(
            client_config(self.kafka, **self._consumer_config(), error_cb=self._on_client_error)
        )
        clean = False
        try:
            consumer.subscribe(
                [settings.topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            self._loop(consumer, dead_letters, started)
            if self._checkpointing is not None and self.tasks:
                self._checkpoint(consumer)  # the final checkpoint of a clean stop
            clean = True
        finally:
            if self._checkpointing is not None:
                if not clean:
                    self._checkpointing.abort_quietly()
            else:
                remaining = producer.flush(_FLUSH_TIMEOUT)
                if remaining:
                    dead_letters.failures.append(
                        f"{remaining} dead letters or predictions undelivered at exit"
                    )
            self._record_positions(consumer)
            # Taken before close(): leaving the group revokes (and drops) every task.
            summary = self._summary(time.monotonic() - started)
            # Leave the group without another checkpoint attempt in the revoke callback.
            self._stop.set()
            consumer.close()
        if settings.summary is not None:
            summary.write(settings.summary)
        for listener in self.listeners:
            listener.on_finish(summary)
        for sink, what in ((dead_letters, "dead letters"), (self._predictions, "predictions")):
            if sink.failures:
                raise StreamtrainError(
                    f"{len(sink.failures)} {what} could not be delivered to {sink.topic}: "
                    f"{sink.failures[0]}"
                )
        return summary

    def _new_producer(self) -> Producer:
        """The output producer; a replacement (for a stuck one) keeps its transactional id.

        Only the newest producer's errors count: an abandoned one may still report some.
        """
        self._producer_generation += 1
        generation = self._producer_generation

        def on_error(err: KafkaError) -> None:
            if generation == self._producer_generation:
                self._on_client_error(err)

        producer = Producer(client_config(self.kafka, **self._producer_config(), error_cb=on_error))
        self._producer = producer
        for sink in (self._dead_letters, self._predictions):
            if sink is not None:
                sink.rebind(producer)
        return producer

    def _producer_config(self) -> dict[str, Any]:
        settings = self.settings
        conf: dict[str, Any] = {"enable.idempotence": True, "acks": "all", "linger.ms": 20}
        if settings.name:
            if self._transactional_id is None:
                ensure_checkpoint_topic(self.kafka, settings.checkpoint_topic)
                if settings.partitioned:
                    # One writer per process; the group generation fences zombies (KIP-447).
                    self._transactional_id = f"streamtrain.{settings.name}.{uuid.uuid4().hex[:12]}"
                else:
                    # One writer per model: a second trainer with this name fences the first.
                    self._transactional_id = f"streamtrain.{settings.name}"
            conf["transactional.id"] = self._transactional_id
            conf["transaction.timeout.ms"] = int(settings.transaction_timeout * 1000)
            conf["message.max.bytes"] = 64 * 1024 * 1024
            conf["compression.type"] = "zstd"
        return conf

    def _consumer_config(self) -> dict[str, Any]:
        settings = self.settings
        conf: dict[str, Any] = {
            "group.id": self.group,
            "enable.auto.commit": False,
            "auto.offset.reset": settings.start,
            # Never learn from records of aborted transactions.
            "isolation.level": "read_committed",
        }
        if settings.name and not settings.partitioned:
            # Static membership (KIP-345): a restarted trainer takes over its predecessor's
            # place in the group at once, instead of waiting out a killed member's session.
            conf["group.instance.id"] = f"streamtrain.{settings.name}"
        if settings.partitioned:
            # A dead process's tasks move after this long; shorter than the 45 s default so
            # that losing a trainer pauses its partitions for seconds, not most of a minute.
            conf["session.timeout.ms"] = int(settings.session_timeout * 1000)
            conf["heartbeat.interval.ms"] = max(int(settings.session_timeout * 1000) // 5, 500)
        # Raw -X options are applied after these by client_config, so users can override.
        return conf

    def _start_durable(self, producer: Producer) -> None:
        settings = self.settings
        assert settings.name is not None
        key = load_signing_key(settings.secret_file)
        checkpointing = Checkpointing(
            topic=settings.topic,
            model_spec=self.model_text,
            producer=producer,
            store=CheckpointStore(
                self.kafka,
                key,
                settings.checkpoint_topic,
                patience=settings.transaction_timeout + 30,
            ),
            key=key,
            interval=settings.checkpoint_interval,
            every=settings.checkpoint_every,
            timeout=max(self.kafka.connect_timeout, 10.0),
            should_stop=self._stop,
            fatal_error=lambda: self._fatal_error,
            label=settings.name,
            replace_producer=self._new_producer,
        )
        checkpointing.start()
        self._checkpointing = checkpointing
        if not settings.partitioned:
            self._restore_tasks([settings.name])

    def _fresh_state(self, key: str) -> TrainState:
        template = self._template
        if not self.settings.partitioned:
            # The single task starts from the model object given (library use).
            return TrainState(template.model, template.metrics, 0, {}, {}, template.rolling)
        metrics = {name: m.clone() for name, m in template.metrics.items()}
        rolling = {name: m.clone() for name, m in template.rolling.items()}
        return TrainState(template.model.clone(), metrics, 0, {}, {}, rolling)

    def _restore_tasks(self, keys: list[str]) -> None:
        checkpointing = self._checkpointing
        assert checkpointing is not None
        restored = checkpointing.restore(keys, self._fresh_state)
        for key, (state, header) in restored.items():
            self.tasks[key] = Task.from_state(key, state, fast=self.settings.fast_path)
            if header is not None:
                self.restored_from[key] = header
                self.model_text = header.model_spec
        self._index_partitions()

    def _index_partitions(self) -> None:
        if self.settings.partitioned:
            name = self.settings.name or ""
            self._by_partition = {
                tp.partition: self.tasks[partition_task_key(name, tp.partition)]
                for tp in self._assignment
                if partition_task_key(name, tp.partition) in self.tasks
            }
        else:
            (task,) = self.tasks.values()
            self._by_partition = {tp.partition: task for tp in self._assignment}

    # -- the loop ----------------------------------------------------------------------------

    def _loop(
        self,
        consumer: Consumer,
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
        learned_at_checkpoint = self.events_learned
        stop = self._stop
        while not stop.is_set():
            batch_size = settings.batch_size
            if max_events is not None:
                batch_size = max(1, min(batch_size, max_events - self.events_learned))
            # Take what is already fetched; only when nothing is, wait for one record. A batch
            # costs no latency at a trickle (consume(n) would wait to fill it) and is full at
            # speed. Every record a call returns is learned before the next call: rebalance
            # callbacks run inside these calls, and one that checkpoints (on_revoke) or
            # restores and seeks back (_recover) must not find a record taken but not learned.
            messages = consumer.consume(batch_size, timeout=0)
            if not messages:
                first = consumer.poll(0.2)
                if first is not None:
                    messages = [first]
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
            assert self._producer is not None
            self._producer.poll(0)  # delivery reports; a stuck producer may be replaced
            learned = self.events_learned
            if checkpointing is not None and (
                checkpointing.due(now, learned - learned_at_checkpoint)
                or self._outputs_pending() >= _MAX_PENDING_OUTPUTS
            ):
                self._checkpoint(consumer)
                learned_at_checkpoint = self.events_learned
            if max_events is not None and learned >= max_events:
                self.stop("max-events")
            elif (
                idle_after is not None
                and not messages
                and now - max(last_message, self._assigned_at) >= idle_after
                and self._caught_up(consumer)
            ):
                self.stop("idle")
            if now >= next_report or stop.is_set():
                rate = (learned - last_report_count) / max(now - last_report_time, 1e-9)
                self._report(consumer, now - started, rate)
                last_report_count, last_report_time = learned, now
                next_report = now + interval

    def _learn_batch(self, messages: list[Message], dead_letters: DeadLetterSink) -> None:
        if self._fast:
            self._learn_batch_fast(messages, dead_letters)
        else:
            self._learn_batch_river(messages, dead_letters)

    def _learn_batch_fast(self, messages: list[Message], dead_letters: DeadLetterSink) -> None:
        """Validate every record, then learn each task's valid ones in one compiled call.

        Tasks are independent, so grouping a batch by task keeps each partition's order, which
        is all progressive validation needs. A batch the fast path cannot take (or on which a
        model raises) is learned by River event by event instead, with the same results.
        """
        by_partition = self._by_partition
        groups: dict[str, tuple[Task, list[Message]]] = {}
        for msg in messages:
            error = msg.error()
            if error is not None:
                self._on_message_error(error)
                continue
            task = by_partition.get(msg.partition() or 0)
            if task is None:
                continue  # see _learn_batch_river
            group = groups.get(task.key)
            if group is None:
                group = groups[task.key] = (task, [])
            group[1].append(msg)
        for task, msgs in groups.values():
            # All of a task's records decoded at once, with decode_event's verdicts.
            batch = decode_batch([msg.value() for msg in msgs], task.evaluator.problem)
            for i, bad in batch.invalid:
                _dead_letter(dead_letters, task, msgs[i], bad.reason.value, bad.message)
            xs, ys = batch.xs, batch.ys
            if xs:
                valid = [msgs[i] for i in batch.positions] if batch.invalid else msgs
                if None in ys:
                    if not self._learn_and_predict_fast(task, xs, ys, valid):
                        self._learn_and_predict(task, xs, ys, valid, dead_letters)
                else:
                    self._learn_valid(task, xs, ys, valid, dead_letters)
            self._advance(task, msgs)

    def _learn_valid(
        self,
        task: Task,
        xs: list[dict[str, Any]],
        ys: list[Any],
        msgs: list[Message],
        dead_letters: DeadLetterSink,
    ) -> None:
        """Learn labelled events in one compiled call, or with River when it cannot."""
        if _learn_fast(task, xs, ys) is not None:
            task.events_learned += len(xs)
        else:
            self._learn_each(task, xs, ys, msgs, dead_letters)

    def _learn_and_predict_fast(
        self, task: Task, xs: list[dict[str, Any]], ys: list[Any], msgs: list[Message]
    ) -> bool:
        """A batch with unlabelled events in one compiled call, which predicts each of them
        where it stands; False (nothing applied) when the fast path cannot take it."""
        predictions = _learn_fast(task, xs, ys)
        if predictions is None:
            return False
        kind = task.evaluator.problem
        offsets = task.offsets
        for y, msg, value in zip(ys, msgs, predictions.tolist(), strict=True):
            if y is None:
                self._send_prediction(task, msg, answer_from_fast_path(kind, value))
            else:
                task.events_learned += 1
            offsets[msg.partition() or 0] = (msg.offset() or 0) + 1
        return True

    def _learn_and_predict(
        self,
        task: Task,
        xs: list[dict[str, Any]],
        ys: list[Any],
        msgs: list[Message],
        dead_letters: DeadLetterSink,
    ) -> None:
        """A batch with unlabelled events: learn each labelled run, then predict the
        unlabelled events after it, so each prediction sees exactly the events before it."""
        n = len(ys)
        i = 0
        while i < n:
            j = i
            while j < n and ys[j] is not None:
                j += 1
            if j > i:
                self._learn_valid(task, xs[i:j], ys[i:j], msgs[i:j], dead_letters)
                self._advance(task, msgs[i:j])
            if j < n:
                task.sync()  # the River model answers; the fast path reloads it afterwards
            while j < n and ys[j] is None:
                self._predict_one(task, msgs[j], xs[j], dead_letters)
                j += 1
            i = j

    def _predict_one(
        self, task: Task, msg: Message, x: dict[str, Any], dead_letters: DeadLetterSink
    ) -> None:
        """Predict an unlabelled event with the task's (synchronised) River model."""
        evaluator = task.evaluator
        try:
            answer = predict_answer(evaluator.model, evaluator.problem, x)
        except Exception as err:  # a model must not take the trainer down
            _dead_letter(dead_letters, task, msg, MODEL_ERROR, f"{type(err).__name__}: {err}")
        else:
            self._send_prediction(task, msg, answer)
        task.offsets[msg.partition() or 0] = (msg.offset() or 0) + 1

    def _send_prediction(self, task: Task, msg: Message, answer: dict[str, Any]) -> None:
        """Write the answer for an unlabelled event, named by the state that gave it:
        the task's positions, with everything before this event in its own partition."""
        partition, offset = msg.partition() or 0, msg.offset() or 0
        version = model_version(self.settings.topic, {**task.offsets, partition: offset})
        assert self._predictions is not None
        self._predictions.send(msg, answer, version, task.events_learned)
        task.events_predicted += 1

    def _advance(self, task: Task, msgs: list[Message]) -> None:
        """Move the task's positions past ``msgs`` (which names its model's version)."""
        if not msgs:
            return
        offsets = task.offsets
        if self.settings.partitioned or len(self._assignment) <= 1:
            last = msgs[-1]  # one partition per task: the last record says it all
            offsets[last.partition() or 0] = (last.offset() or 0) + 1
            return
        for msg in msgs:
            offsets[msg.partition() or 0] = (msg.offset() or 0) + 1

    def _learn_each(
        self,
        task: Task,
        xs: list[dict[str, Any]],
        ys: list[Any],
        msgs: list[Message],
        dead_letters: DeadLetterSink,
    ) -> None:
        learn = task.evaluator.learn
        for x, y, msg in zip(xs, ys, msgs, strict=True):
            try:
                learn(x, y)
            except Exception as err:  # a model must not take the trainer down
                _dead_letter(dead_letters, task, msg, MODEL_ERROR, f"{type(err).__name__}: {err}")
                continue
            task.events_learned += 1

    def _learn_batch_river(self, messages: list[Message], dead_letters: DeadLetterSink) -> None:
        # The per-event path: a decode, a learn step and a counter. Consecutive records of one
        # partition share a task, so the task is looked up only when the partition changes.
        by_partition = self._by_partition
        decode = decode_event
        task: Task | None = None
        partition = -1
        learned = 0
        learn: Callable[[dict[str, Any], Any], None] = _no_learn
        kind = None
        offsets: dict[int, int] = {}
        try:
            for msg in messages:
                error = msg.error()
                if error is not None:
                    self._on_message_error(error)
                    continue
                p = msg.partition()
                if p != partition:
                    if task is not None:
                        task.events_learned += learned
                        learned = 0
                    partition = p if p is not None else -1
                    task = by_partition.get(partition)
                    if task is None:
                        # A record fetched just before its partition was revoked: its new
                        # owner learns it; nothing of ours moved past it.
                        continue
                    learn = task.evaluator.learn
                    kind = task.evaluator.problem
                    offsets = task.offsets
                elif task is None:
                    continue
                try:
                    x, y = decode(msg.value(), kind)  # type: ignore[arg-type]
                except InvalidEvent as bad:
                    _dead_letter(dead_letters, task, msg, bad.reason.value, bad.message)
                    offsets[partition] = (msg.offset() or 0) + 1
                    continue
                if y is None:
                    task.events_learned += learned
                    learned = 0
                    self._predict_one(task, msg, x, dead_letters)
                    continue
                offsets[partition] = (msg.offset() or 0) + 1
                try:
                    learn(x, y)
                except Exception as err:  # a model must not take the trainer down
                    _dead_letter(
                        dead_letters, task, msg, MODEL_ERROR, f"{type(err).__name__}: {err}"
                    )
                    continue
                learned += 1
        finally:
            if task is not None:
                task.events_learned += learned

    # -- checkpoints (named models) ----------------------------------------------------------

    def _checkpoint(self, consumer: Consumer) -> None:
        checkpointing = self._checkpointing
        assert checkpointing is not None
        self._record_positions(consumer)
        states = {key: task.state() for key, task in self.tasks.items()}
        values = {key: task.sync().values() for key, task in self.tasks.items()}
        offsets = {p: o for task in self.tasks.values() for p, o in task.offsets.items()}
        self._recover(
            consumer,
            lambda: checkpointing.commit(
                states, values, offsets, consumer, outputs=self._release_outputs
            ),
        )

    def _sinks(self) -> list[DeadLetterSink | PredictionSink]:
        return [s for s in (self._dead_letters, self._predictions) if s is not None]

    def _outputs_pending(self) -> int:
        return sum(sink.pending for sink in self._sinks())

    def _release_outputs(self) -> None:
        for sink in self._sinks():
            sink.release()

    def _recover(self, consumer: Consumer, action: Callable[[], None]) -> None:
        """Run a transactional ``action``; on abort, restore the last committed states."""
        checkpointing = self._checkpointing
        assert checkpointing is not None
        try:
            action()
        except TransactionAborted:
            for sink in self._sinks():
                sink.discard()  # made by the states being rolled back; they will be again
            for key in list(self.tasks):
                committed = checkpointing.committed.get(key)
                state = committed.thaw() if committed else self._fresh_state(key)
                self.tasks[key] = Task.from_state(key, state, fast=self.settings.fast_path)
            self._index_partitions()
            self._seek_to_offsets(consumer)

    def _seek_to_offsets(self, consumer: Consumer) -> None:
        """Rewind every assigned partition to its task's restored offset."""
        for tp in self._assignment:
            offset = self._offset_of(tp.partition)
            try:
                consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
            except KafkaException:
                # Not fetching yet: re-assigning with explicit offsets does the same.
                consumer.assign(
                    [
                        TopicPartition(t.topic, t.partition, self._offset_of(t.partition))
                        for t in self._assignment
                    ]
                )
                return

    def _offset_of(self, partition: int) -> int:
        task = self._by_partition.get(partition)
        if task is not None and partition in task.offsets:
            return task.offsets[partition]
        return OFFSET_BEGINNING if self.settings.start == "earliest" else OFFSET_END

    def _record_positions(self, consumer: Consumer) -> None:
        """Copy the consumer's positions into the tasks owning the partitions."""
        for partition, offset in self._positions(consumer).items():
            task = self._by_partition.get(partition)
            if task is not None:
                task.offsets[partition] = offset

    # -- consumer callbacks and helpers ------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        settings = self.settings
        self._assignment = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        if settings.partitioned:
            assert settings.name is not None
            missing = [
                partition_task_key(settings.name, tp.partition)
                for tp in partitions
                if partition_task_key(settings.name, tp.partition) not in self.tasks
            ]
            if missing:
                self._restore_tasks(missing)
        self._index_partitions()
        log.info(
            "assigned partitions %s at offsets %s",
            [tp.partition for tp in partitions],
            {tp.partition: self._offset_of(tp.partition) for tp in partitions},
        )
        explicit = self._checkpointing is not None
        by_time: dict[int, int] = {}
        ts = settings.from_timestamp
        if ts is not None:
            fresh = [tp for tp in partitions if not self._has_offset(tp.partition)]
            if fresh:
                wanted = [TopicPartition(tp.topic, tp.partition, ts) for tp in fresh]
                found = consumer.offsets_for_times(wanted, timeout=self.kafka.connect_timeout)
                by_time = {tp.partition: tp.offset for tp in found}
                explicit = True
        if explicit:
            # Resume exactly at the checkpoint; the group's own offsets are informational.
            consumer.assign(
                [
                    TopicPartition(
                        tp.topic,
                        tp.partition,
                        by_time.get(tp.partition, self._offset_of(tp.partition)),
                    )
                    for tp in partitions
                ]
            )
        self._assigned_at = time.monotonic()

    def _has_offset(self, partition: int) -> bool:
        task = self._by_partition.get(partition)
        return task is not None and partition in task.offsets

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions %s revoked", [tp.partition for tp in partitions])
        if self._checkpointing is not None and not self._stop.is_set():
            # Losing partitions: make what was learned from them durable first.
            self._checkpoint(consumer)
        self._drop(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The group already gave these away: committing now would be a zombie's commit.
        log.warning(
            "partitions %s were lost to the group (this process was presumed dead); their "
            "uncommitted work is dropped and nothing is committed for them",
            [tp.partition for tp in partitions],
        )
        if self._checkpointing is not None:
            self._recover(consumer, _raise_aborted(self._checkpointing))
        self._drop(partitions)

    def _drop(self, partitions: list[TopicPartition]) -> None:
        gone = {tp.partition for tp in partitions}
        self._assignment = [tp for tp in self._assignment if tp.partition not in gone]
        if self.settings.partitioned and self.settings.name:
            for partition in gone:
                key = partition_task_key(self.settings.name, partition)
                task = self.tasks.pop(key, None)
                if task is not None:
                    self._learned_by_departed += task.events_learned - (
                        self.restored_from[key].events_learned if key in self.restored_from else 0
                    )
                    self.restored_from.pop(key, None)
                if self._checkpointing is not None:
                    self._checkpointing.forget(key)
        self._index_partitions()

    def _on_client_error(self, err: KafkaError) -> None:
        self._broker_error = err.str()
        if err.fatal():
            self._fatal_error = err
            log.error("fatal Kafka client error: %s", err.str())
            self.stop("fatal-error")
        else:
            self._client_errors.warn("Kafka client error: %s", err.str())

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
            if tp.offset >= 0:
                position = tp.offset
            else:
                task = self._by_partition.get(tp.partition)
                position = task.offsets.get(tp.partition, high) if task else high
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

    # -- reporting ---------------------------------------------------------------------------

    def _combined_metrics(self) -> tuple[dict[str, float], dict[str, float]]:
        """Metrics of the single task, or the event-weighted mean over a partitioned model's
        replicas (documented as an approximation: each replica is scored on its own stream)."""
        tasks = list(self.tasks.values())
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

    def _reasons(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for task in self.tasks.values():
            for reason, n in task.dead_letter_reasons.items():
                total[reason] = total.get(reason, 0) + n
        return total

    def _report(self, consumer: Consumer, elapsed: float, rate: float) -> None:
        if not self.listeners:
            return
        metrics, rolling = self._combined_metrics()
        reasons = self._reasons()
        positions = {p: o for t in self.tasks.values() for p, o in t.offsets.items()}
        positions.update(self._positions(consumer))
        progress = Progress(
            topic=self.settings.topic,
            model=self.model_text,
            events_learned=self.events_learned,
            dead_lettered=sum(reasons.values()),
            events_per_second=rate,
            elapsed_seconds=elapsed,
            metrics=metrics,
            lag=self._lag(consumer, cached=True) or {},
            dead_letter_reasons=reasons,
            broker_error=self._broker_error,
            rolling_metrics=rolling,
            positions=positions,
            name=self.settings.name,
            group=self.group,
            tasks={k: t.summary() for k, t in self.tasks.items()}
            if self.settings.partitioned
            else {},
            events_predicted=self.events_predicted,
        )
        for listener in self.listeners:
            listener.on_progress(progress)

    def _summary(self, elapsed: float) -> Summary:
        checkpointing = self._checkpointing
        metrics, _rolling = self._combined_metrics()
        reasons = self._reasons()
        learned_here = self.events_learned - self._learned_before_run + self._learned_by_departed
        if self.settings.partitioned:
            learned_here = self._learned_by_departed + sum(
                t.events_learned
                - (self.restored_from[k].events_learned if k in self.restored_from else 0)
                for k, t in self.tasks.items()
            )
        restored = sorted(h.model_version for h in self.restored_from.values())
        return Summary(
            topic=self.settings.topic,
            group=self.group,
            model=self.model_text,
            name=self.settings.name,
            events_learned=self.events_learned,
            dead_lettered=sum(reasons.values()),
            dead_letter_reasons=reasons,
            dead_letter_failures=len(self._dead_letters.failures) if self._dead_letters else 0,
            metrics=metrics,
            positions={p: o for t in self.tasks.values() for p, o in t.offsets.items()},
            elapsed_seconds=elapsed,
            events_per_second=learned_here / elapsed if elapsed > 0 else 0.0,
            stopped_because=self._stopped_because,
            checkpoints=checkpointing.checkpoints if checkpointing else 0,
            restored_from=",".join(restored) if restored else None,
            first_event_after_seconds=self._first_event_after,
            tasks={k: t.summary() for k, t in self.tasks.items()}
            if self.settings.partitioned
            else {},
            learned_this_run=learned_here,
            events_predicted=self.events_predicted,
            producer_replacements=checkpointing.replacements if checkpointing else 0,
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


def _learn_fast(task: Task, xs: list[dict[str, Any]], ys: list[Any]) -> np.ndarray | None:
    """One batch on the task's compiled path: every event's prediction, or None when River
    must learn the batch instead (nothing of it was applied)."""
    fast = task.fast
    if fast is None:
        return None
    try:
        return fast.learn_many(xs, ys)
    except FastPathFallback:
        fast.sync()
    except Exception:  # a bug: never lose a batch to it, stay on River
        log.exception("the fast path failed; River's per-event path takes over")
        fast.sync()
        task.fast = None
    return None


def _dead_letter(
    dead_letters: DeadLetterSink, task: Task, msg: Message, reason: str, message: str
) -> None:
    dead_letters.send(msg, reason, message)
    task.dead_letter_reasons[reason] += 1


def _no_learn(_x: dict[str, Any], _y: Any) -> None:  # pragma: no cover - never called
    raise AssertionError("no task selected")


def _raise_aborted(checkpointing: Checkpointing) -> Callable[[], None]:
    def abort() -> None:
        checkpointing.abort_quietly()
        checkpointing.begin()
        raise TransactionAborted("partitions lost")

    return abort
