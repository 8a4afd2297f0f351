"""Replay events into a Kafka topic with an idempotent producer, optionally at a steady rate.

Nothing is dropped: a full local queue is drained by polling and the event retried, and every
event handed to the producer ends up counted as delivered or failed. Messages still unconfirmed
when the bounded final flush gives up are purged and counted as failed.

With ``labels_topic`` set, each event is split into a feature event on ``topic`` and a label
event on ``labels_topic``, both keyed by the event id and stamped with their event time
(:mod:`streamtrain.produce.labels` has the formats and the schedule). Records go out in that
schedule's order; with a rate, each waits for its event time (``start_ms`` then being the
moment the replay starts), so labels also arrive later in wall time. The producer is
idempotent, so each partition's log keeps the order sent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient

from streamtrain.config import KafkaSettings
from streamtrain.data.events import encode_event
from streamtrain.data.sources import open_source
from streamtrain.errors import ConfigError, NotAuthorized, StreamtrainError
from streamtrain.kafka.authz import is_denied, not_authorized
from streamtrain.kafka.clients import (
    admin_client,
    client_config,
    ensure_topic,
    partition_count,
    wait_for_cluster,
)
from streamtrain.produce.labels import LabelSchedule
from streamtrain.produce.settings import LabelReport, ProduceReport, ProduceSettings
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


class _Tally:
    """Records of one kind handed to the producer, and their delivery reports."""

    def __init__(self) -> None:
        self.sent = 0
        self.delivered = 0
        self.failed = 0


class _Outgoing(NamedTuple):
    """One record for the producer, and when to send it."""

    topic: str
    key: bytes | None
    value: bytes
    timestamp_ms: int  # 0: the producer stamps it with the time of sending
    label: bool
    at: float  # seconds into the replay's schedule, when a rate paces it


class Replayer:
    """Produces events to ``settings.topic`` (and their labels to ``settings.labels_topic``
    when set); ``run`` once, ``stop`` from any thread.

    ``on_progress`` receives the number of events sent so far, a few times a second and once
    at the end, on the thread that calls ``run``. ``encode`` turns an event into the record
    value (default: the ``{x, y}`` JSON event); with ``labels_topic``, ``encode_split`` makes
    the feature and the label records instead (``(id, x)`` and ``(id, y)`` in, bytes out;
    default the JSON ``{"id", "x"}`` and ``{"id", "y"}`` events).
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: ProduceSettings,
        *,
        on_progress: Callable[[int], None] | None = None,
        encode: Callable[[dict[str, Any], Any], bytes] = encode_event,
        encode_split: tuple[Callable[[str, Any], bytes], Callable[[str, Any], bytes]] | None = None,
    ) -> None:
        self.kafka = kafka
        self.settings = settings
        self._on_progress = on_progress
        self._encode = encode
        self._encode_split = encode_split
        self._stop = StopFlag()  # set from signal handlers: see streamtrain.stopping
        self._events = _Tally()
        self._labels = _Tally()
        self._errors: list[str] = []
        self._fatal: str | None = None
        self._denied: NotAuthorized | None = None  # a refused right: stop, and end with it
        self._ran = False
        self._stopped = False
        self._held: _Outgoing | None = None  # taken from the schedule but not sent

    def stop(self) -> None:
        """Stop after the current event; ``run`` then flushes what was sent and returns."""
        self._stop.set()

    def run(self, events: Iterable[tuple[dict[str, Any], Any]] | None = None) -> ProduceReport:
        """Replay ``events`` (default: the source the settings name) and wait for delivery.

        Raises :class:`BrokerUnreachable` when no broker answers within the connect timeout,
        and :class:`ConfigError` for a bad source or an event without the ``key`` feature (or
        the label delay's); events sent before such an error are flushed first.
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
        self._prepare_topics()
        started = time.monotonic()
        schedule: LabelSchedule | None = None
        if s.labels_topic is None:
            records = self._event_records(events)
        else:
            schedule = self._schedule(events)
            records = self._scheduled_records(schedule)
        try:
            self._produce_all(producer, records)
        except StreamtrainError as err:
            self._finish(producer)
            if not self._events.sent:
                raise
            raise type(err)(
                f"{err} ({self._events.delivered} events before it were delivered to {s.topic})"
            ) from None
        except BaseException:
            self._finish(producer)
            raise
        self._finish(producer)
        if self._denied is not None:
            raise self._denied
        elapsed = time.monotonic() - started
        if self._on_progress is not None:
            self._on_progress(self._events.sent)
        events_tally = self._events
        return ProduceReport(
            topic=s.topic,
            sent=events_tally.sent,
            delivered=events_tally.delivered,
            failed=events_tally.failed,
            errors=tuple(self._errors),
            elapsed_seconds=elapsed,
            events_per_second=events_tally.delivered / elapsed if elapsed > 0 else 0.0,
            stopped=self._stopped,
            labels=None if schedule is None else self._label_report(schedule),
        )

    # --- steps ---------------------------------------------------------------------------

    def _prepare_topics(self) -> None:
        """Create what is missing; a new labels topic gets the main topic's partition count,
        so that equal keys land in partitions of the same number."""
        s = self.settings
        admin = admin_client(self.kafka)
        metadata = wait_for_cluster(self.kafka, admin)
        partitions = self._prepare_topic(admin, s.topic, partition_count(metadata, s.topic))
        if s.labels_topic is None or s.labels_topic == s.topic:
            return
        existing = partition_count(metadata, s.labels_topic)
        if existing is None:
            self._prepare_topic(admin, s.labels_topic, None, partitions=partitions)
        elif existing != partitions:
            log.warning(
                "labels topic %s has %d partition(s) and %s has %d: an event and its label "
                "may land in partitions of different numbers",
                s.labels_topic,
                existing,
                s.topic,
                partitions,
            )

    def _prepare_topic(
        self,
        admin: AdminClient,
        topic: str,
        existing: int | None,
        *,
        partitions: int | None = None,
    ) -> int:
        """Create ``topic`` unless it exists; its partition count."""
        s = self.settings
        wanted = s.partitions if partitions is None else partitions
        if existing is not None:
            if existing < wanted:
                log.warning(
                    "topic %s already exists with %d partition(s); leaving it as it is",
                    topic,
                    existing,
                )
            return existing
        try:
            created = ensure_topic(
                self.kafka,
                topic,
                partitions=wanted,
                replication_factor=s.replication_factor,
                admin=admin,
            )
        except KafkaException as err:
            raise StreamtrainError(f"cannot create topic {topic!r}: {_describe(err)}") from None
        if created:
            log.info("created topic %s with %d partition(s)", topic, wanted)
        return wanted

    def _producer(self) -> Producer:
        conf = client_config(self.kafka)
        for name, value in PRODUCER_DEFAULTS.items():
            conf.setdefault(name, value)
        try:
            return Producer(conf)
        except KafkaException as err:
            raise ConfigError(f"invalid producer configuration: {_describe(err)}") from None

    def _event_records(self, events: Iterable[tuple[dict[str, Any], Any]]) -> Iterator[_Outgoing]:
        """``{x, y}`` events, stamped by the producer, ``rate`` apart when paced."""
        topic = self.settings.topic
        key_name = self.settings.key
        interval = 1.0 / self.settings.rate if self.settings.rate > 0 else 0.0
        for i, (x, y) in enumerate(events):
            key = None
            if key_name is not None:
                if key_name not in x:
                    raise ConfigError(
                        f"event {i + 1} has no feature {key_name!r} for the message key"
                    )
                key = str(x[key_name]).encode()
            yield _Outgoing(topic, key, self._encode(x, y), 0, False, i * interval)

    def _schedule(self, events: Iterable[tuple[dict[str, Any], Any]]) -> LabelSchedule:
        s = self.settings
        split = {}
        if self._encode_split is not None:
            split = dict(zip(("encode_feature", "encode_label"), self._encode_split, strict=True))
        return LabelSchedule(
            events,
            delay=s.label_delay_spec(),
            drop=s.label_drop or 0.0,
            seed=s.seed or 0,
            start_ms=time.time_ns() // 1_000_000 if s.start_time is None else s.start_time,
            # Event time runs at the replay's rate; unpaced, events are 1 ms apart.
            spacing_ms=1000.0 / s.rate if s.rate > 0 else 1.0,
            id_prefix=s.id_prefix or "",
            **split,
        )

    def _scheduled_records(self, schedule: LabelSchedule) -> Iterator[_Outgoing]:
        """Feature and label events in event-time order, each paced by its event time."""
        topic, labels_topic = self.settings.topic, self.settings.labels_topic
        assert labels_topic is not None
        start_ms = schedule.start_ms
        for emission in schedule:
            label = emission.kind == "label"
            yield _Outgoing(
                labels_topic if label else topic,
                emission.key,
                emission.value,
                emission.timestamp_ms,
                label,
                (emission.timestamp_ms - start_ms) / 1000,
            )

    def _produce_all(self, producer: Producer, records: Iterator[_Outgoing]) -> None:
        pace = _Pacer(self.settings.rate) if self.settings.rate > 0 else None
        stop = self._stop
        on_event, on_label = self._on_delivery(self._events), self._on_delivery(self._labels)
        produce = producer.produce
        poll = producer.poll
        progress = self._on_progress
        next_progress = time.monotonic()
        while True:
            if stop.is_set() or self._fatal is not None:
                self._stopped = stop.is_set()
                return
            record = self._held = next(records, None)
            if record is None:
                return
            if pace is not None and not pace.wait(stop, record.at):
                self._stopped = True
                return
            tally = self._labels if record.label else self._events
            while True:
                try:
                    produce(
                        record.topic,
                        record.value,
                        record.key,
                        on_delivery=on_label if record.label else on_event,
                        timestamp=record.timestamp_ms,
                    )
                    break
                except BufferError:
                    # The local queue is full: serve delivery reports to make room, then retry.
                    poll(0.1)
                    if stop.is_set() or self._fatal is not None:
                        self._stopped = stop.is_set()
                        return
                except KafkaException as err:
                    self._record_failure(tally, _describe(err))
                    break
            self._held = None
            tally.sent += 1
            poll(0)
            if progress is not None:
                now = time.monotonic()
                if now >= next_progress:
                    progress(self._events.sent)
                    next_progress = now + PROGRESS_INTERVAL_SECONDS

    def _on_delivery(self, tally: _Tally) -> Callable[[KafkaError | None, Message], None]:
        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is None:
                tally.delivered += 1
                return
            self._record_failure(tally, err.str())
            if is_denied(err) and self._denied is None:
                self._denied = not_authorized(
                    err, "produce", topics=[msg.topic() or "?"], topic_right="WRITE"
                )
                self._fatal = err.str()
            if err.fatal():
                self._fatal = err.str()

        return on_delivery

    def _record_failure(self, tally: _Tally, error: str) -> None:
        tally.failed += 1
        if len(self._errors) < MAX_ERRORS_KEPT and error not in self._errors:
            self._errors.append(error)

    def _finish(self, producer: Producer) -> None:
        """Flush within the bound; whatever is still unconfirmed counts as failed."""
        remaining = producer.flush(FLUSH_TIMEOUT_SECONDS)
        if remaining:
            # Purge so the reports of the stuck messages arrive now, as failures.
            producer.purge(in_queue=True, in_flight=True, blocking=False)
            producer.flush(1.0)
        for tally in (self._events, self._labels):
            unaccounted = tally.sent - tally.delivered - tally.failed
            if unaccounted > 0:
                self._record_failure(
                    tally,
                    f"no delivery confirmation within {FLUSH_TIMEOUT_SECONDS:g}s "
                    "of the final flush",
                )
                tally.failed += unaccounted - 1

    def _label_report(self, schedule: LabelSchedule) -> LabelReport:
        held = self._held
        labels_topic = self.settings.labels_topic
        assert labels_topic is not None
        return LabelReport(
            topic=labels_topic,
            sent=self._labels.sent,
            delivered=self._labels.delivered,
            failed=self._labels.failed,
            dropped=schedule.dropped,
            unlabelled=schedule.unlabelled,
            # A label taken from the schedule but stopped before it was sent is pending too.
            pending=schedule.pending + (held is not None and held.label),
        )


class _Pacer:
    """Waits for each record's time on the replay's schedule, ``at`` seconds after its start.

    The schedule is absolute, so oversleeping one record does not delay the rest; after a
    stall it shifts by just enough that at most ``MAX_BURST`` events (at ``rate``) go out back
    to back to catch up.
    """

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.origin = time.monotonic()

    def wait(self, stop: StopFlag, at: float) -> bool:
        """Block until ``at`` seconds into the schedule; False when ``stop`` was set meanwhile."""
        now = time.monotonic()
        behind = now - (self.origin + at) - MAX_BURST * self.interval
        if behind > 0:
            self.origin += behind
        delay = self.origin + at - now
        if delay > 0:
            return not stop.wait(delay)
        return not stop.is_set()


def _describe(err: KafkaException) -> str:
    inner = err.args[0] if err.args else err
    return inner.str() if isinstance(inner, KafkaError) else str(inner)
