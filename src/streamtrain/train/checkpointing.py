"""Exactly-once model state for a named trainer: checkpoint records and what was committed.

A checkpoint transaction holds, atomically: the dead letters and predictions made since the
previous one, the signed checkpoint record of every task (model, metrics, counters and input
offsets) and the consumer group's offsets. So after any crash the last committed checkpoint and
the input position agree, and a restarted trainer resumes exactly there: no event learned
twice, none lost.

:class:`Checkpointing` builds the records and remembers what was committed; the transaction
itself (retries, deadlines, aborts, replacing a producer that failed or got stuck) is
:class:`streamtrain.kafka.transactions.TransactionalProducer`'s. When a commit fails, the
caller gets :class:`~streamtrain.kafka.transactions.TransactionAborted` and rolls its tasks back
to :attr:`Checkpointing.committed` — read back from the checkpoint topic first when the producer
was replaced, since only the broker knows whether that last commit landed.

A commit is three steps so that learning need not wait for it: :meth:`Checkpointing.prepare`
(on the learning thread: a :class:`Snapshot` that shares nothing with live state),
:meth:`Checkpointing.send` (on the committer thread, :mod:`streamtrain.train.committer`: the
transaction), :meth:`Checkpointing.settle` (on the learning thread again: ``committed``). So the
learning thread is the one writer of ``committed``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from confluent_kafka import KafkaError, Producer, TopicPartition

from streamtrain.errors import StreamtrainError
from streamtrain.faults import crash_point
from streamtrain.kafka.transactions import TransactionAborted, TransactionalProducer
from streamtrain.state.envelope import CheckpointHeader, library_versions, seal
from streamtrain.state.history import history_topic
from streamtrain.state.keys import SigningKey, load_signing_key
from streamtrain.state.payload import TrainState, freeze, state_of, thaw
from streamtrain.state.store import CheckpointStore, checkpoint_partition
from streamtrain.stopping import StopFlag
from streamtrain.train.challengers import FOUNDER
from streamtrain.train.clients import producer_config
from streamtrain.train.outputs import OutputRecord
from streamtrain.train.settings import TrainSettings

__all__ = ["Checkpointing", "CommittedState", "Snapshot", "open_checkpointing"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CommittedState:
    """The last state known to be durable; ``payload`` is our own pickled bytes."""

    header: CheckpointHeader | None
    payload: bytes
    offsets: Mapping[int, int]
    events_learned: int
    label_offsets: Mapping[int, int] = dataclasses.field(default_factory=dict)

    def thaw(self) -> TrainState:
        return thaw(self.payload, self.events_learned, self.offsets, self.label_offsets)


@dataclasses.dataclass(frozen=True)
class TaskSnapshot:
    """One task's checkpoint in a snapshot: its state as it will be committed, and where its
    record goes (the checkpoint topic, and the history topic when kept)."""

    key: str
    header: CheckpointHeader
    state: CommittedState
    destinations: list[tuple[str, int]]


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """One checkpoint transaction's content, taken at a batch boundary: nothing in it is
    shared with state the learning thread goes on changing."""

    outputs: list[OutputRecord]
    tasks: list[TaskSnapshot]
    offsets: list[TopicPartition]
    group_metadata: object


class Checkpointing:
    """Checkpoints of a named model's tasks, each under its own key: the model name, or
    ``NAME/p<partition>`` for a partitioned model. One transaction commits every task's
    checkpoint together with the consumer offsets."""

    def __init__(
        self,
        *,
        topic: str,
        model_spec: str,
        txn: TransactionalProducer,
        store: CheckpointStore,
        key: SigningKey,
        interval: float,
        every: int,
        clock: Callable[[], float] = time.monotonic,
        labels_topic: str | None = None,
        history: CheckpointStore | None = None,
    ) -> None:
        self.topic = topic
        self.labels_topic = labels_topic  # a separate topic of labels joined later
        self.model_spec = model_spec
        self.txn = txn
        self.store = store
        self.history = history  # every version is also kept here (streamtrain.state.history)
        self.key = key
        self.interval = interval
        self.every = every
        self.clock = clock
        self.committed: dict[str, CommittedState] = {}
        self.checkpoints = 0
        self._partitions = 1
        self._history_partitions = 1
        self._last_time = clock()

    def start(self) -> None:
        """Fence older writers and open the first transaction."""
        self.txn.start()
        count = self.store.partitions()
        if count is None:
            raise StreamtrainError(f"checkpoint topic {self.store.topic!r} does not exist")
        self._partitions = count
        if self.history is not None:
            self._history_partitions = self.history.partitions() or 1
        self._last_time = self.clock()

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
                promoted = header.champion not in (None, FOUNDER)  # its spec is the state's
                if header.model_spec != self.model_spec and not promoted:
                    log.warning(
                        "%s was created as %r; resuming it (the given spec %r is ignored)",
                        task_key,
                        header.model_spec,
                        self.model_spec,
                    )
                    self.model_spec = header.model_spec
                state = state_of(checkpoint, self.topic, self.labels_topic)
            self._remember(task_key, header, state)
            out[task_key] = (state, header)
        return out

    def forget(self, task_key: str) -> None:
        """A task moved away: its committed state is no longer ours to restore."""
        self.committed.pop(task_key, None)

    def due(self, now: float, learned_since: int) -> bool:
        return learned_since >= self.every or now - self._last_time >= self.interval

    def commit(
        self,
        states: Mapping[str, TrainState],
        metric_values: Mapping[str, dict[str, float]],
        outputs: Iterable[OutputRecord],
        group_metadata: object,
    ) -> None:
        """One checkpoint transaction: ``outputs``, every task's checkpoint, the offsets.

        Raises :class:`TransactionAborted` once :attr:`committed` holds what the broker has.
        """
        snapshot = self.prepare(states, metric_values, outputs, group_metadata)
        try:
            self.send(snapshot)
        except TransactionAborted as aborted:
            self.settle(snapshot, aborted)
            raise
        self.settle(snapshot, None)

    # The three steps of a commit: prepare (the learning thread: a snapshot of mutable state),
    # send (the producer's thread: the transaction), settle (the learning thread again).

    def prepare(
        self,
        states: Mapping[str, TrainState],
        metric_values: Mapping[str, dict[str, float]],
        outputs: Iterable[OutputRecord],
        group_metadata: object,
    ) -> Snapshot:
        """Everything the transaction needs, copied: learning may go on while it is sent."""
        tasks = [
            self._snapshot_task(key, state, metric_values.get(key, {}))
            for key, state in states.items()
        ]
        offsets = [
            TopicPartition(topic, p, o)
            for state in states.values()
            for topic, parts in self._offsets(state).items()
            for p, o in parts.items()
        ]
        return Snapshot(list(outputs), tasks, offsets, group_metadata)

    def send(self, snapshot: Snapshot, in_flight: Callable[[], None] = lambda: None) -> None:
        """The transaction: outputs, signed checkpoint records, offsets, commit. Touches only
        ``snapshot`` and the producer; raises what :meth:`TransactionalProducer.commit` does.
        ``in_flight()`` is called just before the commit (a crash point)."""
        txn = self.txn
        for out in snapshot.outputs:
            txn.produce(out.topic, out.value, out.key, headers=out.headers)
        for task in snapshot.tasks:
            envelope = seal(task.header, task.state.payload, self.key)
            for topic, partition in task.destinations:
                txn.produce(topic, envelope, task.key, partition=partition)
        crash_point("after-checkpoint-produced")
        in_flight()
        txn.commit(snapshot.offsets, snapshot.group_metadata)

    def settle(self, snapshot: Snapshot, error: TransactionAborted | None) -> None:
        """Remember what :meth:`send` made durable: all of ``snapshot`` (``error`` None), or,
        after an abort that replaced the producer, what the broker says landed."""
        frozen = {task.key: task.state for task in snapshot.tasks}
        if error is None:
            self.committed.update(frozen)
            self._committed(frozen)
        elif error.replaced:
            self._read_back()
            if frozen and all(self.committed[k].header == c.header for k, c in frozen.items()):
                self._committed(frozen)  # it landed before the producer failed

    def _committed(self, frozen: Mapping[str, CommittedState]) -> None:
        log.debug(
            "committed %s", {k: (dict(c.offsets), c.events_learned) for k, c in frozen.items()}
        )
        self.checkpoints += 1
        self._last_time = self.clock()

    def _snapshot_task(
        self, task_key: str, state: TrainState, metrics: dict[str, float]
    ) -> TaskSnapshot:
        previous = self.committed.get(task_key)
        last = previous.header.sequence if previous is not None and previous.header else 0
        gate = state.promotion or {}
        header = CheckpointHeader(
            model_name=task_key,
            model_spec=gate.get("spec") or self.model_spec,
            offsets=self._offsets(state),
            events_learned=state.events_learned,
            dead_lettered=sum(state.dead_letter_reasons.values()),
            metrics=metrics,
            created_at=time.time(),
            versions=library_versions(),
            sequence=last + 1,
            champion=gate.get("champion"),
            promotion_rule=gate.get("rule"),
        )
        destinations = [(self.store.topic, checkpoint_partition(task_key, self._partitions))]
        if self.history is not None:
            destinations.append(
                (self.history.topic, checkpoint_partition(task_key, self._history_partitions))
            )
        committed = CommittedState(
            header,
            freeze(state),
            dict(state.offsets),
            state.events_learned,
            dict(state.label_offsets),
        )
        return TaskSnapshot(task_key, header, committed, destinations)

    def _offsets(self, state: TrainState) -> dict[str, dict[int, int]]:
        """Input positions by topic, as the header and the group's offsets carry them."""
        offsets = {self.topic: dict(state.offsets)}
        if self.labels_topic is not None:
            offsets[self.labels_topic] = dict(state.label_offsets)
        return offsets

    def _read_back(self) -> None:
        """Learn what the broker committed; a key with no checkpoint yet keeps its fresh state."""
        opened = self.store.latest_many(list(self.committed))
        for task_key, checkpoint in opened.items():
            self._remember(
                task_key, checkpoint.header, state_of(checkpoint, self.topic, self.labels_topic)
            )

    def _remember(self, task_key: str, header: CheckpointHeader | None, state: TrainState) -> None:
        self.committed[task_key] = CommittedState(
            header,
            freeze(state),
            dict(state.offsets),
            state.events_learned,
            dict(state.label_offsets),
        )


def open_checkpointing(
    settings: TrainSettings,
    clients: Any,
    *,
    txn_id: str,
    group: str,
    model_spec: str,
    timeout: float,
    should_stop: StopFlag,
    on_error: Callable[[KafkaError], None],
    clock: Callable[[], float],
) -> Checkpointing:
    """A named model's checkpointing, started: its transactional producer has fenced older
    writers of ``txn_id`` and opened the first transaction."""
    assert settings.name is not None
    key = load_signing_key(settings.secret_file)
    conf = producer_config(settings, txn_id)

    def make(producer_errors: Callable[[KafkaError], None]) -> Producer:
        producer: Producer = clients.producer(conf, producer_errors)
        return producer

    txn = TransactionalProducer(
        make,
        label=settings.name,
        timeout=timeout,
        should_stop=should_stop,
        on_error=on_error,
        resources={
            "transactional_id": txn_id,
            "topics": [
                settings.checkpoint_topic,
                history_topic(settings.checkpoint_topic),
                settings.dlq_topic,
                settings.predictions_out,
                settings.events_topic,
            ],
            "topic_right": "WRITE",
            "group": group,
        },
    )
    checkpointing = Checkpointing(
        topic=settings.topic,
        model_spec=model_spec,
        txn=txn,
        store=clients.checkpoint_store(
            key, settings.checkpoint_topic, settings.transaction_timeout + 30
        ),
        key=key,
        interval=settings.checkpoint_interval,
        every=settings.checkpoint_every,
        clock=clock,
        labels_topic=settings.separate_labels_topic,
        history=clients.checkpoint_store(
            key, history_topic(settings.checkpoint_topic), settings.transaction_timeout + 30
        ),
    )
    checkpointing.start()
    return checkpointing
