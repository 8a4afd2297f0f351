"""The serving app without Kafka: request validation, status codes, metrics, event stream.

The app runs over an injected :class:`StaticSnapshotSource` and a bare :class:`MetricsHub`;
the model is a real River pipeline trained here.
"""

from __future__ import annotations

import itertools
import json
import math
import pickle
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from river import datasets, linear_model, preprocessing

from streamtrain.config import KafkaSettings
from streamtrain.data.events import MAX_FEATURE_MAGNITUDE
from streamtrain.serving.app import create_app
from streamtrain.serving.curves import ADDED
from streamtrain.serving.follower import (
    CheckpointFollower,
    MetricsHub,
    ModelKeys,
    StaticSnapshotSource,
)
from streamtrain.serving.snapshot import ModelSnapshot, ReplicaSet
from streamtrain.state.envelope import CheckpointHeader, seal
from streamtrain.state.keys import SigningKey
from streamtrain.state.store import CheckpointStore

NAME = "unit-model"
MAX_BODY = 4096
MAX_INSTANCES = 5
PHISHING = list(itertools.islice(datasets.Phishing(), 300))


def _header(events: int, name: str = NAME) -> CheckpointHeader:
    return CheckpointHeader(
        model_name=name,
        model_spec="StandardScaler | LogisticRegression",
        offsets={"events": {0: events}},
        events_learned=events,
        dead_lettered=2,
        metrics={"ROCAUC": 0.9},
        created_at=time.time() - 3,
        versions={},
    )


def _model(events: int) -> Any:
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    for x, y in PHISHING[:events]:
        model.learn_one(x, y)
    return model


SNAPSHOT = ModelSnapshot(_header(300), _model(300))


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    app = create_app(
        NAME,
        StaticSnapshotSource(SNAPSHOT),
        MetricsHub(),
        max_body_bytes=MAX_BODY,
        max_instances=MAX_INSTANCES,
    )
    with TestClient(app) as c:
        yield c


def _post(client: TestClient, body: bytes | str) -> Any:
    return client.post(
        "/predict",
        content=body.encode() if isinstance(body, str) else body,
        headers={"content-type": "application/json"},
    )


def test_single_and_batch_answers_are_the_models(client: TestClient) -> None:
    x0, x1 = PHISHING[0][0], PHISHING[1][0]
    one = _post(client, json.dumps({"x": x0}))
    assert one.status_code == 200
    answer = one.json()
    proba = SNAPSHOT.model.predict_proba_one(x0)
    assert answer["probabilities"] == {"true": proba[True], "false": proba[False]}
    assert answer["prediction"] == (proba[True] > proba[False])
    assert answer["model_version"] == "events:0@300"
    assert answer["events_learned"] == 300

    batch = _post(client, json.dumps([{"x": x0}, {"x": x1}]))
    assert batch.status_code == 200
    answers = batch.json()
    assert isinstance(answers, list) and len(answers) == 2
    assert answers[0] == answer
    assert answers[1]["probabilities"]["true"] == SNAPSHOT.model.predict_proba_one(x1)[True]

    named = client.post(f"/models/{NAME}/predict", json={"x": x0})
    assert named.status_code == 200 and named.json() == answer


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"", 400, "undecodable"),
        (b"\xff\xfe", 400, "undecodable"),
        (b'{"x": {"a": NaN}}', 400, "undecodable"),  # NaN is not JSON
        (b'{"x": {"a": Infinity}}', 400, "undecodable"),
        (b'{"x": {"a": -Infinity}}', 400, "undecodable"),
        (b'{"x": {"a": 1e400}}', 400, "undecodable"),  # overflows to infinity
        (b'{"x": {"a": 1', 400, "undecodable"),
        (b'"x"', 422, "not-an-object"),
        (b"null", 422, "not-an-object"),
        (b"42", 422, "not-an-object"),
        (b'{"y": true}', 422, "bad-features"),
        (b'{"x": {}}', 422, "bad-features"),
        (b'{"x": [1, 2]}', 422, "bad-features"),
        (b'{"x": {"a": "1.5"}}', 422, "bad-features"),
        (b'{"x": {"a": true}}', 422, "bad-features"),
        (b'{"x": {"a": null}}', 422, "bad-features"),
        (b'{"x": {"a": {"b": 1}}}', 422, "bad-features"),
        (b'{"x": {"a": 1e200}}', 422, "feature-out-of-range"),
        (b'{"x": {"a": 1}, "y": 0}', 422, "unknown-field"),
        (b"[]", 422, "empty-batch"),
    ],
)
def test_bad_bodies_are_refused_with_a_reason(
    client: TestClient, body: bytes, status: int, reason: str
) -> None:
    response = _post(client, body)
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["reason"] == reason
    assert payload["error"]
    assert "instance" not in payload  # not a batch


def test_a_bad_instance_fails_the_batch_and_is_named(client: TestClient) -> None:
    good = {"x": PHISHING[0][0]}
    response = _post(client, json.dumps([good, good, {"x": {"a": "no"}}]))
    assert response.status_code == 422
    assert response.json()["instance"] == 2
    assert response.json()["reason"] == "bad-features"
    response = _post(client, json.dumps([good, 7]))
    assert (response.status_code, response.json()["instance"]) == (422, 1)


def test_limits(client: TestClient) -> None:
    good = {"x": {"a": 1.0}}
    assert _post(client, json.dumps([good] * MAX_INSTANCES)).status_code == 200
    too_many = _post(client, json.dumps([good] * (MAX_INSTANCES + 1)))
    assert too_many.status_code == 413
    assert too_many.json()["reason"] == "too-many-instances"

    big = json.dumps({"x": {f"f{i}": i for i in range(1000)}})
    assert len(big) > MAX_BODY
    declared = _post(client, big)
    assert (declared.status_code, declared.json()["reason"]) == (413, "body-too-large")

    def chunks() -> Iterator[bytes]:
        # A chunked body has no Content-Length: the limit must hold while reading.
        for _ in range(100):
            yield b" " * 1024

    chunked = client.post("/predict", content=chunks())
    assert (chunked.status_code, chunked.json()["reason"]) == (413, "body-too-large")


def test_unknown_model_is_404(client: TestClient) -> None:
    for path in ("/models/someone-else/predict",):
        response = client.post(path, json={"x": {"a": 1}})
        assert response.status_code == 404
        assert response.json()["reason"] == "unknown-model"
    assert client.get("/models/someone-else").status_code == 404
    assert client.get(f"/models/{NAME}").json()["name"] == NAME


def test_no_model_is_503_until_one_is_set() -> None:
    source = StaticSnapshotSource(None)
    with TestClient(create_app(NAME, source)) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        refused = client.post("/predict", json={"x": {"a": 1}})
        assert (refused.status_code, refused.json()["reason"]) == (503, "no-model")
        # Validation comes first: a bad body is a 4xx even without a model.
        assert client.post("/predict", content=b"NaN").status_code == 400
        model = client.get("/model")
        assert model.status_code == 503 and model.json()["loaded"] is False

        source.set(SNAPSHOT)
        assert client.get("/readyz").json() == {"ready": True, "model_version": "events:0@300"}
        assert client.post("/predict", json={"x": PHISHING[0][0]}).status_code == 200
        described = client.get("/model").json()
        assert described["loaded"] is True
        assert described["version"] == "events:0@300"
        assert described["spec"] == "StandardScaler | LogisticRegression"
        assert described["events_learned"] == 300
        assert described["metrics"] == {"ROCAUC": 0.9}
        assert described["checkpoint_age_seconds"] >= 3
        assert described["last_rejection"] is None


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_prometheus_metrics_count_what_happened() -> None:
    source = StaticSnapshotSource(SNAPSHOT)
    with TestClient(create_app(NAME, source)) as client:
        for _ in range(3):
            assert client.post("/predict", json={"x": PHISHING[0][0]}).status_code == 200
        assert client.post("/predict", json=[{"x": {"a": 1}}] * 4).status_code == 200
        assert client.post("/predict", content=b"{").status_code == 400
        response = client.get("/metrics")
    assert response.status_code == 200
    samples = _samples(response.text)
    model = (("model", NAME),)
    assert samples[("streamtrain_predictions_total", model)] == 7
    assert samples[("streamtrain_predict_requests_total", (("code", "200"), *model))] == 4
    assert samples[("streamtrain_predict_requests_total", (("code", "400"), *model))] == 1
    assert samples[("streamtrain_predict_latency_seconds_count", model)] == 5
    info_labels = (
        ("model", NAME),
        ("spec", "StandardScaler | LogisticRegression"),
        ("version", "events:0@300"),
    )
    assert samples[("streamtrain_model_info", info_labels)] == 1
    assert samples[("streamtrain_model_events_learned", model)] == 300
    assert samples[("streamtrain_model_checkpoint_age_seconds", model)] >= 3
    assert samples[("streamtrain_model_swaps_total", model)] == 1
    assert samples[("streamtrain_model_loaded", model)] == 1


def test_events_stream_sends_history_then_live_records() -> None:
    hub = MetricsHub(history=3)
    for i in range(5):
        hub.publish({"events_learned": i})
    with TestClient(create_app(NAME, StaticSnapshotSource(SNAPSHOT), hub)) as client:
        with client.stream("GET", "/events") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = response.iter_lines()
            events: list[tuple[str, Any]] = []
            kind = None
            for line in lines:
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    events.append((str(kind), json.loads(line.removeprefix("data: "))))
                    if kind == "history":
                        hub.publish({"events_learned": 5})
                        hub.publish({"events_learned": 6})
                    elif len(events) == 3:
                        hub.close_subscribers()  # ends the stream
        # Records go out with every model's view added (serving/curves.py); as published:
        events = [
            (kind, [_bare(r) for r in data] if kind == "history" else _bare(data))
            for kind, data in events
        ]
        assert events == [  # the history thinned: its first record stays, and the newest
            ("history", [{"events_learned": i} for i in (0, 2, 4)]),
            ("record", {"events_learned": 5}),
            ("record", {"events_learned": 6}),
        ]


def test_dashboard_is_served_with_its_assets_only() -> None:
    with TestClient(create_app(NAME, StaticSnapshotSource(SNAPSHOT))) as client:
        page = client.get("/")
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "connect-src 'self'" in csp
        assert "http://" not in page.text and "https://" not in page.text
        for asset in ("static/dashboard.js", "static/join.js", "static/dashboard.css"):
            assert asset in page.text
            response = client.get("/" + asset)
            assert response.status_code == 200
            assert "http://" not in response.text and "https://" not in response.text
        assert client.get("/dashboard.json").json()["name"] == NAME
        # FastAPI's own doc pages pull scripts from a CDN: they must not be served.
        assert client.get("/docs").status_code == 404
        assert client.get("/redoc").status_code == 404
        spec = client.get("/openapi.json").json()
        assert "/predict" in spec["paths"]


# -- the hub and the follower's swap, without Kafka ----------------------------------------


def _bare(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in ADDED}


def test_hub_subscription_has_no_gap_and_no_repeat() -> None:
    import asyncio

    # Room for every record: a subscriber that falls behind is ended, which is not the point.
    hub = MetricsHub(history=10_000, queue_size=5_000)

    async def scenario() -> list[int]:
        stop = threading.Event()

        def produce() -> None:
            for i in range(3000):
                hub.publish({"i": i})
            stop.set()

        thread = threading.Thread(target=produce)
        thread.start()
        await asyncio.sleep(0.001)  # subscribe while records are flowing
        history, sub = hub.subscribe()
        seen = [r["i"] for r in history]
        while not (stop.is_set() and sub.queue.empty()):
            try:
                record = await asyncio.wait_for(sub.queue.get(), 0.05)
            except TimeoutError:
                continue
            assert record is not None
            seen.append(record["i"])
        thread.join()
        return seen

    assert asyncio.run(scenario()) == list(range(3000))


KEY = SigningKey(b"unit-serving-secret-0123456789", "test")
OTHER_KEY = SigningKey(b"another-secret-entirely-987654321", "test")


def _sealed(events: int, key: SigningKey = KEY, name: str = NAME) -> bytes:
    state = {"model": _model(events)}
    return seal(_header(events, name), pickle.dumps(state), key)


def test_follower_swaps_verified_checkpoints_and_keeps_serving_on_rejection() -> None:
    store = CheckpointStore(KafkaSettings(bootstrap_servers="127.0.0.1:1"), KEY, "ckpt")
    follower = CheckpointFollower(store, ModelKeys(NAME))
    assert follower.current() is None

    follower._open(NAME, _sealed(100), 0, 0)
    follower._swap()
    first = follower.current()
    assert first is not None and first.version == "events:0@100"
    assert (follower.swaps, follower.rejections) == (1, 0)

    forged = _sealed(200, key=OTHER_KEY)
    follower._open(NAME, forged, 0, 1)
    assert follower.current() is first  # still serving the verified one
    tampered = bytearray(_sealed(200))
    tampered[40] ^= 0x01
    follower._open(NAME, bytes(tampered), 0, 2)
    follower._open(NAME, _sealed(200, name="impostor"), 0, 3)  # signed, but another model's
    assert follower.current() is first
    assert follower.rejections == 3
    rejection = follower.status()["last_rejection"]
    assert rejection["offset"] == 3 and "impostor" in rejection["error"]

    follower._open(NAME, _sealed(250), 0, 4)
    follower._swap()
    current = follower.current()
    assert current is not None and current.version == "events:0@250"
    assert follower.swaps == 2

    # Re-reading the topic after a reconnect opens nothing twice.
    follower._open(NAME, _sealed(100), 0, 0)
    follower._open(NAME, _sealed(250), 0, 4)
    follower._swap()
    assert follower.current() is current and follower.swaps == 2


def test_follower_serves_a_partitioned_model_as_its_replicas() -> None:
    store = CheckpointStore(KafkaSettings(bootstrap_servers="127.0.0.1:1"), KEY, "ckpt")
    follower = CheckpointFollower(store, ModelKeys(NAME))
    keys = ModelKeys(NAME)
    assert keys.owns_checkpoint(f"{NAME}/p3") and not keys.owns_checkpoint(f"{NAME}-2/p0")
    assert not keys.owns_checkpoint(f"{NAME}/px")

    follower._open(f"{NAME}/p1", _sealed(120, name=f"{NAME}/p1"), 0, 0)
    follower._open(f"{NAME}/p0", _sealed(80, name=f"{NAME}/p0"), 0, 1)
    follower._open(f"{NAME}-other/p0", _sealed(50, name=f"{NAME}-other/p0"), 0, 2)
    follower._swap()
    served = follower.current()
    assert isinstance(served, ReplicaSet)
    assert [r.header.model_name for r in served.replicas] == [f"{NAME}/p0", f"{NAME}/p1"]
    assert served.version == "events:0@80,events:0@120"
    assert follower.swaps == 1

    with TestClient(create_app(NAME, follower)) as client:
        x = PHISHING[0][0]
        answer = client.post("/predict", json={"x": x}).json()
        mean = sum(r.model.predict_proba_one(x)[True] for r in served.replicas) / 2
        assert answer["probabilities"]["true"] == pytest.approx(mean)
        assert answer["model_version"] == served.version
        assert answer["events_learned"] == 200
        described = client.get("/model").json()
        assert described["events_learned"] == 200 and len(described["replicas"]) == 2
        metrics = _samples(client.get("/metrics").text)
        assert metrics[("streamtrain_model_events_learned", (("model", NAME),))] == 200


# -- fuzzing ---------------------------------------------------------------------------------

_numbers = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
)
_json_values = st.recursive(
    st.none() | st.booleans() | _numbers | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=12,
)
_features = st.dictionaries(st.text(max_size=6), _json_values | _numbers, max_size=4)
_valid = st.fixed_dictionaries(
    {"x": st.dictionaries(st.text(max_size=6), _numbers, min_size=1, max_size=4)}
)
_instances = st.one_of(
    _valid,
    st.fixed_dictionaries({"x": _features}),
    st.fixed_dictionaries({"x": _features}, optional={"y": _json_values}),
    _json_values,
)
_bodies = st.one_of(_instances, st.lists(_instances, max_size=MAX_INSTANCES + 2))


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list):
        return any(_has_non_finite(v) for v in value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    return False


def _valid_instance(item: Any) -> bool:
    if not isinstance(item, dict) or set(item) != {"x"}:
        return False
    x = item["x"]
    return (
        isinstance(x, dict)
        and bool(x)
        and all(
            type(v) is int or (type(v) is float and abs(v) <= MAX_FEATURE_MAGNITUDE)
            for v in x.values()
        )
    )


def _expected_status(body: Any) -> int:
    if _has_non_finite(body):
        return 400  # json.dumps wrote NaN/Infinity, which is not JSON
    if isinstance(body, list):
        if len(body) > MAX_INSTANCES:
            return 413
        return 200 if body and all(_valid_instance(b) for b in body) else 422
    return 200 if _valid_instance(body) else 422


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=_bodies)
def test_fuzzed_json_bodies_never_500_and_match_the_rules(client: TestClient, body: Any) -> None:
    raw = json.dumps(body)
    response = _post(client, raw)
    expected = 413 if len(raw.encode()) > MAX_BODY else _expected_status(body)
    assert response.status_code == expected, (raw, response.text)
    event(f"status {expected}")
    payload = response.json()
    if expected != 200:
        assert set(payload) >= {"error", "reason"}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.binary(max_size=200))
def test_fuzzed_bytes_never_500(client: TestClient, raw: bytes) -> None:
    response = _post(client, raw)
    assert response.status_code in (200, 400, 413, 422), response.text
    assert response.headers["content-type"] == "application/json"
