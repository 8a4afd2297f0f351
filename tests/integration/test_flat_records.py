"""Flat records on a real broker: ``train --target`` with categorical columns, as River."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from joined import fill_features, fill_labels
from river import compose, datasets, evaluate, linear_model, metrics, preprocessing
from river.datasets import synth
from topics import fill, read_log

from streamtrain.cli.main import main
from streamtrain.config import KafkaSettings
from streamtrain.models.prediction import label_key
from streamtrain.records.shape import flatten
from streamtrain.serving.app import BackgroundServer, create_kafka_app
from streamtrain.serving.snapshot import ModelSnapshot
from streamtrain.state.keys import SigningKey
from streamtrain.state.store import CheckpointStore
from streamtrain.train.settings import TrainSettings
from streamtrain.train.trainer import Trainer

pytestmark = pytest.mark.kafka

SPEC = (
    "(Select('applicant.salary', 'applicant.age', 'owns_home') | StandardScaler)"
    " + (Select('profile.car', 'profile.zipcode', 'profile.elevel') | OneHotEncoder)"
    " | LogisticRegression"
)


def _oracle_model() -> Any:
    """The spec, built with River's own constructors (not our parser)."""
    numbers = compose.Select("applicant.salary", "applicant.age", "owns_home")
    words = compose.Select("profile.car", "profile.zipcode", "profile.elevel")
    union = (numbers | preprocessing.StandardScaler()) + (words | preprocessing.OneHotEncoder())
    return union | linear_model.LogisticRegression()


def _agrawal(n: int) -> tuple[list[bytes], list[tuple[dict[str, Any], bool]], int, list[str]]:
    """Nested loan records with categorical columns as strings, some poison and some without
    a decision; and the flat ``(x, y)`` River learns from, written out by hand."""
    values: list[bytes] = []
    learned: list[tuple[dict[str, Any], bool]] = []
    poison = 0
    undecided: list[str] = []
    stream = synth.Agrawal(classification_function=5, seed=7).take(n)
    for i, (row, label) in enumerate(stream):
        owns = row["hyears"] > 10
        record = {
            "meta": {"id": f"loan-{i}"},
            "applicant": {
                "salary": row["salary"],
                "age": row["age"],
                "commission": row["commission"] or None,  # missing when 0
            },
            "profile": {
                "car": f"car{row['car']}",
                "zipcode": f"zip{row['zipcode']}",
                "elevel": f"level{row['elevel']}",
            },
            "owns_home": owns,
            "loan": row["loan"],
            "decision": {"approved": bool(label)},
        }
        if i % 50 == 17:  # an array is no feature value
            values.append(orjson.dumps({**record, "tags": ["a"]}))
            poison += 1
        if i % 40 == 3:  # no decision yet: predicted, not learned
            values.append(orjson.dumps({k: v for k, v in record.items() if k != "decision"}))
            undecided.append(f"loan-{i}")
        values.append(orjson.dumps(record))
        x = {
            "applicant.salary": row["salary"],
            "applicant.age": row["age"],
            "owns_home": int(owns),
            "profile.car": f"car{row['car']}",
            "profile.zipcode": f"zip{row['zipcode']}",
            "profile.elevel": f"level{row['elevel']}",
        }
        learned.append((x, bool(label)))
    return values, learned, poison, undecided


def test_categorical_flat_records_learn_as_river(
    kafka_bootstrap: str, unique_name: Callable[..., str], tmp_path: Path
) -> None:
    topic = unique_name("loans")
    values, learned, poison, undecided = _agrawal(600)
    fill(kafka_bootstrap, topic, values)
    summary_path = tmp_path / "summary.json"
    code = main(
        [
            "train",
            "--topic",
            topic,
            "--model",
            SPEC,
            "--metric",
            "ROCAUC",
            "--metric",
            "Accuracy",
            "--target",
            "decision.approved",
            "--id-field",
            "meta.id",
            "--drop",
            "loan,applicant.comm*",
            "--exit-when-idle",
            "2",
            "--summary",
            str(summary_path),
            "--view",
            "none",
            "--bootstrap-servers",
            kafka_bootstrap,
        ]
    )
    assert code == 0
    summary = json.loads(summary_path.read_text())
    assert summary["events_learned"] == len(learned) == 600
    assert summary["events_predicted"] == len(undecided) > 0
    assert summary["dead_letter_reasons"] == {"bad-features": poison}
    rocauc, accuracy = (
        evaluate.progressive_val_score(learned, _oracle_model(), metric).get()
        for metric in (metrics.ROCAUC(), metrics.Accuracy())
    )
    assert summary["metrics"]["ROCAUC"] == pytest.approx(rocauc, abs=1e-12)
    assert summary["metrics"]["Accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert 0.65 < rocauc < 1  # it learned something from the categories and numbers
    # Undecided records were predicted, their id taken from --id-field.
    predictions = [orjson.loads(v) for v in read_log(kafka_bootstrap, f"{topic}.predictions", 1)[0]]
    assert [p["id"] for p in predictions] == undecided


def test_phishing_as_flat_records_equals_its_x_y_run(
    kafka_bootstrap: str, unique_name: Callable[..., str]
) -> None:
    events = list(datasets.Phishing())
    seed, flat = unique_name("phishing-xy"), unique_name("phishing-flat")
    fill(kafka_bootstrap, seed, [orjson.dumps({"x": x, "y": y}) for x, y in events])
    fill(kafka_bootstrap, flat, [orjson.dumps({**x, "is_phishing": y}) for x, y in events])
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    runs = [
        Trainer(kafka, TrainSettings(topic=seed, exit_when_idle=2.0)).run(),
        Trainer(kafka, TrainSettings(topic=flat, exit_when_idle=2.0, target="is_phishing")).run(),
    ]
    for summary in runs:
        assert summary.events_learned == 1250 and summary.dead_lettered == 0
    assert runs[0].metrics == runs[1].metrics  # bit for bit
    oracle = evaluate.progressive_val_score(
        events, preprocessing.StandardScaler() | linear_model.LogisticRegression(), metrics.ROCAUC()
    )
    assert runs[1].metrics["ROCAUC"] == pytest.approx(oracle.get(), abs=1e-12)


def test_flat_labels_joined_later_by_id_field_score_as_river(
    kafka_bootstrap: str, unique_name: Callable[..., str]
) -> None:
    """Flat feature records and flat label records, joined by --id-field as River's
    progressive validation with each label's delay."""
    stream = list(datasets.Phishing())[:400]
    rng = random.Random(5)
    delays = [rng.randint(0, 100) for _ in stream]
    features, labels = unique_name("flat-feat"), unique_name("flat-lab")
    fill_features(
        kafka_bootstrap, features, stream, 1, lambda i, x: orjson.dumps({"ref": {"n": i}, **x})
    )
    fill_labels(
        kafka_bootstrap,
        labels,
        stream,
        delays,
        1,
        lambda i, y: orjson.dumps({"ref": {"n": i}, "verdict": {"phishing": y}}),
    )
    settings = TrainSettings(
        topic=features,
        labels_topic=labels,
        target="verdict.phishing",
        id_field="ref.n",
        exit_when_idle=2.0,
    )
    summary = Trainer(KafkaSettings(bootstrap_servers=kafka_bootstrap), settings).run()
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    it = iter(delays)
    oracle = evaluate.progressive_val_score(
        stream, model, metrics.ROCAUC(), delay=lambda _x, _y: next(it)
    )
    assert summary.events_learned == len(stream) and summary.dead_lettered == 0
    assert summary.join is not None and summary.join["joined"] == len(stream)
    assert summary.metrics["ROCAUC"] == oracle.get()


def test_a_named_flat_model_resumes_from_its_checkpoint_as_river(
    kafka_bootstrap: str, unique_name: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMTRAIN_SECRET", "flat-records-test-secret-0123456789")
    topic, name, ckpt = unique_name("loans"), unique_name("loans-model"), unique_name("ckpt")
    values, learned, poison, undecided = _agrawal(400)
    fill(kafka_bootstrap, topic, values)
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)

    def run(**stop: Any) -> Any:
        settings = TrainSettings(
            topic=topic,
            name=name,
            checkpoint_topic=ckpt,
            model=SPEC,
            target="decision.approved",
            id_field="meta.id",
            **stop,
        )
        return Trainer(kafka, settings).run()

    first = run(max_events=150)
    assert first.stopped_because == "max-events" and first.events_learned == 150
    final = run(exit_when_idle=2.0)
    assert final.events_learned == len(learned) == 400
    assert final.dead_letter_reasons == {"bad-features": poison}
    assert final.events_predicted == len(undecided)
    expected = evaluate.progressive_val_score(learned, _oracle_model(), metrics.ROCAUC())
    assert final.metrics["ROCAUC"] == pytest.approx(expected.get(), abs=1e-12)


def test_a_flat_model_with_categorical_features_is_served_as_its_own_predictions(
    kafka_bootstrap: str, unique_name: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``serve``'s /predict takes the string (and boolean, null, nested) values a flat record
    gives in training when the model encodes them, and answers as the model's own
    ``predict_proba_one`` on the features the trainer would have made of that record."""
    secret = "flat-serve-test-secret-0123456789"
    monkeypatch.setenv("STREAMTRAIN_SECRET", secret)
    topic, name, ckpt = unique_name("loans"), unique_name("loans-served"), unique_name("ckpt")
    values, learned, _poison, _undecided = _agrawal(300)
    fill(kafka_bootstrap, topic, values)
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    settings = TrainSettings(
        topic=topic, name=name, checkpoint_topic=ckpt, model=SPEC, target="decision.approved",
        id_field="meta.id", drop=("loan", "applicant.comm*"), exit_when_idle=2.0,
    )  # fmt: skip
    assert Trainer(kafka, settings).run().events_learned == len(learned)
    key = SigningKey(secret.encode(), "STREAMTRAIN_SECRET")
    model = ModelSnapshot.latest(CheckpointStore(kafka, key, ckpt), name).model

    app = create_kafka_app(kafka, key, name, checkpoint_topic=ckpt, metrics_topic=None)
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        deadline = time.monotonic() + 60
        while http.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "serve loaded no model within 60 s"
            time.sleep(0.1)
        instances = [
            {
                "applicant": {"salary": 95_000.0 + 500 * i, "age": 30 + i % 40},
                "owns_home": i % 3 == 0,
                "profile": {"car": f"car{i % 20 + 1}", "zipcode": f"zip{i % 9}",
                            "elevel": f"level{i % 5}"},
                "coupon": None,
            }
            for i in range(25)
        ]  # fmt: skip
        instances.append(  # names already flat, a category never seen in training
            {
                "applicant.salary": 20_000.0, "applicant.age": 41, "owns_home": False,
                "profile.car": "a car never seen", "profile.zipcode": "zip0",
                "profile.elevel": "level0",
            }
        )  # fmt: skip
        answers = http.post("/predict", json=[{"x": x} for x in instances])
        assert answers.status_code == 200, answers.text
        for x, answer in zip(instances, answers.json(), strict=True):
            flat = {k: int(v) if type(v) is bool else v for k, v in flatten(x).items()}
            flat = {k: v for k, v in flat.items() if v is not None}
            proba = model.predict_proba_one(flat)
            assert answer["probabilities"] == {label_key(k): p for k, p in proba.items()}
            assert answer["prediction"] == model.predict_one(flat)
        # The limits still hold: a list is no feature value.
        refused = http.post("/predict", json={"x": {"profile.car": ["car1"]}})
        assert (refused.status_code, refused.json()["reason"]) == (422, "bad-features")
