"""In-process pipeline: wire bytes → decode → progressive evaluation, against River's oracle."""

from __future__ import annotations

import itertools

import pytest
from river import datasets, evaluate, linear_model, metrics, preprocessing, tree

from streamtrain.data.events import decode_event, encode_event
from streamtrain.errors import ConfigError
from streamtrain.models.problem import Problem
from streamtrain.train.progressive import ProgressiveEvaluator, build_metrics


def _oracle(model, metric, stream) -> float:  # type: ignore[no-untyped-def]
    return evaluate.progressive_val_score(stream, model, metric).get()


def test_phishing_through_the_wire_format_equals_progressive_val_score() -> None:
    evaluator = ProgressiveEvaluator(
        preprocessing.StandardScaler() | linear_model.LogisticRegression(),
        build_metrics(("ROCAUC", "Accuracy", "LogLoss"), linear_model.LogisticRegression()),
    )
    for x, y in datasets.Phishing():
        evaluator.learn(*decode_event(encode_event(x, y), Problem.CLASSIFICATION))
    values = evaluator.values()
    for name, metric in [
        ("ROCAUC", metrics.ROCAUC()),
        ("Accuracy", metrics.Accuracy()),
        ("LogLoss", metrics.LogLoss()),
    ]:
        expected = _oracle(
            preprocessing.StandardScaler() | linear_model.LogisticRegression(),
            metric,
            datasets.Phishing(),
        )
        assert values[name] == pytest.approx(expected, abs=1e-12), name


def test_model_with_own_predict_one_is_scored_like_river() -> None:
    stream = list(itertools.islice(datasets.synth.Agrawal(seed=7), 600))
    evaluator = ProgressiveEvaluator(
        tree.HoeffdingTreeClassifier(), {"Accuracy": metrics.Accuracy(), "F1": metrics.F1()}
    )
    for x, y in stream:
        evaluator.learn(x, y)
    expected = _oracle(tree.HoeffdingTreeClassifier(), metrics.Accuracy(), stream)
    assert evaluator.values()["Accuracy"] == pytest.approx(expected, abs=1e-12)


def test_regression_default_metric_is_mae_and_matches_river() -> None:
    stream = list(itertools.islice(datasets.synth.Friedman(seed=3), 500))
    model = preprocessing.StandardScaler() | linear_model.LinearRegression()
    evaluator = ProgressiveEvaluator(model, build_metrics((), model))
    assert list(evaluator.metrics) == ["MAE"]
    for x, y in stream:
        evaluator.learn(x, y)
    expected = _oracle(
        preprocessing.StandardScaler() | linear_model.LinearRegression(), metrics.MAE(), stream
    )
    assert evaluator.values()["MAE"] == pytest.approx(expected, abs=1e-12)


def test_incompatible_metric_is_refused() -> None:
    with pytest.raises(ConfigError, match="does not work"):
        ProgressiveEvaluator(linear_model.LinearRegression(), {"ROCAUC": metrics.ROCAUC()})
