"""Exactly-once model state for a named trainer, on Kafka transactions.

A checkpoint transaction holds, atomically: the dead letters and predictions made since the
previous one, the signed checkpoint record (model, metrics, counters and input offsets) and the
consumer group's offsets. So after any crash the last committed checkpoint and the input
position agree, and a restarted trainer resumes exactly there: no event learned twice, none
lost.

Order inside one checkpoint (fixed):
1. produce the deferred dead letters and predictions, then the checkpoint record, into the
   open transaction (so it is open on the broker only while committing, never while learning);
2. ``send_offsets_to_transaction`` with the consumer group metadata, so a zombie member of an
   older group generation cannot commit (KIP-447);
3. ``commit_transaction``; 4. ``begin_transaction`` for the next batch.

Errors follow the transactional API: retriable → retry the same call with backoff (a broker
that went away is waited for); abortable → abort, and the trainer restores the last committed
state and seeks back (an abort does not rewind a consumer); fatal, including being fenced by a
newer trainer with the same ``transactional.id`` → :class:`Fenced` / :class:`TransactionFatal`,
after which the in-memory model is discarded.

A transactional call that outlives its own timeout by far (librdkafka can block for good in
``send_offsets_to_transaction`` or ``commit_transaction`` after the only broker restarts, its
issues 5456 and 5511) is *stuck*: each such call runs on a helper thread with a deadline, and
on expiry the producer is abandoned and replaced by a new one with the same
``transactional.id``. Its ``init_transactions`` settles the stuck transaction on the broker
(completes a commit already under way, else aborts it), so the checkpoint topic then holds
the truth: the committed states are read back from it and the trainer rewinds to them, as
after any abort.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from streamtrain.errors import StreamtrainError
from streamtrain.state.envelope import (
    CheckpointHeader,
    OpenedCheckpoint,
    library_versions,
    load_state,
    seal,
)
from streamtrain.state.keys import SigningKey
from streamtrain.state.store import CheckpointStore, checkpoint_partition
from streamtrain.stopping import StopFlag
from streamtrain.train.faults import crash_point, hang_point

log = logging.getLogger(__name__)

_FENCED_CODES = {
    KafkaError._FENCED,
    KafkaError.PRODUCER_FENCED,
    KafkaError.INVALID_PRODUCER_EPOCH,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
}


# A commit from a member of an older group generation: a zombie (KIP-447).
_STALE_MEMBER_CODES = {
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.FENCED_INSTANCE_ID,
    KafkaError.REBALANCE_IN_PROGRESS,
}


class Fenced(StreamtrainError):
    """Another trainer took over this model; this one must stop and forget its state."""

    exit_code = 6


class TransactionFatal(StreamtrainError):
    """The transactional producer hit an error it cannot recover from."""

    exit_code = 7


class TransactionAborted(Exception):
    """The open transaction was aborted; the caller restores :attr:`Checkpointing.committed`."""


class ProducerStuck(Exception):
    """A transactional call did not return by its deadline; the producer is unusable."""


# Producers given up on while one of their calls is stuck. Kept referenced for the life of the
# process: destroying a producer waits for its threads, and a stuck one never finishes.
_ABANDONED: list[Producer] = []


def abandoned_producers() -> int:
    """How many producers this process gave up on (see :class:`ProducerStuck`)."""
    return len(_ABANDONED)


@dataclasses.dataclass
class TrainState:
    """Everything a named model's progress consists of."""

    model: Any
    metrics: dict[str, Any]
    events_learned: int
    dead_letter_reasons: dict[str, int]
    offsets: dict[int, int]  # partition -> next offset to learn, of the input topic
    rolling: dict[str, Any] = dataclasses.field(default_factory=dict)  # windowed metrics
    events_predicted: int = 0  # unlabelled events answered

    @classmethod
    def from_payload(
        cls, payload: dict[str, Any], events_learned: int, offsets: Mapping[int, int]
    ) -> TrainState:
        return cls(
            model=payload["model"],
            metrics=payload["metrics"],
            events_learned=events_learned,
            dead_letter_reasons=dict(payload.get("dead_letter_reasons", {})),
            offsets=dict(offsets),
            rolling=payload.get("rolling", {}),
            events_predicted=int(payload.get("events_predicted", 0)),
        )


@dataclasses.dataclass(frozen=True)
class CommittedState:
    """The last state known to be durable; ``payload`` is our own pickled bytes."""

    header: CheckpointHeader | None
    payload: bytes
    offsets: Mapping[int, int]
    events_learned: int

    def thaw(self) -> TrainState:
        return TrainState.from_payload(
            pickle.loads(self.payload), self.events_learned, self.offsets
        )


class Checkpointing:
    """Owns the transactions of a named model's trainer.

    A trainer holds one or more *tasks*, each a model replica with its own checkpoint key:
    the model name, or ``NAME/p<partition>`` for a partitioned model. One transaction commits
    every task's checkpoint together with the consumer offsets.
    """

    def __init__(
        self,
        *,
        topic: str,
        model_spec: str,
        producer: Producer,
        store: CheckpointStore,
        key: SigningKey,
        interval: float,
        every: int,
        timeout: float,
        should_stop: StopFlag,
        fatal_error: Callable[[], KafkaError | None] = lambda: None,
        label: str = "",
        replace_producer: Callable[[], Producer] | None = None,
    ) -> None:
        self.topic = topic
        self.model_spec = model_spec
        self.producer = producer
        self.store = store
        self.key = key
        self.interval = interval
        self.every = every
        self.timeout = timeout
        self.should_stop = should_stop
        # librdkafka reports a fatal error's cause through error_cb only; calls that fail
        # afterwards just say _FATAL. The trainer records the cause and hands it over here.
        self.fatal_error = fatal_error
        self.label = label  # how errors name the model
        # Makes a new producer with the same transactional.id, for when one gets stuck.
        self.replace_producer = replace_producer
        # A call still running this long after its own timeout is stuck, not slow.
        self.deadline = timeout + 20.0
        self.replacements = 0
        self.committed: dict[str, CommittedState] = {}
        self.checkpoints = 0
        self._partitions = 1
        self._last_time = time.monotonic()

    # -- start ------------------------------------------------------------------------------

    def start(self) -> None:
        """Fence older writers of this transactional id and open the first transaction."""
        try:
            self._init_transactions()
        except ProducerStuck:
            raise TransactionFatal(
                f"init_transactions for model {self.label!r} did not return within "
                f"{self.deadline:g}s; restart the trainer"
            ) from None
        count = self.store.partitions()
        if count is None:
            raise StreamtrainError(f"checkpoint topic {self.store.topic!r} does not exist")
        self._partitions = count
        self.begin()
        self._last_time = time.monotonic()

    def restore(
        self, keys: list[str], fresh: Callable[[str], TrainState]
    ) -> dict[str, tuple[TrainState, CheckpointHeader | None]]:
        """The last committed state of each key (or ``fresh(key)``), remembered as committed."""
        opened = self.store.latest_many(keys)
        out: dict[str, tuple[TrainState, CheckpointHeader | None]] = {}
        for task_key in keys:
            checkpoint = opened.get(task_key)
            if checkpoint is None:
                state, header = fresh(task_key), None
            else:
                header = checkpoint.header
                if header.model_spec != self.model_spec:
                    log.warning(
                        "%s was created as %r; resuming it (the given spec %r is ignored)",
                        task_key,
                        header.model_spec,
                        self.model_spec,
                    )
                    self.model_spec = header.model_spec
                state = self._state_of(checkpoint)
            self._remember(task_key, header, state)
            out[task_key] = (state, header)
        return out

    def _state_of(self, checkpoint: OpenedCheckpoint) -> TrainState:
        header = checkpoint.header
        return TrainState.from_payload(
            load_state(checkpoint), header.events_learned, header.offsets.get(self.topic, {})
        )

    def _remember(self, task_key: str, header: CheckpointHeader | None, state: TrainState) -> None:
        self.committed[task_key] = CommittedState(
            header, _pickle(state), dict(state.offsets), state.events_learned
        )

    def forget(self, task_key: str) -> None:
        """A task moved away: its committed state is no longer ours to restore."""
        self.committed.pop(task_key, None)

    # -- checkpoint -------------------------------------------------------------------------

    def due(self, now: float, learned_since: int) -> bool:
        return learned_since >= self.every or now - self._last_time >= self.interval

    def commit(
        self,
        states: Mapping[str, TrainState],
        metric_values: Mapping[str, dict[str, float]],
        offsets: Mapping[int, int],
        consumer: Consumer,
        outputs: Callable[[], None] = lambda: None,
    ) -> None:
        """Produce ``outputs`` (deferred dead letters and predictions), every task's state and
        the offsets in the open transaction, and commit it."""
        try:
            self._commit(states, metric_values, offsets, consumer, outputs)
        except ProducerStuck as stuck:
            self._replace_stuck_producer(str(stuck))

    def _commit(
        self,
        states: Mapping[str, TrainState],
        metric_values: Mapping[str, dict[str, float]],
        offsets: Mapping[int, int],
        consumer: Consumer,
        outputs: Callable[[], None],
    ) -> None:
        frozen: dict[str, CommittedState] = {}
        try:
            outputs()
            for task_key, state in states.items():
                header = CheckpointHeader(
                    model_name=task_key,
                    model_spec=self.model_spec,
                    offsets={self.topic: dict(state.offsets)},
                    events_learned=state.events_learned,
                    dead_lettered=sum(state.dead_letter_reasons.values()),
                    metrics=metric_values.get(task_key, {}),
                    created_at=time.time(),
                    versions=library_versions(),
                )
                payload = _pickle(state)
                self.producer.produce(
                    self.store.topic,
                    key=task_key,
                    value=seal(header, payload, self.key),
                    partition=checkpoint_partition(task_key, self._partitions),
                )
                frozen[task_key] = CommittedState(
                    header, payload, dict(state.offsets), state.events_learned
                )
            crash_point("after-checkpoint-produced")
            if offsets:
                tps = [TopicPartition(self.topic, p, o) for p, o in offsets.items()]
                metadata = consumer.consumer_group_metadata()
                producer = self.producer
                self._retry(
                    "send_offsets_to_transaction",
                    lambda: producer.send_offsets_to_transaction(tps, metadata, self.timeout),
                )
            crash_point("before-commit")
            self._retry("commit_transaction", self._commit_transaction)
        except KafkaException as err:
            self._fail(err)
        self.committed.update(frozen)
        log.debug(
            "committed %s",
            {k: (dict(c.offsets), c.events_learned) for k, c in frozen.items()},
        )
        self.checkpoints += 1
        self._last_time = time.monotonic()
        self.begin()

    def fail(self, err: KafkaException) -> None:
        """Handle an error raised by a produce inside the transaction (e.g. a dead letter)."""
        try:
            self._fail(err)
        except ProducerStuck as stuck:
            self._replace_stuck_producer(str(stuck))

    def abort_quietly(self) -> None:
        """Best-effort abort at exit; the next trainer's init_transactions aborts it anyway."""
        producer = self.producer
        try:
            self._bounded("abort_transaction", lambda: producer.abort_transaction(10))
        except (KafkaException, ProducerStuck) as err:
            log.debug("abort at exit failed: %s", err)

    # -- internals ---------------------------------------------------------------------------

    def begin(self) -> None:
        try:
            self.producer.begin_transaction()
        except KafkaException as err:
            self._fail(err)

    def _fail(self, err: KafkaException) -> None:
        kerr: KafkaError = err.args[0]
        if kerr.code() == KafkaError._FATAL:
            cause = self.fatal_error()
            if cause is None:
                try:
                    self.producer.poll(0)  # serves the error_cb that carries the cause
                except KafkaException as polled:  # ... or raises it
                    cause = polled.args[0]
                cause = cause or self.fatal_error()
            kerr = cause or kerr
        if kerr.code() in _FENCED_CODES or (kerr.fatal() and "fenced" in kerr.str().lower()):
            raise Fenced(
                f"model {self.label!r} was taken over by another trainer (fenced: {kerr.str()}); "
                "this one stops and discards its in-memory model"
            ) from None
        if kerr.fatal():
            raise TransactionFatal(
                f"fatal transactional producer error for model {self.label!r}: {kerr.str()}; "
                "restart the trainer to resume from the last checkpoint"
            ) from None
        if kerr.txn_requires_abort():
            if kerr.code() in _STALE_MEMBER_CODES:
                log.warning(
                    "commit refused: the consumer group moved on without this process (%s); "
                    "its uncommitted work is discarded (fenced by the group generation)",
                    kerr.str(),
                )
            else:
                log.warning(
                    "transaction must be aborted (%s); restoring the last checkpoint", kerr.str()
                )
            producer = self.producer
            self._retry("abort_transaction", lambda: producer.abort_transaction(self.timeout))
            self.begin()
            raise TransactionAborted(kerr.str())
        raise TransactionFatal(f"unexpected transactional error: {kerr.str()}") from None

    def _retry(self, what: str, call: Callable[[], None]) -> None:
        """Run ``call``, retrying retriable errors with backoff until it succeeds or we stop."""
        delay = 0.2
        while True:
            try:
                self._bounded(what, call)
                return
            except KafkaException as err:
                kerr: KafkaError = err.args[0]
                if not kerr.retriable() or kerr.fatal() or kerr.txn_requires_abort():
                    raise
                if self.should_stop.is_set() and what != "abort_transaction":
                    raise TransactionFatal(
                        f"stopped while {what} was failing ({kerr.str()}); nothing is lost: the "
                        "next run resumes from the last committed checkpoint"
                    ) from None
                log.warning("%s failed (%s); retrying in %.1fs", what, kerr.str(), delay)
                self.should_stop.wait(delay)
                delay = min(delay * 2, 5.0)

    # -- stuck calls -------------------------------------------------------------------------

    def _init_transactions(self) -> None:
        producer = self.producer
        self._retry("init_transactions", lambda: producer.init_transactions(self.timeout))

    def _commit_transaction(self) -> None:
        hang_point("hang-commit")
        self.producer.commit_transaction(self.timeout)

    def _bounded(self, what: str, call: Callable[[], None]) -> None:
        """Run ``call`` on a helper thread; raise :class:`ProducerStuck` past the deadline.

        librdkafka's blocking calls cannot be interrupted, so a stuck one is left behind on a
        daemon thread, which never keeps the process from exiting.
        """
        outcome: list[BaseException | None] = []
        done = threading.Event()

        def run() -> None:
            try:
                call()
                outcome.append(None)
            except BaseException as err:  # handed to the caller's thread below
                outcome.append(err)
            finally:
                done.set()

        threading.Thread(target=run, name=f"streamtrain-{what}", daemon=True).start()
        if not done.wait(self.deadline):
            raise ProducerStuck(f"{what} did not return within {self.deadline:g}s")
        if outcome[0] is not None:
            raise outcome[0]

    def _replace_stuck_producer(self, why: str) -> None:
        """Swap in a new producer, learn what the broker committed, raise TransactionAborted."""
        if self.replace_producer is None:
            raise TransactionFatal(f"the transactional producer is stuck ({why})")
        log.warning(
            "%s; replacing the producer (same transactional id) and resuming from the last "
            "committed checkpoint",
            why,
        )
        _ABANDONED.append(self.producer)
        self.producer = self.replace_producer()
        self.replacements += 1
        try:
            self._init_transactions()  # settles the stuck transaction on the broker
        except ProducerStuck:
            raise TransactionFatal(
                f"the replacement producer for model {self.label!r} is stuck too; restart "
                "the trainer"
            ) from None
        # Whether the stuck commit landed is known only to the broker: read it back. A key
        # with no checkpoint yet keeps the fresh state it started from.
        opened = self.store.latest_many(list(self.committed))
        for task_key, checkpoint in opened.items():
            self._remember(task_key, checkpoint.header, self._state_of(checkpoint))
        self.begin()
        raise TransactionAborted(why)


def _pickle(state: TrainState) -> bytes:
    # A plain dict, so the checkpoint format does not depend on streamtrain's class layout.
    payload = {
        "model": state.model,
        "metrics": state.metrics,
        "rolling": state.rolling,
        "dead_letter_reasons": dict(state.dead_letter_reasons),
        "events_predicted": state.events_predicted,
    }
    return pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
