"""Avro, Protobuf and JSON Schema topics through a real broker and a real schema registry:
``produce --format`` writes Phishing, the decoders read every record back as the source event;
a compatible schema version is read mid-stream, an incompatible one is refused at produce
time, an unknown schema id and an unreachable registry fail as they should."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from confluent_kafka.schema_registry.error import SchemaRegistryError as ClientRegistryError
from river import datasets, evaluate, linear_model, metrics, preprocessing
from topics import fill, read_log

from streamtrain.broker.process import free_ports
from streamtrain.cli.main import main
from streamtrain.errors import ConfigError, SchemaRegistryUnreachable
from streamtrain.formats import decoder
from streamtrain.formats.decoding import UNKNOWN_SCHEMA, RecordUndecodable
from streamtrain.formats.encoding import (
    DOUBLE,
    LONG,
    STRING,
    Field,
    RecordEncoder,
    RecordSchema,
)
from streamtrain.formats.settings import FormatSettings

pytestmark = pytest.mark.kafka


@pytest.mark.parametrize("fmt", ["avro", "protobuf", "jsonschema"])
def test_phishing_produced_in_a_registry_format_decodes_to_the_source_records(
    fmt: str, kafka_bootstrap: str, schema_registry: str, unique_name: Callable[..., str]
) -> None:
    topic = unique_name(fmt)
    produced = main(
        [
            "produce", "--topic", topic, "--dataset", "Phishing", "--format", fmt,
            "--schema-registry", schema_registry, "--target", "is_phishing",
            "--bootstrap-servers", kafka_bootstrap, "-q",
        ]
    )  # fmt: skip
    assert produced == 0
    values = read_log(kafka_bootstrap, topic, 1)[0]
    expected = [{**x, "is_phishing": y} for x, y in datasets.Phishing()]
    for chosen in (fmt, "auto"):
        decode = decoder(FormatSettings(format=chosen, schema_registry=schema_registry))
        assert [decode(value, topic) for value in values] == expected


def test_a_compatible_version_is_read_mid_stream_and_an_incompatible_one_refused(
    kafka_bootstrap: str,
    schema_registry: str,
    unique_name: Callable[..., str],
    tmp_path: Path,
) -> None:
    topic = unique_name("evolve")
    settings = FormatSettings(format="avro", schema_registry=schema_registry)
    v1 = RecordEncoder(settings, topic, RecordSchema((Field("a", DOUBLE), Field("y", LONG))))
    # Version 2 adds a field with a default (null): BACKWARD compatible.
    v2 = RecordEncoder(
        settings,
        topic,
        RecordSchema((Field("a", DOUBLE), Field("b", DOUBLE, nullable=True), Field("y", LONG))),
    )
    v1.register()
    first = [v1({"a": 0.5, "y": 1}), v1({"a": 1.5, "y": 0})]
    assert v2.register() != v1.schema_id
    unknown = b"\x00" + (2**31 - 1).to_bytes(4, "big") + first[0][5:]
    then = [v2({"a": 2.5, "b": 7.0, "y": 1}), unknown, v1({"a": 3.5, "y": 0})]
    values = fill(kafka_bootstrap, topic, first + then)[0]

    decode = decoder(settings)  # one reader for the whole stream, as a running trainer
    decoded: list[object] = []
    for value in values:
        try:
            decoded.append(decode(value, topic))
        except RecordUndecodable as err:
            decoded.append(err.reason)
    assert decoded == [
        {"a": 0.5, "y": 1},
        {"a": 1.5, "y": 0},
        {"a": 2.5, "b": 7.0, "y": 1},
        UNKNOWN_SCHEMA,
        {"a": 3.5, "y": 0},
    ]

    # A field changing type is not BACKWARD compatible: the registry refuses it (409), and
    # produce stops before writing anything.
    changed = RecordEncoder(settings, topic, RecordSchema((Field("a", STRING), Field("y", LONG))))
    with pytest.raises(ConfigError) as refused_version:
        changed.register()
    cause = refused_version.value.__cause__
    assert isinstance(cause, ClientRegistryError) and cause.http_status_code == 409
    incompatible = tmp_path / "incompatible.jsonl"
    incompatible.write_bytes(orjson.dumps({"a": "text", "y": 1}) + b"\n")
    refused = main(
        [
            "produce", "--topic", topic, "--file", str(incompatible), "--target", "y",
            "--format", "avro", "--schema-registry", schema_registry,
            "--bootstrap-servers", kafka_bootstrap, "-q",
        ]
    )  # fmt: skip
    assert refused == 2
    assert len(read_log(kafka_bootstrap, topic, 1)[0]) == len(values)


def test_an_unreachable_registry_is_not_the_records_fault(
    schema_registry: str, free_ports: Callable[[int], list[int]]
) -> None:
    topic = "unreachable"
    encoder = RecordEncoder(
        FormatSettings(format="avro", schema_registry=schema_registry),
        topic,
        RecordSchema((Field("a", DOUBLE),)),
    )
    encoder.register()
    value = encoder({"a": 1.0})
    (port,) = free_ports(1)  # nothing listens there
    decode = decoder(
        FormatSettings(format="avro", schema_registry=f"http://127.0.0.1:{port}", registry_wait=2)
    )
    started = time.monotonic()
    with pytest.raises(SchemaRegistryUnreachable):
        decode(value, topic)
    assert 2 <= time.monotonic() - started < 10
    # A URL that answers 404 for everything is no registry: not every record's unknown schema.
    wrong_path = decoder(FormatSettings(format="avro", schema_registry=schema_registry + "/no"))
    with pytest.raises(SchemaRegistryUnreachable):
        wrong_path(value, topic)


def test_training_on_registry_formats_equals_the_json_run_and_river(
    kafka_bootstrap: str, schema_registry: str, unique_name: Callable[..., str], tmp_path: Path
) -> None:
    """Phishing as Avro, Protobuf and JSON Schema (and one record under an unknown schema id
    in the Avro topic): each trainer scores as the flat JSON run of the same events and as
    River, bit for bit; the unknown id is dead-lettered with its reason."""
    events = list(datasets.Phishing())
    oracle = evaluate.progressive_val_score(
        events, preprocessing.StandardScaler() | linear_model.LogisticRegression(), metrics.ROCAUC()
    ).get()
    flat = unique_name("flat-json")
    fill(kafka_bootstrap, flat, [orjson.dumps({**x, "is_phishing": y}) for x, y in events])
    runs = {"json": _train(kafka_bootstrap, flat, tmp_path / "json.json")}
    for fmt in ("avro", "protobuf", "jsonschema"):
        topic = unique_name(fmt)
        if fmt == "avro":  # first in its log: a record under a schema id nobody registered
            fill(kafka_bootstrap, topic, [b"\x00" + (2**31 - 7).to_bytes(4, "big") + b"\x02"])
        produced = main(
            [
                "produce", "--topic", topic, "--dataset", "Phishing", "--format", fmt,
                "--schema-registry", schema_registry, "--target", "is_phishing",
                "--bootstrap-servers", kafka_bootstrap, "-q",
            ]
        )  # fmt: skip
        assert produced == 0
        summary = tmp_path / f"{fmt}.json"
        runs[fmt] = _train(
            kafka_bootstrap, topic, summary, "--format", fmt, "--schema-registry", schema_registry
        )
    for fmt, run in runs.items():
        assert run["events_learned"] == len(events), fmt
        assert run["metrics"]["ROCAUC"] == runs["json"]["metrics"]["ROCAUC"], fmt
        expected_dead = {"unknown-schema": 1} if fmt == "avro" else {}
        assert run["dead_letter_reasons"] == expected_dead, fmt
    assert runs["json"]["metrics"]["ROCAUC"] == pytest.approx(oracle, abs=1e-12)


def test_training_with_no_registry_stops_with_one_line(
    kafka_bootstrap: str, unique_name: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    topic = unique_name("no-registry")
    fill(kafka_bootstrap, topic, [b"\x00\x00\x00\x00\x01\x02"])
    (dead_port,) = free_ports(1)
    started = time.monotonic()
    code = main(
        [
            "train", "--topic", topic, "--format", "avro", "--target", "y",
            "--schema-registry", f"http://127.0.0.1:{dead_port}", "--registry-wait", "1",
            "--exit-when-idle", "2", "--view", "none", "--metrics-topic", "",
            "--bootstrap-servers", kafka_bootstrap,
        ]
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == SchemaRegistryUnreachable.exit_code
    assert time.monotonic() - started < 60  # bounded: the wait is 1 s, the rest is start-up
    # One line for the error (after the warning that the default model takes numbers only).
    last = err.splitlines()[-1]
    assert last.startswith("streamtrain: error:") and "schema registry" in last, err
    assert "Traceback" not in err


def _train(bootstrap: str, topic: str, summary: Path, *extra: str) -> dict[str, object]:
    code = main(
        [
            "train", "--topic", topic, "--target", "is_phishing", "--exit-when-idle", "2",
            "--view", "none", "--metrics-topic", "", "--summary", str(summary),
            "--bootstrap-servers", bootstrap, *extra,
        ]
    )  # fmt: skip
    assert code == 0
    return dict(orjson.loads(summary.read_bytes()))


def test_avro_features_and_labels_on_two_topics_train_as_their_json_events(
    kafka_bootstrap: str, schema_registry: str, unique_name: Callable[..., str], tmp_path: Path
) -> None:
    """``produce --format avro --labels-topic``: flat feature records (id and features) and
    label records (id and target), each topic with its schema; joined by ``--id-field id``
    they train the model the JSON ``{"id", "x"}`` / ``{"id", "y"}`` events of the same
    schedule train, bit for bit."""
    n, delay = 300, ["--label-delay", "random:0ms..40ms", "--label-drop", "0.1", "--seed", "3"]
    runs = {}
    for fmt in ("json", "avro"):
        topic, labels = unique_name(f"{fmt}-features"), unique_name(f"{fmt}-labels")
        registry = ["--schema-registry", schema_registry] if fmt == "avro" else []
        target = ["--target", "is_phishing"] if fmt == "avro" else []
        produced = main(
            [
                "produce", "--topic", topic, "--labels-topic", labels, "--limit", str(n),
                "--format", fmt, *registry, *target, *delay,
                "--bootstrap-servers", kafka_bootstrap, "-q",
            ]
        )  # fmt: skip
        assert produced == 0
        flat = [*target, "--id-field", "id"] if fmt == "avro" else []
        summary = tmp_path / f"{fmt}.json"
        trained = main(
            [
                "train", "--topic", topic, "--labels-topic", labels, "--format", fmt, *registry,
                *flat, "--exit-when-idle", "2", "--view", "none", "--metrics-topic", "",
                "--summary", str(summary), "--bootstrap-servers", kafka_bootstrap,
            ]
        )  # fmt: skip
        assert trained == 0
        runs[fmt] = orjson.loads(summary.read_bytes())
        if fmt == "avro":
            decode = decoder(FormatSettings(format="avro", schema_registry=schema_registry))
            first = read_log(kafka_bootstrap, topic, 1)[0][0]
            x, _y = next(iter(datasets.Phishing()))
            assert decode(first, topic) == {"id": "0", **x}
            label = decode(read_log(kafka_bootstrap, labels, 1)[0][0], labels)
            assert set(label) == {"id", "is_phishing"}
    for key in ("events_learned", "dead_letter_reasons", "metrics", "join"):
        assert runs["avro"][key] == runs["json"][key], key
    assert 200 < runs["avro"]["events_learned"] < n  # about a tenth of the labels dropped
