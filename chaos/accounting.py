"""A finished campaign accounted for, record by record, against the offline River oracle.

Every input record is one of: labelled (learned by its partition's replica), unlabelled
(predicted, one record in ``TOPIC.predictions``) or poison (one record in ``TOPIC.dlq``).
The outputs are read with ``read_committed``; each must name its source record once. Each
partition's replica is River's model trained offline on that partition's labelled events in
log order (:mod:`oracle`), bit for bit; each prediction is what that offline model answered
at its event; and every checkpoint ever committed is a point of that offline run (a fork, two
owners learning on from one checkpoint, would show as a checkpoint off the curve).
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from oracle import new_model
from river import metrics
from topics import read_log

from chaos.campaign import PARTITIONS, SECRET, Run
from streamtrain.config import KafkaSettings
from streamtrain.data.events import InvalidEvent, decode_event
from streamtrain.models.problem import Problem
from streamtrain.state.envelope import load_state
from streamtrain.state.keys import SigningKey
from streamtrain.state.store import CheckpointStore

KEY = SigningKey(SECRET.encode(), "STREAMTRAIN_SECRET")
Source = tuple[int, int]  # (partition, offset) of an input record


def read_committed(bootstrap: str, topic: str, idle_s: float = 4.0) -> list[Any]:
    """Every record of ``topic`` a ``read_committed`` reader sees (the topic is quiet now:
    read until nothing arrives for ``idle_s``)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    meta = admin.list_topics(topic, timeout=30).topics[topic]
    if meta.error is not None:  # never created: nothing was written to it
        return []
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "chaos-accounting",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    out: list[Any] = []
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < idle_s:
            batch = consumer.consume(10_000, 0.5)
            for msg in batch:
                if msg.error() is None:
                    out.append(msg)
            if batch:
                quiet_since = time.monotonic()
    finally:
        consumer.close()
    return out


def _dead_letter_source(msg: Any) -> Source:
    headers = dict(msg.headers() or [])
    return int(headers["streamtrain.source.partition"]), int(headers["streamtrain.source.offset"])


class Oracle:
    """One partition replayed offline: River's replica, its progressive ROCAUC after each
    offset, and what it predicted for each unlabelled event."""

    def __init__(self, values: list[bytes]) -> None:
        self.model = new_model()
        metric = metrics.ROCAUC()
        self.curve: list[tuple[int, float]] = [(0, float(metric.get()))]  # by offset
        self.labelled: list[int] = []
        self.unlabelled: dict[int, tuple[int, list[float]]] = {}  # offset -> (learned, probs)
        self.poison: list[int] = []
        for offset, value in enumerate(values):
            try:
                x, y = decode_event(value, Problem.CLASSIFICATION)
            except InvalidEvent:
                self.poison.append(offset)
            else:
                proba = self.model.predict_proba_one(x)
                if y is None:
                    probs = sorted(float(v) for v in proba.values())
                    self.unlabelled[offset] = (len(self.labelled), probs)
                else:
                    if proba:
                        metric.update(y, proba)
                    self.model.learn_one(x, y)
                    self.labelled.append(offset)
            self.curve.append((len(self.labelled), float(metric.get())))


def account(run: Run) -> dict[str, Any]:
    """The report of ``run`` (see the module doc); ``ok`` is True when everything holds."""
    bootstrap, topic = run.bootstrap, run.topic
    log = read_log(bootstrap, topic, PARTITIONS, timeout=180)
    oracles = {p: Oracle(log[p]) for p in range(PARTITIONS)}
    produced = sum(len(v) for v in log.values())
    problems: list[str] = []
    if log != run.sent:
        problems.append("the input log is not exactly the records sent, in order")

    # Outputs, read_committed: each names the input record it answers.
    dlq = Counter(_dead_letter_source(m) for m in read_committed(bootstrap, f"{topic}.dlq"))
    answers: dict[Source, list[dict[str, Any]]] = {}
    for msg in read_committed(bootstrap, f"{topic}.predictions"):
        answer = orjson.loads(msg.value())
        source = answer["source"]
        answers.setdefault((source["partition"], source["offset"]), []).append(answer)
    want_dlq = {(p, o) for p, o_ in oracles.items() for o in o_.poison}
    want_pred = {(p, o) for p, o_ in oracles.items() for o in o_.unlabelled}
    wrong_predictions = 0
    for (p, offset), got in answers.items():
        expected = oracles[p].unlabelled.get(offset)
        for answer in got:
            probs = sorted(float(v) for v in answer["probabilities"].values())
            if expected is None or (answer["events_learned"], probs) != expected:
                wrong_predictions += 1

    # Replicas: the newest checkpoint of each, and every checkpoint ever committed.
    store = CheckpointStore(KafkaSettings(bootstrap_servers=bootstrap), KEY, run.ckpt)
    keys = {f"{run.name}/p{p}": p for p in range(PARTITIONS)}
    latest = store.latest_many(list(keys))
    learned, identical, probe = 0, 0, _probe()
    learned_twice, not_learned = 0, 0
    for key, p in keys.items():
        oracle = oracles[p]
        if key not in latest:
            problems.append(f"replica p{p} has no checkpoint")
            not_learned += len(oracle.labelled)
            continue
        header, state = latest[key].header, load_state(latest[key])
        learned += header.events_learned
        learned_twice += max(0, header.events_learned - len(oracle.labelled))
        not_learned += max(0, len(oracle.labelled) - header.events_learned)
        if header.offsets != {topic: {p: len(log[p])}}:
            problems.append(f"replica p{p} stopped at {header.offsets}, not {len(log[p])}")
        same = state["metrics"]["ROCAUC"].get() == oracle.curve[-1][1] and all(
            state["model"].predict_proba_one(x) == oracle.model.predict_proba_one(x) for x in probe
        )
        identical += same
    off_curve, checkpoints = [], 0
    for checkpoint in store.history(list(keys)):
        header = checkpoint.header
        p = keys[header.model_name]
        offset = header.offsets.get(topic, {}).get(p, 0)
        checkpoints += 1
        if (header.events_learned, header.metrics.get("ROCAUC")) != oracles[p].curve[offset]:
            off_curve.append(f"{header.model_name}@{offset}")

    dead_lettered, predicted = sum(dlq.values()), sum(len(a) for a in answers.values())
    duplicates = sum(n - 1 for n in dlq.values()) + sum(len(a) - 1 for a in answers.values())
    lost = not_learned + len(want_dlq - set(dlq)) + len(want_pred - set(answers))
    strays = len(set(dlq) - want_dlq) + len(set(answers) - want_pred)
    report: dict[str, Any] = {
        "seed": run.seed,
        "minutes": round(run.seconds / 60, 2),
        "wall_seconds": run.wall_seconds,
        "faults": dict(sorted(run.faults.items())),
        "producer_retries": run.producer_retries,
        "trainer_processes": run.trainers_started,
        "records": {
            "produced": produced,
            "learned": learned,
            "dead_lettered": dead_lettered,
            "predicted": predicted,
            "accounted": learned + dead_lettered + predicted,
        },
        "lost": lost,
        "learned_twice": learned_twice,
        "outputs_twice": duplicates,
        "outputs_stray": strays,
        "predictions_off_oracle": wrong_predictions,
        "replicas_identical_to_oracle": f"{identical}/{PARTITIONS}",
        "checkpoints_checked": checkpoints,
        "checkpoints_off_oracle": off_curve[:20],
        "problems": problems,
    }
    report["ok"] = bool(
        not problems
        and produced == learned + dead_lettered + predicted
        and lost == learned_twice == duplicates == strays == wrong_predictions == 0
        and identical == PARTITIONS
        and not off_curve
    )
    return report


def _probe() -> list[dict[str, float]]:
    from chaos.schedule import records

    probe = []
    for value in records(4242, 200):
        with contextlib.suppress(InvalidEvent):
            probe.append(decode_event(value, Problem.CLASSIFICATION)[0])
    return probe


def table(report: dict[str, Any]) -> str:
    """The report as the terminal shows it."""
    rec = report["records"]
    rows = [
        ("seed", report["seed"]),
        ("minutes (wall seconds)", f"{report['minutes']} ({report['wall_seconds']})"),
        *((f"fault: {kind}", n) for kind, n in report["faults"].items()),
        ("producer requests re-sent", report["producer_retries"]),
        ("trainer processes started", report["trainer_processes"]),
        ("records produced", rec["produced"]),
        ("  learned", rec["learned"]),
        ("  dead-lettered", rec["dead_lettered"]),
        ("  predicted", rec["predicted"]),
        ("  accounted (sum)", rec["accounted"]),
        ("events lost", report["lost"]),
        ("events learned twice", report["learned_twice"]),
        ("outputs twice / stray", f"{report['outputs_twice']} / {report['outputs_stray']}"),
        ("predictions off the oracle", report["predictions_off_oracle"]),
        ("replicas bit-identical to River", report["replicas_identical_to_oracle"]),
        ("checkpoints checked", report["checkpoints_checked"]),
        ("checkpoints off the oracle", len(report["checkpoints_off_oracle"])),
        ("problems", "; ".join(report["problems"]) or "none"),
        ("result", "PASS" if report["ok"] else "FAIL"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
