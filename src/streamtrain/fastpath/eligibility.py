"""Which models and metrics the fast path computes exactly, and what it needs to know of them.

Eligible: ``StandardScaler | LogisticRegression`` (binary), ``StandardScaler | LinearRegression``
and plain ``LogisticRegression`` / ``LinearRegression`` with River's default SGD optimiser
(constant learning rates, zero initialiser, no L1), scored by ``ROCAUC`` / ``Accuracy`` /
``LogLoss`` / ``MAE`` / ``MSE`` / ``RMSE``. This module reads only the public configuration of
those objects (the arguments they were made with); their state is the adapter's
(:mod:`streamtrain.fastpath.river_adapter`), whose bindings the plan carries.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from river import compose, linear_model, metrics, optim, preprocessing

from streamtrain.fastpath import params as P
from streamtrain.fastpath.fallback import record_disabled
from streamtrain.fastpath.river_adapter import (
    MetricsBinding,
    ModelBinding,
    UnsupportedRiver,
    check_river_version,
    learning_during_predict,
)
from streamtrain.models.problem import Problem

__all__ = ["Ineligible", "Plan", "eligible_plan", "plan_for"]


class Ineligible(Exception):
    """The model or a metric is not one the kernel computes (River's per-event path it is)."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the check found: the problem, the hyperparameters and the bound River state."""

    problem: Problem
    scaled: bool
    with_std: bool
    lr: float
    intercept_lr: float
    l2: float
    clip_gradient: float
    weight_pos: float  # the log loss's class weights (classification only)
    weight_neg: float
    mean_kinds: tuple[int, ...]  # a params.MEAN_* per mean-based metric, in metrics order
    has_accuracy: bool
    model: ModelBinding
    metrics: MetricsBinding


def eligible_plan(model: Any, metric_map: Mapping[str, Any]) -> Plan | None:
    """The plan for ``model`` and ``metric_map``, or ``None`` when they are not eligible.

    Fails closed: when River is not as the adapter expects, or the check itself fails, the
    answer is ``None`` too, and the reason is recorded (:func:`fallback.record_disabled`).
    """
    try:
        return plan_for(model, metric_map)
    except Ineligible:
        return None
    except UnsupportedRiver as exc:
        record_disabled(str(exc))
    except Exception as exc:  # a bug must not stop training: River's path learns the model
        record_disabled(f"the eligibility check failed: {type(exc).__name__}: {exc}", exc_info=exc)
    return None


def plan_for(model: Any, metric_map: Mapping[str, Any]) -> Plan:
    """The plan for ``model`` and ``metric_map``.

    Raises :class:`Ineligible`, or :class:`UnsupportedRiver` when River or its objects are not as
    verified (including a public attribute gone missing or of another type).
    """
    try:
        return _plan_for(model, metric_map)
    except (Ineligible, UnsupportedRiver):
        raise
    except (AttributeError, TypeError) as exc:
        raise UnsupportedRiver(f"{type(exc).__name__}: {exc}") from exc


def _plan_for(model: Any, metric_map: Mapping[str, Any]) -> Plan:
    pipeline = scaler = None
    estimator = model
    if type(model) is compose.Pipeline:
        steps = list(model.steps.values())
        if len(steps) != 2:
            raise Ineligible("only a scaler and a linear model are compiled")
        pipeline = model
        scaler, estimator = steps
        # window_size came with River 0.26; before, every StandardScaler was unwindowed.
        window = getattr(scaler, "window_size", None)
        if type(scaler) is not preprocessing.StandardScaler or window is not None:
            raise Ineligible("the first step is not a StandardScaler without window")
        if scaler.with_std not in (True, False):
            raise Ineligible("StandardScaler.with_std is not a boolean")
    weight_pos = weight_neg = 0.0
    if type(estimator) is linear_model.LogisticRegression:
        problem = Problem.CLASSIFICATION
        loss = estimator.loss
        if type(loss) is not optim.losses.Log:
            raise Ineligible("the loss is not optim.losses.Log")
        weight_pos, weight_neg = loss.weight_pos, loss.weight_neg
        if not _is_number(weight_pos) or not _is_number(weight_neg):
            raise Ineligible("a class weight is not a number")
    elif type(estimator) is linear_model.LinearRegression:
        problem = Problem.REGRESSION
        if type(estimator.loss) is not optim.losses.Squared:
            raise Ineligible("the loss is not optim.losses.Squared")
    else:
        raise Ineligible("the model is not a linear model")
    optimizer = estimator.optimizer
    lr = _constant_rate(optimizer.lr) if type(optimizer) is optim.SGD else None
    if lr is None:
        raise Ineligible("the optimiser is not SGD with a constant learning rate")
    intercept_lr = _constant_rate(estimator.intercept_lr)
    if intercept_lr is None:
        raise Ineligible("the intercept's learning rate is not constant")
    if type(estimator.initializer) is not optim.initializers.Zeros:
        raise Ineligible("the initializer is not Zeros")
    if estimator.l1 != 0 or not _is_number(estimator.l2):
        raise Ineligible("L1, or an L2 that is not a number")
    if not _is_number(estimator.clip_gradient) or not _is_number(estimator.intercept):
        raise Ineligible("clip_gradient or the intercept is not a number")

    classification = problem is Problem.CLASSIFICATION
    rocaucs: list[Any] = []
    accuracies: list[Any] = []
    means: list[Any] = []
    mean_kinds: list[int] = []
    for metric in metric_map.values():
        kind = type(metric)
        if kind is metrics.ROCAUC and classification:
            if type(metric.pos_val) is not bool:
                raise Ineligible("ROCAUC.pos_val is not a boolean")
            rocaucs.append(metric)
        elif kind is metrics.Accuracy and classification:
            if type(metric.cm) is not metrics.ConfusionMatrix:
                raise Ineligible("Accuracy.cm is not a ConfusionMatrix")
            accuracies.append(metric)
        elif kind in _MEAN_KINDS and (kind is metrics.LogLoss) == classification:
            means.append(metric)
            mean_kinds.append(_MEAN_KINDS[kind])
        else:
            raise Ineligible(f"{kind.__name__} is not compiled for {problem.value}")

    # The model and metrics qualify: now River's internals must be as verified.
    check_river_version()
    learning_during_predict()
    with_std = scaler is not None and bool(scaler.with_std)
    model_binding = ModelBinding(pipeline, scaler, estimator, with_std=with_std)
    metrics_binding = MetricsBinding(rocaucs, accuracies, means)
    # River updates a ROCAUC's matrices once per threshold and event: a shared one would be
    # updated more often than the kernel counts.
    if metrics_binding.shares_matrices():
        raise Ineligible("a ROCAUC's confusion matrix is shared")
    return Plan(
        problem=problem,
        scaled=scaler is not None,
        with_std=with_std,
        lr=lr,
        intercept_lr=intercept_lr,
        l2=estimator.l2,
        clip_gradient=estimator.clip_gradient,
        weight_pos=weight_pos,
        weight_neg=weight_neg,
        mean_kinds=tuple(mean_kinds),
        has_accuracy=bool(accuracies),
        model=model_binding,
        metrics=metrics_binding,
    )


_MEAN_KINDS = {
    metrics.LogLoss: P.MEAN_LOGLOSS,
    metrics.MAE: P.MEAN_MAE,
    metrics.MSE: P.MEAN_MSE,
    metrics.RMSE: P.MEAN_MSE,
}


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)


def _constant_rate(scheduler: Any) -> float | None:
    """A constant scheduler's learning rate, or ``None`` for any other scheduler."""
    if type(scheduler) is not optim.schedulers.Constant:
        return None
    rate = scheduler.learning_rate
    return rate if _is_number(rate) else None
