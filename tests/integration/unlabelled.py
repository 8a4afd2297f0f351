"""Streams with unlabelled events, and the checks of a trainer's answers to them against
River run offline over the same bytes (what a trainer must reproduce exactly)."""

from __future__ import annotations

import time
from typing import Any

import orjson
import topics
from confluent_kafka import Consumer
from river import linear_model, preprocessing
from streams import agrawal_like_pairs

from streamtrain.data.events import InvalidEvent, decode_event, encode_event
from streamtrain.models.prediction import predict_answer
from streamtrain.models.problem import Problem


def replay_with_predictions(
    values: list[bytes | None],
) -> tuple[Any, dict[int, tuple[dict[str, Any], int]]]:
    """Learn the labelled events of one partition in order; predict each unlabelled one with
    the model as it stands there. Returns the model and, per unlabelled offset, the answer
    and how many events the model had learned."""
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    predictions: dict[int, tuple[dict[str, Any], int]] = {}
    learned = 0
    for offset, value in enumerate(values):
        try:
            x, y = decode_event(value, Problem.CLASSIFICATION)
        except InvalidEvent:
            continue
        if y is None:
            predictions[offset] = (predict_answer(model, Problem.CLASSIFICATION, x), learned)
            continue
        model.learn_one(x, y)
        learned += 1
    return model, predictions


def labelled(values: list[bytes | None]) -> list[tuple[dict[str, Any], Any]]:
    """The learnable events, decoded, in order."""
    out = []
    for value in values:
        try:
            x, y = decode_event(value, Problem.CLASSIFICATION)
        except InvalidEvent:
            continue
        if y is not None:
            out.append((x, y))
    return out


def mixed_stream(n: int, seed: int = 3) -> list[tuple[bytes | None, bytes]]:
    """(key, value) pairs: mostly labelled events, some unlabelled (with and without an id,
    with ``"y": null``), a few invalid ones, in runs of several unlabelled events too."""
    out: list[tuple[bytes | None, bytes]] = []
    # Agrawal-like (streams.py): River's generator is ~20x slower, and no test here
    # depends on the data, only on replaying the same records.
    for i, (x, y) in enumerate(agrawal_like_pairs(n, seed)):
        key = f"event-{i}".encode()
        if i % 11 == 4:
            out.append((key, orjson.dumps({"x": x, "id": f"request-{i}"})))
        elif i % 11 == 7 or 500 <= i < 520:
            out.append((key, orjson.dumps({"x": x, "y": None})))
        elif i % 97 == 13:
            out.append((key, orjson.dumps({"x": {"salary": "n/a"}})))  # bad, to dead letters
        else:
            out.append((key, encode_event(x, y)))
    return out


def fill(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    """One partition holding ``records`` (key, value) in order."""
    topics.fill(bootstrap, topic, [v for _, v in records], keys=[k for k, _ in records])


def read_predictions(bootstrap: str, topic: str, expected: int, timeout: float = 60) -> list[Any]:
    """Committed records of ``topic`` until ``expected`` arrived, then a second for extras."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"predictions-reader-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    extra_until = None
    while time.monotonic() < (extra_until or deadline):
        msg = consumer.poll(0.2)
        if msg is not None and msg.error() is None:
            out.append(msg)
        if extra_until is None and len(out) >= expected:
            extra_until = time.monotonic() + 1.0
    consumer.close()
    return out


def check_predictions(
    topic: str, records: list[tuple[bytes | None, bytes]], got: list[Any], name: str | None
) -> None:
    """Each unlabelled event answered exactly once, as River offline answers it there."""
    values: list[bytes | None] = [v for _, v in records]
    _model, expected = replay_with_predictions(values)
    assert len(got) == len(expected)
    by_offset: dict[int, Any] = {}
    for msg in got:
        record = orjson.loads(msg.value())
        offset = record["source"]["offset"]
        assert offset not in by_offset, f"offset {offset} answered twice"
        by_offset[offset] = (msg, record)
    assert sorted(by_offset) == sorted(expected)
    for offset, (msg, record) in by_offset.items():
        answer, learned = expected[offset]
        assert record["probabilities"] == answer["probabilities"]  # to the last bit
        assert record["prediction"] == answer["prediction"]
        assert record["events_learned"] == learned
        assert record["model_version"] == f"{topic}:0@{offset}"
        assert record["model"] == name
        assert record["source"]["topic"] == topic and record["source"]["partition"] == 0
        key = records[offset][0]
        assert msg.key() == key
        event = orjson.loads(records[offset][1])
        assert record.get("id") == event.get("id")
        headers = dict(msg.headers() or [])
        assert headers["streamtrain.source.offset"] == str(offset).encode()
