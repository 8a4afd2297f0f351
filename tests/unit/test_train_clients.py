"""The trainer's consumer configuration: one static member per model and set of topics,
throughput defaults under the user's own ``-X`` options."""

from __future__ import annotations

from typing import Any

import pytest

from streamtrain.config import KafkaSettings
from streamtrain.train import clients as train_clients
from streamtrain.train.clients import CONSUMER_DEFAULTS, KafkaClients, consumer_config
from streamtrain.train.settings import TrainSettings


def _instance(**settings: Any) -> Any:
    return consumer_config(TrainSettings(**settings), "group").get("group.instance.id")


def test_a_named_trainer_is_one_static_member_per_set_of_topics() -> None:
    plain = _instance(topic="a", name="m")
    assert isinstance(plain, str) and plain.startswith("streamtrain.m.")
    assert _instance(topic="a", name="m") == plain  # a restart takes its place at once
    # Other topics read: another member, so the broker cannot hand it the last run's
    # assignment (of topics it no longer reads).
    others = {
        _instance(topic="b", name="m"),
        _instance(topic="a", name="m", labels_topic="l"),
        _instance(topic="a", name="m", labels_topic="l2"),
        _instance(topic="a", name="n"),
    }
    assert plain not in others and len(others) == 4
    assert _instance(topic="a", name="m", labels_topic="a") == plain  # labels inline


def test_unnamed_and_partitioned_trainers_are_dynamic_members() -> None:
    assert _instance(topic="a") is None
    assert _instance(topic="a", name="m", partitioned=True) is None


def _built_consumer_config(monkeypatch: pytest.MonkeyPatch, options: dict[str, str]) -> Any:
    """The config KafkaClients hands confluent-kafka for a trainer's consumer."""
    built: list[dict[str, Any]] = []
    monkeypatch.setattr(train_clients, "Consumer", built.append)
    kafka = KafkaSettings(bootstrap_servers="localhost:1", options=options)
    conf = consumer_config(TrainSettings(topic="a", name="m"), "group")
    KafkaClients(kafka).consumer(conf, lambda err: None)
    (out,) = built
    return out


def test_the_consumer_gets_streamtrains_throughput_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conf = _built_consumer_config(monkeypatch, {})
    assert conf["fetch.queue.backoff.ms"] == CONSUMER_DEFAULTS["fetch.queue.backoff.ms"]
    assert conf["isolation.level"] == "read_committed"


def test_a_users_own_x_option_wins_over_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    conf = _built_consumer_config(monkeypatch, {"fetch.queue.backoff.ms": "1000"})
    assert conf["fetch.queue.backoff.ms"] == "1000"
    # What exactly-once rests on is not the user's to change.
    conf = _built_consumer_config(monkeypatch, {"isolation.level": "read_uncommitted"})
    assert conf["isolation.level"] == "read_committed"
