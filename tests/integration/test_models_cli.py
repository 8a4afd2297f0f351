"""``predict`` and ``models`` read named models' committed checkpoints."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from river import datasets

from streamtrain.cli.main import main
from streamtrain.config import KafkaSettings
from streamtrain.data.events import encode_event
from streamtrain.state.keys import SigningKey
from streamtrain.state.store import CheckpointStore

pytestmark = pytest.mark.kafka

SECRET = "models-cli-test-secret-0123456789"


def test_predict_and_models(
    kafka_bootstrap: str,
    unique_name: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("STREAMTRAIN_SECRET", SECRET)
    topic, name, ckpt = unique_name("pm"), unique_name("model"), unique_name("ckpt")
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    phishing = list(datasets.Phishing())
    for x, y in phishing:
        producer.produce(topic, value=encode_event(x, y))
    assert producer.flush(30) == 0
    common = ["--checkpoint-topic", ckpt, "--bootstrap-servers", kafka_bootstrap]
    train = ["train", "--name", name, "--topic", topic, "--exit-when-idle", "1.5", "--view", "none"]
    assert main([*train, *common]) == 0
    capsys.readouterr()

    probes = [x for x, _ in phishing[:5]]
    lines = [
        json.dumps({"x": probes[0]}),
        json.dumps(probes[1]),  # a bare features object is accepted too
        "not json",
        json.dumps({"x": {"a": "text"}}),
        *(json.dumps({"x": x}) for x in probes[2:]),
    ]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    code = main(["predict", "--name", name, *common])
    out, err = capsys.readouterr()
    assert code == 1  # two bad lines
    answers = [json.loads(line) for line in out.splitlines()]
    assert len(answers) == len(lines)  # one answer per input line, errors in place

    store = CheckpointStore(
        KafkaSettings(bootstrap_servers=kafka_bootstrap),
        SigningKey(SECRET.encode(), "test"),
        ckpt,
    )
    from streamtrain.serving.snapshot import ModelSnapshot

    snapshot = ModelSnapshot.latest(store, name)
    good = [answers[0], answers[1], *answers[4:]]
    for x, answer in zip(probes, good, strict=True):
        proba = snapshot.model.predict_proba_one(x)
        assert answer["probabilities"] == {
            "true": proba[True],
            "false": proba[False],
        }
        assert answer["prediction"] == (proba[True] > proba[False])
        assert answer["model_version"] == f"{topic}:0@1250"
        assert answer["events_learned"] == 1250
    assert answers[2]["reason"] == "undecodable" and answers[2]["line"] == 3
    assert answers[3]["reason"] == "bad-features"
    assert "2 input line(s)" in err

    assert main(["models", "--json", *common]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    (row,) = [r for r in rows if r["name"] == name]
    assert row["events_learned"] == 1250
    assert row["version"] == f"{topic}:0@1250"
    assert 0.9 < row["metrics"]["ROCAUC"] < 1.0

    assert main(["predict", "--name", unique_name("nobody"), *common]) == 4
    assert "no checkpoint of model" in capsys.readouterr().err
