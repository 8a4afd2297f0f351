"""Unlabelled events in the training topic: predicted (not learned), answers on a topic."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from river import evaluate, linear_model, metrics, preprocessing
from unlabelled import (
    check_predictions,
    fill,
    labelled,
    mixed_stream,
    read_predictions,
    replay_with_predictions,
)

from streamtrain.config import KafkaSettings
from streamtrain.fastpath import fast_evaluator_for
from streamtrain.train.settings import TrainSettings
from streamtrain.train.trainer import Trainer

pytestmark = pytest.mark.kafka


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "river-path"])
def test_unlabelled_events_are_predicted_not_learned(
    kafka_bootstrap: str, unique_name: Callable[..., str], fast_path: bool
) -> None:
    topic = unique_name("unlabelled")
    records = mixed_stream(3000)
    fill(kafka_bootstrap, topic, records)
    if fast_path:  # the compiled kernel loaded before the first batch, so it answers them
        model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
        assert fast_evaluator_for(model, {"ROCAUC": metrics.ROCAUC()}, wait=True) is not None
    trainer = Trainer(
        KafkaSettings(bootstrap_servers=kafka_bootstrap),
        TrainSettings(topic=topic, exit_when_idle=2.0, fast_path=fast_path, batch_size=64),
    )
    summary = trainer.run()
    fast = trainer.tasks[""].fast
    if fast_path:
        assert fast is not None and fast.batches > 0 and fast.fallbacks == 0

    values: list[bytes | None] = [v for _, v in records]
    learnable = labelled(values)
    _model, expected = replay_with_predictions(values)
    assert summary.events_learned == len(learnable)
    assert summary.events_predicted == len(expected) > 300
    bad = len(values) - len(learnable) - len(expected)
    assert summary.dead_letter_reasons == {"bad-features": bad} and bad > 0
    # Unlabelled events leave the progressive metric alone: it is River's on the labelled ones.
    oracle = evaluate.progressive_val_score(
        learnable,
        preprocessing.StandardScaler() | linear_model.LogisticRegression(),
        metrics.ROCAUC(),
    )
    assert summary.metrics["ROCAUC"] == oracle.get()
    got = read_predictions(kafka_bootstrap, f"{topic}.predictions", len(expected))
    check_predictions(topic, records, got, None)
