"""Flat records: what a RecordShape makes of a decoded object, and the steps that use it."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from river import compose, evaluate, linear_model, metrics, preprocessing

from streamtrain.config import resolve
from streamtrain.data.events import InvalidEvent, Reason, decode_event
from streamtrain.errors import ConfigError
from streamtrain.join.events import FEATURE, INLINE, LABEL, UNLABELLED
from streamtrain.models.problem import Problem
from streamtrain.models.spec import estimator_registry, parse_spec
from streamtrain.records import SEED, RecordShape, flatten
from streamtrain.records.models import model_shape, numbers_only_step, served_features
from streamtrain.train.progressive import ProgressiveEvaluator
from streamtrain.train.settings import TrainSettings
from streamtrain.train.step import RiverStep, SimpleRecord

CLS = Problem.CLASSIFICATION


def _reason(shape: RecordShape, obj: dict[str, Any], problem: Problem = CLS) -> str:
    with pytest.raises(InvalidEvent) as caught:
        shape.check(obj, problem)
    return caught.value.reason.value


def test_nested_objects_flatten_to_dotted_names_in_document_order() -> None:
    obj = {"b": 1, "a": {"y": {"z": 2.5}, "x": "s"}, "c": {}, "d": None}
    assert flatten(obj) == {"b": 1, "a.y.z": 2.5, "a.x": "s", "d": None}
    assert list(flatten(obj)) == ["b", "a.y.z", "a.x", "d"]
    # A dotted name is the same name as the nested path: both at once are ambiguous.
    assert flatten({"a.b": 1}) == {"a.b": 1}
    with pytest.raises(InvalidEvent) as caught:
        flatten({"a": {"b": 1}, "a.b": 2})
    assert caught.value.reason.value == "bad-features"


def test_target_and_id_are_never_features_and_nested_paths_work() -> None:
    shape = RecordShape(target="outcome.fraud", id_field="meta.txn")
    obj = {"amount": 3.5, "outcome": {"fraud": True, "score": 0.2}, "meta": {"txn": "t9"}}
    assert shape.extract(obj) == ("t9", {"amount": 3.5, "outcome.score": 0.2}, True)
    assert shape.check(obj, CLS) == ({"amount": 3.5, "outcome.score": 0.2}, True)
    # A target naming an object is not a label.
    assert _reason(RecordShape(target="outcome"), obj) == "bad-label"


def test_missing_or_null_target_is_unlabelled() -> None:
    shape = RecordShape(target="y")
    assert shape.check({"a": 1}, CLS) == ({"a": 1}, None)
    assert shape.check({"a": 1, "y": None}, CLS) == ({"a": 1}, None)
    # Labels follow the seed's rules for the problem.
    assert _reason(shape, {"a": 1, "y": True}, Problem.REGRESSION) == "bad-label"
    assert _reason(shape, {"a": 1, "y": [1]}) == "bad-label"


def test_features_globs_and_drop() -> None:
    obj = {"amount": 1, "age": 30, "device": {"os": "ios", "model": "x"}, "debug": 7, "y": 0}
    every = RecordShape(target="y")
    assert every.check(obj, CLS)[0] == {
        "amount": 1,
        "age": 30,
        "device.os": "ios",
        "device.model": "x",
        "debug": 7,
    }
    chosen = RecordShape(target="y", features=("a*", "device.*"), drop=("device.model",))
    assert chosen.check(obj, CLS)[0] == {"amount": 1, "age": 30, "device.os": "ios"}
    dropped = RecordShape(target="y", drop=("debug", "device.*"))
    assert dropped.check(obj, CLS)[0] == {"amount": 1, "age": 30}
    # Globs match case-sensitively, whatever the platform.
    assert RecordShape(target="y", features=("AMOUNT",)).keeps("amount") is False


def test_missing_values_are_left_out_and_booleans_are_numbers() -> None:
    shape = RecordShape(target="label")
    x, y = shape.check({"a": None, "b": True, "c": False, "d": "FR", "e": 2, "label": 1}, CLS)
    assert x == {"b": 1, "c": 0, "d": "FR", "e": 2}
    assert type(x["b"]) is int and type(x["c"]) is int
    assert y == 1
    # A record with no feature left (all missing) cannot be learned from.
    assert _reason(shape, {"a": None, "label": True}) == "bad-features"
    # The seed's format keeps its own rule: a boolean feature is refused.
    with pytest.raises(InvalidEvent) as caught:
        decode_event(b'{"x": {"a": true}, "y": 1}', CLS)
    assert caught.value.reason.value == "bad-features"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ([1, 2], "bad-features"),
        (1e200, "feature-out-of-range"),
        (-math.inf, "non-finite-feature"),
        (math.nan, "non-finite-feature"),
        (b"raw", "bad-features"),
    ],
)
def test_values_a_model_cannot_take_are_refused(value: Any, reason: str) -> None:
    assert _reason(RecordShape(target="y"), {"ok": 1, "f": value, "y": True}) == reason


@pytest.mark.parametrize(
    ("others", "reason"),
    [
        ({"f": math.inf, "g": -math.inf}, "non-finite-feature"),  # their sum is NaN
        ({"f": math.nan, "s": "text"}, "non-finite-feature"),
        ({"f": -1e151, "s": "text", "g": 2.0}, "feature-out-of-range"),
        ({"f": 1e151, "b": True}, "feature-out-of-range"),
    ],
)
def test_bad_numbers_among_strings_and_booleans_are_refused(
    others: dict[str, Any], reason: str
) -> None:
    assert _reason(RecordShape(target="y"), {"ok": 1.0, **others, "y": True}) == reason


def test_a_refused_field_that_is_not_a_feature_is_ignored() -> None:
    shape = RecordShape(target="y", drop=("tags",))
    assert shape.check({"a": 1, "tags": ["x"], "y": False}, CLS) == ({"a": 1}, False)


def test_strings_for_a_numbers_only_model_are_refused_before_it_sees_them() -> None:
    model = parse_spec("StandardScaler | LogisticRegression", estimator_registry())
    assert numbers_only_step(model) == "StandardScaler"
    assert numbers_only_step(linear_model.LinearRegression()) == "LinearRegression"
    union = parse_spec(
        "(Select('a') | StandardScaler) + (Select('c') | OneHotEncoder) | LogisticRegression",
        estimator_registry(),
    )
    assert numbers_only_step(union) is None
    shape = model_shape(RecordShape(target="y"), model)
    assert isinstance(shape, RecordShape) and shape.numbers_only == "StandardScaler"
    assert _reason(shape, {"a": 1, "c": "FR", "y": True}) == "categorical-feature"
    assert shape.check({"a": 1, "b": True, "y": True}, CLS) == ({"a": 1, "b": 1}, True)
    assert model_shape(SEED, model) is SEED
    assert model_shape(RecordShape(target="y"), union) == RecordShape(target="y")


def test_a_format_plugs_in_as_the_loader() -> None:
    def pairs(value: bytes | None) -> dict[str, Any]:  # "k=v;k=v", a stand-in format
        if not value:
            raise InvalidEvent(Reason.UNDECODABLE, "empty")
        return dict(pair.split("=") for pair in value.decode().split(";"))

    shape = RecordShape(target="y", id_field="id", load=pairs)
    assert shape.decode(b"a=FR;y=yes", CLS) == ({"a": "FR"}, "yes")
    assert shape.decode_item(b"id=7;a=DE", None, CLS, "value") == (FEATURE, "7", {"a": "DE"}, None)
    evaluator = ProgressiveEvaluator(
        parse_spec("OneHotEncoder | HoeffdingTreeClassifier", estimator_registry()),
        {"Accuracy": metrics.Accuracy()},
    )
    out = RiverStep(evaluator, shape).run(
        [SimpleRecord(b"a=FR;y=yes", 0, 0), SimpleRecord(b"", 0, 1)], {}, 0
    )
    assert out.learned == 1 and [d.reason for d in out.dead_letters] == ["undecodable"]


def test_joined_items_of_flat_records() -> None:
    shape = RecordShape(target="y", id_field="id")

    def item(obj: dict[str, Any], key: bytes | None = None, id_from: str = "value") -> Any:
        return shape.decode_item(orjson.dumps(obj), key, CLS, id_from)

    assert item({"id": "a", "f": 1.0}) == (FEATURE, "a", {"f": 1.0}, None)
    assert item({"id": 7, "y": True}) == (LABEL, "7", None, True)
    assert item({"id": "a", "f": 1.0, "y": False}) == (INLINE, None, {"f": 1.0}, False)
    assert item({"f": 1.0}) == (UNLABELLED, None, {"f": 1.0}, None)
    assert item({"y": True}, key=b"k1", id_from="key") == (LABEL, "k1", None, True)
    for bad, reason in (
        ({"y": True}, "bad-id"),
        ({"id": [1], "y": True}, "bad-id"),
        ({"id": "a"}, "bad-features"),
    ):
        with pytest.raises(InvalidEvent) as caught:
            item(bad)
        assert caught.value.reason.value == reason


def _flat_stream() -> list[bytes]:
    rows = []
    for i in range(60):
        row: dict[str, Any] = {
            "n": {"a": (i % 7) * 0.5, "b": i % 3 == 0},
            "country": ["FR", "DE", "ES"][i % 3],
            "y": i % 4 == 0 if i % 10 else None,
        }
        if i % 5 == 0:
            row["n"]["a"] = None  # missing
        rows.append(orjson.dumps(row))
    rows.insert(20, b'{"n": {"a": [1]}, "y": true}')  # refused
    return rows


def test_the_river_step_on_flat_records_is_rivers_progressive_validation() -> None:
    # SelectType, not Select: River's Select raises on a key that is missing.
    spec = "(SelectType(numbers.Number) | StandardScaler) + (SelectType(str) | OneHotEncoder)"
    model = parse_spec(f"{spec} | LogisticRegression", estimator_registry())
    shape = model_shape(RecordShape(target="y"), model)
    evaluator = ProgressiveEvaluator(model, {"ROCAUC": metrics.ROCAUC()})
    values = _flat_stream()
    records = [SimpleRecord(v, 0, i) for i, v in enumerate(values)]
    out = RiverStep(evaluator, shape).run(records, {}, 0)
    assert [d.reason for d in out.dead_letters] == ["bad-features"]
    assert len(out.predictions) == 6
    plain = RecordShape(target="y")
    decoded = [plain.decode(v, CLS) for i, v in enumerate(values) if i != 20]
    labelled = [(x, y) for x, y in decoded if y is not None]
    assert out.learned == len(labelled) == 54
    oracle_model = parse_spec(f"{spec} | LogisticRegression", estimator_registry())
    expected = evaluate.progressive_val_score(labelled, oracle_model, metrics.ROCAUC()).get()
    assert evaluator.metrics["ROCAUC"].get() == pytest.approx(expected, abs=1e-12)


def test_a_select_of_a_missing_field_is_a_model_error_and_learns_nothing() -> None:
    spec = "(Select('a') | StandardScaler) + (Select('c') | OneHotEncoder) | LogisticRegression"
    model = parse_spec(spec, estimator_registry())
    evaluator = ProgressiveEvaluator(model, {"ROCAUC": metrics.ROCAUC()})
    step = RiverStep(evaluator, model_shape(RecordShape(target="y"), model))
    good = orjson.dumps({"a": 1.0, "c": "FR", "y": True})
    missing = orjson.dumps({"a": None, "c": "DE", "y": False})
    out = step.run([SimpleRecord(good, 0, 0), SimpleRecord(missing, 0, 1)], {}, 0)
    assert out.learned == 1
    assert [(d.reason, d.message) for d in out.dead_letters] == [("model-error", "KeyError: 'a'")]
    scaler = model["TransformerUnion"].transformers["Pipeline"]["StandardScaler"]
    assert scaler.counts["a"] == 1  # only the good record


def test_compiled_step_on_flat_records_is_rivers_and_leaves_strings_to_river() -> None:
    pytest.importorskip("numba")
    from streamtrain.fastpath import fast_evaluator_for
    from streamtrain.train.step import FastStep

    def step() -> tuple[Any, Any]:
        model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
        evaluator = ProgressiveEvaluator(model, {"ROCAUC": metrics.ROCAUC()})
        fast = fast_evaluator_for(evaluator.model, evaluator.metrics)
        assert fast is not None
        return evaluator, fast

    shape = RecordShape(target="t.y", id_field="id")
    values = [
        orjson.dumps({"id": i, "a": i * 0.1, "b": i % 2 == 0, "t": {"y": i % 3 == 0}})
        for i in range(100)
    ]
    records = [SimpleRecord(v, 0, i) for i, v in enumerate(values)]
    evaluator, fast = step()
    FastStep(evaluator, fast, shape).run(records, {}, 0)
    assert fast.events == 100  # compiled
    river = ProgressiveEvaluator(
        preprocessing.StandardScaler() | linear_model.LogisticRegression(),
        {"ROCAUC": metrics.ROCAUC()},
    )
    RiverStep(river, shape).run(records, {}, 0)
    assert fast.values()["ROCAUC"] == river.metrics["ROCAUC"].get()
    # A batch with a string (that this model's shape would not refuse) goes to River whole.
    evaluator, fast = step()
    with_text = [*records[:10], SimpleRecord(b'{"a": "1.5", "t": {"y": true}}', 0, 10)]
    out = FastStep(evaluator, fast, shape).run(with_text, {}, 0)
    assert fast.events == 0 and out.learned == 10
    assert [d.reason for d in out.dead_letters] == ["model-error"]


def test_settings_of_flat_records() -> None:
    assert TrainSettings().record_shape() is SEED
    settings = TrainSettings(target="is_fraud", id_field="txn", features=("a*",), drop=("b",))
    assert settings.record_shape() == RecordShape("is_fraud", "txn", ("a*",), ("b",))
    for bad, match in (
        ({"features": ("a",)}, "--features needs --target"),
        ({"drop": ("a",)}, "--drop needs --target"),
        ({"id_field": "id"}, "--id-field needs --target"),
        ({"target": "y", "labels_topic": "labels"}, "needs --id-field"),
        ({"target": "y", "id_field": "y"}, "must differ"),
        ({"target": "a*"}, "field name"),
        ({"target": ""}, "field name"),
    ):
        with pytest.raises(ConfigError, match=match):
            TrainSettings(**bad)
    TrainSettings(target="y", labels_topic="labels", id_from="key")  # the key is the id
    env = {"STREAMTRAIN_TARGET": "is_fraud", "STREAMTRAIN_FEATURES": "amount, device.*"}
    file = {"train": {"drop": ["device.id"]}}
    from_env = resolve(TrainSettings, {}, env=env, file=file, section="train")
    assert from_env.record_shape() == RecordShape(
        "is_fraud", None, ("amount", "device.*"), ("device.id",)
    )


def test_flat_cli_flags_reach_the_settings() -> None:
    import argparse

    from streamtrain.cli import train as cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(
        ["train", "--target", "t", "--features", "a,b", "--features", "c.*", "--drop", "b"]
    )
    settings = cli.settings_from_args(args, {})
    assert (settings.target, settings.features, settings.drop) == ("t", ("a", "b", "c.*"), ("b",))


def test_union_and_select_specs() -> None:
    registry = estimator_registry()
    model = parse_spec(
        "(Select('amount','age') | StandardScaler) + (Select('country') | OneHotEncoder)"
        " | LogisticRegression",
        registry,
    )
    union, lr = model.steps.values()
    assert isinstance(union, compose.TransformerUnion)
    assert isinstance(lr, linear_model.LogisticRegression)
    ordinal = parse_spec("SelectType(str) | OrdinalEncoder", registry)
    assert ordinal.transform_one({"a": 1, "c": "FR"}) == {"c": 0}  # unknown so far
    ordinal.learn_one({"a": 1, "c": "FR"})
    assert ordinal.transform_one({"a": 1, "c": "FR"}) == {"c": 1}
    numbers = parse_spec("SelectType(numbers.Number)", registry)
    assert numbers.transform_one({"a": 1, "b": 2.5, "c": "FR"}) == {"a": 1, "b": 2.5}
    for bad in (
        "SelectType(os.system)",
        "SelectType(object)",
        "SelectType(str, when=1)",
        "StandardScaler + LogisticRegression",
        "StandardScaler + 1",
        "optim.SGD + StandardScaler",
    ):
        with pytest.raises(ConfigError):
            parse_spec(bad, registry)


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--features", "a", "--bootstrap-servers", "127.0.0.1:1"],
        ["train", "--target", "y", "--id-field", "y", "--bootstrap-servers", "127.0.0.1:1"],
        ["train", "--target", "y", "--labels-topic", "l", "--bootstrap-servers", "127.0.0.1:1"],
        ["train", "--model", "SelectType(object)", "--bootstrap-servers", "127.0.0.1:1"],
    ],
)
def test_flat_misuse_is_one_line_and_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from streamtrain.cli.main import main

    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "Traceback" not in err[0]


def test_a_numbers_only_model_says_so_at_start(caplog: pytest.LogCaptureFixture) -> None:
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    with caplog.at_level("WARNING", logger="streamtrain.records.models"):
        model_shape(RecordShape(target="y"), model, warn=True)
        model_shape(SEED, model, warn=True)  # the seed's format has numbers only
    assert len(caplog.records) == 1
    assert "StandardScaler takes numbers only" in caplog.records[0].getMessage()


def test_served_features_follow_the_model() -> None:
    """/predict's features: a numbers-only model keeps the seed's rules; a model that encodes
    gets what a flat record gives in training (strings, booleans 0/1, null missing, nested)."""
    numeric = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    encoding = (
        compose.Select("c") | preprocessing.OneHotEncoder() | linear_model.LogisticRegression()
    )
    with pytest.raises(InvalidEvent) as refused:
        served_features(numeric, {"a": 1.0, "c": "FR"})
    assert refused.value.reason is Reason.BAD_FEATURES
    assert served_features(numeric, {"a": 1.0}) == {"a": 1.0}
    x = {"c": "FR", "d": {"ok": True}, "gone": None, "n": 2}
    assert served_features(encoding, x) == {"c": "FR", "d.ok": 1, "n": 2}
    for bad, reason in (
        ({"c": ["FR"]}, Reason.BAD_FEATURES),
        ({"c": math.inf}, Reason.NON_FINITE),
        ({"c": None}, Reason.BAD_FEATURES),
        ([], Reason.BAD_FEATURES),
    ):
        with pytest.raises(InvalidEvent) as err:
            served_features(encoding, bad)
        assert err.value.reason is reason, bad
