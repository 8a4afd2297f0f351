"""A thawed state's dict keys are orjson's own key objects, and the model is otherwise untouched.

Why it matters (bench/PROFILE.md): a dict lookup with the very key object stored costs a pointer
compare, an equal but distinct string a full compare; unpickled models held distinct ones.
"""

from __future__ import annotations

import collections
import ctypes
import pickle
import sys

import orjson
import pytest
from river import datasets, linear_model, metrics, preprocessing

from streamtrain.data.events import decode_event, encode_event
from streamtrain.models.problem import Problem
from streamtrain.state.payload import TrainState, freeze, inline, share_keys, thaw


def _events(n: int) -> list[tuple[dict[str, float], bool]]:
    """Phishing events as the trainer sees them: encoded, then decoded with orjson."""
    out = []
    for x, y in list(datasets.Phishing())[:n]:
        out.append(decode_event(encode_event(x, y), Problem.CLASSIFICATION))
    return out


def _learn(model: object, metric: metrics.ROCAUC, events: list) -> None:
    for x, y in events:
        metric.update(y, model.predict_proba_one(x))  # type: ignore[attr-defined]
        model.learn_one(x, y)  # type: ignore[attr-defined]


def _model() -> object:
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


def test_thawed_model_holds_the_key_objects_decoding_yields() -> None:
    events = _events(300)
    model, metric = _model(), metrics.ROCAUC()
    _learn(model, metric, events[:200])
    state = thaw(freeze(TrainState(model, {"ROCAUC": metric}, 200, {}, {0: 200})), 200, {0: 200})
    decoded_keys = list(events[250][0])
    # keys that orjson hands out as one object event after event (a key whose cache slot
    # another key takes is a new object every time, for a fresh model as well)
    stable = [k for k in decoded_keys if any(k is j for j in events[251][0])]
    assert len(stable) >= len(decoded_keys) // 2
    scaler = state.model["StandardScaler"]
    weights = state.model["LogisticRegression"]._weights
    for stored in (scaler.counts, scaler.means, scaler.vars, weights):
        keys = list(stored.keys())
        assert sorted(keys) == sorted(decoded_keys)
        # each stored key that orjson caches is the decoded event's own object
        assert all(any(k is d for k in keys) for d in stable)
    # without share_keys, pickling gives distinct objects: the check above could fail
    plain = pickle.loads(pickle.dumps(model))
    assert not any(k is d for k in plain["StandardScaler"].means for d in decoded_keys)


def test_thawed_model_learns_bit_for_bit_like_the_original() -> None:
    events = _events(1000)
    model, metric = _model(), metrics.ROCAUC()
    _learn(model, metric, events[:400])
    state = thaw(freeze(TrainState(model, {"ROCAUC": metric}, 400, {}, {0: 400})), 400, {0: 400})
    _learn(model, metric, events[400:])
    _learn(state.model, state.metrics["ROCAUC"], events[400:])
    assert state.metrics["ROCAUC"].get() == metric.get()
    lr, again = model["LogisticRegression"], state.model["LogisticRegression"]
    assert list(again._weights.items()) == list(lr._weights.items())
    assert again.intercept == lr.intercept
    assert list(state.model["StandardScaler"].vars.items()) == list(
        model["StandardScaler"].vars.items()
    )


def test_thaw_rebuilds_objects_that_pickle_back_to_the_same_bytes() -> None:
    events = _events(300)
    model, metric = _model(), metrics.ROCAUC()
    _learn(model, metric, events)
    payload = freeze(TrainState(model, {"ROCAUC": metric}, 300, {}, {0: 300}))
    state = thaw(payload, 300, {0: 300})
    plain = pickle.loads(payload)
    assert pickle.dumps(inline(pickle.loads(payload))) == pickle.dumps(plain)
    assert freeze(thaw(freeze(state), 300, {0: 300})) == freeze(state)
    # rebuilt, not the unpickled objects (their attributes were a dict for good)...
    assert type(state.model) is type(plain["model"])
    assert state.model["LogisticRegression"] is state.model.steps["LogisticRegression"]
    # ...and the pipeline's cached call plan still points at the pipeline's own steps
    assert all(
        any(step is s for s in state.model.steps.values())
        for step in state.model._inference_transformers
    )


def test_share_keys_keeps_types_order_values_and_leaves_other_mappings_alone() -> None:
    names = [f"feature_{i}" for i in range(5)]
    counts = collections.Counter({n: i for i, n in enumerate(reversed(names))})
    means: collections.defaultdict[str, float] = collections.defaultdict(
        float, {n: -0.0 for n in names}
    )
    ordered = collections.OrderedDict((n, 1) for n in names)
    mixed = {1: "one", 2.5: "yes", names[0]: 0}
    root = pickle.loads(pickle.dumps({"c": counts, "m": means, "o": ordered, "x": [mixed]}))
    share_keys(root)
    canonical = list(orjson.loads(orjson.dumps(dict.fromkeys(names))))
    assert type(root["c"]) is collections.Counter and list(root["c"]) == list(counts)
    assert all(any(k is c for c in canonical) for k in root["c"])
    assert type(root["m"]) is collections.defaultdict and root["m"].default_factory is float
    assert [str(v) for v in root["m"].values()] == ["-0.0"] * 5  # values are the same objects
    assert list(root["o"].items()) == list(ordered.items())  # an OrderedDict is not re-keyed
    assert list(root["x"][0].items()) == list(mixed.items())


class _Box:
    def __init__(self, value: object) -> None:
        self.value = value

    def __hash__(self) -> int:
        return id(self)


def test_inline_never_splits_an_object_held_where_it_cannot_be_replaced() -> None:
    shared, keyed, in_deque = _Box(1), _Box(2), _Box(3)
    root = {
        "a": [shared, keyed, in_deque, _Box(shared)],
        "b": shared,
        "as_key": {keyed: "k", (keyed, 1): "t"},
        "q": collections.deque([in_deque]),
    }
    out = inline(pickle.loads(pickle.dumps(root)))
    a = out["a"]
    assert a[0] is out["b"] is a[3].value  # rebuilt once, every reference to it updated
    assert type(a[0]) is _Box and a[0].value == 1
    assert a[1] in out["as_key"] and (a[1], 1) in out["as_key"]  # the key kept its identity
    assert out["q"][0] is a[2]  # held by a deque: kept, not split


def _inline(obj: object) -> bool:
    """Whether ``obj``'s attributes are still stored inline (CPython 3.11's object layout:
    the values pointer sits four words before the object, NULL once ``__dict__`` is real).
    Read with ctypes, since asking Python for ``__dict__`` would build the dict."""
    return bool(ctypes.c_void_p.from_address(id(obj) - 4 * ctypes.sizeof(ctypes.c_void_p)).value)


@pytest.mark.skipif(
    sys.implementation.name != "cpython" or sys.version_info[:2] != (3, 11),
    reason="probes CPython 3.11's object layout",
)
def test_a_thawed_river_model_keeps_its_attributes_inline_like_a_fresh_one() -> None:
    events = _events(300)
    model, metric = _model(), metrics.ROCAUC()
    _learn(model, metric, events)
    scaler, lr = model["StandardScaler"], model["LogisticRegression"]
    live = [model, scaler, lr, lr.optimizer, metric, metric.cms[0]]
    assert all(_inline(o) for o in live)  # the probe tells fresh objects apart...
    payload = freeze(TrainState(model, {"ROCAUC": metric}, 300, {}, {0: 300}))
    assert not any(_inline(o) for o in live)  # ...from pickled ones: it could fail
    state = thaw(payload, 300, {0: 300})
    got, roc = state.model, state.metrics["ROCAUC"]
    scaler, lr = got["StandardScaler"], got["LogisticRegression"]
    # River's classes derive from abc.ABC (__slots__ = ()), and share_keys reads __dict__:
    # either one used to leave every one of these in dict form.
    assert all(_inline(o) for o in [got, scaler, lr, lr.optimizer, roc, roc.cms[0]])
