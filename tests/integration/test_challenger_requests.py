"""Challengers added to and removed from a named model on request, on a real broker: the added
one's metrics are River's on exactly the events from its recorded start, the other models'
are untouched to the bit, each request is applied once despite kill -9 right after applying
it, and bad requests write nothing."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from river import datasets, evaluate, linear_model, metrics, naive_bayes, preprocessing, tree
from topics import fill
from trainers import cli_in_process as _cli
from trainers import run_to_end, train_command, trainer_env

from streamtrain.config import KafkaSettings
from streamtrain.data.events import encode_event
from streamtrain.kafka.reader import TopicReader
from streamtrain.state.envelope import load_state
from streamtrain.state.keys import SigningKey
from streamtrain.state.store import CheckpointStore

pytestmark = pytest.mark.kafka

SECRET = "challenger-requests-secret-0123456"
KEY = SigningKey(SECRET.encode(), "STREAMTRAIN_SECRET")
PHISHING = list(datasets.Phishing())
FIRST = 500  # events in the log before the request
LR = "StandardScaler | LogisticRegression"
HT = "HoeffdingTreeClassifier(grace_period=50)"
METRICS: dict[str, Callable[[], Any]] = {"ROCAUC": metrics.ROCAUC, "LogLoss": metrics.LogLoss}


def _pvs(model: Any, events: list[Any]) -> dict[str, float]:
    """River's progressive validation of a fresh ``model`` on ``events``, metric by metric."""
    return {
        name: evaluate.progressive_val_score(events, model.clone(), metric()).get()
        for name, metric in METRICS.items()
    }


def _records(bootstrap: str, events: str) -> list[dict[str, Any]]:
    reader = TopicReader(KafkaSettings(bootstrap_servers=bootstrap), events, what="events topic")
    return [json.loads(r.value or b"") for r in reader.read_to_end()]


def _kinds(bootstrap: str, events: str, kind: str) -> list[dict[str, Any]]:
    return [r for r in _records(bootstrap, events) if r.get("kind") == kind]


def test_challengers_added_and_removed_on_request_exactly_once(
    kafka_bootstrap: str,
    unique_name: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("STREAMTRAIN_SECRET", SECRET)
    topic, name, ckpt, events = (unique_name(p) for p in ("chreq", "model", "ckpt", "events"))
    encoded = [encode_event(x, y) for x, y in PHISHING]
    fill(kafka_bootstrap, topic, encoded[:FIRST])
    cmd = train_command(
        kafka_bootstrap,
        topic,
        name,
        ckpt,
        *("--model", "GaussianNB", "--challenger", f"lr={LR}", "--events-topic", events),
        *("--metric", "ROCAUC", "--metric", "LogLoss", "--metrics-topic", ""),
        *("--batch-size", "40", "--checkpoint-every", "120", "--connect-timeout", "30"),
    )
    env = trainer_env(SECRET)
    first = run_to_end(cmd, tmp_path / "first.json", env)
    assert first["events_learned"] == FIRST

    # Bad requests: one line, a non-zero exit, nothing written to the events topic.
    bad_requests = [
        ("add-challenger", name, "HoeffdingTreeClassifier(", "--label", "x"),  # no parse
        ("add-challenger", name, "__import__('os')"),  # never evaluated
        ("add-challenger", name, "HoeffdingTreeClassifier", "--label", "lr"),  # taken
        ("add-challenger", name, "HoeffdingTreeClassifier", "--label", "c0"),  # the champion
        ("add-challenger", name, "LinearRegression"),  # a regressor for a classifier
        ("add-challenger", "no-such-model", "HoeffdingTreeClassifier"),
        ("remove-challenger", name, "c0"),  # the champion
        ("remove-challenger", name, "zz"),
        ("remove-challenger", "no-such-model", "lr"),
        ("promote", name, "zz"),
    ]
    for bad in bad_requests:
        run = _cli(capsys, kafka_bootstrap, ckpt, "models", *bad, "--events-topic", events)
        assert run.returncode != 0 and run.stdout == "", (bad, run)
        assert run.stderr.strip() and run.stderr.strip().count("\n") == 0, (bad, run.stderr)
        assert "Traceback" not in run.stderr
    assert (
        "champion"
        in _cli(capsys, kafka_bootstrap, ckpt, "models", "remove-challenger", name, "c0").stderr
    )
    assert not [r for r in _records(kafka_bootstrap, events) if r["kind"].endswith("-request")]

    add = ("models", "add-challenger", name, HT, "--label", "ht", "--events-topic", events)
    ok = _cli(capsys, kafka_bootstrap, ckpt, *add)
    assert ok.returncode == 0, ok.stderr
    fill(kafka_bootstrap, topic, encoded[FIRST:], append=True)

    # Killed right after applying the request in memory, before its checkpoint commits.
    killed = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env={**env, "STREAMTRAIN_FAULT": "after-request-applied:1"},
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert _kinds(kafka_bootstrap, events, "challenger-added") == []

    summary = run_to_end(cmd, tmp_path / "second.json", env)
    assert summary["events_learned"] == len(PHISHING)
    [added] = _kinds(kafka_bootstrap, events, "challenger-added")
    start = added["events"]
    assert FIRST <= start <= FIRST + 120  # at the first checkpoint after the request
    assert added["offsets"] == {"0": start}  # every record of the topic is an event
    assert (added["model"], added["label"], added["spec"]) == (name, "ht", HT)

    # The added challenger: River's progressive validation on exactly the events from there.
    ht = summary["challengers"]["ht"]
    assert ht["events_learned"] == len(PHISHING) - start and ht["started_at"] == start
    assert ht["started_offsets"] == {"0": start}
    oracle_ht = _pvs(tree.HoeffdingTreeClassifier(grace_period=50), PHISHING[start:])
    assert ht["metrics"] == pytest.approx(oracle_ht, abs=1e-12, rel=0)
    # The others: as if nothing had been added, to the bit.
    lr_model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    assert summary["metrics"] == _pvs(naive_bayes.GaussianNB(), PHISHING)
    assert summary["challengers"]["lr"]["metrics"] == _pvs(lr_model, PHISHING)

    listed = _cli(capsys, kafka_bootstrap, ckpt, "models", "--json")
    row = next(json.loads(r) for r in listed.stdout.splitlines() if json.loads(r)["name"] == name)
    assert row["challengers"]["ht"]["started_offsets"] == {"0": start}
    assert row["challengers"]["ht"]["spec"] == HT
    table = _cli(capsys, kafka_bootstrap, ckpt, "models")
    assert f"challenger ht = {HT} since event {start:,}" in " ".join(table.stdout.split())

    # Taken now: the same label again is refused.
    again = _cli(capsys, kafka_bootstrap, ckpt, *add)
    assert again.returncode == 2 and "already" in again.stderr

    # Remove lr; a restart with the same --challenger flags does not bring it back.
    remove = ("models", "remove-challenger", name, "lr", "--events-topic", events)
    assert _cli(capsys, kafka_bootstrap, ckpt, *remove).returncode == 0
    after = run_to_end(cmd, tmp_path / "third.json", env)
    assert set(after["challengers"]) == {"ht"}
    assert after["metrics"] == summary["metrics"]
    after = run_to_end(cmd, tmp_path / "fourth.json", env)
    assert set(after["challengers"]) == {"ht"}
    [removed] = _kinds(kafka_bootstrap, events, "challenger-removed")
    assert (removed["label"], removed["events_learned"]) == ("lr", len(PHISHING))
    assert len(_kinds(kafka_bootstrap, events, "challenger-added")) == 1
    store = CheckpointStore(KafkaSettings(bootstrap_servers=kafka_bootstrap), KEY, ckpt)
    opened = store.latest(name)
    assert opened is not None
    assert list(load_state(opened)["challengers"]) == ["ht"]


def test_a_challenger_added_to_a_running_trainer_starts_at_its_next_checkpoint(
    kafka_bootstrap: str,
    unique_name: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("STREAMTRAIN_SECRET", SECRET)
    topic, name, ckpt, events = (unique_name(p) for p in ("chrun", "model", "ckpt", "events"))
    encoded = [encode_event(x, y) for x, y in PHISHING]
    fill(kafka_bootstrap, topic, encoded[:FIRST])
    cmd = train_command(
        kafka_bootstrap,
        topic,
        name,
        ckpt,
        *("--model", "GaussianNB", "--challenger", f"lr={LR}", "--events-topic", events),
        *("--metric", "ROCAUC", "--metric", "LogLoss", "--metrics-topic", ""),
        *("--connect-timeout", "30", "--exit-when-idle", "120"),
    )
    trainer = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=trainer_env(SECRET)
    )
    store = CheckpointStore(KafkaSettings(bootstrap_servers=kafka_bootstrap), KEY, ckpt)

    def state_when(ready: Callable[[Any, dict[str, Any]], bool]) -> dict[str, Any]:
        deadline = time.monotonic() + 120
        while True:
            opened = store.latest(name)
            if opened is not None:
                state = load_state(opened)
                if ready(opened.header, state):
                    return state
            assert trainer.poll() is None, trainer.communicate()[1]
            assert time.monotonic() < deadline, "the trainer did not get there in 120 s"
            time.sleep(0.2)

    try:
        state_when(lambda h, _s: h.events_learned == FIRST)
        add = ("models", "add-challenger", name, HT, "--events-topic", events)
        ok = _cli(capsys, kafka_bootstrap, ckpt, *add)  # unlabelled: the first free c<n>
        assert ok.returncode == 0 and "'c1'" in ok.stdout, ok.stderr
        state = state_when(lambda _h, s: "c1" in s.get("challengers", {}))
        assert state["challengers"]["c1"]["started_at"] == FIRST  # it was idle at FIRST
        fill(kafka_bootstrap, topic, encoded[FIRST:], append=True)
        state_when(lambda h, _s: h.events_learned == len(PHISHING))
    finally:
        trainer.send_signal(signal.SIGINT)
        trainer.communicate(timeout=120)
    assert trainer.returncode == 0
    summary = run_to_end(cmd, tmp_path / "summary.json", trainer_env(SECRET))
    c1 = summary["challengers"]["c1"]
    assert (c1["started_at"], c1["started_offsets"]) == (FIRST, {"0": FIRST})
    oracle = _pvs(tree.HoeffdingTreeClassifier(grace_period=50), PHISHING[FIRST:])
    assert c1["metrics"] == pytest.approx(oracle, abs=1e-12, rel=0)
    assert summary["metrics"] == _pvs(naive_bayes.GaussianNB(), PHISHING)
    [added] = _kinds(kafka_bootstrap, events, "challenger-added")
    assert (added["label"], added["events"], added["offsets"]) == ("c1", FIRST, {"0": FIRST})
