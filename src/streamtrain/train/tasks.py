"""A training task: one model replica, the partitions it learns from, and its counters."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from streamtrain.train.checkpointing import TrainState
from streamtrain.train.progressive import ProgressiveEvaluator


@dataclasses.dataclass
class Task:
    """``key`` names the task's checkpoints: the model name, ``NAME/p<partition>`` for a
    partitioned model, or ``""`` for an unnamed (in-memory) trainer."""

    key: str
    evaluator: ProgressiveEvaluator
    events_learned: int = 0
    dead_letter_reasons: Counter[str] = dataclasses.field(default_factory=Counter)
    offsets: dict[int, int] = dataclasses.field(default_factory=dict)  # next offset to learn

    @classmethod
    def from_state(cls, key: str, state: TrainState) -> Task:
        return cls(
            key=key,
            evaluator=ProgressiveEvaluator(state.model, state.metrics, state.rolling),
            events_learned=state.events_learned,
            dead_letter_reasons=Counter(state.dead_letter_reasons),
            offsets=dict(state.offsets),
        )

    def state(self) -> TrainState:
        ev = self.evaluator
        return TrainState(
            ev.model,
            ev.metrics,
            self.events_learned,
            dict(self.dead_letter_reasons),
            dict(self.offsets),
            ev.rolling,
        )

    @property
    def dead_lettered(self) -> int:
        return sum(self.dead_letter_reasons.values())

    def summary(self) -> dict[str, Any]:
        return {
            "events_learned": self.events_learned,
            "dead_lettered": self.dead_lettered,
            "metrics": self.evaluator.values(),
            "offsets": {str(p): o for p, o in sorted(self.offsets.items())},
        }
