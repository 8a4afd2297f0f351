"""Where a trainer's outputs go: dead letters, predictions, drift detections and promotions,
as Kafka records.

Tasks keep the dead letters and predictions they made (:class:`streamtrain.train.tasks.Task`
``pending``) until a writer takes them. :class:`Outputs` turns them into records for their
topics; a named model produces those records inside its checkpoint transaction
(:mod:`streamtrain.train.checkpointing`), an unnamed trainer through :class:`OutputWriter`
after each batch.

A named model's outputs therefore wait in memory until the commit: the transaction is open on
the broker for the commit only, never while a model learns, so a slow learn step cannot outlive
``transaction.timeout.ms`` (the coordinator would abort the transaction and fence the trainer).
Readers with ``read_committed`` see the records at the commit either way.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import orjson
from confluent_kafka import Message, Producer

from streamtrain.formats import DEFAULT_EVENTS_TOPIC
from streamtrain.train.challengers import ChallengerChange
from streamtrain.train.deadletter import ORIGINAL_BYTES, TOO_LARGE, Headers, dead_letter_headers
from streamtrain.train.drift import Detection
from streamtrain.train.predictions import prediction_record
from streamtrain.train.promotion import Promotion
from streamtrain.train.step import DeadLetter, Prediction

__all__ = ["OutputRecord", "OutputWriter", "Outputs"]


class OutputRecord(NamedTuple):
    topic: str
    value: bytes | None
    key: Any
    headers: Headers


class Outputs:
    """The records for dead letters (``dlq_topic``), predictions (``predictions_topic``) and
    drift detections (``events_topic``, format: :mod:`streamtrain.formats`) and promotions (the
    same topic, JSON keyed by the model's name: ``Promotion.to_plain``)."""

    def __init__(
        self,
        *,
        dlq_topic: str,
        predictions_topic: str,
        model_name: str | None,
        input_topic: str,
        labels_topic: str | None = None,
        id_field: str | None = "id",
        events_topic: str = DEFAULT_EVENTS_TOPIC,
    ) -> None:
        self.events_topic = events_topic
        self.id_field = id_field  # the event's id, copied into its prediction
        self.dlq_topic = dlq_topic
        self.predictions_topic = predictions_topic
        self.model_name = model_name
        self.input_topic = input_topic
        self.labels_topic = labels_topic

    def records(
        self, items: Iterable[DeadLetter | Prediction | Detection | Promotion | ChallengerChange]
    ) -> Iterator[OutputRecord]:
        for item in items:
            if isinstance(item, Detection):
                yield self._detection(item)
            elif isinstance(item, Promotion | ChallengerChange):
                value = orjson.dumps(item.to_plain())
                yield OutputRecord(self.events_topic, value, self.model_name or item.model, [])
            elif isinstance(item, DeadLetter):
                msg = item.record
                headers = dead_letter_headers(msg, item.reason, item.message)
                value = msg.value()
                if item.reason == TOO_LARGE:  # not copied: see streamtrain.records.limits
                    headers.append((ORIGINAL_BYTES, str(len(value or b"")).encode()))
                    value = None
                yield OutputRecord(self.dlq_topic, value, msg.key(), headers)
            else:
                value, key, headers = prediction_record(
                    item, self.model_name, self.input_topic, self.labels_topic, self.id_field
                )
                yield OutputRecord(self.predictions_topic, value, key, headers)

    def _detection(self, item: Detection) -> OutputRecord:
        value = {
            "format": 1,
            "kind": "drift",
            "model": self.model_name,
            "label": item.label,
            "events": item.events,
            "source": {"topic": self.input_topic, **item.position()},
            "detector": item.detector,
            "state": item.state,
            "action": item.action,
        }
        return OutputRecord(self.events_topic, orjson.dumps(value), self.model_name, [])


class OutputWriter:
    """Produces records outside any transaction (an unnamed trainer: at least once).

    Delivery is asynchronous; a failed delivery is kept in ``failures`` (never ignored) so the
    trainer can report it and exit non-zero.
    """

    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self.failures: dict[str, list[str]] = {}
        self.delivered = 0

    def write(self, records: Iterable[OutputRecord]) -> None:
        for record in records:
            topic = record.topic

            def on_delivery(err: Any, _msg: Message, topic: str = topic) -> None:
                if err is not None:
                    self.failures.setdefault(topic, []).append(str(err))
                else:
                    self.delivered += 1

            while True:
                try:
                    self.producer.produce(
                        topic,
                        value=record.value,
                        key=record.key,
                        headers=record.headers,
                        on_delivery=on_delivery,
                    )
                    break
                except BufferError:
                    # Local queue full: serve delivery reports to make room, never drop.
                    self.producer.poll(0.1)
