"""Dead letters: records the trainer cannot learn from, kept with the reason and their origin.

A dead letter carries the original key, value and headers unchanged, plus these headers
(values UTF-8 text):

``streamtrain.error.reason``    stable code (:class:`~streamtrain.data.events.Reason` or
                                ``model-error``)
``streamtrain.error.message``   human-readable explanation
``streamtrain.source.topic``    topic the record was consumed from
``streamtrain.source.partition``
``streamtrain.source.offset``
``streamtrain.source.timestamp``  the record's timestamp (ms since epoch), when it had one
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message, Producer

__all__ = ["MODEL_ERROR", "DeadLetterSink", "OutputSink", "dead_letter_headers", "origin_headers"]

MODEL_ERROR = "model-error"
HEADER_PREFIX = "streamtrain."
_MAX_MESSAGE = 1000  # keep a runaway exception text from bloating every dead letter


Headers = list[tuple[str, str | bytes | None]]


def origin_headers(msg: Message) -> Headers:
    """Where a record came from: source topic, partition, offset and timestamp headers."""
    ts_type, ts = msg.timestamp()
    headers: Headers = [
        ("streamtrain.source.topic", (msg.topic() or "").encode()),
        ("streamtrain.source.partition", str(msg.partition()).encode()),
        ("streamtrain.source.offset", str(msg.offset()).encode()),
    ]
    if ts_type != TIMESTAMP_NOT_AVAILABLE:
        headers.append(("streamtrain.source.timestamp", str(ts).encode()))
    return headers


def dead_letter_headers(msg: Message, reason: str, message: str) -> Headers:
    """The original headers followed by streamtrain's reason and origin headers."""
    original = msg.headers() or []
    headers: Headers = list(original.items() if isinstance(original, dict) else original)
    headers += [
        ("streamtrain.error.reason", reason.encode()),
        ("streamtrain.error.message", message[:_MAX_MESSAGE].encode("utf-8", "replace")),
    ]
    return headers + origin_headers(msg)


class OutputSink:
    """Records the trainer writes besides checkpoints (dead letters, predictions).

    Delivery is asynchronous through the trainer's producer, and a failed delivery is recorded
    in ``failures`` (never ignored) so the trainer can report it and exit non-zero.

    A named model's sinks are ``deferred``: records wait in memory and are produced by
    :meth:`release` inside the checkpoint's transaction, just before the checkpoint record.
    The transaction is then open on the broker for the commit only, never while a model
    learns, so a slow learn step cannot outlive ``transaction.timeout.ms`` (the coordinator
    would abort the transaction and fence the trainer). Readers with ``read_committed`` see
    the records at the commit either way.
    """

    def __init__(self, producer: Producer, topic: str, *, deferred: bool = False) -> None:
        self._producer = producer
        self.topic = topic
        self.deferred = deferred
        self.failures: list[str] = []
        self.delivered = 0
        self._pending: list[tuple[bytes | None, bytes | str | None, Headers]] = []

    @property
    def pending(self) -> int:
        return len(self._pending)

    def rebind(self, producer: Producer) -> None:
        """Write through ``producer`` from now on (it replaced a stuck one)."""
        self._producer = producer

    def release(self) -> None:
        """Produce every deferred record (into the open transaction)."""
        pending, self._pending = self._pending, []
        for value, key, headers in pending:
            self._send_now(value, key, headers)

    def discard(self) -> None:
        """Forget deferred records: the state that made them is being rolled back."""
        self._pending = []

    def _produce(self, value: bytes | None, key: bytes | str | None, headers: Headers) -> None:
        if self.deferred:
            self._pending.append((value, key, headers))
        else:
            self._send_now(value, key, headers)

    def _send_now(self, value: bytes | None, key: bytes | str | None, headers: Headers) -> None:
        while True:
            try:
                self._producer.produce(
                    self.topic,
                    value=value,
                    key=key,
                    headers=headers,
                    on_delivery=self._on_delivery,
                )
                return
            except BufferError:
                # Local queue full: serve delivery reports to make room, never drop.
                self._producer.poll(0.1)

    def _on_delivery(self, err: Any, _msg: Message) -> None:
        if err is not None:
            self.failures.append(str(err))
        else:
            self.delivered += 1


class DeadLetterSink(OutputSink):
    """Sends refused records to the dead-letter topic (the trainer counts them per task)."""

    def send(self, msg: Message, reason: str, message: str) -> None:
        self._produce(msg.value(), msg.key(), dead_letter_headers(msg, reason, message))
