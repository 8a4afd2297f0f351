"""The :class:`Trainer`: one object that owns a running training job from start to stop.

The data path, one batch at a time (``docs/architecture.md`` has the map)::

    consume → registry.route (records per task) → task.learn (step → outcome → task state)
            → outputs (now, or at the checkpoint) → checkpoint transaction (named models)

A trainer holds *tasks* (:class:`~streamtrain.train.tasks.Task`), each one model replica, in a
:class:`~streamtrain.train.registry.TaskRegistry`:

* **Unnamed**: one in-memory task. No consumer offsets are committed — committing them would
  make a restarted, empty model skip data (the seed's flaw). Each run reads from ``start``
  under a fresh consumer group unless ``group`` is given.
* **Named** (``settings.name``): one durable task learning every partition. Its state is
  checkpointed in Kafka transactions (:mod:`streamtrain.train.checkpointing`) under a
  ``transactional.id`` fixed by the name, so a second trainer for the name fences the first,
  and a restart resumes exactly at the last checkpoint. Checkpoints are snapshots, committed
  while learning goes on (:mod:`streamtrain.train.committer`).
* **Partitioned** (``settings.partitioned``): every process with the name joins one consumer
  group; each input partition is a task with its own replica and checkpoint key
  ``NAME/p<partition>``. Each process has its own ``transactional.id``; stale members are
  fenced by the group metadata sent with the offsets (KIP-447).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import Consumer, Message

from streamtrain.config import KafkaSettings
from streamtrain.errors import StreamtrainError
from streamtrain.faults import crash_point
from streamtrain.kafka.transactions import TransactionalProducer
from streamtrain.models.spec import estimator_registry, parse_spec
from streamtrain.records.limits import BoundedShape
from streamtrain.records.loading import load_records
from streamtrain.records.models import model_shape
from streamtrain.stopping import StopFlag
from streamtrain.train import reporting
from streamtrain.train.assembly import check_drift, new_registry, promotion_rule
from streamtrain.train.challengers import Roster
from streamtrain.train.checkpointing import Checkpointing, Snapshot, open_checkpointing
from streamtrain.train.clients import (
    KafkaClients,
    consumer_config,
    producer_config,
    transactional_id,
)
from streamtrain.train.committer import Committer
from streamtrain.train.handover import HandOver
from streamtrain.train.outputs import Outputs, OutputWriter
from streamtrain.train.progress import Summary, TrainerListener
from streamtrain.train.progressive import ProgressiveEvaluator, build_metrics, build_rolling
from streamtrain.train.registry import TaskRegistry
from streamtrain.train.requests import promotion_requests
from streamtrain.train.settings import TrainSettings
from streamtrain.train.tasks import Task, join_spec

__all__ = ["Trainer"]

log = logging.getLogger(__name__)

_FLUSH_TIMEOUT = 30.0
# Deferred dead letters and predictions beyond this many bring the next checkpoint forward.
_MAX_PENDING_OUTPUTS = 50_000
# Stops after which a rolled-back final checkpoint is earned again: they recur once the
# rolled-back events are learned again. After a signal or an error the run just ends.
_LEARN_AGAIN = ("idle", "max-events")


class Trainer:
    """Consume ``settings.topic``, learn each valid event, dead-letter the rest.

    ``model`` (a River estimator) and ``metrics`` (name → River metric) override the specs in
    ``settings``, for library use; a named model restored from a checkpoint ignores both.
    :meth:`run` blocks until stopped by :meth:`stop` (from any thread or a signal handler),
    ``exit_when_idle`` or ``max_events``. ``clients`` and ``clock`` are for tests.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: TrainSettings | None = None,
        *,
        model: Any = None,
        metrics: dict[str, Any] | None = None,
        listeners: Sequence[TrainerListener] = (),
        clients: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kafka = kafka
        self.settings = settings = settings or TrainSettings()
        self.clients = clients or KafkaClients(kafka)
        self.clock = clock
        # How the model is named in summaries: its spec, or River's one-line repr.
        self.model_text = settings.model if model is None else " ".join(repr(model).split())
        if model is None:
            model = parse_spec(settings.model, estimator_registry())
        if metrics is None:
            metrics = build_metrics(settings.metrics, model)
        # Validates the model/metric pair once, whatever the mode.
        self._template = ProgressiveEvaluator(
            model, metrics, build_rolling(metrics, settings.rolling_window)
        )
        # Challengers get the champion's metric specs, as fresh objects; bad specs fail here.
        self._roster = Roster(settings.challenger_specs(), metrics, model, settings.rolling_window)
        self._rule = promotion_rule(settings, metrics)  # the gate of tasks with challengers
        check_drift(settings, self._template.problem)  # e.g. a binary detector on a regressor
        # How records are read (built once: a registry format's decoder caches its schemas);
        # model_shape says what it will refuse.
        load = load_records(settings.formats, settings.topic)
        self.shape = BoundedShape(
            model_shape(settings.record_shape(load), model, warn=True),
            max_record_bytes=settings.max_record_bytes,
            max_features=settings.max_features,
        )
        if settings.fast_path and not self._template.rolling and not settings.challengers:
            # Compile or load the kernel while this trainer connects (and, named, restores):
            # until it is ready, batches are learned by River, correct but slower. (With
            # challengers, the promotion gate's windows keep the champion on River's path.)
            from streamtrain.fastpath import load_in_background

            load_in_background(model, metrics)
        self.listeners = list(listeners)
        if settings.group:
            self.group = settings.group
        elif settings.name:
            self.group = f"streamtrain.{settings.name}"
        else:
            self.group = f"streamtrain.ephemeral.{uuid.uuid4().hex[:12]}"
        self._stop = StopFlag()  # set from signal handlers: see streamtrain.stopping
        self._stopped_because = "stopped"
        self._errors = reporting.ClientErrors(self.stop)
        self._outputs = Outputs(
            dlq_topic=settings.dlq_topic,
            predictions_topic=settings.predictions_out,
            model_name=settings.name,
            input_topic=settings.topic,
            labels_topic=settings.separate_labels_topic,
            id_field="id" if settings.target is None else settings.id_field,
            events_topic=settings.events_topic,
        )
        self._requests = promotion_requests(settings, self.clients)  # manual promotions
        self._txn: TransactionalProducer | None = None
        self._writer: OutputWriter | None = None  # an unnamed trainer's outputs
        self._checkpointing: Checkpointing | None = None
        self._committer: Committer[Snapshot] | None = None  # sends checkpoints (named models)
        self._handover: HandOver | None = None  # snapshots and settles them (named models)
        self._first_event_after: float | None = None
        self._consumer: Any = None  # the current one: replaced when it fails for good
        self._rejoins = 0
        self._join_spec = join_spec(settings)
        self.registry = self._registry(None) if not settings.name else None

    # -- public state ------------------------------------------------------------------------

    @property
    def tasks(self) -> dict[str, Task]:
        return self.registry.tasks if self.registry is not None else {}

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

    def stop(self, reason: str = "stopped") -> None:
        """Ask the loop to finish its current batch and stop; safe from any thread."""
        if not self._stop.is_set():
            self._stopped_because = reason
        self._stop.set()

    # -- lifecycle ---------------------------------------------------------------------------

    def run(self) -> Summary:
        settings = self.settings
        self.clients.prepare_topics(settings)
        started = self.clock()
        txn_id = transactional_id(settings)
        if txn_id is None:
            producer = self.clients.producer(producer_config(settings, None), self._errors.on_error)
            self._writer = OutputWriter(producer)
        else:
            self.registry = self._registry(self._start_durable(txn_id))
        registry = self.registry
        assert registry is not None
        self._consumer = self._join()
        clean = False
        try:
            if self._requests is not None:  # inside: closed with the consumer if start fails
                self._requests.start()  # fetching while the group forms: see Requests.start
            self._loop(started)
            # A refused right commits nothing: no final checkpoint of what came before it.
            while self._checkpointing is not None and registry.tasks and not self._errors.denied:
                if self._checkpoint(self._consumer):  # the final checkpoint of a clean stop
                    break
                if self._stopped_because not in _LEARN_AGAIN:
                    log.warning("the final checkpoint was rolled back; the next run resumes there")
                    break
                # Rolled back: learn those events again, then stop and commit as before.
                self._stop.clear()
                self._loop(started)
            self._collect(self._consumer, block=True)  # a commit left in flight (no final one)
            clean = True
        finally:
            if self._committer is not None:
                self._committer.close()  # before the producer is aborted or the group left
            consumer = self._consumer
            failures = self._finish_outputs(clean)
            registry.record_positions(consumer)
            # Taken before close(): leaving the group revokes (and drops) every task.
            summary = self._summary(self.clock() - started)
            registry.stopping = True  # leave without another checkpoint in on_revoke
            self._stop.set()
            consumer.close()
            if self._requests is not None:
                self._requests.close()
        if settings.summary is not None:
            summary.write(settings.summary)
        for listener in self.listeners:
            listener.on_finish(summary)
        if self._errors.denied is not None:
            raise self._errors.refusal(self.settings, self.group, txn_id)
        for topic, errors in failures.items():
            raise StreamtrainError(
                f"{len(errors)} dead letters or predictions could not be delivered to {topic}: "
                f"{errors[0]}"
            )
        return summary

    # -- the loop ----------------------------------------------------------------------------

    def _loop(self, started: float) -> None:
        """Consume, learn, write outputs, checkpoint when due, report; until stopped.

        The invariant: every record a consume call returns is learned, predicted or
        dead-lettered (in its task's state) before the next consume call. Rebalance callbacks
        run inside those calls, and one that checkpoints (on_revoke) or rolls back and seeks
        (on_lost) must never find a record taken but not accounted for.
        """
        settings, stop, clock, handover = self.settings, self._stop, self.clock, self._handover
        next_report = started + settings.progress_interval
        reported = (self.events_learned, started)  # count and time of the last report
        learned_at_checkpoint = self.events_learned
        last_message = started
        while not stop.is_set():
            consumer = self._consumer
            messages = self._consume(consumer)
            now = clock()
            if messages:
                last_message = now
            self._learn(consumer, messages, now, started)
            if self._errors.consumer_failed is not None:
                self._rejoin()
                continue
            self._collect(consumer, block=False, learned=bool(messages))  # a commit ended?
            self._write_outputs()
            learned = self.events_learned
            if handover is not None and (
                handover.due(now, learned - learned_at_checkpoint)
                or self._registry_pending() >= _MAX_PENDING_OUTPUTS
            ):
                self._checkpoint(consumer, wait=False)
                learned_at_checkpoint = self.events_learned
            if settings.max_events is not None and learned >= settings.max_events:
                self.stop("max-events")
            elif self._idle(consumer, now, messages, last_message):
                self.stop("idle")
            if now >= next_report or stop.is_set():
                rate = (learned - reported[0]) / max(now - reported[1], 1e-9)
                self._report(consumer, now - started, rate)
                reported = (learned, now)
                next_report = now + settings.progress_interval

    def _consume(self, consumer: Consumer) -> list[Message]:
        """What is already fetched; only when nothing is, wait (briefly) for one record.

        A batch then costs no latency at a trickle (``consume(n)`` would wait to fill it) and
        is full at speed.
        """
        batch_size = self.settings.batch_size
        if self.settings.max_events is not None:
            batch_size = max(1, min(batch_size, self.settings.max_events - self.events_learned))
        messages: list[Message] = consumer.consume(batch_size, timeout=0)
        if not messages:
            first = consumer.poll(0.2)
            if first is not None:
                messages = [first]
        return messages

    def _learn(
        self, consumer: Consumer, messages: list[Message], now: float, started: float
    ) -> None:
        """Route the batch to its tasks, which learn it (joined tasks: as their event-time
        merge lets them, also when no record came)."""
        registry = self.registry
        assert registry is not None
        if messages:
            self._errors.last = None
            if self._first_event_after is None:
                self._first_event_after = now - started
            for task, records in registry.route(messages, self._errors.on_message_error):
                task.learn(records)
        if self._join_spec is not None:
            registry.drain(consumer, now)
        if messages:
            crash_point("after-learn")

    def _idle(self, consumer: Consumer, now: float, messages: list[Message], last: float) -> bool:
        """Quiet for ``exit_when_idle`` seconds since the last record (or assignment: joining a
        group can take longer than that), and caught up as the broker says right now — asking
        also proves it answers: a broker that went away is quiet too."""
        idle_after = self.settings.exit_when_idle
        registry = self.registry
        assert registry is not None
        if idle_after is None or messages or now - max(last, registry.assigned_at) < idle_after:
            return False
        if not registry.assignment:
            return False
        lag = reporting.lag(consumer, registry, self.kafka.connect_timeout, cached=False)
        return lag is not None and not any(lag.values())

    def _join(self) -> Consumer:
        """A new consumer in the group, its rebalances handed to the registry."""
        registry = self.registry
        assert registry is not None
        conf = consumer_config(self.settings, self.group)
        consumer = self.clients.consumer(conf, self._errors.on_consumer_error)
        registry.consumer = consumer
        topics = [self.settings.topic]
        if self.settings.separate_labels_topic is not None:
            topics.append(self.settings.separate_labels_topic)
        consumer.subscribe(
            topics,
            on_assign=registry.on_assign,
            on_revoke=registry.on_revoke,
            on_lost=self._on_lost,
        )
        return consumer

    def _on_lost(self, consumer: Consumer, partitions: list[Any]) -> None:
        """Lost partitions roll back to what was committed: learn first what that is."""
        assert self.registry is not None
        if consumer is self.registry.consumer:
            self._collect(consumer, block=True, roll_back=False)  # on_lost rolls back anyway
        self.registry.on_lost(consumer, partitions)

    def _rejoin(self) -> None:
        """The consumer failed for good (a static member fenced after its session ran out while
        the broker was away, librdkafka issue 3437; or commits refused again and again): drop
        what was learned since the last checkpoint and join the group with a new consumer."""
        error, self._errors.consumer_failed = self._errors.consumer_failed, None
        assert error is not None and self.registry is not None
        if self._checkpointing is None:
            self.stop("fatal-error")  # nothing committed to go back to: as before, stop
            return
        log.warning(
            "the consumer failed (%s); back to the last checkpoint, joining the group again",
            error.str(),
        )
        self._collect(self._consumer, block=True, roll_back=False)  # leave() rolls back
        self.registry.leave()
        failed, self._consumer = self._consumer, self._join()
        _close_in_background(failed)  # after the join: the registry ignores it from now on
        self._rejoins += 1

    # -- outputs and checkpoints -------------------------------------------------------------

    def _write_outputs(self) -> None:
        """An unnamed trainer writes its outputs after each batch; a named one at the commit."""
        if self._writer is not None:
            assert self.registry is not None
            if self.registry.pending_outputs:
                self._writer.write(self._outputs.records(self.registry.take_outputs()))
            self._writer.producer.poll(0)
        elif self._committer is not None and not self._committer.background:
            self._committer.idle()  # (a committer thread serves the producer itself)

    def _registry_pending(self) -> int:
        return self.registry.pending_outputs if self.registry is not None else 0

    def _checkpoint(self, consumer: Consumer, *, wait: bool = True) -> bool:
        """Commit every task's state (:meth:`HandOver.checkpoint`); False: rolled back."""
        handover, registry = self._handover, self.registry
        assert handover is not None and registry is not None
        try:
            return handover.checkpoint(consumer, registry, wait=wait)
        finally:
            self.model_text = handover.checkpointing.model_spec  # read back after a failure

    def _collect(
        self, consumer: Consumer, *, block: bool, learned: bool = False, roll_back: bool = True
    ) -> bool:
        """Settle the last commit if it ended (:meth:`HandOver.collect`)."""
        handover, registry = self._handover, self.registry
        if handover is None or registry is None:
            return True
        try:
            return handover.collect(
                consumer, registry, block=block, learned=learned, roll_back=roll_back
            )
        finally:
            self.model_text = handover.checkpointing.model_spec

    def _finish_outputs(self, clean: bool) -> dict[str, list[str]]:
        if self._txn is not None:
            if not clean:
                self._txn.abort_quietly()
            return {}
        assert self._writer is not None
        remaining = self._writer.producer.flush(_FLUSH_TIMEOUT)
        failures = dict(self._writer.failures)
        if remaining:
            failures.setdefault(self.settings.dlq_topic, []).append(
                f"{remaining} dead letters or predictions undelivered at exit"
            )
        return failures

    # -- set-up ------------------------------------------------------------------------------

    def _start_durable(self, txn_id: str) -> Checkpointing:
        checkpointing = open_checkpointing(
            self.settings,
            self.clients,
            txn_id=txn_id,
            group=self.group,
            model_spec=self.model_text,
            timeout=max(self.kafka.connect_timeout, 10.0),
            should_stop=self._stop,
            on_error=self._errors.on_transactional_error,
            clock=self.clock,
        )
        self._txn, self._checkpointing = checkpointing.txn, checkpointing
        background = self.settings.commit_in_background
        self._committer = Committer(
            checkpointing.send, checkpointing.txn.poll, background=background
        )
        self._handover = HandOver(
            checkpointing,
            self._committer,
            self._outputs,
            self._requests,
            self._errors,
            partitioned=self.settings.partitioned,
        )
        return checkpointing

    def _registry(self, checkpointing: Checkpointing | None) -> TaskRegistry:
        registry = new_registry(
            self.settings,
            self.kafka,
            self._template,
            self.shape,
            checkpointing,
            self._checkpoint,
            self.clock,
            self._roster,
            self._rule,
        )
        if checkpointing is not None:
            self.model_text = checkpointing.model_spec
        return registry

    # -- errors and reports ------------------------------------------------------------------

    def _common(self) -> dict[str, Any]:
        return {
            "topic": self.settings.topic,
            "model": self.model_text,
            "name": self.settings.name,
            "group": self.group,
        }

    def _report(self, consumer: Consumer, elapsed: float, rate: float) -> None:
        if not self.listeners:
            return
        assert self.registry is not None
        progress = reporting.progress(
            self.registry,
            consumer,
            common={**self._common(), "broker_error": self._errors.last},
            elapsed=elapsed,
            rate=rate,
            timeout=self.kafka.connect_timeout,
        )
        for listener in self.listeners:
            listener.on_progress(progress)

    def _summary(self, elapsed: float) -> Summary:
        assert self.registry is not None
        checkpointing, txn = self._checkpointing, self._txn
        failures = self._writer.failures if self._writer is not None else {}
        common = {
            **self._common(),
            "dead_letter_failures": sum(len(f) for f in failures.values()),
            "stopped_because": self._stopped_because,
            "checkpoints": checkpointing.checkpoints if checkpointing else 0,
            "first_event_after_seconds": self._first_event_after,
            "producer_replacements": txn.replacements if txn else 0,
            "consumer_rejoins": self._rejoins,
        }
        return reporting.summary(self.registry, common=common, elapsed=elapsed)


def _close_in_background(consumer: Consumer) -> None:
    """Close a failed consumer without waiting on it: its callbacks are ignored from now on
    (the registry listens to the current consumer only), and a close can block on a broker."""
    threading.Thread(target=consumer.close, name="streamtrain-close-consumer", daemon=True).start()
