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


# The replays of the last few value lists: a test that checks a model against offline(values)
# and its checkpoints against offline_curve(values) replays River over them once, not twice
# (tens of seconds a test over 60-200k events on a loaded machine).
_REPLAYS: dict[tuple[bytes, ...], tuple[Any, list[float]]] = {}
_KEEP_REPLAYS = 8


def _replay(values: list[bytes]) -> tuple[Any, list[float]]:
    """The model after ``river.evaluate.iter_progressive_val_score`` over ``values`` (step 1)
    and the ROCAUC after each prefix: ``curve[n]`` is after n events. Callers only read the
    model (it is shared between the calls over the same values)."""
    key = tuple(values)
    if key not in _REPLAYS:
        model, metric = new_model(), metrics.ROCAUC()
        stream = [decode_event(v, Problem.CLASSIFICATION) for v in values]
        curve = [float(metric.get())]
        for _ in evaluate.iter_progressive_val_score(stream, model, metric, step=1):
            curve.append(float(metric.get()))
        while len(_REPLAYS) >= _KEEP_REPLAYS:
            del _REPLAYS[next(iter(_REPLAYS))]  # the oldest
        _REPLAYS[key] = (model, curve)
    return _REPLAYS[key]


def offline(values: list[bytes]) -> tuple[Any, float]:
    """The model and its ROCAUC from River's progressive validation over ``values`` (what
    ``river.evaluate.progressive_val_score`` returns)."""
    model, curve = _replay(values)
    return model, curve[-1]


def offline_curve(values: list[bytes]) -> list[float]:
    """Progressive ROCAUC after each prefix of ``values``: ``curve[n]`` is after n events.
    River's progressive validation, stepping every event; its last value is :func:`offline`'s.
    """
    return _replay(values)[1]


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
