"""The exactly-once tests' oracle: River trained offline, without interruption, in log order."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from river import evaluate, linear_model, metrics, preprocessing

from streamtrain.data.events import decode_event
from streamtrain.models.problem import Problem
from streamtrain.state.store import CheckpointStore


def new_model() -> Any:
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


def offline(values: list[bytes]) -> tuple[Any, float]:
    """The model and its ROCAUC from ``river.evaluate.progressive_val_score`` over ``values``."""
    model = new_model()
    stream = [decode_event(v, Problem.CLASSIFICATION) for v in values]
    return model, evaluate.progressive_val_score(stream, model, metrics.ROCAUC()).get()


def offline_curve(values: list[bytes]) -> list[float]:
    """Progressive ROCAUC after each prefix of ``values``: ``curve[n]`` is after n events.

    The same protocol as ``progressive_val_score`` (predict, score, learn); its last value
    equals :func:`offline`'s.
    """
    model = new_model()
    metric = metrics.ROCAUC()
    curve = [float(metric.get())]
    for x, y in (decode_event(v, Problem.CLASSIFICATION) for v in values):
        proba = model.predict_proba_one(x)
        if proba:
            metric.update(y, proba)
        model.learn_one(x, y)
        curve.append(float(metric.get()))
    return curve


def check_history(
    store: CheckpointStore,
    topic: str,
    partition_of: Mapping[str, int],
    per_partition: Mapping[int, list[bytes]],
) -> int:
    """Every checkpoint ever committed for the keys in ``partition_of`` (checkpoint key ->
    input partition), not only the newest, is its partition's events learned once, in order,
    up to its offset: ``events_learned`` equals the offset and the metric equals the offline
    curve there. A fork (two owners learning on from one checkpoint) fails here even if the
    last owner happens to end on the right count. Returns how many checkpoints were checked.
    """
    curves = {p: offline_curve(per_partition[p]) for p in set(partition_of.values())}
    wrong: list[str] = []
    checked = 0
    for checkpoint in store.history(list(partition_of)):
        header = checkpoint.header
        p = partition_of[header.model_name]
        offset = header.offsets.get(topic, {}).get(p, 0)
        expected = curves[p][offset]
        checked += 1
        if header.events_learned != offset or header.metrics.get("ROCAUC") != expected:
            wrong.append(
                f"{header.model_name} at offset {offset}: learned {header.events_learned}, "
                f"ROCAUC {header.metrics.get('ROCAUC')} (offline {expected})"
            )
    assert checked >= len(partition_of), "a key has no checkpoint at all"
    assert not wrong, wrong
    return checked
