"""A schema registry that goes away under a named trainer of an Avro topic, and comes back.

The test runs a registry of its own (the session's is shared). The local registry keeps its
schemas in memory, so a restarted one is empty: the test registers the same schemas again, in
the same order, and checks that they get the ids the records on the topic carry (a fresh
registry numbers its schemas from the start again) - what an operator of an in-memory
registry has to do, and what `produce` does when it runs again.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from river import datasets, evaluate, linear_model, metrics, preprocessing
from topics import fill
from trainers import train_command, trainer_env

from streamtrain.config import KafkaSettings
from streamtrain.errors import SchemaRegistryUnreachable
from streamtrain.formats.encoding import BOOLEAN, DOUBLE, LONG, Field, RecordEncoder, RecordSchema
from streamtrain.formats.settings import FormatSettings
from streamtrain.schema_registry import LocalSchemaRegistry
from streamtrain.state.keys import SigningKey
from streamtrain.state.store import CheckpointStore

pytestmark = pytest.mark.kafka

SECRET = "registry-outage-test-secret-0123456789"
KEY = SigningKey(SECRET.encode(), "STREAMTRAIN_SECRET")
TARGET = "is_phishing"
# Version 2 of the record adds this feature (nullable, default null): BACKWARD compatible.
ADDED = "empty_server_form_handler"
REGISTRY_WAIT = 3.0


def _schemas() -> tuple[RecordSchema, RecordSchema]:
    x, _ = next(iter(datasets.Phishing()))
    kinds = {name: LONG if isinstance(value, int) else DOUBLE for name, value in x.items()}
    v1 = tuple(Field(name, kind) for name, kind in kinds.items() if name != ADDED)
    target = Field(TARGET, BOOLEAN)
    return RecordSchema((*v1, target)), RecordSchema((*v1, Field(ADDED, DOUBLE, True), target))


def _encoders(url: str, topic: str) -> tuple[RecordEncoder, RecordEncoder]:
    settings = FormatSettings(format="avro", schema_registry=url)
    v1, v2 = (RecordEncoder(settings, topic, schema) for schema in _schemas())
    v1.register()
    v2.register()
    return v1, v2


def _end_offset(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "end-offsets"})
    try:
        return int(consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1])
    finally:
        consumer.close()


def _checkpoint(bootstrap: str, name: str, ckpt: str) -> Any:
    store = CheckpointStore(KafkaSettings(bootstrap_servers=bootstrap), KEY, ckpt)
    opened = store.latest(name)
    return opened.header if opened is not None else None


@pytest.mark.timeout(600)  # a registry of its own, started twice (about 15 s each, idle)
def test_registry_down_mid_run_stops_the_trainer_and_a_restart_resumes_as_river(
    kafka_bootstrap: str,
    unique_name: Callable[..., str],
    free_ports: Callable[[int], list[int]],
    tmp_path: Path,
) -> None:
    """Records under a schema id the trainer has not cached arrive while the registry is down:
    it waits ``--registry-wait`` s, stops with exit code 9 and one line, dead-letters nothing
    and has committed only what it decoded; the registry back (same schemas, same ids), the
    trainer resumes, and the end state is River's on every record."""
    events = list(datasets.Phishing())
    first = 600  # under version 1, decoded before the outage; the rest under version 2
    topic, name, ckpt = unique_name("outage"), unique_name("outage-model"), unique_name("ckpt")
    (port,) = free_ports(1)
    registry = LocalSchemaRegistry(data_dir=tmp_path / "registry", port=port)
    registry.up(wait_seconds=180)
    try:
        v1, v2 = _encoders(registry.url, topic)
        ids = (v1.schema_id, v2.schema_id)
        fill(kafka_bootstrap, topic, [v1({**x, TARGET: y}) for x, y in events[:first]])
        cmd = train_command(
            kafka_bootstrap, topic, name, ckpt, "--format", "avro",
            "--schema-registry", registry.url, "--target", TARGET,
            "--registry-wait", str(REGISTRY_WAIT), "--metrics-topic", "",
        )  # fmt: skip
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=trainer_env(SECRET)
        )
        try:
            deadline = time.monotonic() + 120
            while (header := _checkpoint(kafka_bootstrap, name, ckpt)) is None or (
                header.events_learned < first
            ):
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "the trainer did not learn version 1"
                time.sleep(0.2)

            rest = [v2({**x, TARGET: y}) for x, y in events[first:]]  # the serializer asks it
            registry.down()
            outage = time.monotonic()
            fill(kafka_bootstrap, topic, rest, append=True)
            _out, err = proc.communicate(timeout=90)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        waited = time.monotonic() - outage
        assert proc.returncode == SchemaRegistryUnreachable.exit_code, err
        assert REGISTRY_WAIT <= waited < 60
        last = err.strip().splitlines()[-1]
        assert last.startswith("streamtrain: error:") and "schema registry" in last, err
        assert "Traceback" not in err
        # Nothing dead-lettered for the outage (not even in an aborted transaction), nothing
        # committed past the version-1 records it decoded.
        assert _end_offset(kafka_bootstrap, f"{topic}.dlq") == 0
        header = _checkpoint(kafka_bootstrap, name, ckpt)
        assert header.offsets == {topic: {0: first}} and header.events_learned == first

        registry.up(wait_seconds=180)
        again = _encoders(registry.url, topic)
        assert (again[0].schema_id, again[1].schema_id) == ids
        summary_path = tmp_path / "summary.json"
        resumed = subprocess.run(
            [*cmd, "--exit-when-idle", "2", "--summary", str(summary_path)],
            capture_output=True,
            text=True,
            env=trainer_env(SECRET),
            timeout=120,
        )
    finally:
        registry.down()
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(summary_path.read_text())
    assert summary["restored_from"] is not None
    assert summary["events_learned"] == len(events)
    assert summary["dead_letter_reasons"] == {}
    decoded = [
        ({k: v for k, v in x.items() if k != ADDED} if i < first else x, y)
        for i, (x, y) in enumerate(events)
    ]
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    oracle = evaluate.progressive_val_score(decoded, model, metrics.ROCAUC()).get()
    assert summary["metrics"]["ROCAUC"] == pytest.approx(oracle, abs=1e-12)
