"""The join step: records of a task's feature and label partitions, in merged event-time order,
in; an :class:`~streamtrain.train.step.Outcome` out — no Kafka.

It is River's ``progressive_val_score`` with ``delay``, event by event: a feature event is
predicted on arrival (its prediction is written out, as for any unlabelled event, and kept);
its label, when it comes, scores *that* prediction and then the model learns the features as
they arrived. Inline events (``x`` and ``y`` together) are learned at once, as without a
labels topic. Expiry, early labels and duplicates follow :mod:`streamtrain.join.state`.

The model, its metrics and the join state are updated in place; offsets, counts, dead letters
and predictions go into the outcome for the task to apply.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from streamtrain.data.events import InvalidEvent
from streamtrain.faults import crash_point
from streamtrain.join.events import INLINE, LABEL
from streamtrain.join.state import (
    DUPLICATE_ID,
    DUPLICATE_LABEL,
    LABEL_EXPIRED,
    UNMATCHED_LABEL,
    Held,
    JoinPolicy,
    JoinState,
    Pending,
    StoredRecord,
)
from streamtrain.models.prediction import answer_from_proba
from streamtrain.models.problem import Problem
from streamtrain.records.seed import SEED, EventShape
from streamtrain.train.progressive import ProgressiveEvaluator
from streamtrain.train.step import MODEL_ERROR, DeadLetter, Outcome, Prediction

__all__ = ["Item", "JoinStep"]


@dataclasses.dataclass(slots=True)
class Item:
    """A decoded record waiting in the merge: ``kind`` None when it is invalid (``error``)."""

    record: Any
    ts: int
    from_labels: bool  # its position is on the labels topic (when that is another topic)
    kind: str | None
    id: str | None
    x: dict[str, float] | None
    y: Any
    error: InvalidEvent | None = None

    @property
    def rank(self) -> int:
        """Order at equal timestamps: labels first (River's ``simulate_qa``)."""
        return 0 if self.kind == LABEL else 1


class JoinStep:
    """One task's join: its evaluator and join state, updated in place."""

    def __init__(
        self,
        evaluator: ProgressiveEvaluator,
        state: JoinState,
        policy: JoinPolicy,
        *,
        id_from: str = "value",
        shape: EventShape = SEED,
    ) -> None:
        self.evaluator = evaluator
        self.state = state
        self.policy = policy
        self.id_from = id_from
        self.shape = shape

    def decode(self, msg: Any, ts: int, from_labels: bool) -> Item:
        try:
            kind, event_id, x, y = self.shape.decode_item(
                msg.value(), msg.key(), self.evaluator.problem, self.id_from
            )
        except InvalidEvent as bad:
            return Item(msg, ts, from_labels, None, None, None, None, bad)
        return Item(msg, ts, from_labels, kind, event_id, x, y)

    def run(
        self,
        items: Sequence[Item],
        offsets: Mapping[int, int],
        label_offsets: Mapping[int, int],
        learned: int,
    ) -> Outcome:
        run = _Run(self, Outcome(), learned)
        out = run.out
        state = self.state
        for item in items:
            if item.ts > state.stream_time:
                state.stream_time = item.ts
                run.expire(item.ts)
            msg = item.record
            partition = msg.partition()
            if item.error is not None:
                out.dead_letters.append(
                    DeadLetter(msg, item.error.reason.value, item.error.message)
                )
            elif item.kind == LABEL:
                run.label(item)
            elif item.kind == INLINE:
                run.inline(item)
            else:
                positions = {**offsets, **out.offsets, partition: msg.offset()}
                label_positions = (
                    {**label_offsets, **out.label_offsets}
                    if (label_offsets or out.label_offsets)
                    else None
                )
                run.feature(item, positions, label_positions)
            ends = out.label_offsets if item.from_labels else out.offsets
            ends[partition] = msg.offset() + 1
        out.learned = run.learned - learned
        return out


class _Run:
    """One :meth:`JoinStep.run` call's work (the count learned so far included)."""

    def __init__(self, step: JoinStep, out: Outcome, learned: int) -> None:
        self.step = step
        self.evaluator = step.evaluator
        self.state = step.state
        self.policy = step.policy
        self.out = out
        self.learned = learned

    # -- the three kinds ---------------------------------------------------------------------

    def inline(self, item: Item) -> None:
        try:
            self.evaluator.learn(item.x or {}, item.y)
        except Exception as err:  # a model must not take the trainer down
            self._refuse(item.record, MODEL_ERROR, f"{type(err).__name__}: {err}")
        else:
            self.learned += 1

    def feature(
        self, item: Item, positions: dict[int, int], label_positions: dict[int, int] | None
    ) -> None:
        state = self.state
        event_id = item.id
        if event_id is not None and event_id in state.pending:
            self._refuse(item.record, DUPLICATE_ID, f"id {event_id!r} is already waiting")
            return
        x = item.x or {}
        try:
            proba, label = self.evaluator.predict(x)
            answer = self._answer(x, proba, label)
        except Exception as err:  # a model must not take the trainer down
            self._refuse(item.record, MODEL_ERROR, f"{type(err).__name__}: {err}")
            return
        self.out.predictions.append(
            Prediction(item.record, answer, positions, self.learned, label_positions)
        )
        crash_point("after-join-predict")
        if event_id is None:
            return  # an unlabelled event with no id: nothing can complete it
        stored = StoredRecord.of(item.record, item.ts)
        pending = Pending(stored, proba, label, self.learned)
        held = state.held.pop(event_id, None)
        if held is not None:  # its label came first
            self._join(event_id, pending, held.y, held.record, held.record.ts)
            return
        state.pending[event_id] = pending
        if len(state.pending) > self.policy.max_pending:
            oldest = next(iter(state.pending))
            state.counts["evicted"] += 1
            self._expire_pending(oldest, f"more than {self.policy.max_pending} waiting")

    def label(self, item: Item) -> None:
        state = self.state
        event_id = item.id
        assert event_id is not None
        pending = state.pending.pop(event_id, None)
        if pending is not None:
            self._join(event_id, pending, item.y, item.record, item.ts)
        elif event_id in state.recent or event_id in state.held:
            state.counts["duplicate"] += 1
            self._refuse(item.record, DUPLICATE_LABEL, f"id {event_id!r} has a label already")
        else:
            state.held[event_id] = Held(StoredRecord.of(item.record, item.ts), item.y)
            if len(state.held) > self.policy.max_pending:
                oldest = next(iter(state.held))
                state.counts["evicted"] += 1
                self._unmatched(oldest, f"more than {self.policy.max_pending} labels waiting")

    # -- joining and expiring ----------------------------------------------------------------

    def _join(self, event_id: str, pending: Pending, y: Any, label: Any, label_ts: int) -> None:
        """Score the prediction made on arrival, then learn; ``label`` is the label's record
        (dead-lettered if the model refuses it)."""
        state = self.state
        x = self._features_of(pending.record)
        try:
            self.evaluator.learn_predicted(x, y, pending.proba, pending.label)
        except Exception as err:  # a model must not take the trainer down
            self._refuse(label, MODEL_ERROR, f"{type(err).__name__}: {err}")
            return
        self.learned += 1
        state.counts["joined"] += 1
        state.observe_delay(label_ts - pending.record.ts)
        state.recent[event_id] = pending.record.ts
        if len(state.recent) > self.policy.max_pending:
            del state.recent[next(iter(state.recent))]

    def expire(self, now: int) -> None:
        """Everything whose wait ended before stream time ``now``."""
        state, policy = self.state, self.policy
        ttl = policy.ttl_ms
        if ttl is not None:
            pending = state.pending
            while pending:
                event_id, entry = next(iter(pending.items()))
                if entry.record.ts + ttl >= now:
                    break
                self._expire_pending(event_id, f"no label within {ttl} ms")
            recent = state.recent
            while recent:
                event_id, ts = next(iter(recent.items()))
                if ts + ttl >= now:
                    break
                del recent[event_id]
        held = state.held
        while held:
            event_id, entry2 = next(iter(held.items()))
            if entry2.record.ts + policy.grace_ms >= now:
                break
            self._unmatched(event_id, f"no feature event within {policy.grace_ms} ms")

    def _expire_pending(self, event_id: str, why: str) -> None:
        entry = self.state.pending.pop(event_id)
        if not self.policy.learns_expired:
            self.state.counts["expired"] += 1
            self._refuse(entry.record, LABEL_EXPIRED, f"id {event_id!r}: {why}")
            return
        x = self._features_of(entry.record)
        try:
            self.evaluator.learn_predicted(x, self.policy.default_label, entry.proba, entry.label)
        except Exception as err:  # a model must not take the trainer down
            self._refuse(entry.record, MODEL_ERROR, f"{type(err).__name__}: {err}")
            return
        self.learned += 1
        self.state.counts["defaulted"] += 1

    def _unmatched(self, event_id: str, why: str) -> None:
        held = self.state.held.pop(event_id)
        self.state.counts["unmatched"] += 1
        self._refuse(held.record, UNMATCHED_LABEL, f"id {event_id!r}: {why}")

    # -- helpers -----------------------------------------------------------------------------

    def _features_of(self, record: StoredRecord) -> dict[str, float]:
        # The bytes decoded on arrival, decoded again: the same features, and the join state
        # keeps one copy of each event instead of two.
        _kind, _id, x, _y = self.step.shape.decode_item(
            record.value(), record.key(), self.evaluator.problem, self.step.id_from
        )
        assert x is not None
        return x

    def _answer(self, x: dict[str, float], proba: Any, label: Any) -> dict[str, Any]:
        evaluator = self.evaluator
        if evaluator.problem is Problem.CLASSIFICATION:
            if proba is None:
                proba = evaluator.model.predict_proba_one(x)
            return answer_from_proba(proba)
        if label is None:
            label = evaluator.model.predict_one(x)
        return {"prediction": label}

    def _refuse(self, record: Any, reason: str, message: str) -> None:
        self.out.dead_letters.append(DeadLetter(record, reason, message))
