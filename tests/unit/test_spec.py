"""Spec strings are parsed against allow-lists, never evaluated."""

from __future__ import annotations

import pytest
from river import compose, linear_model, optim, preprocessing

from streamtrain.errors import ConfigError
from streamtrain.models.spec import (
    dataset_registry,
    estimator_registry,
    metric_registry,
    parse_spec,
)


def test_default_pipeline() -> None:
    model = parse_spec("StandardScaler | LogisticRegression", estimator_registry())
    assert isinstance(model, compose.Pipeline)
    steps = list(model.steps.values())
    assert isinstance(steps[0], preprocessing.StandardScaler)
    assert isinstance(steps[1], linear_model.LogisticRegression)


def test_literal_and_nested_arguments() -> None:
    model = parse_spec(
        "preprocessing.StandardScaler() | LogisticRegression(l2=0.01, optimizer=optim.SGD(0.05))",
        estimator_registry(),
    )
    lr = list(model.steps.values())[1]
    assert lr.l2 == 0.01
    assert isinstance(lr.optimizer, optim.SGD)
    assert lr.optimizer.learning_rate == 0.05


@pytest.mark.parametrize(
    "spec",
    [
        "__import__('os').system('true')",
        "open('/etc/passwd')",
        "StandardScaler.__class__",
        "LogisticRegression(l2=(1).__class__)",
        "[c for c in ()]",
        "lambda: 0",
        "LogisticRegression()[0]",
        "LogisticRegression(**{'l2': 1})",
        "LogisticRegression(*[1])",
        "",
        "LogisticRegression(",
        "LogisticRegression(no_such_argument=1)",
    ],
)
def test_refused_specs(spec: str) -> None:
    with pytest.raises(ConfigError):
        parse_spec(spec, estimator_registry())


def test_metrics_and_datasets() -> None:
    metric = parse_spec("ROCAUC(n_thresholds=20)", metric_registry())
    assert metric.n_thresholds == 20
    assert "Phishing" in dataset_registry().names()
    # Datasets that need a download are not offered.
    assert "CreditCard" not in dataset_registry().names()
    assert "synth.Agrawal" in dataset_registry().names()
