"""Writing records from request handlers, answered only once the broker has them.

:class:`EventLog` is the one producer of a serve process, shared by the prediction log
(``--log-topic``) and ``POST /labels`` (``--labels-topic``). It is idempotent with
``acks=all``: a record is acknowledged once every in-sync replica has it, and librdkafka's
retries neither duplicate nor reorder it. Raw librdkafka options (``-X``) pass through, except
that these two always hold.

A handler awaits :meth:`EventLog.write`: it returns when the broker acknowledged every record,
or raises :class:`RequestRefused` (503, with a reason) when one failed, the broker did not answer
within ``delivery_timeout`` seconds, or the local queue is full. The wait is an asyncio future
per record, settled from the delivery report on the producer's poll thread, so the event loop
keeps serving while records are in flight. librdkafka gives up on a record after the same
``delivery_timeout`` (``message.timeout.ms``, unless set with ``-X``), so a 503 for a timeout
usually means the record was not written; it is not a promise. A client that retries after a
503 may write a record twice, under the same id.

The producer is made at the first write, not at start, so serve starts while the broker is
away; a topic that does not exist yet is created then (one partition; create it beforehand for
more). A producer that hits a fatal error (e.g. the idempotence state is lost) is replaced at
the next write. :meth:`close` flushes what is still in flight, for a bounded time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streamtrain.config import KafkaSettings
from streamtrain.errors import StreamtrainError
from streamtrain.kafka.clients import client_config, ensure_topic
from streamtrain.serving.records import OutRecord
from streamtrain.serving.responses import RequestRefused
from streamtrain.serving.settings import DEFAULT_DELIVERY_TIMEOUT

__all__ = ["DEFAULT_DELIVERY_TIMEOUT", "EventLog", "ProducerFactory", "Sink"]

log = logging.getLogger(__name__)

# What the endpoints promise (acknowledged by every in-sync replica, written once): not options.
_REQUIRED = {"enable.idempotence": True, "acks": "all"}
# A request waits for its records: send them soon rather than batch for throughput.
_DEFAULTS = {"linger.ms": 2}
_POLL_SECONDS = 0.1

ProducerFactory = Callable[[dict[str, Any]], Producer]


class EventLog:
    """The serve process's producer: :meth:`write` records and wait for the broker's ack.

    ``producer_factory`` builds the producer from its config (tests pass a fake);
    ``ensure_topics=False`` skips creating missing topics.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        delivery_timeout: float = DEFAULT_DELIVERY_TIMEOUT,
        producer_factory: ProducerFactory = Producer,
        ensure_topics: bool = True,
    ) -> None:
        if delivery_timeout <= 0:
            raise ValueError(f"delivery_timeout must be positive, got {delivery_timeout}")
        self.kafka = kafka
        self.delivery_timeout = delivery_timeout
        self._factory = producer_factory
        self._ensure_topics = ensure_topics
        self._lock = threading.Lock()  # making, replacing and closing the producer
        self._producer: Producer | None = None
        self._poller: _Poller | None = None
        self._fatal: KafkaError | None = None
        self._topics: set[str] = set()  # known to exist
        self._closed = False
        self.replaced = 0  # producers replaced after a fatal error

    async def write(self, topic: str, records: Sequence[OutRecord], what: str) -> None:
        """Produce ``records`` to ``topic``; return once the broker acknowledged them all.

        ``what`` names the records in a refusal ("feature events", "labels").
        """
        if not records:
            return
        producer = self._producer
        if producer is None or self._fatal is not None or topic not in self._topics:
            # Making a producer and checking a topic wait on the network: not on the loop.
            producer = await asyncio.to_thread(self._ready, topic, what)
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[KafkaError | None]] = []
        for record in records:
            future: asyncio.Future[KafkaError | None] = loop.create_future()
            try:
                producer.produce(
                    topic,
                    value=record.value,
                    key=record.key,
                    timestamp=record.timestamp,
                    on_delivery=_reporter(loop, future),
                )
            except BufferError:
                raise RequestRefused(
                    503,
                    "queue-full",
                    f"too many {what} waiting for the broker; try again later",
                ) from None
            except KafkaException as err:
                self._note(err.args[0] if err.args else None)
                raise _not_written(what, topic, err) from err
            futures.append(future)
        _done, pending = await asyncio.wait(futures, timeout=self.delivery_timeout)
        if pending:
            for future in pending:
                future.cancel()  # its late report finds it done and is dropped
            raise RequestRefused(
                503,
                "not-acknowledged",
                f"the broker did not acknowledge {len(pending)} of {len(futures)} {what} "
                f"for {topic!r} within {self.delivery_timeout:g}s",
            )
        for future in futures:
            error = future.result()
            if error is not None:
                self._note(error)
                failure = KafkaException(error)
                raise _not_written(what, topic, failure) from failure

    def close(self, timeout: float = DEFAULT_DELIVERY_TIMEOUT) -> None:
        """Wait up to ``timeout`` for records in flight, then drop the producer; idempotent."""
        with self._lock:
            self._closed = True
            producer, poller = self._producer, self._poller
            self._producer = self._poller = None
        if producer is not None and poller is not None:
            _retire(producer, poller, timeout)

    def status(self) -> dict[str, Any]:
        return {
            "connected": self._producer is not None,
            "topics": sorted(self._topics),
            "replaced": self.replaced,
            "last_fatal_error": self._fatal.str() if self._fatal is not None else None,
        }

    # -- on a worker thread -------------------------------------------------------------------

    def _ready(self, topic: str, what: str) -> Producer:
        """The producer, made or replaced as needed, once ``topic`` is known to exist."""
        with self._lock:
            if self._closed:
                raise RequestRefused(503, "shutting-down", "the server is stopping")
            if self._producer is not None and self._fatal is not None:
                log.warning("replacing the producer after a fatal error: %s", self._fatal.str())
                assert self._poller is not None
                _retire(self._producer, self._poller, 0)
                self._producer = self._poller = None
                self.replaced += 1
            if topic not in self._topics and self._ensure_topics:
                try:
                    ensure_topic(self.kafka, topic)
                except (StreamtrainError, KafkaException) as err:
                    raise RequestRefused(
                        503, "topic-unavailable", f"cannot write {what} to {topic!r}: {err}"
                    ) from err
            self._topics.add(topic)
            if self._producer is None:
                self._fatal = None
                self._producer = self._factory(self._config())
                self._poller = _Poller(self._producer)
            return self._producer

    def _config(self) -> dict[str, Any]:
        defaults: dict[str, Any] = {
            **_DEFAULTS,
            "message.timeout.ms": int(self.delivery_timeout * 1000),
        }
        chosen = {k: v for k, v in defaults.items() if k not in self.kafka.options}
        return client_config(self.kafka, **chosen, **_REQUIRED, error_cb=self._on_error)

    def _on_error(self, error: KafkaError) -> None:
        self._note(error)

    def _note(self, error: Any) -> None:
        """Remember a fatal error: the next write replaces the producer."""
        if isinstance(error, KafkaError) and error.fatal():
            self._fatal = error


@dataclasses.dataclass(frozen=True)
class Sink:
    """One topic written through an :class:`EventLog`; ``what`` names its records."""

    log: EventLog
    topic: str
    what: str

    async def write(self, records: Sequence[OutRecord]) -> None:
        await self.log.write(self.topic, records, self.what)


class _Poller:
    """Serves a producer's delivery reports on a thread of its own until stopped."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self._run, name="serve-producer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.halt.is_set():
            try:
                self.producer.poll(_POLL_SECONDS)
            except Exception as err:  # a dead poller would leave every request to time out
                log.warning("serving delivery reports failed (continuing): %r", err)
                self.halt.wait(_POLL_SECONDS)

    def stop(self) -> None:
        self.halt.set()
        self.thread.join()


def _retire(producer: Producer, poller: _Poller, timeout: float) -> None:
    """Stop polling, give records in flight ``timeout`` seconds, fail the rest."""
    poller.stop()
    left = producer.flush(timeout)
    if left:
        log.warning("%d record(s) not acknowledged when the producer was closed", left)
        producer.purge()
        producer.flush(0)  # serves the purged records' reports: their requests get a 503


def _reporter(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[KafkaError | None]
) -> Callable[[KafkaError | None, Message], None]:
    """A delivery callback (run on the poll thread) that settles ``future`` on its loop."""

    def settle(error: KafkaError | None) -> None:
        if not future.done():  # cancelled: its request already answered 503
            future.set_result(error)

    def on_delivery(error: KafkaError | None, _msg: Message) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, error)

    return on_delivery


def _not_written(what: str, topic: str, err: KafkaException) -> RequestRefused:
    error = err.args[0] if err.args else None
    detail = error.str() if isinstance(error, KafkaError) else str(err)
    return RequestRefused(503, "not-written", f"{what} for {topic!r} not written: {detail}")
