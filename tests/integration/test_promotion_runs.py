"""The promotion gate on a real broker: promotions where the rule applied offline with River
says, at the same offsets after kill -9 at random points; manual promotions applied once."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from promotions import offline_promotions
from river import datasets, evaluate, linear_model, metrics, naive_bayes, preprocessing, tree
from topics import fill
from trainers import cli_in_process as _cli
from trainers import run_to_end, train_command, trainer_env

from streamtrain.config import KafkaSettings
from streamtrain.data.events import decode_event, encode_event
from streamtrain.kafka.reader import TopicReader
from streamtrain.models.problem import Problem
from streamtrain.state.envelope import load_state
from streamtrain.state.keys import SigningKey
from streamtrain.state.store import CheckpointStore

pytestmark = pytest.mark.kafka

SECRET = "promotion-test-secret-0123456789"
KEY = SigningKey(SECRET.encode(), "STREAMTRAIN_SECRET")
PHISHING = list(datasets.Phishing())
LR = "StandardScaler | LogisticRegression"
# label -> (spec, a fresh oracle model); c0 is the model the named model was created with.
MODELS: dict[str, tuple[str, Callable[[], Any]]] = {
    "c0": ("GaussianNB", naive_bayes.GaussianNB),
    "lr": (LR, lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression()),
    "ht": ("HoeffdingTreeClassifier", tree.HoeffdingTreeClassifier),
}
RULE = {"window": 50, "every": 10, "after": 2}


def _command(
    bootstrap: str, topic: str, name: str, ckpt: str, events: str, *extra: str
) -> list[str]:
    challengers = [
        f for label in ("lr", "ht") for f in ("--challenger", f"{label}={MODELS[label][0]}")
    ]
    return train_command(
        bootstrap,
        topic,
        name,
        ckpt,
        *("--model", MODELS["c0"][0], *challengers, "--events-topic", events),
        *("--metric", "ROCAUC", "--metric", "LogLoss", "--batch-size", "40", "--metrics-topic", ""),
        *("--connect-timeout", "30", *extra),  # a loaded machine's broker can be slow
    )


def _records(bootstrap: str, events: str, kind: str) -> list[dict[str, Any]]:
    reader = TopicReader(KafkaSettings(bootstrap_servers=bootstrap), events, what="events topic")
    found = [json.loads(r.value or b"") for r in reader.read_to_end()]
    return [r for r in found if r.get("kind") == kind]


def _latest(bootstrap: str, ckpt: str, name: str) -> Any:
    store = CheckpointStore(KafkaSettings(bootstrap_servers=bootstrap), KEY, ckpt)
    return store.latest(name)


def _pvs(label: str) -> dict[str, float]:
    return {
        name: evaluate.progressive_val_score(PHISHING, MODELS[label][1](), metric()).get()
        for name, metric in (("ROCAUC", metrics.ROCAUC), ("LogLoss", metrics.LogLoss))
    }


def test_promotions_are_the_offline_rules_at_the_same_offsets_despite_kill_9(
    kafka_bootstrap: str, unique_name: Callable[..., str], tmp_path: Path
) -> None:
    topic, name, ckpt, events = (unique_name(p) for p in ("prom", "model", "ckpt", "events"))
    fill(kafka_bootstrap, topic, [encode_event(x, y) for x, y in PHISHING])
    expected = offline_promotions(
        PHISHING, MODELS["c0"][1], {k: MODELS[k][1] for k in ("lr", "ht")}, **RULE
    )
    assert len(expected) > 3
    flags = [f"--promote-{k}={v}" for k, v in RULE.items()]
    cmd = _command(
        kafka_bootstrap,
        topic,
        name,
        ckpt,
        events,
        "--promote",
        "auto",
        "--checkpoint-every",
        "150",
        *flags,
    )
    env = trainer_env(SECRET)
    rng = random.Random(7)
    for _ in range(2):  # SIGKILL after a random number of learned batches, mid-stream
        crash = f"after-learn:{rng.randint(3, 12)}"
        killed = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            env={**env, "STREAMTRAIN_FAULT": crash},
            timeout=120,
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr
    opened = _latest(kafka_bootstrap, ckpt, name)
    assert opened is not None and 0 < opened.header.events_learned < len(PHISHING)

    summary = run_to_end(cmd, tmp_path / "summary.json", env, timeout=120)
    assert summary["events_learned"] == len(PHISHING)

    # Exactly the offline rule's promotions, once each, at the offsets of their events.
    records = _records(kafka_bootstrap, events, "promotion")
    assert [(r["events"], r["from"], r["to"]) for r in records] == expected
    for r in records:
        assert (r["model"], r["by"], r["metric"], r["window"]) == (name, "gate", "ROCAUC", 50)
        assert r["offsets"] == {"0": r["events"]}  # every record of the topic is an event
        assert r["to_spec"] == MODELS[r["to"]][0] and r["wins"] == 2
        assert r["values"][r["to"]] > r["values"][r["from"]]

    # The champion is the last one promoted, and every model's metrics are River's.
    champion = expected[-1][2]
    header = _latest(kafka_bootstrap, ckpt, name).header
    assert (header.champion, header.model_spec) == (champion, MODELS[champion][0])
    assert "over the last 50 events" in (header.promotion_rule or "")
    assert summary["metrics"] == pytest.approx(_pvs(champion), abs=1e-12, rel=0)
    assert summary["promotion"]["champion"] == champion
    assert summary["promotion"]["promotions"] == len(expected)
    assert set(summary["challengers"]) == set(MODELS) - {champion}
    for label, report in summary["challengers"].items():
        assert report["spec"] == MODELS[label][0]
        assert report["events_learned"] == len(PHISHING)
        assert report["metrics"] == pytest.approx(_pvs(label), abs=1e-12, rel=0)


def test_manual_promotion_is_applied_once_and_served(
    kafka_bootstrap: str,
    unique_name: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("STREAMTRAIN_SECRET", SECRET)
    topic, name, ckpt, events = (unique_name(p) for p in ("manual", "model", "ckpt", "events"))
    values = fill(kafka_bootstrap, topic, [encode_event(x, y) for x, y in PHISHING])[0]
    cmd = _command(kafka_bootstrap, topic, name, ckpt, events)
    trainer = subprocess.Popen(
        [*cmd, "--exit-when-idle", "120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=trainer_env(SECRET),
    )

    def champion_when(ready: Callable[[Any], bool]) -> Any:
        deadline = time.monotonic() + 120
        while True:
            opened = _latest(kafka_bootstrap, ckpt, name)
            if opened is not None and ready(opened.header):
                return opened.header.champion
            assert trainer.poll() is None, trainer.communicate()[1]
            assert time.monotonic() < deadline, "the trainer did not get there in 120 s"
            time.sleep(0.2)

    # Ask while the trainer runs (it has learned some events already).
    assert champion_when(lambda h: h.events_learned > 0) == "c0"  # manual: no gate promotion
    promote = ("models", "promote", name)
    # An unknown label: one line, a non-zero exit, nothing written.
    bad = _cli(capsys, kafka_bootstrap, ckpt, *promote, "nope", "--events-topic", events)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().count("\n") == 0 and "no challenger 'nope'" in bad.stderr
    assert "lr, ht" in bad.stderr
    assert _records(kafka_bootstrap, events, "promotion-request") == []

    ok = _cli(capsys, kafka_bootstrap, ckpt, *promote, "lr", "--events-topic", events)
    assert ok.returncode == 0, ok.stderr
    # Applied at a checkpoint of the running trainer; stop it once all is learned.
    assert champion_when(lambda h: h.champion == "lr" and h.events_learned == len(values))
    trainer.send_signal(signal.SIGINT)
    trainer.communicate(timeout=120)

    def promotions() -> list[dict[str, Any]]:
        return _records(kafka_bootstrap, events, "promotion")

    [record] = promotions()
    assert (record["from"], record["to"], record["by"]) == ("c0", "lr", "manual")
    assert record["offsets"] == {"0": record["events"]}
    header = _latest(kafka_bootstrap, ckpt, name).header
    assert (header.champion, header.model_spec) == ("lr", LR)
    assert list(load_state(_latest(kafka_bootstrap, ckpt, name))["challengers"]) == ["c0", "ht"]

    # A restart does not apply the request again; promoting the champion is refused.
    again = subprocess.run(
        [*cmd, "--exit-when-idle", "1"],
        capture_output=True,
        text=True,
        env=trainer_env(SECRET),
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert len(promotions()) == 1
    assert _latest(kafka_bootstrap, ckpt, name).header.champion == "lr"
    twice = _cli(capsys, kafka_bootstrap, ckpt, *promote, "lr", "--events-topic", events)
    assert twice.returncode == 2 and "already the champion" in twice.stderr

    # predict answers with the champion, labelled: River's LogisticRegression on every event.
    oracle = MODELS["lr"][1]()
    for v in values:
        oracle.learn_one(*decode_event(v, Problem.CLASSIFICATION))
    probe = [x for x, _ in PHISHING[:20]]
    lines = tmp_path / "probe.jsonl"
    lines.write_text("".join(json.dumps({"x": x}) + "\n" for x in probe))
    answered = _cli(capsys, kafka_bootstrap, ckpt, "predict", "--name", name, "--input", str(lines))
    assert answered.returncode == 0, answered.stderr
    for x, line in zip(probe, answered.stdout.splitlines(), strict=True):
        answer = json.loads(line)
        assert answer["model_label"] == "lr"
        assert answer["probabilities"]["true"] == oracle.predict_proba_one(x)[True]
    listed = _cli(capsys, kafka_bootstrap, ckpt, "models", "--json")
    row = next(json.loads(r) for r in listed.stdout.splitlines() if json.loads(r)["name"] == name)
    assert row["champion"] == "lr" and "only when asked" in row["promotion_rule"]
