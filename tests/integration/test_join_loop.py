"""The serving loop closed on a real broker, with real processes: ``streamtrain serve`` logs
each served prediction as a feature event and takes the outcomes at ``POST /labels``; a
``streamtrain train --labels-topic`` run joins the two, learns, and serve hot-swaps what it
learned — exactly what River learns from the same events in the same order."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from river import datasets, evaluate, linear_model, metrics, preprocessing
from topics import create_topic, fill
from trainers import train_command, trainer_env
from unlabelled import read_predictions

from streamtrain.data.events import encode_event
from streamtrain.models.prediction import answer_from_proba

pytestmark = pytest.mark.kafka

SECRET = "join-loop-test-secret-0123456789ab"
FIRST = 400  # events the model learns inline before it is served
SERVED = 200  # then served, logged and labelled over HTTP
BATCH = 50


def _oracle(stream: list[Any]) -> tuple[Any, Any, float]:
    """River over ``stream``: the first FIRST events progressively, then SERVED events all
    predicted (by the model of FIRST events, as serve and the trainer predict them on arrival)
    before any label, labels revealed in event order. Returns the model of FIRST events, the
    final model and the final ROCAUC."""
    before = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    for x, y in stream[:FIRST]:
        before.learn_one(x, y)
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    metric = metrics.ROCAUC()
    # moment is the event's index (River's default with a delay); every served event's
    # answer is due at the same moment, after the last question, so they come in event order.
    due = FIRST + SERVED
    delays = iter([0] * FIRST + [due - i for i in range(FIRST, FIRST + SERVED)])
    evaluate.progressive_val_score(
        stream[: FIRST + SERVED], model, metric, delay=lambda _x, _y: next(delays)
    )
    return before, model, metric.get()


def _wait_for(what: str, check: Callable[[], Any], procs: list[subprocess.Popen[bytes]]) -> Any:
    deadline = time.monotonic() + 60
    while True:
        for proc in procs:
            assert proc.poll() is None, f"{proc.args[3]} exited ({proc.returncode}) during {what}"
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _model(http: httpx.Client) -> dict[str, Any]:
    try:
        response = http.get("/model")
    except httpx.TransportError:
        return {}  # not listening yet
    return dict(response.json()) if response.status_code == 200 else {}


def _spawn(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as err:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)


def _end(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a clean stop), or SIGKILL if that takes over 30 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def test_served_predictions_and_posted_labels_train_the_served_model(
    kafka_bootstrap: str,
    unique_name: Callable[..., str],
    free_ports: Callable[[int], list[int]],
    tmp_path: Path,
) -> None:
    stream = list(datasets.Phishing())
    first, features, labels = unique_name("first"), unique_name("served"), unique_name("outcomes")
    name, ckpt = unique_name("loop"), unique_name("ckpt")
    before_model, oracle, oracle_auc = _oracle(stream)

    # The model's first events come inline from another topic. The joined run below resumes
    # it (model, metrics, events learned) and, its checkpoint holding no offsets of the
    # served topic, reads that topic from its beginning. It starts within a session of this
    # run, so the group must not hand it this run's assignment (the first topic): it joins
    # as another member, once this run's has timed out. That member's session is the
    # broker's minimum, 6 s, not librdkafka's 45 s, which was most of this test's time.
    fill(kafka_bootstrap, first, [encode_event(x, y) for x, y in stream[:FIRST]])
    short_session = ("-X", "session.timeout.ms=6000")  # the producer ignores it (CONFWARN)
    initial_cmd = train_command(kafka_bootstrap, first, name, ckpt, *short_session)
    initial = subprocess.run(
        [*initial_cmd, "--exit-when-idle", "1.5"],
        capture_output=True,
        text=True,
        env=trainer_env(SECRET),
        timeout=120,
    )
    assert initial.returncode == 0, initial.stderr
    create_topic(kafka_bootstrap, features)
    create_topic(kafka_bootstrap, labels)

    (port,) = free_ports(1)
    serve_cmd = [sys.executable, "-m", "streamtrain", "serve", "--name", name]
    serve_cmd += ["--port", str(port), "--checkpoint-topic", ckpt, "--metrics-topic", ""]
    serve_cmd += ["--log-topic", features, "--labels-topic", labels]
    serve_cmd += ["--bootstrap-servers", kafka_bootstrap]
    env = {**os.environ, "STREAMTRAIN_SECRET": SECRET}
    summary = tmp_path / "summary.json"
    train_cmd = train_command(kafka_bootstrap, features, name, ckpt, "--labels-topic", labels)
    serve_log, train_log = tmp_path / "serve.log", tmp_path / "train.log"
    serve = _spawn(serve_cmd, serve_log, env)
    trainer = _spawn([*train_cmd, "--summary", str(summary)], train_log, trainer_env(SECRET))
    procs = [serve, trainer]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            loaded = _wait_for("serve to load the model", lambda: _model(http), procs)
            assert loaded["events_learned"] == FIRST

            # Predictions with ids, in batches: each logged as a feature event.
            served = stream[FIRST : FIRST + SERVED]
            ids = [f"req-{i}" for i in range(SERVED)]
            answers: list[dict[str, Any]] = []
            for at in range(0, SERVED, BATCH):
                body = [{"id": ids[i], "x": served[i][0]} for i in range(at, at + BATCH)]
                response = http.post("/predict", json=body)
                assert response.status_code == 200, response.text
                answers += response.json()
            assert [a["id"] for a in answers] == ids
            for answer, (x, _y) in zip(answers, served, strict=True):
                expected = answer_from_proba(before_model.predict_proba_one(x))
                assert answer["probabilities"] == expected["probabilities"]

            # The trainer predicts each logged event on arrival (the model it resumed, so the
            # same answers as served) and commits them with a checkpoint: serve shows that
            # checkpoint, with nothing learned from predictions alone.
            predicted = read_predictions(
                kafka_bootstrap, f"{features}.predictions", SERVED, timeout=90
            )
            records = [orjson.loads(m.value()) for m in predicted]
            assert sorted(r["id"] for r in records) == sorted(ids)  # one each
            by_id = {a["id"]: a for a in answers}
            for record in records:
                assert record["probabilities"] == by_id[record["id"]]["probabilities"]
                assert record["events_learned"] == FIRST
                assert record["source"]["topic"] == features
            waiting = _wait_for(
                "a checkpoint of every logged event",
                lambda: (m := _model(http)).get("offsets", {}).get(features) == {"0": SERVED} and m,
                procs,
            )
            assert waiting["events_learned"] == FIRST
            version_before = waiting["version"]

            # The outcomes, by id: the trainer joins and learns them, serve swaps the model in.
            for at in range(0, SERVED, BATCH):
                body = {
                    "labels": [{"id": ids[i], "y": served[i][1]} for i in range(at, at + BATCH)]
                }
                response = http.post("/labels", json=body)
                assert (response.status_code, response.json()) == (200, {"accepted": BATCH})
            learned = _wait_for(
                "the served model to learn the labels",
                lambda: (m := _model(http)).get("events_learned") == FIRST + SERVED and m,
                procs,
            )
            assert learned["offsets"] == {features: {"0": SERVED}, labels: {"0": SERVED}}
            assert learned["version"] != version_before
            assert learned["swaps"] > waiting["swaps"]
            assert learned["metrics"]["ROCAUC"] == oracle_auc

            # Stopped cleanly (its summary is written on the way out) before the probes below,
            # which serve logs too, could reach it.
            _end(trainer)
            assert trainer.returncode == 0, train_log.read_text()[-3000:]
            probes = [x for x, _y in stream[FIRST + SERVED : FIRST + SERVED + 20]]
            response = http.post("/predict", json=[{"x": x} for x in probes])
            assert response.status_code == 200, response.text
            for answer, x in zip(response.json(), probes, strict=True):
                assert answer["model_version"] == learned["version"]
                expected = answer_from_proba(oracle.predict_proba_one(x))
                assert answer["probabilities"] == expected["probabilities"]
    finally:
        _end(trainer)
        _end(serve)
    assert serve.returncode == 0, serve_log.read_text()[-3000:]

    report = json.loads(summary.read_text())
    assert report["stopped_because"] == "SIGTERM"
    assert report["events_learned"] == FIRST + SERVED
    assert report["join"]["joined"] == SERVED
    assert report["join"]["pending"] == report["join"]["held_labels"] == 0
    assert report["metrics"]["ROCAUC"] == oracle_auc
    # No prediction was written twice, and none for the labels.
    assert len(read_predictions(kafka_bootstrap, f"{features}.predictions", SERVED)) == SERVED
