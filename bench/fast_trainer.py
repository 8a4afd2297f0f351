"""The proposed Trainer integration of the fast path, as a subclass the benchmark can run today.

The methods below are the code the patch proposal puts into ``Trainer`` itself
(``_learn_batch`` batching valid events into one ``FastEvaluator.learn_many`` call, River's
per-event path for a batch the fast path refuses, ``sync()`` before anything reads the River
objects). Once that patch is applied, the benchmark's "fast" contenders can use ``Trainer``.

``LowLatencyConsumer`` is the proposed change to ``Trainer._loop``'s consume call: take what
is already fetched, and when nothing is, wait for one record with ``poll``, instead of
``consume(batch_size, timeout=0.2)``, which holds a partly filled batch back until the timeout.
"""

from __future__ import annotations

import logging
from typing import Any

from streamtrain.fastpath import FastEvaluator, FastPathFallback, fast_evaluator_for
from streamtrain.fastpath.decode import decode_batch
from streamtrain.train.deadletter import MODEL_ERROR, DeadLetterSink
from streamtrain.train.progressive import ProgressiveEvaluator
from streamtrain.train.tasks import Task
from streamtrain.train.trainer import Trainer

log = logging.getLogger("bench.fast_trainer")


def _fast_of(task: Task) -> FastEvaluator | None:
    """The task's fast evaluator, made on first use (``Task.enable_fast_path`` in the patch)."""
    if not getattr(task, "fast_checked", False):
        task.fast_checked = True  # type: ignore[attr-defined]
        ev = task.evaluator
        task.fast = (  # type: ignore[attr-defined]
            None if ev.rolling else fast_evaluator_for(ev.model, ev.metrics, wait=False)
        )
    fast: FastEvaluator | None = task.fast  # type: ignore[attr-defined]
    return fast


def _sync(task: Task) -> ProgressiveEvaluator:
    """``Task.sync()`` in the patch: write the fast path's state into the River objects."""
    fast = getattr(task, "fast", None)
    if fast is not None:
        fast.sync()
    return task.evaluator


class FastTrainer(Trainer):
    """``Trainer`` with the fast path (what the patch proposal does inside ``Trainer``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        template = self._template
        if not template.rolling:
            # Start loading the compiled kernel in the background; until it is there, batches
            # are learned by River event by event (same results).
            fast_evaluator_for(template.model, template.metrics, wait=False)

    @property
    def fast_evaluators(self) -> list[FastEvaluator]:
        return [f for t in self.tasks.values() if (f := _fast_of(t)) is not None]

    @property
    def evaluator(self) -> ProgressiveEvaluator:
        if self.settings.partitioned:
            raise AttributeError("a partitioned trainer has one evaluator per task")
        return _sync(next(iter(self.tasks.values())))

    def _index_partitions(self) -> None:
        super()._index_partitions()
        for task in self.tasks.values():
            _fast_of(task)

    def _checkpoint(self, consumer: Any) -> None:
        for task in self.tasks.values():
            _sync(task)
        super()._checkpoint(consumer)

    def _combined_metrics(self) -> tuple[dict[str, float], dict[str, float]]:
        for task in self.tasks.values():
            _sync(task)
        return super()._combined_metrics()

    def _learn_batch(self, messages: list[Any], dead_letters: DeadLetterSink) -> None:
        # Consecutive records of one partition share a task: each run of them is decoded and
        # validated at once (same verdicts and dead letters as decode_event), then learned in
        # one fast-path call, or event by event when the task has no fast path.
        by_partition = self._by_partition
        task: Task | None = None
        partition = -1
        run: list[Any] = []
        for msg in messages:
            error = msg.error()
            if error is not None:
                self._on_message_error(error)
                continue
            p = msg.partition()
            if p != partition:
                if task is not None and run:
                    self._learn_run(task, run, dead_letters)
                    run = []
                partition = p if p is not None else -1
                # None: a record fetched just before its partition was revoked; its new owner
                # learns it, and nothing of ours moved past it.
                task = by_partition.get(partition)
            if task is not None:
                run.append(msg)
        if task is not None and run:
            self._learn_run(task, run, dead_letters)

    def _learn_run(self, task: Task, messages: list[Any], dead_letters: DeadLetterSink) -> None:
        """Decode, dead-letter and learn records of one task, in order."""
        batch = decode_batch([msg.value() for msg in messages], task.evaluator.task)
        for i, bad in batch.invalid:
            dead_letters.send(messages[i], bad.reason.value, bad.message)
            task.dead_letter_reasons[bad.reason.value] += 1
        xs, ys = batch.xs, batch.ys
        if not xs:
            return
        fast = _fast_of(task)
        if fast is not None:
            try:
                fast.learn_many(xs, ys)
            except FastPathFallback as why:  # nothing applied: River takes this batch
                log.debug("batch learned event by event: %s", why)
                fast.sync()
            except Exception:
                log.exception("the fast path failed; River's per-event path takes over")
                fast.sync()
                task.fast = None  # type: ignore[attr-defined]
            else:
                task.events_learned += len(xs)
                return
        learn = task.evaluator.learn
        learned = 0
        try:
            for i, x, y in zip(batch.positions, xs, ys, strict=True):
                try:
                    learn(x, y)
                except Exception as err:  # a model must not take the trainer down
                    dead_letters.send(messages[i], MODEL_ERROR, f"{type(err).__name__}: {err}")
                    task.dead_letter_reasons[MODEL_ERROR] += 1
                    continue
                learned += 1
        finally:
            task.events_learned += learned


class LowLatencyConsumer:
    """Wraps a confluent-kafka Consumer: ``consume`` takes what is already fetched, and when
    nothing is, waits for one record only (the proposed ``Trainer._loop`` change)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]:
        messages: list[Any] = self._inner.consume(num_messages, timeout=0)
        if messages:
            return messages
        first = self._inner.poll(timeout)
        return [] if first is None else [first]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class LowLatencyMixin:
    """Runs ``Trainer._loop`` over a :class:`LowLatencyConsumer`."""

    def _loop(self, consumer: Any, *args: Any) -> None:
        super()._loop(LowLatencyConsumer(consumer), *args)  # type: ignore[misc]
