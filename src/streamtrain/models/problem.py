"""The kind of learning problem a model solves, which decides how labels are read and scored.

>>> from river import linear_model, preprocessing
>>> problem_of(preprocessing.StandardScaler() | linear_model.LogisticRegression())
<Problem.CLASSIFICATION: 'classification'>
>>> problem_of(linear_model.LinearRegression()).value
'regression'
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

__all__ = ["Problem", "final_step", "problem_of"]


class Problem(enum.Enum):
    """Classification (labels are booleans, integers or strings), regression (finite numbers),
    or anything else River can learn (any JSON scalar)."""

    CLASSIFICATION = "classification"
    REGRESSION = "regression"
    OTHER = "other"


def problem_of(model: Any) -> Problem:
    """The problem of a model, or of a pipeline's final step."""
    from river import base

    final = final_step(model)
    if isinstance(final, base.Classifier):
        return Problem.CLASSIFICATION
    if isinstance(final, base.Regressor):
        return Problem.REGRESSION
    return Problem.OTHER


def final_step(model: Any) -> Any:
    """A pipeline's last step, or the model itself."""
    steps = getattr(model, "steps", None)
    if isinstance(steps, Mapping) and steps:
        return list(steps.values())[-1]
    return model
