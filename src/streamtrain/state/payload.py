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

import collections
import copyreg
import dataclasses
import gc
import pickle
import types
from collections.abc import Mapping
from typing import Any, TypeVar

import orjson
from river.utils import VectorDict

from streamtrain.state.envelope import OpenedCheckpoint, load_state

__all__ = ["TrainState", "freeze", "inline", "model_of", "share_keys", "state_of", "thaw"]

T = TypeVar("T")


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
    return _from_dict(_fast(pickle.loads(payload)), events_learned, offsets, label_offsets or {})


def state_of(opened: OpenedCheckpoint, topic: str, labels_topic: str | None = None) -> TrainState:
    """The state in a verified checkpoint, positioned on ``topic`` (and ``labels_topic``)."""
    header = opened.header
    labels = header.offsets.get(labels_topic, {}) if labels_topic else {}
    return _from_dict(
        _fast(load_state(opened)), header.events_learned, header.offsets.get(topic, {}), labels
    )


def model_of(opened: OpenedCheckpoint) -> Any:
    """Just the model of a verified checkpoint (what serving needs)."""
    return _fast(load_state(opened)["model"])


# Containers whose entries share_keys walks; plain dict storage, so re-keying in place is safe.
_PLAIN_DICTS = (dict, collections.defaultdict, collections.Counter)
_ATOMS = (str, bytes, bytearray, int, float, complex, bool, type(None), range)
_OPAQUE = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, memoryview)
_CACHED_KEY_BYTES = 64  # orjson caches object keys up to this length
_SKIP = (*_ATOMS, *_OPAQUE)  # (one tuple: isinstance is called once per object walked)


def share_keys(root: T) -> T:
    """``root`` (unpickled state) with the ``str`` keys of its dicts replaced, in place and in
    order, by the very objects orjson hands out for those keys.

    Why: a dict lookup whose key *is* the stored key costs a pointer compare; an equal but
    distinct string costs a full compare. A model that learned from decoded events holds
    orjson's cached key objects, which every later event repeats; unpickling gives it new
    ones, and every ``learn_one`` then pays the compare on every feature (10-17% slower,
    bench/PROFILE.md). Asking orjson to decode the keys once returns its cached objects.
    """
    dicts: list[dict[Any, Any]] = []
    vectors: list[Any] = []  # River's VectorDict (linear models' weights): no __dict__
    seen: set[int] = set()
    stack: list[Any] = [root]
    while stack:
        obj = stack.pop()
        if isinstance(obj, _SKIP) or id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, dict):
            if type(obj) in _PLAIN_DICTS:
                dicts.append(obj)
            stack.extend(obj.values())
        elif isinstance(obj, VectorDict):
            if obj.__reduce__()[1][1] is None:  # no mask: clear + set keeps it as it was
                vectors.append(obj)
        elif isinstance(obj, list | tuple | set | frozenset):
            stack.extend(obj)
        else:
            attrs = getattr(obj, "__dict__", None)
            if isinstance(attrs, dict):
                stack.append(attrs)
            for slot in getattr(type(obj), "__slots__", ()):
                if isinstance(slot, str) and hasattr(obj, slot):
                    stack.append(getattr(obj, slot))
    names = {
        k
        for d in [*dicts, *vectors]
        for k in d
        if type(k) is str and len(k.encode("utf-8", "surrogatepass")) <= _CACHED_KEY_BYTES
    }
    if not names:
        return root
    try:
        canonical = {k: k for k in orjson.loads(orjson.dumps(dict.fromkeys(names)))}
    except orjson.JSONEncodeError:  # a key orjson cannot write (lone surrogate): keep them
        return root
    for d in dicts:
        if any(type(k) is str and canonical.get(k, k) is not k for k in d):
            items = list(d.items())
            dict.clear(d)
            for k, v in items:
                dict.__setitem__(d, canonical.get(k, k) if type(k) is str else k, v)
    for vector in vectors:
        if any(type(k) is str and canonical.get(k, k) is not k for k in vector):
            items = list(vector.items())
            vector.clear()
            for k, v in items:
                vector[canonical.get(k, k) if type(k) is str else k] = v
    return root


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


def _fast(root: T) -> T:
    # share_keys first: it reads every object's ``__dict__``, which would put the attributes
    # inline() just brought inline back into a dict. inline() re-keys nothing (it updates
    # dicts in place), so the shared keys stay.
    return inline(share_keys(root))


_MANAGED_DICT = 1 << 4  # Py_TPFLAGS_MANAGED_DICT (CPython 3.11+): attributes stored inline


def inline(root: T) -> T:
    """``root`` (unpickled state) with every plain Python object in it rebuilt attribute by
    attribute, so that its attributes live inline again; containers are updated in place.

    Why: CPython 3.11+ keeps a fresh object's attributes inline, where ``self.x`` is a fast
    indexed load. Pickling reads ``obj.__dict__``, which turns them into a dict for good, and
    unpickling fills that dict: River models came back 20-35% slower per event
    (bench/PROFILE.md). Only objects pickled by the default protocol (state = ``__dict__``,
    no ``__slots__``, no ``__reduce__`` of their own) are rebuilt, with the same attribute
    values in the same order, and shared references stay shared.
    """
    # Keyed by id: the memo holds each old object beside its replacement, so none is freed
    # (and its id reused) while the walk runs.
    memo: dict[int, tuple[Any, Any]] = {}
    plain = _PlainTypes()  # asked once per class, not per object: walks go through thousands
    return _rebuilt(root, memo, _pinned(root, plain), plain)


def _pinned(root: Any, plain: _PlainTypes) -> set[int]:
    """The ids of the objects :func:`_rebuilt` must keep as they are: those held where it cannot
    put a rebuilt one (a dict key, a set, a tuple that is a key, a deque, a C object). Rebuilding
    them would split one object into two."""
    pinned: set[int] = set()
    seen: set[tuple[int, bool]] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        obj, held = stack.pop()
        if isinstance(obj, _SKIP):
            continue
        if held:
            pinned.add(id(obj))
        if (id(obj), held) in seen or (id(obj), True) in seen:
            continue
        seen.add((id(obj), held))
        cls = type(obj)
        if isinstance(obj, dict):
            stack.extend((k, True) for k in obj)
            stack.extend((v, False) for v in obj.values())
        elif isinstance(obj, list):
            stack.extend((v, False) for v in obj)
        elif cls is tuple:
            stack.extend((v, held) for v in obj)
        elif plain[cls]:
            stack.extend((v, False) for v in obj.__dict__.values())
        else:
            stack.extend((v, True) for v in gc.get_referents(obj))
    return pinned


def _rebuilt(
    obj: Any, memo: dict[int, tuple[Any, Any]], pinned: set[int], plain: _PlainTypes
) -> Any:
    if isinstance(obj, _SKIP):
        return obj
    done = memo.get(id(obj))
    if done is not None:
        return done[1]
    cls = type(obj)
    memo[id(obj)] = (obj, obj)
    if cls is tuple:
        items = tuple(_rebuilt(v, memo, pinned, plain) for v in obj)
        if id(obj) in pinned or all(a is b for a, b in zip(items, obj, strict=True)):
            return obj
        memo[id(obj)] = (obj, items)  # (a cycle through it keeps the old)
        return items
    if isinstance(obj, dict):
        for k, v in obj.items():
            new_v = _rebuilt(v, memo, pinned, plain)
            if new_v is not v:
                obj[k] = new_v
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            obj[i] = _rebuilt(v, memo, pinned, plain)
    elif plain[cls]:
        attrs = obj.__dict__
        if id(obj) in pinned:  # kept, its attributes brought up to date in place
            for k, v in attrs.items():
                attrs[k] = _rebuilt(v, memo, pinned, plain)
            return obj
        new = object.__new__(cls)  # what _plain requires cls.__new__ to be
        memo[id(obj)] = (obj, new)
        for k, v in attrs.items():
            object.__setattr__(new, k, _rebuilt(v, memo, pinned, plain))
        return new
    return obj


class _PlainTypes(dict[type, bool]):
    """:func:`_plain` of each class, computed on first use."""

    def __missing__(self, cls: type) -> bool:
        self[cls] = found = _plain(cls)
        return found


def _plain(cls: type) -> bool:
    """Pickled as ``cls.__new__(cls)`` plus its ``__dict__`` (so rebuilt the same way).

    Slots count only when they hold something: nearly every River class derives from
    ``abc.ABC``, whose ``__slots__ = ()`` adds none (pickle's own test, ``copyreg._slotnames``,
    ignores it too); refusing those left every River object in dict form after a thaw."""
    return (
        bool(cls.__flags__ & _MANAGED_DICT)
        and cls.__reduce_ex__ is object.__reduce_ex__
        and cls.__reduce__ is object.__reduce__
        and getattr(cls, "__getstate__", object.__getstate__) is object.__getstate__
        and cls.__new__ is object.__new__
        and not copyreg._slotnames(cls)  # type: ignore[attr-defined]
    )
