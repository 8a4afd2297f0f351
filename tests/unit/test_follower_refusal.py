"""A follower refused a right stops for good and says so, instead of retrying for ever."""

from __future__ import annotations

import threading

from confluent_kafka import KafkaError
from fastapi.testclient import TestClient

from streamtrain.config import KafkaSettings
from streamtrain.errors import NotAuthorized
from streamtrain.kafka.authz import not_authorized
from streamtrain.serving.app import create_app
from streamtrain.serving.follower import CheckpointFollower, ModelKeys
from streamtrain.state.keys import SigningKey
from streamtrain.state.store import CheckpointStore


def test_a_refused_follower_stops_hands_the_refusal_over_and_readyz_names_it() -> None:
    store = CheckpointStore(
        KafkaSettings(bootstrap_servers="127.0.0.1:1"), SigningKey(b"k" * 32, "test"), "ckpt"
    )
    refusal = not_authorized(
        KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), "reading the ckpt", topics=["ckpt"]
    )
    handed: list[NotAuthorized] = []
    ended = threading.Event()
    calls = 0

    def denied() -> None:
        nonlocal calls
        calls += 1
        raise refusal

    def on_denied(err: NotAuthorized) -> None:
        handed.append(err)
        ended.set()

    follower = CheckpointFollower(store, ModelKeys("m"), on_denied)
    follower._follow = denied  # type: ignore[method-assign]  # the broker's refusal
    with TestClient(create_app("m", follower)) as client:
        assert ended.wait(10)
        assert follower._thread is not None
        follower._thread.join(10)
        assert not follower._thread.is_alive() and calls == 1  # not retried
        assert handed == [refusal] and follower.status()["denied"] == str(refusal)
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["reason"].startswith("not authorized: reading the ckpt needs READ")
