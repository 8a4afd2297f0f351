"""Refused rights become one-line errors naming the right, told by code, never by text."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from streamtrain.errors import NotAuthorized
from streamtrain.kafka.authz import is_denied, not_authorized
from streamtrain.train.reporting import ClientErrors
from streamtrain.train.settings import TrainSettings


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, "needs WRITE on topic 'out'"),
        (KafkaError.GROUP_AUTHORIZATION_FAILED, "needs READ on consumer group 'g'"),
        (KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, "needs WRITE on transactional id 't'"),
        (KafkaError.CLUSTER_AUTHORIZATION_FAILED, "needs a right on cluster"),
    ],
)
def test_each_refusal_names_its_resource_and_right(code: int, expected: str) -> None:
    # The text of the error is misleading on purpose: only the code may decide.
    err = KafkaError(code, "Group authorization failed")
    assert is_denied(err)
    refusal = not_authorized(
        err, "x", topics=["out"], topic_right="WRITE", group="g", transactional_id="t"
    )
    assert isinstance(refusal, NotAuthorized) and refusal.kafka_error is err
    assert expected in str(refusal) and "\n" not in str(refusal)
    assert refusal.exit_code == 8


def test_other_errors_are_not_refusals() -> None:
    assert not is_denied(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, "topic authorization"))
    assert not is_denied(KafkaError(KafkaError._TRANSPORT))
    assert not is_denied(None)


def test_a_refused_consumer_stops_the_trainer_once_and_names_the_group() -> None:
    stops: list[str] = []
    errors = ClientErrors(stops.append)
    denied = KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED)
    errors.on_message_error(denied)
    errors.on_consumer_error(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    assert stops == ["not-authorized"] and errors.denied == ("consumer", denied)
    refusal = errors.refusal(TrainSettings(topic="in"), "streamtrain.m", "streamtrain.m")
    assert "needs READ on consumer group 'streamtrain.m'" in str(refusal)
    assert refusal.kafka_error is denied


def test_a_refused_unnamed_producer_names_the_output_topics() -> None:
    stops: list[str] = []
    errors = ClientErrors(stops.append)
    errors.on_error(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    refusal = errors.refusal(TrainSettings(topic="in"), "g", None)
    assert stops == ["not-authorized"]
    assert "needs WRITE on topics 'in.dlq', 'in.predictions'" in str(refusal)
