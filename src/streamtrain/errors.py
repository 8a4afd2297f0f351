"""Errors streamtrain raises on purpose: each carries a one-line message for the CLI."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from confluent_kafka import KafkaError


class StreamtrainError(Exception):
    """Base for expected failures; the CLI prints ``str(err)`` on one line and exits non-zero."""

    exit_code = 1


class ConfigError(StreamtrainError):
    """Settings, flags or a spec string that cannot be used."""

    exit_code = 2


class BrokerError(StreamtrainError):
    """The local broker could not be fetched, started, stopped or inspected."""


class BrokerUnreachable(StreamtrainError):
    """No Kafka broker answered at the bootstrap address within the bounded wait."""

    exit_code = 3


class TopicMissing(StreamtrainError):
    """A topic the command reads does not exist."""

    exit_code = 4


class TopicReadError(StreamtrainError):
    """A topic could not be read to its end: a fetch failed, or no progress in the bounded wait.

    ``kafka_error`` is the client's error when there was one (also the ``__cause__``).
    """

    def __init__(self, message: str, kafka_error: KafkaError | None = None) -> None:
        super().__init__(message)
        self.kafka_error = kafka_error


class SchemaRegistryError(StreamtrainError):
    """The local schema registry could not be fetched, started, stopped or inspected."""


class SchemaRegistryUnreachable(StreamtrainError):
    """No schema registry answered within the bounded wait: not the fault of any record, so
    the run stops (nothing is dead-lettered for it)."""

    exit_code = 9  # not 5: that is a refused checkpoint


class NotAuthorized(StreamtrainError):
    """The broker refused a right the command needs (a topic, group or transactional id ACL).

    ``kafka_error`` is the broker's refusal (also the ``__cause__`` where there was one).
    """

    exit_code = 8

    def __init__(self, message: str, kafka_error: KafkaError | None = None) -> None:
        super().__init__(message)
        self.kafka_error = kafka_error


class NotAuthenticated(NotAuthorized):
    """The broker refused the login (SASL credentials); same exit code as a refused right."""
