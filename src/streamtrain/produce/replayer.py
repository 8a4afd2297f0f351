"""Replay events into a Kafka topic with an idempotent producer, optionally at a steady rate.

Nothing is dropped: a full local queue is drained by polling and the event retried, and every
event handed to the producer ends up counted as delivered or failed. Messages still unconfirmed
when the bounded final flush gives up are purged and counted as failed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streamtrain.config import KafkaSettings
from streamtrain.data.events import encode_event
from streamtrain.data.sources import open_source
from streamtrain.errors import ConfigError, StreamtrainError
from streamtrain.kafka.clients import (
    admin_client,
    client_config,
    ensure_topic,
    partition_count,
    wait_for_cluster,
)
from streamtrain.produce.settings import ProduceReport, ProduceSettings
from streamtrain.stopping import StopFlag

__all__ = ["Replayer"]

log = logging.getLogger(__name__)

# Throughput defaults; a raw option (-X, env, [kafka] table) of the same name wins.
PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "batch.num.messages": 10000,
    "queue.buffering.max.messages": 100000,
}
FLUSH_TIMEOUT_SECONDS = 30.0
MAX_ERRORS_KEPT = 5
# Behind schedule, at most this many events go out back to back to catch up.
MAX_BURST = 10
PROGRESS_INTERVAL_SECONDS = 0.1


class Replayer:
    """Produces events to ``settings.topic``; ``run`` once, ``stop`` from any thread.

    ``on_progress`` receives the number of events sent so far, a few times a second and once
    at the end, on the thread that calls ``run``.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: ProduceSettings,
        *,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        self.kafka = kafka
        self.settings = settings
        self._on_progress = on_progress
        self._stop = StopFlag()  # set from signal handlers: see streamtrain.stopping
        self._delivered = 0
        self._failed = 0
        self._errors: list[str] = []
        self._fatal: str | None = None
        self._ran = False
        self._sent = 0
        self._stopped = False

    def stop(self) -> None:
        """Stop after the current event; ``run`` then flushes what was sent and returns."""
        self._stop.set()

    def run(self, events: Iterable[tuple[dict[str, Any], Any]] | None = None) -> ProduceReport:
        """Replay ``events`` (default: the source the settings name) and wait for delivery.

        Raises :class:`BrokerUnreachable` when no broker answers within the connect timeout,
        and :class:`ConfigError` for a bad source or an event without the ``key`` feature;
        events sent before such an error are flushed first.
        """
        if self._ran:
            raise RuntimeError("a Replayer runs once; make a new one")
        self._ran = True
        s = self.settings
        if events is None:
            events = open_source(
                dataset=None if s.file is not None else s.dataset,
                file=s.file,
                target=s.target,
                limit=s.limit,
            )
        # The producer first: an idempotent one spends its first ~0.5s obtaining a producer
        # id, which then overlaps with the topic checks.
        producer = self._producer()
        self._prepare_topic()
        started = time.monotonic()
        try:
            self._produce_all(producer, events)
        except StreamtrainError as err:
            self._finish(producer)
            if not self._sent:
                raise
            raise type(err)(
                f"{err} ({self._delivered} events before it were delivered to {s.topic})"
            ) from None
        except BaseException:
            self._finish(producer)
            raise
        self._finish(producer)
        elapsed = time.monotonic() - started
        if self._on_progress is not None:
            self._on_progress(self._sent)
        return ProduceReport(
            topic=s.topic,
            sent=self._sent,
            delivered=self._delivered,
            failed=self._failed,
            errors=tuple(self._errors),
            elapsed_seconds=elapsed,
            events_per_second=self._delivered / elapsed if elapsed > 0 else 0.0,
            stopped=self._stopped,
        )

    # --- steps ---------------------------------------------------------------------------

    def _prepare_topic(self) -> None:
        s = self.settings
        admin = admin_client(self.kafka)
        existing = partition_count(wait_for_cluster(self.kafka, admin), s.topic)
        if existing is not None:
            if existing < s.partitions:
                log.warning(
                    "topic %s already exists with %d partition(s); leaving it as it is",
                    s.topic,
                    existing,
                )
            return
        try:
            created = ensure_topic(
                self.kafka,
                s.topic,
                partitions=s.partitions,
                replication_factor=s.replication_factor,
                admin=admin,
            )
        except KafkaException as err:
            raise StreamtrainError(f"cannot create topic {s.topic!r}: {_describe(err)}") from None
        if created:
            log.info("created topic %s with %d partition(s)", s.topic, s.partitions)

    def _producer(self) -> Producer:
        conf = client_config(self.kafka)
        for name, value in PRODUCER_DEFAULTS.items():
            conf.setdefault(name, value)
        try:
            return Producer(conf)
        except KafkaException as err:
            raise ConfigError(f"invalid producer configuration: {_describe(err)}") from None

    def _produce_all(
        self, producer: Producer, events: Iterable[tuple[dict[str, Any], Any]]
    ) -> None:
        topic = self.settings.topic
        key_name = self.settings.key
        pace = _Pacer(self.settings.rate) if self.settings.rate > 0 else None
        stop = self._stop
        on_delivery = self._on_delivery
        produce = producer.produce
        poll = producer.poll
        progress = self._on_progress
        next_progress = time.monotonic()
        for x, y in events:
            if stop.is_set() or self._fatal is not None:
                self._stopped = stop.is_set()
                return
            if pace is not None and not pace.wait(stop):
                self._stopped = True
                return
            key = None
            if key_name is not None:
                if key_name not in x:
                    raise ConfigError(
                        f"event {self._sent + 1} has no feature {key_name!r} for the message key"
                    )
                key = str(x[key_name]).encode()
            value = encode_event(x, y)
            while True:
                try:
                    produce(topic, value, key, on_delivery=on_delivery)
                    break
                except BufferError:
                    # The local queue is full: serve delivery reports to make room, then retry.
                    poll(0.1)
                    if stop.is_set() or self._fatal is not None:
                        self._stopped = stop.is_set()
                        return
                except KafkaException as err:
                    self._record_failure(_describe(err))
                    break
            self._sent += 1
            poll(0)
            if progress is not None:
                now = time.monotonic()
                if now >= next_progress:
                    progress(self._sent)
                    next_progress = now + PROGRESS_INTERVAL_SECONDS

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self._delivered += 1
            return
        self._record_failure(err.str())
        if err.fatal():
            self._fatal = err.str()

    def _record_failure(self, error: str) -> None:
        self._failed += 1
        if len(self._errors) < MAX_ERRORS_KEPT and error not in self._errors:
            self._errors.append(error)

    def _finish(self, producer: Producer) -> None:
        """Flush within the bound; whatever is still unconfirmed counts as failed."""
        remaining = producer.flush(FLUSH_TIMEOUT_SECONDS)
        if remaining:
            # Purge so the reports of the stuck messages arrive now, as failures.
            producer.purge(in_queue=True, in_flight=True, blocking=False)
            producer.flush(1.0)
        unaccounted = self._sent - self._delivered - self._failed
        if unaccounted > 0:
            self._record_failure(
                f"no delivery confirmation within {FLUSH_TIMEOUT_SECONDS:g}s of the final flush"
            )
            self._failed += unaccounted - 1


class _Pacer:
    """Hands out send times on a fixed schedule of ``rate`` events per second.

    The schedule is absolute (start + i / rate), so oversleeping one event does not slow the
    rest; after a stall it lets at most ``MAX_BURST`` events catch up back to back.
    """

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.next_at = time.monotonic()

    def wait(self, stop: StopFlag) -> bool:
        """Block until the next slot; False when ``stop`` was set meanwhile."""
        now = time.monotonic()
        self.next_at = max(self.next_at, now - MAX_BURST * self.interval)
        delay = self.next_at - now
        self.next_at += self.interval
        if delay > 0:
            return not stop.wait(delay)
        return not stop.is_set()


def _describe(err: KafkaException) -> str:
    inner = err.args[0] if err.args else err
    return inner.str() if isinstance(inner, KafkaError) else str(inner)
