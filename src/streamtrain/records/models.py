"""What a model can take of a flat record: told at start, enforced per record.

A model whose first step is a scaler or a linear model does arithmetic on every value it is
given, so a string feature would raise inside River (after it may have updated part of its
state). For those, :func:`model_shape` makes the shape refuse string features before the model
sees them (``categorical-feature``), and the trainer says so once at start. Other models take
what River makes of the values; one that raises on a record has it dead-lettered
``model-error`` as with any record.

>>> from river import compose, linear_model, preprocessing
>>> numbers_only_step(preprocessing.StandardScaler() | linear_model.LogisticRegression())
'StandardScaler'
>>> numbers_only_step(compose.Select("a") | preprocessing.StandardScaler()) is None
True
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from river import compose, preprocessing

from streamtrain.records.seed import EventShape
from streamtrain.records.shape import RecordShape

__all__ = ["model_shape", "numbers_only_step"]

log = logging.getLogger(__name__)

_NUMERIC_STEPS = (
    preprocessing.AdaptiveStandardScaler,
    preprocessing.Binarizer,
    preprocessing.MaxAbsScaler,
    preprocessing.MinMaxScaler,
    preprocessing.Normalizer,
    preprocessing.RobustScaler,
    preprocessing.StandardScaler,
)


def numbers_only_step(model: Any) -> str | None:
    """The name of ``model``'s first step when it takes numbers only, else None (unknown, or
    it selects or encodes first)."""
    first = model
    while type(first) is compose.Pipeline and first.steps:
        first = next(iter(first.steps.values()))
    kind = type(first)
    if kind in _NUMERIC_STEPS or kind.__module__.startswith("river.linear_model."):
        return kind.__name__
    return None


def model_shape(shape: EventShape, model: Any, *, warn: bool = False) -> EventShape:
    """``shape`` for ``model``: a flat record shape refuses strings if the model must; with
    ``warn``, that is logged."""
    if not isinstance(shape, RecordShape):
        return shape
    step = numbers_only_step(model)
    if step is None:
        return shape
    if warn:
        log.warning(
            "the model's first step %s takes numbers only: records with a string feature will be "
            "dead-lettered categorical-feature (encode them, e.g. (Select(...) | OneHotEncoder), "
            "or leave them out with --drop)",
            step,
        )
    return dataclasses.replace(shape, numbers_only=step)
