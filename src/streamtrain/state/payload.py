"""The checkpoint payload: what a model replica's progress consists of, and its pickled form.

The payload is the part of a checkpoint after the signed header (:mod:`.envelope`): a plain
dict, so the format does not depend on streamtrain's class layout. Format (every key but
``model`` and ``metrics`` optional, for checkpoints written by older versions)::

    {"model": <River estimator>, "metrics": {name: <River metric>},
     "rolling": {name: <river.utils.Rolling>}, "dead_letter_reasons": {reason: count},
     "events_predicted": int, "join": <streamtrain.join.state.JoinState.to_plain()>,
     "challengers": {label: <streamtrain.train.challengers.Challenger.to_plain()>},
     "drift": <streamtrain.train.drift.TaskDrift.to_plain()>,
     "promotion": <streamtrain.train.promotion.GateState.to_plain()>,
     "requests": {"next": int, "removed": [label]}, "keep_versions": int}

``challengers`` is written only when the task has some, so a checkpoint without them reads
as before, and one written before challengers existed reads as having none. ``promotion``
(the promotion gate's state: the champion's label and spec, win counts) likewise, and
``requests`` (the next events-topic offset to look for requests at, the challengers removed
on request: :mod:`streamtrain.train.requests`).

The counters that the header already carries (``events_learned``, the input offsets, those of a
separate labels topic included) are taken from the header, which was verified with the payload.
Only :func:`thaw` unpickles, and only bytes that came out of a verified envelope or out of
:func:`freeze` in this process.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Mapping
from typing import Any

from streamtrain.state.envelope import OpenedCheckpoint, load_state

__all__ = ["TrainState", "freeze", "model_of", "state_of", "thaw"]


@dataclasses.dataclass
class TrainState:
    """Everything a model replica's progress consists of."""

    model: Any
    metrics: dict[str, Any]
    events_learned: int
    dead_letter_reasons: dict[str, int]
    offsets: dict[int, int]  # partition -> next offset to learn, of the input topic
    rolling: dict[str, Any] = dataclasses.field(default_factory=dict)  # windowed metrics
    events_predicted: int = 0  # unlabelled events answered
    label_offsets: dict[int, int] = dataclasses.field(default_factory=dict)  # labels topic
    join: dict[str, Any] | None = None  # what waits to be joined, in its plain form
    # label -> a challenger in its plain form (streamtrain.train.challengers), in order
    challengers: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    drift: dict[str, Any] | None = None  # the drift detectors, in their plain form
    promotion: dict[str, Any] | None = None  # the promotion gate's state, in its plain form
    requests: dict[str, Any] | None = None  # requests applied (streamtrain.train.requests)
    keep_versions: int | None = None  # train --keep-versions (streamtrain.state.history)


def freeze(state: TrainState) -> bytes:
    """The payload bytes of ``state`` (its counters in the header are the caller's)."""
    payload = {
        "model": state.model,
        "metrics": state.metrics,
        "rolling": state.rolling,
        "dead_letter_reasons": dict(state.dead_letter_reasons),
        "events_predicted": state.events_predicted,
    }
    if state.join is not None:
        payload["join"] = state.join
    if state.challengers:
        payload["challengers"] = state.challengers
    if state.drift is not None:
        payload["drift"] = state.drift
    if state.promotion is not None:
        payload["promotion"] = state.promotion
    if state.requests is not None:
        payload["requests"] = state.requests
    if state.keep_versions is not None:
        payload["keep_versions"] = state.keep_versions
    return pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)


def thaw(
    payload: bytes,
    events_learned: int,
    offsets: Mapping[int, int],
    label_offsets: Mapping[int, int] | None = None,
) -> TrainState:
    """A state from payload bytes this process made with :func:`freeze` (never foreign bytes)."""
    return _from_dict(pickle.loads(payload), events_learned, offsets, label_offsets or {})


def state_of(opened: OpenedCheckpoint, topic: str, labels_topic: str | None = None) -> TrainState:
    """The state in a verified checkpoint, positioned on ``topic`` (and ``labels_topic``)."""
    header = opened.header
    labels = header.offsets.get(labels_topic, {}) if labels_topic else {}
    return _from_dict(
        load_state(opened), header.events_learned, header.offsets.get(topic, {}), labels
    )


def model_of(opened: OpenedCheckpoint) -> Any:
    """Just the model of a verified checkpoint (what serving needs)."""
    return load_state(opened)["model"]


def _from_dict(
    payload: Mapping[str, Any],
    events_learned: int,
    offsets: Mapping[int, int],
    label_offsets: Mapping[int, int],
) -> TrainState:
    return TrainState(
        model=payload["model"],
        metrics=payload["metrics"],
        events_learned=events_learned,
        dead_letter_reasons=dict(payload.get("dead_letter_reasons", {})),
        offsets=dict(offsets),
        rolling=payload.get("rolling", {}),
        events_predicted=int(payload.get("events_predicted", 0)),
        label_offsets=dict(label_offsets),
        join=payload.get("join"),
        challengers=dict(payload.get("challengers", {})),
        drift=payload.get("drift"),
        promotion=payload.get("promotion"),
        requests=payload.get("requests"),
        keep_versions=payload.get("keep_versions"),
    )
