"""Kept versions of a named model: ``models history``, ``models rollback``, ``--pin``."""

from __future__ import annotations

import io
import itertools
import json
import pickle
import subprocess
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from confluent_kafka import Producer
from oracle import offline
from river import datasets
from topics import fill
from trainers import train_command, trainer_env

from streamtrain.cli.main import main
from streamtrain.config import KafkaSettings
from streamtrain.data.events import encode_event
from streamtrain.serving.app import BackgroundServer, create_kafka_app
from streamtrain.state.envelope import OpenedCheckpoint
from streamtrain.state.history import VersionNotKept, history_topic
from streamtrain.state.keys import SigningKey
from streamtrain.state.payload import model_of
from streamtrain.state.store import CheckpointStore

pytestmark = pytest.mark.kafka

SECRET = "history-test-secret-0123456789"
KEY = SigningKey(SECRET.encode(), "test")
EVENTS = 3000
PROBES = [x for x, _ in itertools.islice(datasets.synth.Agrawal(seed=999), 20)]


class Model:
    """A model name on a filled topic, driven through the CLI in this process."""

    def __init__(self, bootstrap: str, unique_name: Callable[..., str]) -> None:
        self.topic, self.name, self.ckpt = (unique_name(p) for p in ("hist", "model", "ckpt"))
        stream = itertools.islice(datasets.synth.Agrawal(seed=21), EVENTS)
        self.values = [encode_event(x, y) for x, y in stream]
        fill(bootstrap, self.topic, self.values)
        self.common = ["--checkpoint-topic", self.ckpt, "--bootstrap-servers", bootstrap]
        self.kafka = KafkaSettings(bootstrap_servers=bootstrap)
        self.store = CheckpointStore(self.kafka, KEY, self.ckpt)

    def train(self, *extra: str) -> None:
        # A checkpoint once 1,000 events were learned since the last (never by time): three
        # versions, the last after all 3,000 events.
        flags = ["--checkpoint-every", "1000", "--checkpoint-interval", "600"]
        flags += ["--batch-size", "100", "--exit-when-idle", "1", "--view", "none"]
        argv = ["train", "--name", self.name, "--topic", self.topic, *flags, *self.common, *extra]
        assert main(argv) == 0

    def models(self, *argv: str) -> int:
        return main(["models", *argv, *self.common])

    def latest(self) -> OpenedCheckpoint:
        opened = self.store.latest(self.name)
        assert opened is not None
        return opened

    def versions(self) -> list[OpenedCheckpoint]:
        return list(CheckpointStore(self.kafka, KEY, history_topic(self.ckpt)).history([self.name]))


def _answers(model: Any) -> list[dict[Any, float]]:
    return [model.predict_proba_one(x) for x in PROBES]


@pytest.fixture
def trained(
    kafka_bootstrap: str, unique_name: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> Model:
    monkeypatch.setenv("STREAMTRAIN_SECRET", SECRET)
    model = Model(kafka_bootstrap, unique_name)
    model.train()
    return model


def test_history_lists_versions_and_replay_ends_as_if_never_rolled_forward(
    trained: Model, capsys: pytest.CaptureFixture[str]
) -> None:
    m = trained
    versions = m.versions()
    assert [v.header.sequence for v in versions] == [1, 2, 3]
    learned = [v.header.events_learned for v in versions]
    assert learned == sorted(learned) and learned[0] >= 1000 and learned[-1] == EVENTS
    capsys.readouterr()
    assert m.models("history", m.name) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["v1", "v2", "v3"]
    assert versions[1].header.model_version in lines[1]
    assert f"{learned[1]:,} events" in lines[1]
    assert m.models("history", m.name, "--json") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["events_learned"] for r in rows] == learned

    uninterrupted = m.latest()
    offline_model, offline_auc = offline(m.values)
    assert uninterrupted.header.metrics["ROCAUC"] == offline_auc
    assert m.models("rollback", m.name, "--to", "1", "--replay") == 0
    rolled = m.latest().header
    assert (rolled.sequence, rolled.restored_from) == (4, 1)
    assert rolled.offsets == versions[0].header.offsets
    assert rolled.events_learned == learned[0]
    assert "(rolled back to v1)" in capsys.readouterr().out

    m.train()  # learns every event after v1 again
    replayed = m.latest()
    assert replayed.header.sequence > 4 and replayed.header.restored_from is None
    assert replayed.header.events_learned == EVENTS
    assert replayed.header.metrics == uninterrupted.header.metrics
    assert pickle.dumps(model_of(replayed)) == pickle.dumps(model_of(uninterrupted))
    assert _answers(model_of(replayed)) == _answers(offline_model)


def test_skip_keeps_the_current_offsets_with_the_old_state(trained: Model) -> None:
    m = trained
    v2, current = m.versions()[1], m.latest()
    assert m.models("rollback", m.name, "--to", "2", "--skip") == 0
    now = m.latest()
    assert now.header.offsets == current.header.offsets  # positions of now
    assert now.header.events_learned == v2.header.events_learned  # state of v2
    assert now.payload == v2.payload
    assert now.header.restored_from == 2 and now.header.sequence == 4
    m.train()  # nothing left to learn: it stays the old state
    after = m.latest()
    assert after.header.events_learned == v2.header.events_learned
    assert after.header.offsets == current.header.offsets
    assert _answers(model_of(after)) == _answers(model_of(v2))


def test_pin_serves_an_old_version_while_a_newer_exists(
    trained: Model, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    m = trained
    first = m.versions()[0]
    v1 = model_of(first)
    newest = model_of(m.latest())
    assert _answers(v1) != _answers(newest)

    app = create_kafka_app(m.kafka, KEY, m.name, checkpoint_topic=m.ckpt, metrics_topic=None, pin=1)
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        for x, expected in zip(PROBES, _answers(v1), strict=True):
            answer = http.post("/predict", json={"x": x}).json()
            assert answer["model_version"] == first.header.model_version
            assert answer["probabilities"] == {str(k).lower(): p for k, p in expected.items()}

    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps({"x": PROBES[0]}) + "\n"))
    assert main(["predict", "--name", m.name, "--pin", "1", *m.common]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["events_learned"] == first.header.events_learned


def test_versions_not_kept_are_one_line_errors_and_change_nothing(
    trained: Model, capsys: pytest.CaptureFixture[str]
) -> None:
    m = trained
    before = m.latest()
    capsys.readouterr()
    for argv in (
        ["rollback", m.name, "--to", "9", "--replay"],
        ["rollback", "no-such-model", "--to", "1", "--skip"],
        ["history", "no-such-model"],
    ):
        assert m.models(*argv) == 4, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("streamtrain: error:"), err
    assert main(["predict", "--name", m.name, "--pin", "9", *m.common]) == 4
    assert "version 9" in capsys.readouterr().err
    with pytest.raises(VersionNotKept):
        create_kafka_app(m.kafka, KEY, m.name, checkpoint_topic=m.ckpt, metrics_topic=None, pin=9)
    after = m.latest()
    assert after.header == before.header and len(m.versions()) == 3


def test_rollback_fences_a_running_trainer_and_the_restart_replays_exactly_once(
    kafka_bootstrap: str, unique_name: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMTRAIN_SECRET", SECRET)
    m = Model(kafka_bootstrap, unique_name)
    cmd = train_command(kafka_bootstrap, m.topic, m.name, m.ckpt, "--checkpoint-every", "1000")
    running = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=trainer_env(SECRET)
    )
    try:
        deadline = time.monotonic() + 120
        while (opened := m.store.latest(m.name)) is None or opened.header.events_learned < EVENTS:
            assert running.poll() is None and time.monotonic() < deadline, "trainer not done"
            time.sleep(0.5)
        assert m.models("rollback", m.name, "--to", "1", "--replay") == 0
        more = [
            encode_event(x, y) for x, y in itertools.islice(datasets.synth.Agrawal(seed=22), 500)
        ]
        producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
        for value in more:
            producer.produce(m.topic, value=value, partition=0)
        assert producer.flush(30) == 0
        _, err = running.communicate(timeout=120)  # its next commit finds it fenced
    finally:
        if running.poll() is None:
            running.kill()
            running.communicate()
    assert running.returncode == 6, err
    assert "taken over by another trainer" in err and "Traceback" not in err

    m.train()  # the supervisor's restart: replays from v1 to the end
    final = m.latest()
    offline_model, offline_auc = offline(m.values + more)
    assert final.header.events_learned == EVENTS + len(more)
    assert final.header.metrics["ROCAUC"] == offline_auc
    assert _answers(model_of(final)) == _answers(offline_model)


def test_keep_versions_keeps_only_the_newest_n(
    kafka_bootstrap: str,
    unique_name: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Any,
) -> None:
    """``--keep-versions 2``: history, rollback and --pin see the newest two versions only,
    while the topic still holds all three (Kafka retains by time, not by count)."""
    monkeypatch.setenv("STREAMTRAIN_SECRET", SECRET)
    m = Model(kafka_bootstrap, unique_name)
    m.train("--keep-versions", "2")
    assert [v.header.sequence for v in m.versions()] == [1, 2, 3]
    capsys.readouterr()
    assert m.models("history", m.name) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["v2", "v3"]
    before = m.latest()
    assert m.models("rollback", m.name, "--to", "1", "--replay") == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "version 1" in err and "kept: 2..3" in err
    assert m.latest().header == before.header
    probe = tmp_path / "probe.jsonl"
    probe.write_text("".join(json.dumps({"x": x}) + "\n" for x in PROBES[:2]))
    pin = ["predict", "--name", m.name, "--input", str(probe), *m.common]
    assert main([*pin, "--pin", "1"]) == 4
    assert main([*pin, "--pin", "2"]) == 0
