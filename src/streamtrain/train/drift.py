"""Drift detection: each model's per-event error fed to its own River drift detector — pure,
no I/O.

``train --drift SPEC`` (default ``ADWIN``; ``none`` turns it off) gives the champion and each
challenger a detector of its own, built from an allow-listed ``river.drift`` spec
(:func:`~streamtrain.models.spec.detector_registry`, parsed, never evaluated). The error of a
labelled event is the model's progressive one, from the prediction made before it learned the
event (:func:`event_error`):

* a classifier's 0/1 loss: 1 when the predicted class is not the label. The predicted class
  is ``predict_one``'s answer when a metric asked for it, else the arg-max of
  ``predict_proba_one`` (first on ties), which is River's ``predict_one`` for every classifier
  that keeps the default;
* a regressor's absolute error ``|y - ŷ|``.

An event the model had no answer for yet (an empty prediction) is not fed. Binary detectors
(``DDM``, ``EDDM``, ``FHDDM``, ``HDDMA``, ``HDDMW``) take 0/1 only, so classifiers only.

When a detector fires, the step gets a :class:`Detection` (the task writes it to the events
topic with its other outputs: in the checkpoint transaction for a named model), the log says
so, and with ``--on-drift reset-challengers`` a detection of the *champion* restarts every
challenger from its spec right after the event that fired it (its metrics and detector too;
its ``started_at`` says where); with ``--on-drift promote-best`` a detection of the champion
has the promotion gate pick the best model over the ``--promote-window`` events that follow it
(:meth:`~streamtrain.train.promotion.Gate.drifted`). A task's detectors and its recent
detections are part of its checkpoint (:meth:`TaskDrift.to_plain`), so a restart detects
exactly what an uninterrupted run would.

Detectors are keyed by label: ``champion`` is the served model's. A promotion
(:mod:`streamtrain.train.promotion`, by the gate or on request) makes a challenger the
champion and the champion a challenger under its own label (``c0`` for the first one); each
detector follows its model (:meth:`TaskDrift.promoted`): the promoted challenger's detector is
the champion's from the next event, the old champion's goes on under its challenger label. A
change of model is thus never mistaken for a change in the data (which, with
``reset-challengers``, would restart the challengers right after every promotion). Detection
counts stay with the label they were made under. The promotion gate sees every labelled event
with drift detection on or off: the step calls it after this module fed the challengers.

>>> from streamtrain.models.problem import Problem
>>> drift = TaskDrift.resume(DriftPolicy("ADWIN"), Problem.CLASSIFICATION, None, [CHAMPION])
>>> says_true = ({False: 0.1, True: 0.9}, None)  # a model that always predicts True
>>> found = []
>>> for i in range(2000):  # the label is True for 1000 events, then False
...     _ = drift.observe(CHAMPION, i < 1000, says_true, None, i + 1, found)
>>> [(d.label, d.events, d.action) for d in found]
[('champion', 1024, 'alert')]
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from streamtrain.errors import ConfigError
from streamtrain.models.problem import Problem
from streamtrain.train.challengers import CHAMPION, Challengers
from streamtrain.train.defaults import (
    ACTIONS,
    ALERT,
    DEFAULT_DETECTOR,
    OFF,
    PROMOTE_BEST,
    RESET_CHALLENGERS,
)

__all__ = [
    "ACTIONS",
    "ALERT",
    "DEFAULT_DETECTOR",
    "OFF",
    "PROMOTE_BEST",
    "RESET_CHALLENGERS",
    "Detection",
    "DriftPolicy",
    "TaskDrift",
    "drift_policy",
    "event_error",
]

log = logging.getLogger(__name__)

RECENT = 100  # detections a task keeps for its reports (the dashboard's markers)

Prediction = tuple[Any, Any]  # (probabilities or None, label or None): ProgressiveEvaluator's


@dataclasses.dataclass(frozen=True)
class DriftPolicy:
    """A detector spec and what a detection does; checked when made.

    >>> DriftPolicy("PageHinkley(threshold=20)").new_detector().threshold
    20
    >>> DriftPolicy("os.system('x')")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    streamtrain.errors.ConfigError: --drift: unknown detector 'os.system' (see ...)
    """

    spec: str = DEFAULT_DETECTOR
    on_drift: str = ALERT

    def __post_init__(self) -> None:
        if self.on_drift not in ACTIONS:
            raise ConfigError(
                f"--on-drift must be one of {', '.join(ACTIONS)}, not {self.on_drift!r}"
            )
        self.new_detector()

    def new_detector(self) -> Any:
        from river import base

        from streamtrain.models.spec import detector_registry, parse_spec

        try:
            detector = parse_spec(self.spec, detector_registry())
        except ConfigError as err:
            raise ConfigError(f"--drift: {err}") from err
        if not isinstance(detector, base.DriftDetector | base.BinaryDriftDetector):
            raise ConfigError(f"--drift: {self.spec!r} is not a drift detector")
        return detector

    def check(self, problem: Problem) -> None:
        """Binary detectors take a classifier's 0/1 errors, not a regressor's."""
        from river import base

        if problem is Problem.REGRESSION and isinstance(
            self.new_detector(), base.BinaryDriftDetector
        ):
            raise ConfigError(
                f"--drift: {self.spec} takes 0/1 errors (classifiers); "
                "a regressor needs ADWIN, KSWIN or PageHinkley"
            )


def drift_policy(spec: str, on_drift: str = ALERT) -> DriftPolicy | None:
    """The policy of ``--drift SPEC --on-drift ACTION``; None when ``SPEC`` is ``none``.

    >>> drift_policy("none") is None, drift_policy("ADWIN(delta=0.01)").spec
    (True, 'ADWIN(delta=0.01)')
    """
    if spec.strip().lower() == OFF:
        if on_drift != ALERT:
            raise ConfigError(f"--on-drift {on_drift} needs a detector: --drift is none")
        return None
    return DriftPolicy(spec.strip(), on_drift)


def event_error(problem: Problem, y: Any, prediction: Prediction) -> float | None:
    """The error a detector is fed for one event (see the module doc); None: no answer.

    >>> event_error(Problem.CLASSIFICATION, True, ({False: 0.3, True: 0.7}, None))
    0.0
    >>> event_error(Problem.CLASSIFICATION, True, (None, False))
    1.0
    >>> event_error(Problem.REGRESSION, 3.0, (None, 2.5))
    0.5
    >>> event_error(Problem.CLASSIFICATION, True, ({}, None)) is None
    True
    """
    proba, label = prediction
    if problem is Problem.REGRESSION:
        return None if label is None else abs(float(y) - float(label))
    if label is None:
        if not proba:
            return None
        label = max(proba, key=proba.get)
    return 0.0 if label == y else 1.0


def fast_prediction(problem: Problem, value: float) -> Prediction:
    """A compiled-path prediction (a binary classifier's probability of True, a regressor's
    value) as the label River's objects give: the arg-max of ``{False: 1 - p, True: p}``
    (False on a tie), so both paths feed the same errors.

    >>> fast_prediction(Problem.CLASSIFICATION, 0.5), fast_prediction(Problem.CLASSIFICATION, 0.7)
    ((None, False), (None, True))
    """
    if problem is Problem.CLASSIFICATION:
        p = float(value)
        return None, p > 1.0 - p
    return None, float(value)


@dataclasses.dataclass(frozen=True, slots=True)
class Detection:
    """A detector fired: ``label`` names the model, ``events`` the task's events learned with
    the event that fired it (``record``), ``action`` what followed."""

    label: str
    events: int
    record: Any
    detector: str
    state: dict[str, float]
    action: str

    def position(self) -> dict[str, Any]:
        """Where it fired: ``partition``, ``offset``, ``timestamp`` (ms, or None)."""
        record = self.record
        stamp = getattr(record, "timestamp", None)
        ts = stamp()[1] if stamp is not None else None
        return {
            "partition": record.partition(),
            "offset": record.offset(),
            "timestamp": ts if isinstance(ts, int) and ts >= 0 else None,
        }

    def to_plain(self) -> dict[str, Any]:
        """What reports keep of it (the dashboard's marker)."""
        return {
            "label": self.label,
            "events": self.events,
            "action": self.action,
            **self.position(),
        }


class TaskDrift:
    """A task's detectors, one per model label, their counts and recent detections."""

    def __init__(
        self,
        policy: DriftPolicy,
        problem: Problem,
        detectors: Mapping[str, Any],
        counts: Mapping[str, int] | None = None,
        recent: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        self.policy = policy
        self.problem = problem
        self.detectors = dict(detectors)
        self.counts = dict(counts or {})
        self.recent = [dict(r) for r in recent][-RECENT:]

    @classmethod
    def resume(
        cls,
        policy: DriftPolicy,
        problem: Problem,
        saved: Mapping[str, Any] | None,
        labels: Sequence[str],
    ) -> TaskDrift:
        """The detectors of ``labels`` (the champion's and its challengers'): those saved in a
        checkpoint when it used the same spec, fresh ones otherwise."""
        policy.check(problem)
        saved = saved or {}
        same = saved.get("spec") == policy.spec
        if saved and not same:
            log.warning(
                "drift detectors were %r; starting fresh %r ones", saved.get("spec"), policy.spec
            )
        kept = saved.get("detectors", {}) if same else {}
        detectors = {
            label: kept[label] if kept.get(label) is not None else policy.new_detector()
            for label in labels
        }
        return cls(policy, problem, detectors, saved.get("counts"), saved.get("recent", ()))

    def observe(
        self,
        label: str,
        y: Any,
        prediction: Prediction,
        record: Any,
        events: int,
        found: list[Detection],
    ) -> bool:
        """Feed ``label``'s error on one event; on a detection append it to ``found``."""
        error = event_error(self.problem, y, prediction)
        if error is None or not math.isfinite(error):
            return False
        detector = self._detector(label)
        detector.update(error)
        if not detector.drift_detected:
            return False
        self._fired(label, detector, record, events, found)
        return True

    def _detector(self, label: str) -> Any:
        detector = self.detectors.get(label)
        if detector is None:
            detector = self.detectors[label] = self.policy.new_detector()
        return detector

    def _fired(
        self, label: str, detector: Any, record: Any, events: int, found: list[Detection]
    ) -> None:
        """``label``'s detector fired on the event it was just fed: record the detection."""
        action = self.policy.on_drift if label == CHAMPION else ALERT
        detection = Detection(label, events, record, self.policy.spec, _state(detector), action)
        self.counts[label] = self.counts.get(label, 0) + 1
        if record is not None:
            self.recent = [*self.recent[1 - RECENT :], detection.to_plain()]
        found.append(detection)
        log.warning("drift detected: %s at event %d (%s)", label, events, action)

    def event(
        self,
        record: Any,
        x: dict[str, Any],
        y: Any,
        champion: Prediction | None,
        events: int,
        challengers: Challengers,
        found: list[Detection],
    ) -> None:
        """One labelled event after the champion learned it (``champion``: its prediction,
        None when its learning raised): feed its detector, let each challenger learn and feed
        its own, then act on a champion's detection."""
        fired = champion is not None and self.observe(CHAMPION, y, champion, record, events, found)
        for c in challengers:
            prediction = c.learn(x, y)
            if prediction is not None:
                self.observe(c.label, y, prediction, record, events, found)
        if fired and self.policy.on_drift == RESET_CHALLENGERS and challengers:
            challengers.restart(events)  # the promotion gate's counts restart with them
            for c in challengers:
                self.detectors[c.label] = self.policy.new_detector()
        elif fired and self.policy.on_drift == PROMOTE_BEST:
            challengers.drifted()  # the gate picks the best model a window from here

    def promoted(self, from_label: str, to_label: str) -> None:
        """Challenger ``to_label`` is the champion now, and the champion a challenger called
        ``from_label``: each detector follows its model (see the module doc)."""
        champion = self.detectors.get(CHAMPION)
        promoted = self.detectors.pop(to_label, None)
        fresh = self.policy.new_detector
        self.detectors[CHAMPION] = promoted if promoted is not None else fresh()
        self.detectors[from_label] = champion if champion is not None else fresh()

    def batch(
        self,
        records: Sequence[Any],
        xs: Sequence[dict[str, Any]],
        ys: Sequence[Any],
        values: Sequence[float],
        learned: int,
        challengers: Challengers,
        found: list[Detection],
    ) -> None:
        """:meth:`event` for each labelled event of a batch the compiled path learned
        (``values``: its predictions, ``learned``: the task's count before the batch).

        Never with a promotion gate: a gated task stays on River's path (the gate's windows
        are rolling metrics, which the compiled path does not take), since a promotion
        changes the champion from the next event on."""
        if not challengers:
            self._champion_batch(records, ys, values, learned, challengers, found)
            return
        n = learned
        for record, x, y, value in zip(records, xs, ys, values, strict=True):
            if y is not None:
                n += 1
                prediction = fast_prediction(self.problem, value)
                self.event(record, x, y, prediction, n, challengers, found)

    def _champion_batch(
        self,
        records: Sequence[Any],
        ys: Sequence[Any],
        values: Sequence[float],
        learned: int,
        challengers: Challengers,
        found: list[Detection],
    ) -> None:
        """:meth:`batch` without challengers: the same errors, detections and actions, with
        the per-event work cut to the detector's own update (a Python loop per event through
        :meth:`event` cost more than the compiled path's learning itself)."""
        fed = _batch_errors(self.problem, ys, values)
        if not fed:
            return
        detector = self._detector(CHAMPION)
        update = detector.update
        promote_best = self.policy.on_drift == PROMOTE_BEST
        for error, i, k in fed:
            update(error)
            if detector.drift_detected:
                self._fired(CHAMPION, detector, records[i], learned + k, found)
                if promote_best:  # as event() does (no challengers: nothing to restart)
                    challengers.drifted()

    def to_plain(self) -> dict[str, Any]:
        """The checkpoint form (River detectors inside: pickled with the rest of the payload)."""
        return {
            "spec": self.policy.spec,
            "detectors": dict(self.detectors),
            "counts": dict(self.counts),
            "recent": list(self.recent),
        }

    def summary(self) -> dict[str, Any]:
        """What reports show: ``detector``, ``on_drift``, ``detections`` (by label), ``recent``."""
        return {
            "detector": self.policy.spec,
            "on_drift": self.policy.on_drift,
            "detections": dict(self.counts),
            "recent": list(self.recent),
        }


def combine(summaries: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Task summaries as one: counts summed, recent detections in event-time order."""
    if not summaries:
        return None
    counts: dict[str, int] = {}
    for s in summaries:
        for label, n in s["detections"].items():
            counts[label] = counts.get(label, 0) + n
    recent = sorted((r for s in summaries for r in s["recent"]), key=lambda r: r["timestamp"] or 0)
    return {**summaries[0], "detections": counts, "recent": recent[-RECENT:]}


def _batch_errors(
    problem: Problem, ys: Sequence[Any], values: Sequence[float]
) -> list[tuple[float, int, int]]:
    """``(error, index, k)`` of each labelled event of a compiled batch whose error is fed:
    :func:`event_error` of :func:`fast_prediction`, the same float operations on whole
    arrays; ``k`` counts the labelled events up to this one (1 for the first)."""
    preds = np.asarray(values, dtype=np.float64)
    index = np.fromiter((y is not None for y in ys), dtype=bool, count=len(ys)).nonzero()[0]
    if not len(index):
        return []
    labelled = [ys[i] for i in index.tolist()]
    preds = preds[index]
    if problem is Problem.CLASSIFICATION:
        # fast_prediction's label (p > 1 - p), against labels that are booleans or 0/1 here
        # (the compiled path takes no other), as event_error compares them: 0.0 when equal.
        truth = np.fromiter(labelled, dtype=np.float64, count=len(labelled))
        errors = (truth != (preds > 1.0 - preds)).astype(np.float64)
    else:
        truth = np.fromiter(labelled, dtype=np.float64, count=len(labelled))
        errors = np.abs(truth - preds)
    counts = np.arange(1, len(index) + 1)
    keep = np.isfinite(errors)
    if not keep.all():
        errors, index, counts = errors[keep], index[keep], counts[keep]
    return list(zip(errors.tolist(), index.tolist(), counts.tolist(), strict=True))


def _state(detector: Any) -> dict[str, float]:
    """A detector's public numbers (ADWIN: width, estimation, variance...), for the record."""
    params = detector._get_params()
    out: dict[str, float] = {}
    for name in dir(detector):
        if name.startswith("_") or name in params or name == "drift_detected":
            continue
        try:
            value = getattr(detector, name)
        except Exception:  # a property a detector cannot answer yet
            continue
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number and math.isfinite(value):
            out[name] = value
    return out
