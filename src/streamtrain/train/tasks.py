"""A training task: one model replica, the partitions it learns from, and its counters."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from streamtrain.fastpath import FastEvaluator
from streamtrain.train.checkpointing import TrainState
from streamtrain.train.progressive import ProgressiveEvaluator


@dataclasses.dataclass
class Task:
    """``key`` names the task's checkpoints: the model name, ``NAME/p<partition>`` for a
    partitioned model, or ``""`` for an unnamed (in-memory) trainer."""

    key: str
    evaluator: ProgressiveEvaluator
    events_learned: int = 0
    events_predicted: int = 0  # unlabelled events answered (not learned)
    # The compiled batch path over the same River objects, when the model qualifies.
    fast: FastEvaluator | None = None
    dead_letter_reasons: Counter[str] = dataclasses.field(default_factory=Counter)
    offsets: dict[int, int] = dataclasses.field(default_factory=dict)  # next offset to learn

    @classmethod
    def from_state(cls, key: str, state: TrainState, *, fast: bool = False) -> Task:
        task = cls(
            key=key,
            evaluator=ProgressiveEvaluator(state.model, state.metrics, state.rolling),
            events_learned=state.events_learned,
            events_predicted=state.events_predicted,
            dead_letter_reasons=Counter(state.dead_letter_reasons),
            offsets=dict(state.offsets),
        )
        if fast:
            task.enable_fast_path()
        return task

    def enable_fast_path(self) -> None:
        """Use the compiled batch path if this model and its metrics qualify for it.

        Rolling-window metrics are not compiled, so a task that keeps them stays on River.
        """
        from streamtrain.fastpath import fast_evaluator_for

        ev = self.evaluator
        if not ev.rolling:
            # wait=False: learn with River until the kernel is loaded, with the same results.
            self.fast = fast_evaluator_for(ev.model, ev.metrics, wait=False)

    def sync(self) -> ProgressiveEvaluator:
        """Bring the River objects up to date with the fast path; return the evaluator."""
        if self.fast is not None:
            self.fast.sync()
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
