"""Progressive validation of one River model: predict, learn, then score — pure, no I/O.

The protocol is :func:`river.evaluate.progressive_val_score`'s: each event is predicted before
the model learns from it, and a metric is updated with that prediction unless it was empty.
Probability metrics (``requires_labels`` false, e.g. ROCAUC, LogLoss) get
``predict_proba_one``; label metrics get ``predict_one``. When the model's ``predict_one`` is
River's default (the arg-max of ``predict_proba_one``), the label is derived from the
probabilities already computed, so a mix of metrics costs one prediction, with identical
results.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from river import base
from river import metrics as river_metrics

from streamtrain.errors import ConfigError
from streamtrain.models.problem import Problem, final_step, problem_of

__all__ = ["ProgressiveEvaluator", "build_metrics", "build_rolling"]


class ProgressiveEvaluator:
    """Owns a model and its progressive metrics; :meth:`learn` is the per-event step.

    The metrics end where River's own ``progressive_val_score`` does on the same stream:

    >>> from itertools import islice
    >>> from river import datasets, evaluate, linear_model, metrics, preprocessing
    >>> stream = list(islice(datasets.Phishing(), 300))
    >>> evaluator = ProgressiveEvaluator(
    ...     preprocessing.StandardScaler() | linear_model.LogisticRegression(),
    ...     {"ROCAUC": metrics.ROCAUC()},
    ... )
    >>> for x, y in stream:
    ...     _ = evaluator.learn(x, y)
    >>> round(evaluator.values()["ROCAUC"], 4)
    0.9062
    >>> river_score = evaluate.progressive_val_score(
    ...     stream,
    ...     preprocessing.StandardScaler() | linear_model.LogisticRegression(),
    ...     metrics.ROCAUC(),
    ... )
    >>> evaluator.values() == {"ROCAUC": river_score.get()}
    True
    """

    def __init__(
        self,
        model: Any,
        metrics: Mapping[str, river_metrics.base.Metric],
        rolling: Mapping[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.metrics = dict(metrics)
        # Windowed twins of the metrics (river.utils.Rolling), updated in the same step.
        self.rolling = dict(rolling or {})
        self.problem = problem_of(model)
        for name, metric in self.metrics.items():
            if not metric.works_with(model):
                raise ConfigError(f"metric {name} does not work with {_describe(model)}")
        self._bind()

    def _bind(self) -> None:
        is_classifier = self.problem is Problem.CLASSIFICATION

        def wants_proba(metric: river_metrics.base.Metric) -> bool:
            return is_classifier and not getattr(metric, "requires_labels", True)

        every = [*self.metrics.values(), *self.rolling.values()]
        self._proba_metrics = [m.update for m in every if wants_proba(m)]
        self._label_metrics = [m.update for m in every if not wants_proba(m)]
        final = final_step(self.model)
        self._derive_label = (
            is_classifier and type(final).predict_one is base.Classifier.predict_one
        )

    def watch(self, name: str, metric: Any) -> None:
        """Also score ``metric`` (a windowed one: the promotion gate's) as ``rolling[name]``."""
        self.rolling[name] = metric
        self._bind()

    def exchange(self, other: ProgressiveEvaluator) -> None:
        """Trade models, metrics and windows with ``other``: whoever holds this evaluator (a
        step) goes on with ``other``'s model from the next event, and ``other`` with this one's
        (a promotion: :mod:`streamtrain.train.promotion`)."""
        self.__dict__, other.__dict__ = other.__dict__, self.__dict__

    def learn(self, x: dict[str, Any], y: Any) -> tuple[dict[Any, float] | None, Any]:
        """Predict ``x``, learn ``(x, y)``, then update the metrics with the prediction, which
        is returned (as :meth:`predict` made it: a drift detector scores it too).

        Metrics are updated after learning (River updates them before; the values are the
        same, since the prediction was made first) so that an event whose learning raises
        leaves the metrics untouched.
        """
        proba, label = self.predict(x)
        self.learn_predicted(x, y, proba, label)
        return proba, label

    def predict(self, x: dict[str, Any]) -> tuple[dict[Any, float] | None, Any]:
        """What the metrics will be scored with: ``(probabilities, label)``, each None when no
        metric needs it (or the model had no answer yet). The model is not changed."""
        model = self.model
        proba = None
        label = None
        if self._proba_metrics:
            proba = model.predict_proba_one(x)
            if self._label_metrics and self._derive_label:
                label = max(proba, key=proba.get) if proba else None
        if self._label_metrics and label is None and not (self._derive_label and proba == {}):
            label = model.predict_one(x)
        return proba, label

    def learn_predicted(
        self, x: dict[str, Any], y: Any, proba: dict[Any, float] | None, label: Any
    ) -> None:
        """Learn ``(x, y)``, then score the prediction :meth:`predict` made for ``x`` — earlier,
        when its label comes later (River's ``progressive_val_score`` with ``delay``)."""
        self.model.learn_one(x, y)
        if proba:
            for update in self._proba_metrics:
                update(y, proba)
        if label is not None:
            for update in self._label_metrics:
                update(y, label)

    def values(self) -> dict[str, float]:
        return {name: float(metric.get()) for name, metric in self.metrics.items()}

    def rolling_values(self) -> dict[str, float]:
        return {name: float(metric.get()) for name, metric in self.rolling.items()}


def build_rolling(metrics: Mapping[str, Any], window: int) -> dict[str, Any]:
    """Rolling-window copies of ``metrics`` (those River can revert); ``{}`` for window 0."""
    from river import utils

    if window <= 0:
        return {}
    return {
        name: utils.Rolling(metric.clone(), window_size=window)
        for name, metric in metrics.items()
        if hasattr(metric, "revert")
    }


def build_metrics(specs: Sequence[str], model: Any) -> dict[str, river_metrics.base.Metric]:
    """Metrics from spec strings; the default is ROCAUC for classifiers, MAE for regressors."""
    from streamtrain.models.spec import metric_registry, parse_spec

    if not specs:
        specs = ("ROCAUC",) if problem_of(model) is Problem.CLASSIFICATION else ("MAE",)
    built: dict[str, river_metrics.base.Metric] = {}
    for spec in specs:
        name = spec.strip()
        if name in built:
            raise ConfigError(f"metric {name} given twice")
        metric = parse_spec(name, metric_registry())
        if not isinstance(metric, river_metrics.base.Metric):
            raise ConfigError(f"{name} is not a metric")
        built[name] = metric
    return built


def _describe(model: Any) -> str:
    kind = problem_of(model).value
    return f"a {kind} model ({type(final_step(model)).__name__})"
