"""One model's answer for one features object, in the shape every output of streamtrain uses.

``{"prediction": label-or-value, "probabilities": {label: p, ...}}`` — probabilities for
classifiers only, keyed by :func:`label_key`. The HTTP API, ``streamtrain predict`` and the
trainer's predictions topic all answer with this, so a prediction made by the trainer can be
compared with one served from the checkpoint of the same model version.
"""

from __future__ import annotations

from typing import Any

from streamtrain.models.problem import Problem

__all__ = ["answer_from_fast_path", "answer_from_proba", "label_key", "predict_answer"]


def label_key(label: Any) -> str:
    """A class label as a JSON object key: ``true``/``false`` for booleans, else ``str``."""
    if isinstance(label, bool):
        return "true" if label else "false"
    return str(label)


def predict_answer(model: Any, problem: Problem, x: dict[str, float]) -> dict[str, Any]:
    """Predict ``x`` (already validated) with a River model; pure, the model is not changed."""
    if problem is Problem.CLASSIFICATION:
        return answer_from_proba(model.predict_proba_one(x))
    return {"prediction": model.predict_one(x)}


def answer_from_proba(proba: dict[Any, float]) -> dict[str, Any]:
    """A classifier's answer from its ``predict_proba_one`` result."""
    return {
        # The arg-max of the probabilities: River's default predict_one, one call cheaper.
        "prediction": max(proba, key=proba.__getitem__) if proba else None,
        "probabilities": {label_key(k): float(v) for k, v in proba.items()},
    }


def answer_from_fast_path(problem: Problem, value: float) -> dict[str, Any]:
    """The answer for a fast-path prediction (:meth:`FastEvaluator.learn_many`): a binary
    classifier's probability of True, built as River's LogisticRegression builds its
    ``predict_proba_one``, or a regressor's value."""
    if problem is Problem.CLASSIFICATION:
        p = float(value)
        return answer_from_proba({False: 1.0 - p, True: p})
    return {"prediction": float(value)}
