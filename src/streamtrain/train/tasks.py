"""A training task: one model replica, its position in the input, its counters and the outputs
it owes.

The task is the only writer of its offsets, counters and pending outputs: it :meth:`~Task.learn`s
a batch through its step (:mod:`streamtrain.train.step`) and applies the outcome; nothing else
assigns them. A task that is rolled back is simply replaced by one made from the last committed
state (:meth:`Task.from_state`), pending outputs and all.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from typing import Any

from streamtrain.fastpath import FastEvaluator
from streamtrain.state.payload import TrainState
from streamtrain.train.progressive import ProgressiveEvaluator
from streamtrain.train.step import DeadLetter, FastStep, Outcome, Prediction, Record, RiverStep

__all__ = ["Output", "Task"]

Output = DeadLetter | Prediction


@dataclasses.dataclass
class Task:
    """``key`` names the task's checkpoints: the model name, ``NAME/p<partition>`` for a
    partitioned model, or ``""`` for an unnamed (in-memory) trainer."""

    key: str
    evaluator: ProgressiveEvaluator
    step: RiverStep | FastStep
    events_learned: int = 0
    events_predicted: int = 0  # unlabelled events answered (not learned)
    dead_letter_reasons: Counter[str] = dataclasses.field(default_factory=Counter)
    offsets: dict[int, int] = dataclasses.field(default_factory=dict)  # next offset to learn
    # Dead letters and predictions made, not yet handed to a writer (see take_outputs).
    pending: list[Output] = dataclasses.field(default_factory=list)

    @classmethod
    def from_state(cls, key: str, state: TrainState, *, fast: bool = False) -> Task:
        evaluator = ProgressiveEvaluator(state.model, state.metrics, state.rolling)
        return cls(
            key=key,
            evaluator=evaluator,
            step=_step_for(evaluator, fast),
            events_learned=state.events_learned,
            events_predicted=state.events_predicted,
            dead_letter_reasons=Counter(state.dead_letter_reasons),
            offsets=dict(state.offsets),
        )

    # -- the one writer ----------------------------------------------------------------------

    def learn(self, records: Sequence[Record]) -> None:
        """Learn, predict or refuse every record of ``records`` (this task's, in log order)."""
        self.apply(self.step.run(records, self.offsets, self.events_learned))

    def apply(self, outcome: Outcome) -> None:
        self.events_learned += outcome.learned
        self.offsets.update(outcome.offsets)
        if outcome.dead_letters:
            self.dead_letter_reasons.update(d.reason for d in outcome.dead_letters)
            self.pending.extend(outcome.dead_letters)
        if outcome.predictions:
            self.events_predicted += len(outcome.predictions)
            self.pending.extend(outcome.predictions)

    def advance_to(self, partition: int, offset: int) -> None:
        """The consumer is at ``offset`` with nothing left to learn before it (it skipped
        transaction markers or aborted records, which are not events)."""
        if offset > self.offsets.get(partition, -1):
            self.offsets[partition] = offset

    def take_outputs(self) -> list[Output]:
        """The pending outputs, which the caller now owes (to a transaction or a producer)."""
        pending, self.pending = self.pending, []
        return pending

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
        return TrainState(
            ev.model,
            ev.metrics,
            self.events_learned,
            dict(self.dead_letter_reasons),
            dict(self.offsets),
            ev.rolling,
            self.events_predicted,
        )

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
        }


def _step_for(evaluator: ProgressiveEvaluator, fast: bool) -> RiverStep | FastStep:
    """The compiled path if asked for and this model and its metrics qualify, else River.

    Rolling-window metrics are not compiled, so a task that keeps them stays on River.
    """
    if fast and not evaluator.rolling:
        from streamtrain.fastpath import fast_evaluator_for

        # wait=False: learn with River until the kernel is loaded, with the same results.
        compiled = fast_evaluator_for(evaluator.model, evaluator.metrics, wait=False)
        if compiled is not None:
            return FastStep(evaluator, compiled)
    return RiverStep(evaluator)
