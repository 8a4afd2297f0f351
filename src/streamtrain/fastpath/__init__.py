"""A compiled batch path for common linear pipelines, equal to River's per-event results.

``fast_evaluator_for(model, metrics)`` returns a :class:`FastEvaluator` for an eligible model
(``StandardScaler | LogisticRegression``, ``StandardScaler | LinearRegression`` and the plain
linear models with River's default SGD, scored by ROCAUC / Accuracy / LogLoss / MAE / MSE /
RMSE), or ``None``. Its ``learn_many(xs, ys)`` does River's predict-then-learn for every event
of a batch in one compiled call (numba), with the same floating-point results as River.

``learn_many`` raises :class:`FastPathFallback` for a batch River must learn instead, and its
subclass :class:`FastPathDisabled` when the fast path is off for good for that model (River's
internals are not as verified); :func:`disabled_counts` counts those decisions per reason.
"""

from streamtrain.fastpath.evaluator import (
    FastEvaluator,
    fast_evaluator_for,
    kernel_load_seconds,
    load_in_background,
)
from streamtrain.fastpath.fallback import FastPathDisabled, FastPathFallback, disabled_counts

__all__ = [
    "FastEvaluator",
    "FastPathDisabled",
    "FastPathFallback",
    "disabled_counts",
    "fast_evaluator_for",
    "kernel_load_seconds",
    "load_in_background",
]
