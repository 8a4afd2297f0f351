"""The trainer's consumer configuration: one static member per model and set of topics."""

from __future__ import annotations

from typing import Any

from streamtrain.train.clients import consumer_config
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
