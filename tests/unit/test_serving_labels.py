"""Ids, the prediction log and ``POST /labels`` without a broker.

Request parsing is checked directly; the app runs over a :class:`StaticSnapshotSource` with a
real :class:`EventLog` whose producer is :class:`ScriptedProducer` (records kept, delivery
reports served by ``poll`` as scripted), and once over real librdkafka with nobody listening.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaError
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from river import datasets, linear_model, preprocessing

from streamtrain.config import KafkaSettings, resolve
from streamtrain.errors import ConfigError
from streamtrain.serving.app import create_app
from streamtrain.serving.eventlog import EventLog
from streamtrain.serving.follower import StaticSnapshotSource
from streamtrain.serving.responses import RequestRefused
from streamtrain.serving.settings import ServeSettings
from streamtrain.serving.snapshot import ModelSnapshot
from streamtrain.serving.validation import (
    MAX_ID_LENGTH,
    Instance,
    Label,
    parse_id,
    parse_instances,
    parse_labels,
)
from streamtrain.state.envelope import CheckpointHeader

NAME = "labels-model"
LIMIT = 4
PHISHING = list(itertools.islice(datasets.Phishing(), 200))
HANG = "hang"  # a scripted outcome: the delivery report never comes


def _snapshot(model: Any, data: list[tuple[dict[str, float], Any]]) -> ModelSnapshot:
    for x, y in data:
        model.learn_one(x, y)
    header = CheckpointHeader(
        model_name=NAME,
        model_spec="spec",
        offsets={"events": {0: len(data)}},
        events_learned=len(data),
        dead_lettered=0,
        metrics={},
        created_at=time.time(),
        versions={},
    )
    return ModelSnapshot(header, model)


CLASSIFIER = _snapshot(preprocessing.StandardScaler() | linear_model.LogisticRegression(), PHISHING)
REGRESSOR = _snapshot(
    linear_model.LinearRegression(), [({"a": float(i)}, 2.0 * i) for i in range(50)]
)


# -- parsing ---------------------------------------------------------------------------------


def _refusal(call: Callable[[], Any]) -> RequestRefused:
    with pytest.raises(RequestRefused) as refused:
        call()
    return refused.value


def test_ids_are_strings_or_integers_of_bounded_length() -> None:
    assert parse_id("a") == "a"
    assert parse_id(-12) == "-12"
    assert parse_id(2**63 - 1) == str(2**63 - 1)
    assert parse_id("é" * MAX_ID_LENGTH) == "é" * MAX_ID_LENGTH
    for bad in (True, False, None, 1.0, 7.5, [1], {"id": 1}, "", "x" * (MAX_ID_LENGTH + 1)):
        refused = _refusal(lambda bad=bad: parse_id(bad, 3))
        assert (refused.status, refused.reason, refused.instance) == (422, "bad-id", 3), bad
        assert refused.message


def test_predict_bodies_carry_optional_ids() -> None:
    assert parse_instances(b'{"x": {"a": 1}}', LIMIT) == ([Instance(None, {"a": 1})], False)
    assert parse_instances(b'{"id": 7, "x": {"a": 1}}', LIMIT) == ([Instance("7", {"a": 1})], False)
    batch, is_batch = parse_instances(b'[{"id": "k", "x": {"a": 1}}, {"x": {"a": 2}}]', LIMIT)
    assert is_batch and batch == [Instance("k", {"a": 1}), Instance(None, {"a": 2})]

    cases = {
        b'{"id": true, "x": {"a": 1}}': (422, "bad-id", None),
        b'[{"x": {"a": 1}}, {"id": null, "x": {"a": 1}}]': (422, "bad-id", 1),
        b'[{"id": 1, "x": {"a": 1}}, {"x": {"a": 2}}, {"id": "1", "x": {"a": 3}}]': (
            422,
            "duplicate-id",
            2,
        ),
        b'{"id": "a", "x": {"a": 1}, "y": 1}': (422, "unknown-field", None),
        b"[" + b",".join([b'{"x": {"a": 1}}'] * (LIMIT + 1)) + b"]": (
            413,
            "too-many-instances",
            None,
        ),
    }
    for body, expected in cases.items():
        refused = _refusal(lambda body=body: parse_instances(body, LIMIT))
        assert (refused.status, refused.reason, refused.instance) == expected, body


def test_labels_bodies_single_and_batch() -> None:
    assert parse_labels(b'{"id": "a", "y": true}', LIMIT) == ([Label("a", True)], False)
    assert parse_labels(b'{"labels": [{"id": 1, "y": 0.5}, {"id": "2", "y": "cat"}]}', LIMIT) == (
        [Label("1", 0.5), Label("2", "cat")],
        True,
    )
    many = orjson.dumps({"labels": [{"id": i, "y": 1} for i in range(LIMIT + 1)]})
    cases = {
        b"": (400, "undecodable", None),
        b'{"id": "a", "y": NaN}': (400, "undecodable", None),
        b"[]": (422, "not-an-object", None),
        b'[{"id": "a", "y": 1}]': (422, "not-an-object", None),
        b'{"y": 1}': (422, "bad-id", None),
        b'{"id": false, "y": 1}': (422, "bad-id", None),
        b'{"id": "a"}': (422, "bad-label", None),
        b'{"id": "a", "y": null}': (422, "bad-label", None),
        b'{"id": "a", "y": 1, "x": {"a": 1}}': (422, "unknown-field", None),
        b'{"labels": [], "id": "a"}': (422, "unknown-field", None),
        b'{"labels": {"id": "a", "y": 1}}': (422, "not-a-list", None),
        b'{"labels": []}': (422, "empty-batch", None),
        b'{"labels": [{"id": "a", "y": 1}, 5]}': (422, "not-an-object", 1),
        b'{"labels": [{"id": "a", "y": 1}, {"id": "a", "y": 2}]}': (422, "duplicate-id", 1),
        many: (413, "too-many-labels", None),
    }
    for body, expected in cases.items():
        refused = _refusal(lambda body=body: parse_labels(body, LIMIT))
        assert (refused.status, refused.reason, refused.instance) == expected, body
        assert refused.message


def test_serve_settings_resolve_and_refuse_clashing_topics(tmp_path: Path) -> None:
    file = {"serve": {"log_topic": "from-file", "delivery_timeout": 3}}
    env = {"STREAMTRAIN_LABELS_TOPIC": "from-env"}
    settings = resolve(ServeSettings, {}, file=file, section="serve", env=env)
    assert (settings.log_topic, settings.labels_topic) == ("from-file", "from-env")
    assert settings.delivery_timeout == 3.0
    flags = {"log_topic": "", "labels_topic": "flag"}
    settings = resolve(ServeSettings, flags, file=file, section="serve", env=env)
    assert (settings.log_topic, settings.labels_topic) == (None, "flag")
    assert resolve(ServeSettings, {}, env={}).log_topic is None
    for bad in (
        {"log_topic": "t", "labels_topic": "t"},
        {"log_topic": "streamtrain.checkpoints"},
        {"labels_topic": "streamtrain.metrics"},
        {"delivery_timeout": 0.0},
        {"port": 70000},
    ):
        with pytest.raises(ConfigError):
            resolve(ServeSettings, bad, env={})


# -- the app over a scripted producer ------------------------------------------------------


class ScriptedProducer:
    """A confluent-kafka ``Producer`` stand-in: keeps what is produced; ``poll`` serves the
    delivery reports with the outcome scripted at produce time (``HANG``: never)."""

    def __init__(self, conf: dict[str, Any]) -> None:
        self.conf = conf
        self.outcome: KafkaError | str | None = None
        self.full = False
        self.records: list[tuple[str, bytes, bytes, int]] = []
        self._pending: deque[tuple[Callable[..., None], Any]] = deque()
        self._lock = threading.Lock()

    def produce(
        self, topic: str, *, value: bytes, key: bytes, timestamp: int, on_delivery: Any
    ) -> None:
        if self.full:
            raise BufferError("Local: Queue full")
        with self._lock:
            self.records.append((topic, key, value, timestamp))
            self._pending.append((on_delivery, self.outcome))

    def poll(self, timeout: float = 0) -> int:
        with self._lock:
            ready = [p for p in self._pending if p[1] is not HANG]
            self._pending = deque(p for p in self._pending if p[1] is HANG)
        for report, outcome in ready:
            report(outcome, None)
        if not ready:
            time.sleep(min(timeout, 0.01))
        return len(ready)

    def flush(self, timeout: float = 0) -> int:
        self.poll(0)
        return len(self._pending)

    def purge(self) -> None:
        with self._lock:
            purged, self._pending = list(self._pending), deque()
        for report, _ in purged:
            report(KafkaError(KafkaError._PURGE_QUEUE), None)


@contextlib.contextmanager
def serving(
    snapshot: ModelSnapshot | None = CLASSIFIER,
    *,
    log_topic: str | None = "log",
    labels_topic: str | None = "labels",
    timeout: float = 5.0,
    options: dict[str, str] | None = None,
) -> Iterator[tuple[TestClient, list[ScriptedProducer], EventLog]]:
    producers: list[ScriptedProducer] = []

    def factory(conf: dict[str, Any]) -> Any:
        producers.append(ScriptedProducer(conf))
        return producers[-1]

    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1", options=options or {})
    event_log = EventLog(
        kafka, delivery_timeout=timeout, producer_factory=factory, ensure_topics=False
    )
    app = create_app(
        NAME,
        StaticSnapshotSource(snapshot),
        max_instances=LIMIT,
        event_log=event_log,
        log_topic=log_topic,
        labels_topic=labels_topic,
    )
    with TestClient(app) as client:
        yield client, producers, event_log


def _metrics(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for s in family.samples
    }


def test_logged_predictions_are_feature_events_with_the_answers() -> None:
    x0, x1 = PHISHING[0][0], PHISHING[1][0]
    with serving(options={"acks": "1", "enable.idempotence": "false", "linger.ms": "50"}) as (
        client,
        producers,
        _,
    ):
        before = time.time_ns() // 1_000_000
        one = client.post("/predict", json={"id": 42, "x": x0})
        batch = client.post("/predict", json=[{"id": "order-1", "x": x0}, {"x": x1}])
        after = time.time_ns() // 1_000_000
        assert one.status_code == batch.status_code == 200
        answers = [one.json(), *batch.json()]
        assert [a["id"] for a in answers[:2]] == ["42", "order-1"]
        generated = answers[2]["id"]
        assert len(generated) == 32 and int(generated, 16) >= 0
        assert list(answers[0]) == [
            "id",
            "prediction",
            "probabilities",
            "model_version",
            "events_learned",
        ]

        (producer,) = producers
        # The endpoints' promise holds whatever -X says; tuning options still pass through.
        assert (producer.conf["enable.idempotence"], producer.conf["acks"]) == (True, "all")
        assert producer.conf["linger.ms"] == "50"
        assert len(producer.records) == 3
        for (topic, key, value, timestamp), answer, x in zip(
            producer.records, answers, [x0, x0, x1], strict=True
        ):
            event = orjson.loads(value)
            assert (topic, key) == ("log", answer["id"].encode())
            assert event["id"] == answer["id"] and event["x"] == x
            served = event["served"]
            assert served == {
                "prediction": answer["prediction"],
                "probabilities": answer["probabilities"],
                "model_version": "events:0@200",
                "model": NAME,
                "at": timestamp,
            }
            assert before <= timestamp <= after
        samples = _metrics(client)
    model = (("model", NAME),)
    assert samples[("streamtrain_predictions_logged_total", model)] == 3
    assert samples[("streamtrain_predictions_total", model)] == 3


def test_without_a_log_ids_are_echoed_and_none_made_up() -> None:
    with serving(log_topic=None) as (client, producers, _):
        x = PHISHING[0][0]
        assert "id" not in client.post("/predict", json={"x": x}).json()
        assert client.post("/predict", json={"id": "a", "x": x}).json()["id"] == "a"
        assert producers == []


def test_a_failed_or_unacknowledged_write_is_a_503_and_nothing_is_counted() -> None:
    x = PHISHING[0][0]
    with serving(timeout=0.3) as (client, producers, event_log):
        assert client.post("/predict", json={"x": x}).status_code == 200
        producer = producers[0]

        producer.outcome = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
        refused = client.post("/predict", json={"id": "a", "x": x})
        assert (refused.status_code, refused.json()["reason"]) == (503, "not-written")
        assert "feature events" in refused.json()["error"]

        producer.outcome = HANG
        t0 = time.monotonic()
        refused = client.post("/labels", json={"id": "a", "y": True})
        assert (refused.status_code, refused.json()["reason"]) == (503, "not-acknowledged")
        assert time.monotonic() - t0 < 2.0  # bounded by the delivery timeout, not a hang

        producer.outcome, producer.full = None, True
        refused = client.post("/labels", json={"id": "a", "y": True})
        assert (refused.status_code, refused.json()["reason"]) == (503, "queue-full")

        # A fatal error (as the error callback reports it) replaces the producer next time.
        producer.full = False
        producer.outcome = KafkaError(KafkaError._FATAL, "fenced", fatal=True)
        assert client.post("/labels", json={"id": "a", "y": True}).status_code == 503
        assert client.post("/labels", json={"id": "a", "y": True}).status_code == 200
        assert len(producers) == 2 and event_log.replaced == 1
        samples = _metrics(client)
    model = (("model", NAME),)
    assert samples[("streamtrain_predictions_logged_total", model)] == 1
    assert samples[("streamtrain_predict_requests_total", (("code", "503"), *model))] == 1
    assert samples[("streamtrain_labels_requests_total", (("code", "503"), *model))] == 3
    assert samples[("streamtrain_labels_accepted_total", model)] == 1
    # The app's shutdown closed the log (the hanging record went with the replaced producer).
    assert event_log.status()["connected"] is False


def test_labels_are_written_as_label_events() -> None:
    with serving() as (client, producers, _):
        one = client.post("/labels", json={"id": 42, "y": True})
        assert (one.status_code, one.json()) == (200, {"accepted": 1})
        batch = client.post(
            "/labels", json={"labels": [{"id": "a", "y": "cat"}, {"id": "b", "y": 0}]}
        )
        assert (batch.status_code, batch.json()) == (200, {"accepted": 2})
        named = client.post(f"/models/{NAME}/labels", json={"id": "c", "y": False})
        assert named.json() == {"accepted": 1}
        (producer,) = producers
        assert [(t, k, orjson.loads(v)) for t, k, v, _ in producer.records] == [
            ("labels", b"42", {"id": "42", "y": True}),
            ("labels", b"a", {"id": "a", "y": "cat"}),
            ("labels", b"b", {"id": "b", "y": 0}),
            ("labels", b"c", {"id": "c", "y": False}),
        ]
        samples = _metrics(client)
    assert samples[("streamtrain_labels_accepted_total", (("model", NAME),))] == 4


@pytest.mark.parametrize(
    ("snapshot", "label", "ok"),
    [
        (CLASSIFIER, True, True),
        (CLASSIFIER, 3, True),
        (CLASSIFIER, "yes", True),
        (CLASSIFIER, 0.5, False),
        (REGRESSOR, 0.5, True),
        (REGRESSOR, -7, True),
        (REGRESSOR, True, False),
        (REGRESSOR, "1.5", False),
    ],
)
def test_labels_must_suit_the_served_model(snapshot: ModelSnapshot, label: Any, ok: bool) -> None:
    with serving(snapshot) as (client, producers, _):
        response = client.post(
            "/labels", json={"labels": [{"id": "a", "y": 1}, {"id": "b", "y": label}]}
        )
        if ok:
            assert response.json() == {"accepted": 2}
            return
        assert response.status_code == 422
        assert (response.json()["reason"], response.json()["instance"]) == ("bad-label", 1)
        assert producers == []  # refused whole: not even the good label was written


def test_labels_are_off_without_a_topic_and_wait_for_a_model() -> None:
    with serving(log_topic=None, labels_topic=None) as (client, producers, _):
        off = client.post("/labels", json={"id": "a", "y": True})
        assert (off.status_code, off.json()["reason"]) == (404, "labels-off")
        assert "--labels-topic" in off.json()["error"]
    with serving(None) as (client, producers, _):
        bad = client.post("/labels", content=b"{")
        assert (bad.status_code, bad.json()["reason"]) == (400, "undecodable")
        none = client.post("/labels", json={"id": "a", "y": True})
        assert (none.status_code, none.json()["reason"]) == (503, "no-model")
        other = client.post("/models/someone-else/labels", json={"id": "a", "y": True})
        assert (other.status_code, other.json()["reason"]) == (404, "unknown-model")
        assert producers == []
        assert "/labels" in client.get("/openapi.json").json()["paths"]


def test_a_broker_nobody_answers_is_a_bounded_503() -> None:
    """Real librdkafka, nothing listening: refused within the bounds, never a hang or a 500."""
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1", connect_timeout=0.5)
    for ensure in (True, False):
        event_log = EventLog(kafka, delivery_timeout=0.5, ensure_topics=ensure)
        app = create_app(
            NAME, StaticSnapshotSource(CLASSIFIER), event_log=event_log, log_topic="log"
        )
        with TestClient(app) as client:
            t0 = time.monotonic()
            response = client.post("/predict", json={"id": "a", "x": PHISHING[0][0]})
            elapsed = time.monotonic() - t0
        assert response.status_code == 503, response.text
        expected = {"topic-unavailable"} if ensure else {"not-acknowledged", "not-written"}
        assert response.json()["reason"] in expected
        assert elapsed < 5.0
