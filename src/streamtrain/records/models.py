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

from streamtrain.data.events import InvalidEvent, Reason, json_type, validate_features
from streamtrain.records.seed import EventShape
from streamtrain.records.shape import RecordShape, flat_features, flatten

__all__ = ["model_shape", "numbers_only_step", "served_features"]

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


def served_features(model: Any, x: Any) -> dict[str, Any]:
    """The features of a predict request's ``x`` for ``model``, or :class:`InvalidEvent`.

    A model that takes numbers only keeps the seed's rules (numbers, nothing else). Any other
    model takes what a flat record gives it in training: strings as categorical values,
    booleans as 0 and 1, ``null`` as missing, nested objects as dotted names.

    >>> from river import compose, linear_model, preprocessing
    >>> encoded = compose.Select("country") | preprocessing.OneHotEncoder()
    >>> served_features(encoded | linear_model.LogisticRegression(),
    ...                 {"country": "FR", "device": {"rooted": True}, "coupon": None})
    {'country': 'FR', 'device.rooted': 1}
    """
    if numbers_only_step(model) is not None:
        return validate_features(x)
    if type(x) is not dict or not x:
        raise InvalidEvent(
            Reason.BAD_FEATURES, f'"x" must be a non-empty object, got {json_type(x)}'
        )
    features = flat_features(flatten(x) if dict in set(map(type, x.values())) else x)
    if not features:
        raise InvalidEvent(Reason.BAD_FEATURES, '"x" has no feature that is not null')
    return features
