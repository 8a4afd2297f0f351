"""kill -9 of a named trainer while its Avro topic moves to a new schema version.

Loan records with categorical columns as strings, written under version 1, then under a
BACKWARD-compatible version 2 that adds a nullable field (default null) - with a late
producer still on version 1 now and then. The killed-and-restarted model must end bit for bit
where an uninterrupted one ends, and score as River on the decoded records.
"""

from __future__ import annotations

import itertools
import numbers
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from river import compose, evaluate, linear_model, metrics, preprocessing
from river.datasets import synth
from topics import fill
from trainers import run_to_end, train_command, trainer_env

from streamtrain.config import KafkaSettings
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
from streamtrain.state.envelope import load_state
from streamtrain.state.keys import SigningKey
from streamtrain.state.store import CheckpointStore

pytestmark = pytest.mark.kafka

SECRET = "evolving-kill-test-secret-0123456789"
KEY = SigningKey(SECRET.encode(), "STREAMTRAIN_SECRET")
SPEC = (
    "(SelectType(numbers.Number) | StandardScaler) + (SelectType(str) | OneHotEncoder)"
    " | LogisticRegression"
)
EVENTS = 4_000
V2_FROM = 1_500  # version 2 from this event on (every 7th still written under version 1)


def _oracle_model() -> Any:
    numeric = compose.SelectType(numbers.Number) | preprocessing.StandardScaler()
    categorical = compose.SelectType(str) | preprocessing.OneHotEncoder()
    return (numeric + categorical) | linear_model.LogisticRegression()


def _stream(url: str, topic: str) -> tuple[list[bytes], list[tuple[dict[str, Any], bool]]]:
    """The topic's values and what River learns from them (the decoded features, in order)."""
    settings = FormatSettings(format="avro", schema_registry=url)
    common = (
        Field("salary", DOUBLE),
        Field("age", LONG),
        Field("car", STRING),
        Field("zipcode", STRING),
        Field("elevel", STRING),
    )
    v1 = RecordEncoder(settings, topic, RecordSchema((*common, Field("approved", BOOLEAN))))
    v2 = RecordEncoder(
        settings,
        topic,
        RecordSchema((*common, Field("commission", DOUBLE, True), Field("approved", BOOLEAN))),
    )
    v1.register()
    assert v2.register() != v1.schema_id  # a new version, accepted as compatible
    values: list[bytes] = []
    learned: list[tuple[dict[str, Any], bool]] = []
    for i, (row, label) in enumerate(synth.Agrawal(classification_function=2, seed=3).take(EVENTS)):
        x = {
            "salary": row["salary"],
            "age": row["age"],
            "car": f"car{row['car']}",
            "zipcode": f"zip{row['zipcode']}",
            "elevel": f"level{row['elevel']}",
        }
        if i >= V2_FROM and i % 7:
            commission = row["commission"] or None  # null when 0: a missing value
            values.append(v2({**x, "commission": commission, "approved": bool(label)}))
            if commission is not None:
                x["commission"] = commission
        else:
            values.append(v1({**x, "approved": bool(label)}))
        learned.append((x, bool(label)))
    return values, learned


def _latest(bootstrap: str, name: str, ckpt: str) -> tuple[int, Any]:
    opened = CheckpointStore(KafkaSettings(bootstrap_servers=bootstrap), KEY, ckpt).latest(name)
    if opened is None:
        return 0, None
    return opened.header.events_learned, load_state(opened)["model"]


@pytest.mark.timeout(600)  # three restarts and two full runs, on a loaded machine
def test_kill_9_during_a_schema_change_ends_as_an_uninterrupted_run_and_river(
    kafka_bootstrap: str, schema_registry: str, unique_name: Callable[..., str], tmp_path: Path
) -> None:
    topic, ckpt = unique_name("evolving"), unique_name("ckpt")
    killed, steady = unique_name("killed"), unique_name("steady")
    values, learned = _stream(schema_registry, topic)
    fill(kafka_bootstrap, topic, values)

    def command(name: str) -> list[str]:
        return train_command(
            kafka_bootstrap, topic, name, ckpt, "--format", "avro",
            "--schema-registry", schema_registry, "--target", "approved", "--model", SPEC,
            "--metrics-topic", "",
        )  # fmt: skip

    # Each run kills itself at a crash point (faults.py), always mid-stream: a timed kill
    # lands after the last event when the machine is quick (4,000 events take under a second).
    # 15 batches of 100 and a commit every 500 events: each run moves the checkpoint on, by
    # less than the stream; runs go on until one was killed past the schema change.
    progress: list[int] = []
    while not progress or progress[-1] <= V2_FROM:
        assert len(progress) < 8, progress
        proc = subprocess.run(
            command(killed),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**trainer_env(SECRET), "STREAMTRAIN_FAULT": "after-learn:15"},
            timeout=180,
        )
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        progress.append(_latest(kafka_bootstrap, killed, ckpt)[0])
    print("events learned after each kill:", progress)
    assert V2_FROM < progress[-1] < EVENTS, progress  # killed mid-stream, past the change

    after_kills = run_to_end(command(killed), tmp_path / "killed.json", trainer_env(SECRET))
    uninterrupted = run_to_end(command(steady), tmp_path / "steady.json", trainer_env(SECRET))
    for summary in (after_kills, uninterrupted):
        assert summary["events_learned"] == EVENTS
        assert summary["dead_letter_reasons"] == {}
    assert after_kills["metrics"] == uninterrupted["metrics"]  # to the last bit
    _, model = _latest(kafka_bootstrap, killed, ckpt)
    _, reference = _latest(kafka_bootstrap, steady, ckpt)
    for x, _y in itertools.islice(learned, 0, EVENTS, 37):
        assert model.predict_proba_one(x) == reference.predict_proba_one(x)
    assert "commission" in model["LogisticRegression"].weights  # the added field is learned
    oracle = evaluate.progressive_val_score(learned, _oracle_model(), metrics.ROCAUC()).get()
    assert after_kills["metrics"]["ROCAUC"] == pytest.approx(oracle, abs=1e-12)
