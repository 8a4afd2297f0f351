"""The learn step: one batch of one task's records in, an :class:`Outcome` out — no Kafka.

A step predicts then learns each labelled record (progressive validation, River's protocol),
predicts each unlabelled one with the model as it stands there, and refuses the rest with a
dead-letter reason. Every record it is given is accounted for in the outcome: learned,
predicted or dead-lettered, and its partition's next offset moves past it. The model and its
metrics (the task's evaluator) are updated in place; the outcome carries everything else, and
the task applies it (:meth:`streamtrain.train.tasks.Task.apply`).

Challengers (:mod:`streamtrain.train.challengers`) learn each valid labelled event after the
champion, with River's per-event calls on either path; they change nothing in the outcome but
its ``promotions``: the promotion gate (:mod:`streamtrain.train.promotion`), which keeps a
task on River's path, may make one of them the champion after any event (it sees every
labelled event, with drift detection or without). With drift detection
(:mod:`streamtrain.train.drift`), each model's error on the event feeds its detector, and a
detection is a field of the outcome.

Two implementations give the same outcome and the same model state:

* :class:`RiverStep` — River's own ``predict_proba_one`` / ``learn_one``, event by event;
* :class:`FastStep` — the compiled batch path (:mod:`streamtrain.fastpath`) for the models it
  takes, which falls back to River for any batch it cannot take, with nothing of it applied.

>>> from river import linear_model
>>> from streamtrain.data.events import encode_event
>>> from streamtrain.train.progressive import ProgressiveEvaluator, build_metrics
>>> model = linear_model.LogisticRegression()
>>> step = RiverStep(ProgressiveEvaluator(model, build_metrics([], model)))
>>> records = [SimpleRecord(encode_event({"a": 1.0}, True), 0, 10),
...            SimpleRecord(b"not json", 0, 11),
...            SimpleRecord(encode_event({"a": 2.0}, None), 0, 12)]
>>> outcome = step.run(records, offsets={}, learned=0)
>>> outcome.learned, outcome.offsets, [d.reason for d in outcome.dead_letters]
(1, {0: 13}, ['undecodable'])
>>> outcome.predictions[0].positions, outcome.predictions[0].answer["prediction"]
({0: 12}, True)
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import operator
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from streamtrain.data.events import InvalidEvent
from streamtrain.fastpath import FastEvaluator, FastPathDisabled, FastPathFallback
from streamtrain.models.prediction import answer_from_fast_path, predict_answer
from streamtrain.records.seed import SEED, EventShape
from streamtrain.train.challengers import Challengers
from streamtrain.train.drift import Detection, TaskDrift
from streamtrain.train.progressive import ProgressiveEvaluator
from streamtrain.train.promotion import Promotion

__all__ = [
    "MODEL_ERROR",
    "DeadLetter",
    "FastStep",
    "Outcome",
    "Prediction",
    "Record",
    "RiverStep",
    "SimpleRecord",
    "Step",
]

log = logging.getLogger(__name__)

# A record's accessors as C callables, for map() over a batch (Kafka messages or SimpleRecord).
_value = operator.methodcaller("value")
_partition = operator.methodcaller("partition")
_offset = operator.methodcaller("offset")

MODEL_ERROR = "model-error"  # the model raised on the record (the other reasons: data.events)


class Record(Protocol):
    """What a step reads of a record: a consumed ``confluent_kafka.Message`` is one."""

    def value(self) -> bytes | None: ...

    def partition(self) -> int: ...

    def offset(self) -> int: ...


@dataclasses.dataclass(frozen=True, slots=True)
class SimpleRecord:
    """A record outside Kafka (tests, examples)."""

    data: bytes | None
    part: int
    at: int

    def value(self) -> bytes | None:
        return self.data

    def partition(self) -> int:
        return self.part

    def offset(self) -> int:
        return self.at


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record refused, with a stable ``reason`` code and a human ``message``."""

    record: Any
    reason: str
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class Prediction:
    """The answer for an unlabelled record, named by the state that gave it: ``positions``,
    the next offset per partition with everything before this record in its partition, and
    ``events_learned`` by then."""

    record: Any
    answer: dict[str, Any]
    positions: dict[int, int]
    events_learned: int
    label_positions: dict[int, int] | None = None  # on a separate labels topic, if joined


@dataclasses.dataclass(slots=True)
class Outcome:
    """What a step did with one batch, besides updating the model and metrics in place."""

    learned: int = 0
    offsets: dict[int, int] = dataclasses.field(default_factory=dict)  # next offset per partition
    # The same for a separate labels topic (a joined task: streamtrain.join.step).
    label_offsets: dict[int, int] = dataclasses.field(default_factory=dict)
    dead_letters: list[DeadLetter] = dataclasses.field(default_factory=list)
    predictions: list[Prediction] = dataclasses.field(default_factory=list)
    drifts: list[Detection] = dataclasses.field(default_factory=list)  # detectors that fired
    # Changes of champion by the promotion gate, each after the event that decided it.
    promotions: list[Promotion] = dataclasses.field(default_factory=list)


class Step(Protocol):
    """``run(records, offsets, learned)``: ``offsets`` and ``learned`` are the task's position
    before the batch (read, never written: the task applies the outcome)."""

    def run(
        self, records: Sequence[Record], offsets: Mapping[int, int], learned: int
    ) -> Outcome: ...


class RiverStep:
    """River's per-event path; ``shape`` reads the records (the seed's ``{"x", "y"}``, or
    flat records: :mod:`streamtrain.records`)."""

    def __init__(
        self,
        evaluator: ProgressiveEvaluator,
        shape: EventShape = SEED,
        challengers: Challengers | None = None,
        drift: TaskDrift | None = None,
    ) -> None:
        self.evaluator = evaluator
        self.shape = shape
        self.challengers = challengers or Challengers()
        self.drift = drift

    def run(self, records: Sequence[Record], offsets: Mapping[int, int], learned: int) -> Outcome:
        evaluator = self.evaluator
        learn = evaluator.learn
        problem = evaluator.problem
        decode = self.shape.decode
        challengers = self.challengers.learn if self.challengers else None
        drift = self.drift
        out = Outcome()
        ends = out.offsets
        n = 0
        for record in records:
            partition = record.partition()
            offset = record.offset()
            try:
                x, y = decode(record.value(), problem)
            except InvalidEvent as bad:
                out.dead_letters.append(DeadLetter(record, bad.reason.value, bad.message))
            else:
                if y is None:
                    positions = {**offsets, **ends, partition: offset}
                    _predict(evaluator, record, x, positions, learned + n, out)
                else:
                    prediction = None
                    try:
                        prediction = learn(x, y)
                    except Exception as err:  # a model must not take the trainer down
                        out.dead_letters.append(_model_error(record, err))
                    else:
                        n += 1
                    if drift is not None:  # it feeds the challengers too
                        drift.event(
                            record, x, y, prediction, learned + n, self.challengers, out.drifts
                        )
                        promoted = self.challengers.after_event()
                    else:
                        promoted = None if challengers is None else challengers(x, y)
                    if isinstance(promoted, Promotion):  # a new champion from now on
                        promoted.positions = {**offsets, **ends, partition: offset + 1}
                        out.promotions.append(promoted)
            ends[partition] = offset + 1
        out.learned = n
        return out


class FastStep:
    """The compiled batch path; a batch it cannot take is learned by :class:`RiverStep`.

    ``disabled`` says why the compiled path was given up on for good (River's objects are not
    what :mod:`streamtrain.fastpath.river_adapter` verified, or a bug), after which every batch
    goes to River. Either way it is logged once.
    """

    def __init__(
        self,
        evaluator: ProgressiveEvaluator,
        fast: FastEvaluator,
        shape: EventShape = SEED,
        challengers: Challengers | None = None,
        drift: TaskDrift | None = None,
    ) -> None:
        self.evaluator = evaluator
        self.fast: FastEvaluator | None = fast
        self.shape = shape
        if challengers is not None and challengers.gate is not None:
            # The gate may change the champion after any event; a batch is learned at once.
            raise ValueError("a task with a promotion gate learns on River's path")
        self.river = RiverStep(evaluator, shape, challengers, drift)
        self.drift = drift
        self.challengers = self.river.challengers
        self.disabled: str | None = None

    def sync(self) -> None:
        """Hand the state back to the River objects (see :class:`FastEvaluator`)."""
        if self.fast is not None:
            self.fast.sync()

    def run(self, records: Sequence[Record], offsets: Mapping[int, int], learned: int) -> Outcome:
        fast = self.fast
        if fast is None:
            return self.river.run(records, offsets, learned)
        problem = self.evaluator.problem
        batch = self.shape.decode_batch(list(map(_value, records)), problem)
        if not batch.numeric:
            # Categorical values: numpy would read "1.5" as a number where River refuses it.
            fast.sync()
            return self.river.run(records, offsets, learned)
        xs, ys = batch.xs, batch.ys
        values = None
        out = Outcome()
        if xs:
            try:
                values = fast.learn_many(xs, ys, batch.matrix)
            except FastPathDisabled as off:  # River is not what the compiled path knows
                self.disabled = str(off)
                self.fast = None
            except FastPathFallback:
                pass
            except Exception as err:  # a bug: never lose a batch to it, stay on River
                log.exception("the fast path failed; River's per-event path takes over")
                self.disabled = f"{type(err).__name__}: {err}"
                self.fast = None
            if values is None:
                # Nothing of the batch was applied: River learns all of it, with the same verdicts.
                fast.sync()
                return self.river.run(records, offsets, learned)
            if not _heap.frozen:
                _freeze_heap()
            # The champion learned the batch; the challengers learn it after it, with River.
            if self.drift is not None:  # event by event, with each model's detector
                refused = dict(batch.invalid)
                valid = [r for i, r in enumerate(records) if i not in refused]
                self.drift.batch(
                    valid, xs, ys, values.tolist(), learned, self.challengers, out.drifts
                )
            else:
                self.challengers.learn_many(xs, ys)
        ends = out.offsets
        if not batch.invalid and None not in ys:
            out.learned = len(xs)
            # Each partition's last record (a dict keeps the last value of a key), in C.
            last = dict(zip(map(_partition, records), map(_offset, records), strict=True))
            for partition, offset in last.items():
                ends[partition] = offset + 1
            return out
        invalid = dict(batch.invalid)
        answers = values.tolist() if values is not None else []
        j = 0  # index of the next valid record in xs/ys
        n = 0
        for i, record in enumerate(records):
            partition = record.partition()
            offset = record.offset()
            bad = invalid.get(i)
            if bad is not None:
                out.dead_letters.append(DeadLetter(record, bad.reason.value, bad.message))
            else:
                if ys[j] is None:
                    positions = {**offsets, **ends, partition: offset}
                    answer = answer_from_fast_path(problem, answers[j])
                    out.predictions.append(Prediction(record, answer, positions, learned + n))
                else:
                    n += 1
                j += 1
            ends[partition] = offset + 1
        out.learned = n
        return out


class _Heap:
    frozen = False


_heap = _Heap()


def _freeze_heap() -> None:
    """Once per process, at the first batch the compiled kernel learned: move every object
    alive now (modules, numba's ~100,000 objects, the model) out of the garbage collector's
    reach. Nothing of it is garbage, but each full collection scanned it all: 80-170 ms, paid
    in the learning loop (bench/PROFILE.md). Cyclic garbage alive at that moment is kept."""
    _heap.frozen = True
    gc.freeze()


def _predict(
    evaluator: ProgressiveEvaluator,
    record: Record,
    x: dict[str, Any],
    positions: dict[int, int],
    learned: int,
    out: Outcome,
) -> None:
    try:
        answer = predict_answer(evaluator.model, evaluator.problem, x)
    except Exception as err:  # a model must not take the trainer down
        out.dead_letters.append(_model_error(record, err))
    else:
        out.predictions.append(Prediction(record, answer, positions, learned))


def _model_error(record: Record, err: Exception) -> DeadLetter:
    return DeadLetter(record, MODEL_ERROR, f"{type(err).__name__}: {err}")
