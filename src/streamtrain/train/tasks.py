"""A training task: one model replica (its champion, and its challengers if any), its position
in the input, its counters and the outputs it owes.

The task is the only writer of its offsets, counters and pending outputs: it :meth:`~Task.learn`s
a batch through its step (:mod:`streamtrain.train.step`) and applies the outcome; nothing else
assigns them. A task that is rolled back is simply replaced by one made from the last committed
state (:meth:`Task.from_state`), pending outputs and all.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from streamtrain.errors import ConfigError
from streamtrain.fastpath import FastEvaluator
from streamtrain.join.merge import EventTimeMerge
from streamtrain.join.state import JoinPolicy, JoinState
from streamtrain.join.step import JoinStep
from streamtrain.records.seed import SEED, EventShape
from streamtrain.state.payload import TrainState
from streamtrain.train.challengers import CHAMPION, ChallengerChange, Challengers, Roster
from streamtrain.train.drift import Detection, DriftPolicy, TaskDrift
from streamtrain.train.progressive import ProgressiveEvaluator
from streamtrain.train.promotion import Gate, Promotion, PromotionRule
from streamtrain.train.settings import TrainSettings
from streamtrain.train.step import DeadLetter, FastStep, Outcome, Prediction, Record, RiverStep

__all__ = ["JoinSpec", "Output", "Task", "join_spec"]

Output = DeadLetter | Prediction | Detection | Promotion | ChallengerChange


@dataclasses.dataclass(frozen=True)
class JoinSpec:
    """How a task joins labels that arrive later (``train --labels-topic``)."""

    labels_topic: str | None  # None: labels come on the input topic itself
    policy: JoinPolicy
    id_from: str = "value"
    max_wait: float = 0.0


def join_spec(settings: TrainSettings) -> JoinSpec | None:
    """The join of ``settings`` (``--labels-topic`` and its options), if labels are joined."""
    if settings.labels_topic is None:
        return None
    return JoinSpec(
        settings.separate_labels_topic,
        settings.join_policy(),
        settings.id_from,
        settings.max_wait_seconds,
    )


@dataclasses.dataclass
class Task:
    """``key`` names the task's checkpoints: the model name, ``NAME/p<partition>`` for a
    partitioned model, or ``""`` for an unnamed (in-memory) trainer."""

    key: str
    evaluator: ProgressiveEvaluator  # the champion's
    step: RiverStep | FastStep | JoinStep
    # Models learning the same events beside the champion (its step feeds them).
    challengers: Challengers = dataclasses.field(default_factory=Challengers)
    # Each model's drift detector (train --drift), fed by the step; None: off.
    drift: TaskDrift | None = None
    gate: Gate | None = None  # the promotion gate, when the task has (or had) challengers
    # Requests applied (streamtrain.train.requests): {"next": offset, "removed": [label]}.
    requests: dict[str, Any] = dataclasses.field(default_factory=dict)
    keep_versions: int | None = None  # train --keep-versions, saved with the state
    events_learned: int = 0
    events_predicted: int = 0  # unlabelled events answered (not learned)
    dead_letter_reasons: Counter[str] = dataclasses.field(default_factory=Counter)
    offsets: dict[int, int] = dataclasses.field(default_factory=dict)  # next offset to learn
    label_offsets: dict[int, int] = dataclasses.field(default_factory=dict)  # labels topic
    # Dead letters and predictions made, not yet handed to a writer (see take_outputs).
    pending: list[Output] = dataclasses.field(default_factory=list)
    # A joined task's records, fetched but not yet taken by the event-time merge: not state
    # (a restart fetches them again from the offsets).
    merge: EventTimeMerge | None = None
    labels_topic: str | None = None
    fetched: dict[tuple[str, int], int] = dataclasses.field(default_factory=dict)
    # Seconds spent in learn(), not state: what renewing its objects is weighed against.
    learn_seconds: float = 0.0

    @classmethod
    def from_state(
        cls,
        key: str,
        state: TrainState,
        *,
        fast: bool = False,
        join: JoinSpec | None = None,
        shape: EventShape = SEED,
        roster: Roster | None = None,
        drift: DriftPolicy | None = None,
        promotion: PromotionRule | None = None,
        spec: str = "",
        keep_versions: int | None = None,
    ) -> Task:
        """``roster``: the challengers asked for (see :meth:`Roster.resume`); without one,
        those in ``state`` go on as they are. ``drift``: each model's detector (joined
        labels: not yet). ``promotion``: the gate's rule, for a task with challengers
        (``spec`` is its champion's spec, until its state says another)."""
        evaluator = ProgressiveEvaluator(state.model, state.metrics, state.rolling)
        saved_gate = state.promotion or {}
        requests = dict(state.requests or {})
        if roster is not None:
            champion = saved_gate.get("champion")
            removed = requests.get("removed", ())
            challengers = roster.resume(state.challengers, state.events_learned, champion, removed)
        else:
            challengers = Challengers.from_plain(state.challengers)
        gate = None
        # A gate once made stays (its champion's label and spec), its challengers all removed.
        if promotion is not None and (challengers or state.promotion) and join is None:
            gate = Gate.attach(
                promotion,
                evaluator,
                challengers,
                state.promotion,
                spec=spec,
                events=state.events_learned,
            )
        step: RiverStep | FastStep | JoinStep
        detectors = None
        if drift is not None and join is None:
            labels = [CHAMPION, *(c.label for c in challengers)]
            detectors = TaskDrift.resume(drift, evaluator.problem, state.drift, labels)
            if gate is not None:  # a promotion: each detector follows its model
                gate.on_promotion = detectors.promoted
        if join is None:
            step = _step_for(evaluator, fast, shape, challengers, detectors)
        else:
            if challengers:  # asked for: refused by the settings; here, from a checkpoint
                raise ConfigError(
                    f"{key} has challengers, which do not learn joined labels (--labels-topic) yet"
                )
            # The compiled path learns inline labels only; a joined task uses River's.
            step = JoinStep(
                evaluator,
                JoinState.from_plain(state.join),
                join.policy,
                id_from=join.id_from,
                shape=shape,
            )
        return cls(
            key=key,
            evaluator=evaluator,
            step=step,
            challengers=challengers,
            drift=detectors,
            gate=gate,
            requests=requests,
            keep_versions=keep_versions,
            events_learned=state.events_learned,
            events_predicted=state.events_predicted,
            dead_letter_reasons=Counter(state.dead_letter_reasons),
            offsets=dict(state.offsets),
            label_offsets=dict(state.label_offsets),
            merge=None if join is None else EventTimeMerge((), max_wait=join.max_wait),
            labels_topic=None if join is None else join.labels_topic,
        )

    # -- the one writer ----------------------------------------------------------------------

    def learn(self, records: Sequence[Record]) -> None:
        """Learn, predict or refuse every record of ``records`` (this task's, in log order);
        a joined task buffers them for :meth:`drain`."""
        step = self.step
        if isinstance(step, JoinStep):
            self._feed(step, records)
        else:
            started = time.perf_counter()
            self.apply(step.run(records, self.offsets, self.events_learned))
            self.learn_seconds += time.perf_counter() - started

    def drain(self, now: float, caught_up: Callable[[tuple[str, int], int], bool]) -> None:
        """A joined task: learn what the event-time merge lets go at ``now``.

        ``caught_up(input, next_offset)`` says whether an input's log holds nothing past
        ``next_offset``."""
        step, merge = self.step, self.merge
        if not isinstance(step, JoinStep) or merge is None:
            return
        fetched = self.fetched

        def input_caught_up(key: Any) -> bool:
            return caught_up(key, fetched.get(key, -1))

        items = list(merge.take(now, input_caught_up))
        if items:
            self.apply(step.run(items, self.offsets, self.label_offsets, self.events_learned))

    def apply(self, outcome: Outcome) -> None:
        self.events_learned += outcome.learned
        self.offsets.update(outcome.offsets)
        if outcome.label_offsets:
            self.label_offsets.update(outcome.label_offsets)
        if outcome.dead_letters:
            self.dead_letter_reasons.update(d.reason for d in outcome.dead_letters)
            self.pending.extend(outcome.dead_letters)
        if outcome.predictions:
            self.events_predicted += len(outcome.predictions)
            self.pending.extend(outcome.predictions)
        if outcome.drifts:
            self.pending.extend(outcome.drifts)
        for promoted in outcome.promotions:
            self.add_promotion(promoted)

    def add_promotion(self, promoted: Promotion | ChallengerChange) -> None:
        """A change of champion (or of challengers), owed to the events topic with the next
        checkpoint."""
        promoted.model = self.key
        self.pending.append(promoted)

    def set_inputs(self, inputs: Sequence[tuple[str, int]]) -> None:
        """A joined task's input partitions now (records of one no longer ours are dropped:
        its new owner fetches them again)."""
        merge = self.merge
        if merge is None:
            return
        for key in merge.inputs:
            if key not in inputs:
                merge.remove_input(key)
                self.fetched.pop(key, None)  # type: ignore[call-overload]
        for key in inputs:
            merge.add_input(key)

    def offsets_of(self, topic: str) -> dict[int, int]:
        """The next offsets to learn on ``topic``: the labels topic's, or the input's."""
        return self.label_offsets if topic == self.labels_topic else self.offsets

    def advance_to(self, topic: str, partition: int, offset: int) -> None:
        """The consumer is at ``offset`` with nothing left to learn before it (it skipped
        transaction markers or aborted records, which are not events)."""
        if self.merge is not None and self.merge.buffered((topic, partition)):
            return  # records before the position wait in the merge
        offsets = self.offsets_of(topic)
        if offset > offsets.get(partition, -1):
            offsets[partition] = offset

    def take_outputs(self) -> list[Output]:
        """The pending outputs, which the caller now owes (to a transaction or a producer)."""
        pending, self.pending = self.pending, []
        return pending

    def _feed(self, step: JoinStep, records: Sequence[Record]) -> None:
        merge = self.merge
        assert merge is not None
        labels_topic = self.labels_topic
        for msg in records:
            topic = msg.topic()  # type: ignore[attr-defined]
            key = (topic, msg.partition())
            ts = msg.timestamp()[1]  # type: ignore[attr-defined]
            item = step.decode(msg, ts, topic == labels_topic)
            merge.add_input(key)
            merge.add(key, ts, item.rank, item)
            self.fetched[key] = msg.offset() + 1

    # -- reading -----------------------------------------------------------------------------

    @property
    def fast(self) -> FastEvaluator | None:
        """The compiled path, while this task is on it."""
        return self.step.fast if isinstance(self.step, FastStep) else None

    @property
    def fast_disabled(self) -> str | None:
        """Why the compiled path was given up on for good, if it was."""
        return self.step.disabled if isinstance(self.step, FastStep) else None

    def sync(self) -> ProgressiveEvaluator:
        """Bring the River objects up to date with the compiled path; return the evaluator."""
        if isinstance(self.step, FastStep):
            self.step.sync()
        return self.evaluator

    def state(self) -> TrainState:
        ev = self.sync()
        join = self.join_state
        return TrainState(
            ev.model,
            ev.metrics,
            self.events_learned,
            dict(self.dead_letter_reasons),
            dict(self.offsets),
            ev.rolling,
            self.events_predicted,
            dict(self.label_offsets),
            None if join is None else join.to_plain(),
            self.challengers.to_plain(),
            None if self.drift is None else self.drift.to_plain(),
            None if self.gate is None else self.gate.state.to_plain(),
            dict(self.requests) or None,
            self.keep_versions,
        )

    @property
    def join_state(self) -> JoinState | None:
        return self.step.state if isinstance(self.step, JoinStep) else None

    @property
    def dead_lettered(self) -> int:
        return sum(self.dead_letter_reasons.values())

    def summary(self) -> dict[str, Any]:
        return {
            "events_learned": self.events_learned,
            "dead_lettered": self.dead_lettered,
            "events_predicted": self.events_predicted,
            "dead_letter_reasons": dict(self.dead_letter_reasons),
            "metrics": self.sync().values(),
            "rolling": self.evaluator.rolling_values(),
            "offsets": {str(p): o for p, o in sorted(self.offsets.items())},
            **({} if self.join_state is None else {"join": self.join_state.summary()}),
            **({"challengers": self.challengers.summary()} if self.challengers else {}),
            **({} if self.drift is None else {"drift": self.drift.summary()}),
            **({"promotion": self.gate.summary()} if self.gate is not None else {}),
        }


def _step_for(
    evaluator: ProgressiveEvaluator,
    fast: bool,
    shape: EventShape,
    challengers: Challengers,
    drift: TaskDrift | None = None,
) -> RiverStep | FastStep:
    """The compiled path if asked for and this model and its metrics qualify, else River.

    Rolling-window metrics are not compiled, so a task that keeps them stays on River.
    """
    if fast and not evaluator.rolling:
        from streamtrain.fastpath import fast_evaluator_for

        # wait=False: learn with River until the kernel is loaded, with the same results.
        compiled = fast_evaluator_for(evaluator.model, evaluator.metrics, wait=False)
        if compiled is not None:
            return FastStep(evaluator, compiled, shape, challengers, drift)
    return RiverStep(evaluator, shape, challengers, drift)
