"""A compiled batch path for common linear pipelines, equal to River's per-event results.

``fast_evaluator_for(model, metrics)`` returns a :class:`FastEvaluator` for an eligible model
(``StandardScaler | LogisticRegression``, ``StandardScaler | LinearRegression`` and the plain
linear models with River's default SGD, scored by ROCAUC / Accuracy / LogLoss / MAE / MSE /
RMSE), or ``None``. Its ``learn_many(xs, ys)`` does River's predict-then-learn for every event
of a batch in one compiled call (numba), with the same floating-point results as River.
"""

from streamtrain.fastpath.evaluator import (
    FastEvaluator,
    FastPathFallback,
    fast_evaluator_for,
    kernel_load_seconds,
)

__all__ = ["FastEvaluator", "FastPathFallback", "fast_evaluator_for", "kernel_load_seconds"]
