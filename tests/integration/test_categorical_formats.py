"""Records with categorical features (strings) in each registry format: Agrawal's loan
records, their categories as strings, written as Avro, Protobuf and JSON Schema, train a
model with a categorical branch exactly as River does on the decoded records."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from river import compose, evaluate, linear_model, metrics, preprocessing
from river.datasets import synth
from topics import fill

from streamtrain.cli.main import main
from streamtrain.formats.encoding import (
    BOOLEAN,
    DOUBLE,
    LONG,
    STRING,
    Field,
    RecordEncoder,
    RecordSchema,
)
from streamtrain.formats.settings import FormatSettings

pytestmark = pytest.mark.kafka

SPEC = (
    "(SelectType(numbers.Number) | StandardScaler) + (SelectType(str) | OneHotEncoder)"
    " | LogisticRegression"
)
SCHEMA = RecordSchema(
    (
        Field("salary", DOUBLE),
        Field("age", LONG),
        Field("car", STRING),
        Field("zipcode", STRING),
        Field("elevel", STRING),
        Field("approved", BOOLEAN),
    )
)


def _loans(n: int) -> list[tuple[dict[str, Any], bool]]:
    rows = synth.Agrawal(classification_function=2, seed=5).take(n)
    return [
        (
            {
                "salary": row["salary"],
                "age": row["age"],
                "car": f"car{row['car']}",
                "zipcode": f"zip{row['zipcode']}",
                "elevel": f"level{row['elevel']}",
            },
            bool(label),
        )
        for row, label in rows
    ]


def test_categorical_records_in_every_registry_format_train_as_river(
    kafka_bootstrap: str, schema_registry: str, unique_name: Callable[..., str], tmp_path: Path
) -> None:
    events = _loans(1_000)
    numeric = compose.SelectType(numbers.Number) | preprocessing.StandardScaler()
    categorical = compose.SelectType(str) | preprocessing.OneHotEncoder()
    oracle = evaluate.progressive_val_score(
        events, (numeric + categorical) | linear_model.LogisticRegression(), metrics.ROCAUC()
    ).get()
    results = {}
    for fmt in ("avro", "protobuf", "jsonschema"):
        topic = unique_name(f"loans-{fmt}")
        encode = RecordEncoder(
            FormatSettings(format=fmt, schema_registry=schema_registry), topic, SCHEMA
        )
        encode.register()
        fill(kafka_bootstrap, topic, [encode({**x, "approved": y}) for x, y in events])
        summary = tmp_path / f"{fmt}.json"
        code = main(
            [
                "train", "--topic", topic, "--format", fmt, "--schema-registry", schema_registry,
                "--target", "approved", "--model", SPEC, "--exit-when-idle", "2",
                "--view", "none", "--metrics-topic", "", "--summary", str(summary),
                "--bootstrap-servers", kafka_bootstrap,
            ]
        )  # fmt: skip
        assert code == 0
        run = orjson.loads(summary.read_bytes())
        assert run["events_learned"] == len(events), fmt
        assert run["dead_letter_reasons"] == {}, fmt
        results[fmt] = run["metrics"]["ROCAUC"]
    assert results["avro"] == results["protobuf"] == results["jsonschema"]
    assert results["avro"] == pytest.approx(oracle, abs=1e-12)
    assert oracle > 0.6  # the categories carry signal: the model learned from them
