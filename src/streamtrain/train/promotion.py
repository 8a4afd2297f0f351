"""The promotion gate: when a challenger replaces the champion — pure, no I/O.

The rule (:class:`PromotionRule`, from ``train --promote-*``), decided at event counts only, so
the same log gives the same promotions at the same offsets however the run is cut by
restarts or kill -9:

* every model scores the metric ``on`` (one of the run's metrics) over its last ``window``
  labelled events too (River's ``utils.Rolling``, kept in the model's evaluator, hence in the
  checkpoint);
* after every ``every``-th labelled event of the task (the n-th with ``n % every == 0``;
  default ``window // 10``), the gate evaluates: a challenger *wins* when it has learned at
  least ``min_events`` events (default ``window``) and beats the champion on the window by at
  least ``margin`` (``bigger_is_better`` of the metric says which way; a tie, or an undefined
  value, never wins). A win adds one to its count; anything else resets it to 0;
* with ``mode`` ``auto``, a challenger whose count reaches ``after`` is promoted at once (if
  several do, the one ahead by most, then the first in roster order); all counts restart.
  ``manual`` never promotes on its own (``streamtrain models promote``).

With ``train --on-drift promote-best`` there is one more way (:meth:`Gate.drifted`), whatever
``mode`` says: when the champion's drift detector fires on the d-th labelled event, the gate
evaluates once more right after event d + ``window``, when every model's window holds exactly
the events since the detection. The *best* model then is the challenger whose windowed metric
beats the champion's by at least ``margin`` (strictly, as above) and by most (the first in
roster order on a tie), among those that learned at least ``window`` events; none: the
champion stays. It is promoted at once (``by`` ``drift``). Detections while one is pending
change nothing (the window runs from the first).

A promotion exchanges the two evaluators' contents, so the champion's evaluator object (the one
the step holds) goes on with the promoted model from the next event, and the old champion goes
on learning as a challenger under its own label: nothing is lost. The first champion's label is
:data:`FOUNDER` (``c0``: challengers without a label are ``c1``, ``c2``...).

>>> from river import dummy, linear_model, metrics
>>> from streamtrain.train.challengers import Challenger, Challengers
>>> from streamtrain.train.progressive import ProgressiveEvaluator
>>> rule = PromotionRule(on="Accuracy", window=4, every=2, after=1, mode="auto")
>>> def evaluator(model):
...     return ProgressiveEvaluator(model, {"Accuracy": metrics.Accuracy()})
>>> champion = evaluator(dummy.NoChangeClassifier())
>>> challengers = Challengers([Challenger("lr", "LogisticRegression",
...                                       evaluator(linear_model.LogisticRegression()))])
>>> gate = Gate.attach(rule, champion, challengers, None, spec="NoChangeClassifier")
>>> events = [({"a": a}, a > 0) for a in (1.0, -1.0, -2.0, 1.0, 2.0, -1.0, 3.0, -3.0)]
>>> def step(x, y):  # what a step does with each labelled event
...     champion.learn(x, y)
...     return challengers.learn(x, y)
>>> records = [step(x, y) for x, y in events]
>>> [(r.events, r.from_label, r.to_label, r.by) for r in records if r is not None]
[(4, 'c0', 'lr', 'gate')]
>>> gate.state.champion, [(c.label, c.spec) for c in challengers]
('lr', [('c0', 'NoChangeClassifier')])
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from river import utils

from streamtrain.errors import ConfigError
from streamtrain.train.challengers import FOUNDER, Challengers
from streamtrain.train.progressive import ProgressiveEvaluator

__all__ = ["DRIFT", "FOUNDER", "MODES", "Gate", "GateState", "Promotion", "PromotionRule"]

MODES = ("auto", "manual")
GATE = "gate"
MANUAL = "manual"
DRIFT = "drift"


@dataclasses.dataclass(frozen=True)
class PromotionRule:
    """When a challenger replaces the champion (see the module's docstring)."""

    on: str  # a metric of the run, by its spec (e.g. ROCAUC)
    window: int = 1000
    margin: float = 0.0
    after: int = 3
    min_events: int | None = None  # None: window
    every: int | None = None  # None: max(1, window // 10)
    mode: str = "manual"
    bigger_is_better: bool = True
    on_drift: bool = False  # --on-drift promote-best (see the module doc)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"promote must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.window < 1 or self.after < 1:
            raise ConfigError("promote-window and promote-after must be at least 1")
        if self.every is not None and self.every < 1:
            raise ConfigError("promote-every must be at least 1")
        if self.min_events is not None and self.min_events < 0:
            raise ConfigError("promote-min-events must be >= 0")
        if not math.isfinite(self.margin) or self.margin < 0:
            raise ConfigError("promote-margin must be a number >= 0")

    @property
    def interval(self) -> int:
        return self.every if self.every is not None else max(1, self.window // 10)

    @property
    def least_events(self) -> int:
        return self.min_events if self.min_events is not None else self.window

    @property
    def key(self) -> str:
        """The name of the windowed metric in each evaluator's ``rolling``."""
        return f"promote:{self.on}/{self.window}"

    def advantage(self, champion: float, challenger: float) -> float:
        """How far ``challenger`` is ahead (negative: behind); NaN when either is undefined."""
        return challenger - champion if self.bigger_is_better else champion - challenger

    def wins(self, champion: float, challenger: float) -> bool:
        """A strict lead of at least ``margin``.

        >>> PromotionRule("LogLoss", margin=0.05, bigger_is_better=False).wins(0.5, 0.44)
        True
        >>> PromotionRule("ROCAUC").wins(0.8, 0.8)
        False
        """
        lead = self.advantage(champion, challenger)
        return math.isfinite(lead) and lead > 0 and lead >= self.margin

    def describe(self) -> str:
        """The rule in one line, as ``streamtrain models`` prints it."""
        better = "higher" if self.bigger_is_better else "lower"
        when = "automatically" if self.mode == "auto" else "only when asked (manual)"
        text = (
            f"promote {when}: a challenger with >= {self.least_events} events whose {self.on} "
            f"over the last {self.window} events is {better} than the champion's by >= "
            f"{self.margin:g} (strictly) at {self.after} evaluations in a row, one every "
            f"{self.interval} events"
        )
        if self.on_drift:
            text += (
                f"; and {self.window} events after a drift of the champion, the challenger "
                f"{better} by most on those events (by >= {self.margin:g}, strictly; a tie "
                "keeps the champion)"
            )
        return text


@dataclasses.dataclass
class GateState:
    """What the gate carries from checkpoint to checkpoint (``TrainState.promotion``)."""

    champion: str = FOUNDER  # the champion's label
    spec: str = ""  # the champion's spec
    events: int = 0  # labelled events the gate has seen (the task's)
    wins: dict[str, int] = dataclasses.field(default_factory=dict)  # label -> wins in a row
    promotions: int = 0
    requests: int = 0  # next offset of the events topic to look for promotion requests at
    # The champion's own count: what it had learned when promoted, and the gate's count then.
    learned_before: int = 0
    since: int = 0
    started_at: int = 0  # the champion's started_at (as a challenger's)
    rule: str = ""  # the rule in force, described (for `models`)
    # --on-drift promote-best: the gate's event count at which to pick the best model (0: none)
    best_at: int = 0

    def to_plain(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_plain(cls, plain: Mapping[str, Any]) -> GateState:
        fields = {f.name for f in dataclasses.fields(cls)}
        state = cls(**{k: v for k, v in plain.items() if k in fields})
        state.wins = dict(state.wins)
        return state


@dataclasses.dataclass
class Promotion:
    """One change of champion, as the events topic records it (:meth:`to_plain`)."""

    from_label: str
    to_label: str
    from_spec: str
    to_spec: str
    metric: str
    window: int
    values: dict[str, float]  # label -> the metric over the window, both models
    events: int  # labelled events seen when it happened (after the last of them)
    by: str  # "gate" or "manual"
    at: float  # seconds since the epoch
    wins: int = 0
    # Next offset to learn per input partition at the moment of promotion, and the task's key
    # (set by the step and the task).
    positions: dict[int, int] = dataclasses.field(default_factory=dict)
    model: str = ""

    def to_plain(self) -> dict[str, Any]:
        return {
            "kind": "promotion",
            "model": self.model,
            "from": self.from_label,
            "to": self.to_label,
            "from_spec": self.from_spec,
            "to_spec": self.to_spec,
            "metric": self.metric,
            "window": self.window,
            "values": self.values,
            "events": self.events,
            "wins": self.wins,
            "offsets": {str(p): o for p, o in sorted(self.positions.items())},
            "by": self.by,
            "at": self.at,
        }


class Gate:
    """A task's gate: sees every labelled event after all its models learned it (it is the
    :attr:`Challengers.gate`), evaluates when due, and promotes."""

    def __init__(
        self,
        rule: PromotionRule,
        state: GateState,
        champion: ProgressiveEvaluator,
        challengers: Challengers,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rule = rule
        self.state = state
        self.champion = champion
        self.challengers = challengers
        self.clock = clock
        # Told of each promotion (from, to): the task's drift detectors follow their models.
        self.on_promotion: Callable[[str, str], None] | None = None

    @classmethod
    def attach(
        cls,
        rule: PromotionRule,
        champion: ProgressiveEvaluator,
        challengers: Challengers,
        saved: Mapping[str, Any] | None,
        *,
        spec: str,
        events: int = 0,
    ) -> Gate:
        """The gate of a task: its saved state (or a fresh one, counting from ``events``),
        each model's windowed metric added where missing, and hooked to ``challengers``.

        ``champion`` is changed in place (see :meth:`ProgressiveEvaluator.watch`), so the
        step that holds it scores the window too."""
        state = GateState.from_plain(saved) if saved else GateState(spec=spec, events=events)
        state.rule = rule.describe()
        gate = cls(rule, state, champion, challengers)
        for evaluator in (champion, *(c.evaluator for c in challengers)):
            metric = evaluator.metrics.get(rule.on)
            if metric is None:
                raise ConfigError(f"promote-on {rule.on}: not a metric of this run")
            if rule.key not in evaluator.rolling:
                if not hasattr(metric, "revert"):
                    raise ConfigError(f"promote-on {rule.on}: River cannot window this metric")
                evaluator.watch(rule.key, utils.Rolling(metric.clone(), window_size=rule.window))
        challengers.gate = gate
        return gate

    def restarted(self, labels: Sequence[str]) -> None:
        """Challengers ``labels`` started afresh (``--on-drift reset-challengers``): their
        evaluators carry the gate's window again, empty (:meth:`Challenger.restarted`), and
        their win counts start at 0."""
        for label in labels:
            self.state.wins[label] = 0

    def value(self, evaluator: ProgressiveEvaluator) -> float:
        return float(evaluator.rolling[self.rule.key].get())

    def drifted(self) -> None:
        """The champion's detector fired on the event being learned (not yet counted): pick
        the best model ``window`` events after it, unless a pick is pending already."""
        if not self.state.best_at:
            self.state.best_at = self.state.events + 1 + self.rule.window

    def after_event(self) -> Promotion | None:
        """One more labelled event was learned by every model: evaluate if it is due."""
        state = self.state
        state.events += 1
        if state.best_at and state.events >= state.best_at:
            state.best_at = 0
            best = self.best()
            if best is not None:
                return self.promote(best, DRIFT)
        if state.events % self.rule.interval:
            return None
        return self.evaluate()

    def best(self) -> str | None:
        """The challenger ahead of the champion by most on the window, by at least the
        margin, having learned a whole window; None: the champion is best."""
        rule = self.rule
        champion = self.value(self.champion)
        best: tuple[float, str] | None = None
        for c in self.challengers:
            value = self.value(c.evaluator)
            if c.events_learned < rule.window or not rule.wins(champion, value):
                continue
            lead = rule.advantage(champion, value)
            if best is None or lead > best[0]:
                best = (lead, c.label)
        return None if best is None else best[1]

    def evaluate(self) -> Promotion | None:
        rule, state = self.rule, self.state
        champion = self.value(self.champion)
        best: tuple[float, str] | None = None
        for c in self.challengers:
            value = self.value(c.evaluator)
            if c.events_learned >= rule.least_events and rule.wins(champion, value):
                state.wins[c.label] = state.wins.get(c.label, 0) + 1
            else:
                state.wins[c.label] = 0
            lead = rule.advantage(champion, value)
            if state.wins[c.label] >= rule.after and (best is None or lead > best[0]):
                best = (lead, c.label)
        if rule.mode != "auto" or best is None:
            return None
        return self.promote(best[1], GATE)

    def promote(self, label: str, by: str) -> Promotion:
        """Make challenger ``label`` the champion; raises ``KeyError`` if there is none."""
        state = self.state
        challenger = self.challengers[label]
        values = {
            state.champion: self.value(self.champion),
            label: self.value(challenger.evaluator),
        }
        record = Promotion(
            from_label=state.champion,
            to_label=label,
            from_spec=state.spec,
            to_spec=challenger.spec,
            metric=self.rule.on,
            window=self.rule.window,
            values=values,
            events=state.events,
            by=by,
            at=self.clock(),
            wins=state.wins.get(label, 0),
        )
        demoted_learned = state.learned_before + state.events - state.since
        self.champion.exchange(challenger.evaluator)
        self.challengers.relabel(label, state.champion)
        state.learned_before, state.since = challenger.events_learned, state.events
        challenger.spec = state.spec
        challenger.events_learned, challenger.model_errors = demoted_learned, 0
        state.started_at, challenger.started_at = challenger.started_at, state.started_at
        state.champion, state.spec = label, record.to_spec
        state.promotions += 1
        state.wins = {c.label: 0 for c in self.challengers}  # every count starts again
        if self.on_promotion is not None:
            self.on_promotion(record.from_label, label)
        return record

    def summary(self) -> dict[str, Any]:
        """What reports show: the champion's label, the rule, the counts."""
        s = self.state
        return {
            "champion": s.champion,
            "spec": s.spec,
            "rule": s.rule,
            "wins": dict(s.wins),
            "promotions": s.promotions,
            "events": s.events,
        }
