"""Challengers: other models learning the same events as the champion, each with its own
progressive metrics — pure, no I/O.

The champion is the model a task serves (``predict``, ``serve``, the predictions topic); it is
the task's :class:`~streamtrain.train.progressive.ProgressiveEvaluator`. A challenger is a
labelled model beside it (``train --challenger [LABEL=]SPEC``). Each event a step decodes as
a valid labelled one is learned by the champion first, then by each challenger in order, each
given its own shallow copy of the features (a model that changes its input, or keeps it, must
not reach another's). Models share nothing, so a challenger cannot change the champion's
result; and since each learns the events in log order, each one's metrics are River's
``progressive_val_score`` for its spec on that stream. A challenger whose learning raises on
an event counts a ``model_errors`` and goes on (the event is the champion's to dead-letter or
not). Unlabelled events are predicted by the champion alone.

:class:`Roster` is what a trainer was asked for (validated once, at start);
:class:`Challengers` is what a task holds, restored from its checkpoint payload
(``TrainState.challengers``, in :meth:`Challenger.to_plain`'s form) and checkpointed with it.

>>> from river import linear_model, tree
>>> from streamtrain.train.progressive import build_metrics
>>> champion = linear_model.LogisticRegression()
>>> specs = parse_challengers(["HoeffdingTreeClassifier", "lr=LogisticRegression(l2=0.01)"])
>>> roster = Roster(specs, build_metrics([], champion), champion)
>>> [(c.label, c.spec) for c in roster.specs]
[('c1', 'HoeffdingTreeClassifier'), ('lr', 'LogisticRegression(l2=0.01)')]
>>> challengers = roster.resume({}, started_at=0)
>>> challengers.learn({"a": 1.0}, True)
>>> challengers.learn({"a": -1.0}, False)
>>> {label: c.events_learned for label, c in challengers.items()}
{'c1': 2, 'lr': 2}
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any, Protocol

from river import metrics as river_metrics
from river import utils

from streamtrain.errors import ConfigError
from streamtrain.models.problem import problem_of
from streamtrain.train.progressive import ProgressiveEvaluator, build_rolling


class EventWatcher(Protocol):
    """What sees each event after every challenger learned it: the promotion gate
    (:mod:`streamtrain.train.promotion`), whose answer (a promotion, or None) ``learn`` and
    ``after_event`` return; it is told of challengers restarted afresh."""

    def after_event(self) -> object | None: ...

    def restarted(self, labels: Sequence[str]) -> None: ...

    def drifted(self) -> None: ...


__all__ = [
    "ADDED",
    "CHAMPION",
    "FOUNDER",
    "REMOVED",
    "Challenger",
    "ChallengerChange",
    "ChallengerSpec",
    "Challengers",
    "Roster",
    "parse_challengers",
]

log = logging.getLogger(__name__)

CHAMPION = "champion"  # the label reports give the champion; no challenger may take it
FOUNDER = "c0"  # the label of the model a task was created with (--model), once promoted over
# A label is a word before "=": a spec's own "=" (keyword arguments) always follows "(".
_LABELLED = re.compile(r"\s*([A-Za-z0-9._-]{1,64})\s*=(?!=)(.*)", re.DOTALL)
LABEL = re.compile(r"[A-Za-z0-9._-]{1,64}")  # what a label may be


@dataclasses.dataclass(frozen=True)
class ChallengerSpec:
    label: str
    spec: str


def parse_challengers(texts: Sequence[str]) -> tuple[ChallengerSpec, ...]:
    """``[LABEL=]SPEC`` texts as specs; unlabelled ones are ``c<position>`` (from 1).

    >>> [(c.label, c.spec) for c in parse_challengers(["HoeffdingTreeClassifier", "lr=Perceptron"])]
    [('c1', 'HoeffdingTreeClassifier'), ('lr', 'Perceptron')]
    >>> parse_challengers(["LogisticRegression(l2=0.01)"])[0].label
    'c1'
    """
    out: list[ChallengerSpec] = []
    for i, text in enumerate(texts, start=1):
        labelled = _LABELLED.fullmatch(text)
        label, spec = (labelled[1], labelled[2]) if labelled else (f"c{i}", text)
        spec = spec.strip()
        if not spec:
            raise ConfigError(f"challenger {label!r} has an empty spec")
        if label in (CHAMPION, FOUNDER):
            raise ConfigError(f"{label!r} names the champion; give the challenger another label")
        if any(c.label == label for c in out):
            raise ConfigError(f"challenger label {label!r} given twice")
        out.append(ChallengerSpec(label, spec))
    return tuple(out)


ADDED = "challenger-added"
REMOVED = "challenger-removed"


@dataclasses.dataclass
class ChallengerChange:
    """A challenger added to or removed from a running task on request, as the events topic
    records it (:meth:`to_plain`), in the transaction of the checkpoint that made it."""

    kind: str  # ADDED or REMOVED
    label: str
    spec: str
    events: int  # the task's events learned at the change: the added one learns those after
    positions: dict[int, int]  # next input offset per partition at the change
    at: float  # seconds since the epoch
    request: int  # the request's offset on the events topic
    learned: int = 0  # a removed challenger's events learned
    model: str = ""  # the task's key (set by the task)

    def to_plain(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "model": self.model,
            "label": self.label,
            "spec": self.spec,
            "events": self.events,
            "offsets": {str(p): o for p, o in sorted(self.positions.items())},
            "at": self.at,
            "request": self.request,
            **({"events_learned": self.learned} if self.kind == REMOVED else {}),
        }


class Challenger:
    """One challenger: its spec, its evaluator (model and metrics), and its counters.

    ``started_at`` is the champion's ``events_learned`` when the challenger began: its
    metrics cover the events after that (0: the whole stream). One added to a running model
    (``models add-challenger``) also keeps where: ``started_offsets`` (the next input offset
    per partition then) and ``started_time`` (seconds since the epoch)."""

    def __init__(
        self,
        label: str,
        spec: str,
        evaluator: ProgressiveEvaluator,
        *,
        events_learned: int = 0,
        model_errors: int = 0,
        started_at: int = 0,
        started_offsets: Mapping[int, int] | None = None,
        started_time: float | None = None,
    ) -> None:
        self.label = label
        self.spec = spec
        self.evaluator = evaluator
        self.events_learned = events_learned
        self.model_errors = model_errors
        self.started_at = started_at
        self.started_offsets = dict(started_offsets or {})
        self.started_time = started_time

    def learn(self, x: dict[str, Any], y: Any) -> tuple[Any, Any] | None:
        """Learn one event; its prediction (see ``ProgressiveEvaluator.learn``), or None
        when learning raised."""
        try:
            prediction = self.evaluator.learn(dict(x), y)
        except Exception:  # a challenger must not take the champion or the trainer down
            self.model_errors += 1
            return None
        self.events_learned += 1
        return prediction

    def restarted(self, started_at: int) -> Challenger:
        """A fresh challenger of the same spec and metrics, beginning at ``started_at``
        (``train --on-drift reset-challengers``)."""
        from streamtrain.models.spec import estimator_registry, parse_spec

        ev = self.evaluator
        metrics = {name: m.clone() for name, m in ev.metrics.items()}
        # The same windows, empty: the run's (--rolling-window) and the promotion gate's.
        rolling = {
            name: utils.Rolling(r.obj.clone(), window_size=r.window_size)
            for name, r in ev.rolling.items()
        }
        fresh = ProgressiveEvaluator(parse_spec(self.spec, estimator_registry()), metrics, rolling)
        return Challenger(self.label, self.spec, fresh, started_at=started_at)

    def to_plain(self) -> dict[str, Any]:
        """The checkpoint form (River objects inside: pickled with the rest of the payload)."""
        ev = self.evaluator
        return {
            "spec": self.spec,
            "model": ev.model,
            "metrics": ev.metrics,
            "rolling": ev.rolling,
            "events_learned": self.events_learned,
            "model_errors": self.model_errors,
            "started_at": self.started_at,
            **self._start(),
        }

    def _start(self) -> dict[str, Any]:
        if self.started_time is None:
            return {}
        offsets = {str(p): o for p, o in sorted(self.started_offsets.items())}
        return {"started_offsets": offsets, "started_time": self.started_time}

    @classmethod
    def from_plain(cls, label: str, plain: Mapping[str, Any]) -> Challenger:
        offsets = plain.get("started_offsets") or {}
        started_time = plain.get("started_time")
        return cls(
            label,
            str(plain["spec"]),
            ProgressiveEvaluator(plain["model"], plain["metrics"], plain.get("rolling", {})),
            events_learned=int(plain.get("events_learned", 0)),
            model_errors=int(plain.get("model_errors", 0)),
            started_at=int(plain.get("started_at", 0)),
            started_offsets={int(p): int(o) for p, o in offsets.items()},
            started_time=None if started_time is None else float(started_time),
        )

    @classmethod
    def added(
        cls,
        label: str,
        spec: str,
        champion: ProgressiveEvaluator,
        *,
        started_at: int,
        offsets: Mapping[int, int],
        at: float,
    ) -> Challenger:
        """A fresh challenger added to a running task whose champion is ``champion``: the
        champion's metrics and windows, empty; refused (``ConfigError``) when ``spec`` does
        not parse or is not a model of the champion's kind."""
        from streamtrain.models.spec import estimator_registry, parse_spec

        try:
            model = parse_spec(spec, estimator_registry())
        except ConfigError as err:
            raise ConfigError(f"challenger {label}: {err}") from err
        if problem_of(model) is not champion.problem:
            raise ConfigError(
                f"challenger {label} ({spec}) is a {problem_of(model).value} model; the "
                f"champion is a {champion.problem.value} one"
            )
        metrics = {name: m.clone() for name, m in champion.metrics.items()}
        rolling = {
            name: utils.Rolling(r.obj.clone(), window_size=r.window_size)
            for name, r in champion.rolling.items()
        }
        evaluator = ProgressiveEvaluator(model, metrics, rolling)
        return cls(
            label,
            spec,
            evaluator,
            started_at=started_at,
            started_offsets=offsets,
            started_time=at,
        )

    def summary(self) -> dict[str, Any]:
        """What reports show: ``spec``, ``metrics``, ``rolling``, ``events_learned``,
        ``model_errors``, ``started_at``."""
        ev = self.evaluator
        return {
            "spec": self.spec,
            "metrics": ev.values(),
            "rolling": ev.rolling_values(),
            "events_learned": self.events_learned,
            "model_errors": self.model_errors,
            "started_at": self.started_at,
            **self._start(),
        }


class Challengers:
    """A task's challengers, in order; the step calls :meth:`learn` after the champion.

    ``gate``, when set (:mod:`streamtrain.train.promotion`), sees each event after them all."""

    def __init__(self, challengers: Sequence[Challenger] = ()) -> None:
        self._by_label = {c.label: c for c in challengers}
        self._learners = [c.learn for c in challengers]
        self.gate: EventWatcher | None = None

    @classmethod
    def from_plain(cls, saved: Mapping[str, Mapping[str, Any]]) -> Challengers:
        """The challengers of a checkpoint payload, as they were."""
        return cls([Challenger.from_plain(label, plain) for label, plain in saved.items()])

    def __len__(self) -> int:
        return len(self._by_label)

    def __bool__(self) -> bool:
        return bool(self._by_label)

    def __iter__(self) -> Iterator[Challenger]:
        return iter(self._by_label.values())

    def items(self) -> Iterator[tuple[str, Challenger]]:
        return iter(self._by_label.items())

    def __getitem__(self, label: str) -> Challenger:
        return self._by_label[label]

    def learn(self, x: dict[str, Any], y: Any) -> object | None:
        """Every challenger predicts, learns and scores ``(x, y)``, in order; then the gate
        (if any) may promote one, which it says."""
        for learn in self._learners:
            learn(x, y)
        return self.after_event()

    def after_event(self) -> object | None:
        """Every challenger learned one more event (here, or each on its own: drift detection
        feeds them one by one): the gate (if any) sees it, and may promote one."""
        return None if self.gate is None else self.gate.after_event()

    def drifted(self) -> None:
        """The champion's drift detector fired on the event being learned (``--on-drift
        promote-best``): the gate, if any, is told."""
        if self.gate is not None:
            self.gate.drifted()

    def relabel(self, label: str, new: str) -> None:
        """Challenger ``label`` is now called ``new``, in the same place (a promotion)."""
        challenger = self._by_label[label]
        challenger.label = new
        self._by_label = {(new if k == label else k): c for k, c in self._by_label.items()}

    def restart(self, started_at: int) -> None:
        """Every challenger starts afresh from its spec at ``started_at``."""
        fresh = [c.restarted(started_at) for c in self]
        self._by_label = {c.label: c for c in fresh}
        self._learners = [c.learn for c in fresh]
        if self.gate is not None:  # its win counts were for the models just dropped
            self.gate.restarted([c.label for c in fresh])

    def learn_many(self, xs: Sequence[dict[str, Any]], ys: Sequence[Any]) -> None:
        """:meth:`learn` each labelled event of a batch, in order (``y`` None: skipped)."""
        if not self._learners:
            return
        for x, y in zip(xs, ys, strict=True):
            if y is not None:
                self.learn(x, y)

    def to_plain(self) -> dict[str, dict[str, Any]]:
        return {label: c.to_plain() for label, c in self._by_label.items()}

    def summary(self) -> dict[str, dict[str, Any]]:
        return {label: c.summary() for label, c in self._by_label.items()}


class Roster:
    """The challengers a trainer was asked for, checked once: each spec builds a model of the
    champion's kind that its metrics (the champion's specs, fresh objects) work with."""

    def __init__(
        self,
        specs: Sequence[ChallengerSpec],
        metrics: Mapping[str, river_metrics.base.Metric],
        champion: Any,
        rolling_window: int = 0,
    ) -> None:
        self.specs = tuple(specs)
        self.metrics = dict(metrics)
        self.rolling_window = rolling_window
        kind = problem_of(champion)
        for spec in self.specs:
            model = self._fresh(spec).evaluator.model
            if problem_of(model) is not kind:
                raise ConfigError(
                    f"challenger {spec.label} ({spec.spec}) is a {problem_of(model).value} "
                    f"model; the champion is a {kind.value} one"
                )

    def _fresh(self, spec: ChallengerSpec, started_at: int = 0) -> Challenger:
        from streamtrain.models.spec import estimator_registry, parse_spec

        try:
            model = parse_spec(spec.spec, estimator_registry())
            metrics = {name: m.clone() for name, m in self.metrics.items()}
            evaluator = ProgressiveEvaluator(
                model, metrics, build_rolling(metrics, self.rolling_window)
            )
        except ConfigError as err:
            raise ConfigError(f"challenger {spec.label}: {err}") from err
        return Challenger(spec.label, spec.spec, evaluator, started_at=started_at)

    def resume(
        self,
        saved: Mapping[str, Mapping[str, Any]],
        started_at: int,
        champion: str | None = None,
        removed: Collection[str] = (),
    ) -> Challengers:
        """A task's challengers: those in its checkpoint (``saved``) as they were, in their
        order, then those asked for that it has not, fresh from ``started_at`` on (but not
        the one labelled ``champion``: promoted, it is the task's champion now; nor those
        ``removed`` on request, ``models remove-challenger``).

        A saved challenger is kept even when not asked for again, and its saved spec wins
        over a different one given for its label, as a named model's own spec does: a
        restart never throws learned state away.
        """
        out = list(Challengers.from_plain(saved))
        for spec in self.specs:
            plain = saved.get(spec.label)
            if spec.label == champion or (plain is None and spec.label in removed):
                continue
            if plain is None:
                out.append(self._fresh(spec, started_at))
            elif plain["spec"] != spec.spec:
                log.warning(
                    "challenger %s was created as %r; resuming it (the given spec %r is ignored)",
                    spec.label,
                    plain["spec"],
                    spec.spec,
                )
        return Challengers(out)
