"""The task registry: which tasks this process holds, for which partitions, and how they move.

It owns the consumer's rebalance callbacks (the trainer only hands them over): an assigned
partition's task is restored from its checkpoint and the consumer is positioned at the task's
offset; a revoked task is checkpointed first, then dropped; a lost one (the group already gave
it away) is dropped with its uncommitted work. It also rolls every task back to the last
committed state after an aborted transaction, and seeks the consumer back to match.

* **Unnamed** or **named**: one task, keyed ``""`` or the name, learning every partition.
* **Partitioned**: a task per assigned partition, keyed ``NAME/p<partition>``.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, OFFSET_INVALID, Consumer, KafkaException
from confluent_kafka import TopicPartition as TP

from streamtrain.formats import replica_key
from streamtrain.state.envelope import CheckpointHeader
from streamtrain.state.payload import TrainState
from streamtrain.train.checkpointing import Checkpointing
from streamtrain.train.tasks import Output, Task

__all__ = ["TaskRegistry"]

log = logging.getLogger(__name__)

# A message's accessors as C callables, for map() over a consumed batch.
_error = operator.methodcaller("error")
_topic = operator.methodcaller("topic")
_partition = operator.methodcaller("partition")

# Records of one input partition waiting in a join's merge before the partition is paused.
MAX_BUFFERED = 5_000


class TaskRegistry:
    """Tasks by key and by partition; see the module doc.

    ``fresh(key)`` makes the state of a task that has no checkpoint. ``checkpoint(consumer)`` is
    called before partitions are revoked (a named model's trainer commits there).
    """

    def __init__(
        self,
        *,
        name: str | None,
        partitioned: bool,
        build: Callable[[str, TrainState], Task],
        start: str,
        fresh: Callable[[str], TrainState],
        checkpointing: Checkpointing | None = None,
        checkpoint: Callable[[Consumer], object] = lambda _c: None,
        offsets_for_times: Callable[[Consumer, list[TP]], list[TP]] | None = None,
        clock: Callable[[], float],
        timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.partitioned = partitioned
        self.build = build
        self.start = start
        self.fresh = fresh
        self.checkpointing = checkpointing
        self.checkpoint = checkpoint
        self.offsets_for_times = offsets_for_times
        self.clock = clock
        self.timeout = timeout
        self.tasks: dict[str, Task] = {}
        # Where this run started a partition that its task has no offset for yet: a rollback
        # before the task learns from it must go back there, not to OFFSET_BEGINNING/END.
        self.start_offsets: dict[tuple[str, int], int] = {}
        self.assignment: list[TP] = []
        # (topic, partition) -> its task: the input topic's partitions, and a separate labels
        # topic's when labels are joined (partition p of both is the same task's).
        self.by_input: dict[tuple[str, int], Task] = {}
        self.paused: set[tuple[str, int]] = set()  # inputs paused for back-pressure (joins)
        self.restored_from: dict[str, CheckpointHeader] = {}
        self.learned_by_departed = 0  # by tasks that moved to other processes
        self.assigned_at = float("inf")  # when the last assignment came
        self.stopping = False  # leaving the group: revocations commit nothing more
        # The consumer whose rebalances count: a failed one that is closing is not listened to.
        self.consumer: Any = None
        if not partitioned:
            key = name or ""
            if checkpointing is not None:
                self._restore([key])
            else:
                self.tasks[key] = build(key, fresh(key))

    # -- rebalance callbacks -----------------------------------------------------------------

    def on_assign(self, consumer: Consumer, partitions: list[TP]) -> None:
        if consumer is not self.consumer and self.consumer is not None:
            return
        self.assignment = [TP(tp.topic, tp.partition) for tp in partitions]
        self.paused.difference_update((tp.topic, tp.partition) for tp in partitions)
        if self.partitioned and self.checkpointing is not None:
            assert self.name is not None
            missing = list(
                dict.fromkeys(
                    replica_key(self.name, tp.partition)
                    for tp in partitions
                    if replica_key(self.name, tp.partition) not in self.tasks
                )
            )
            if missing:
                self._restore(missing)
        self._index()
        explicit = self.checkpointing is not None
        fresh = [tp for tp in partitions if not self._has_offset(tp.topic, tp.partition)]
        by_time: dict[tuple[str, int], int] = {}
        if self.offsets_for_times is not None and fresh:
            found = self.offsets_for_times(consumer, fresh)
            by_time = {(tp.topic, tp.partition): tp.offset for tp in found}
            explicit = True
        if explicit:
            self._pin_starts(consumer, fresh, by_time)
        offsets = {
            (tp.topic, tp.partition): self.offset_of(tp.topic, tp.partition) for tp in partitions
        }
        log.info("assigned partitions %s", {f"{t}/{p}": o for (t, p), o in sorted(offsets.items())})
        if explicit:
            # Resume exactly at the checkpoint; the group's own offsets are informational.
            consumer.assign(
                [TP(t.topic, t.partition, offsets[(t.topic, t.partition)]) for t in partitions]
            )
        self.assigned_at = self.clock()

    def on_revoke(self, consumer: Consumer, partitions: list[TP]) -> None:
        if consumer is not self.consumer and self.consumer is not None:
            return
        log.info("partitions %s revoked", [tp.partition for tp in partitions])
        if self.checkpointing is not None and not self.stopping:
            self.checkpoint(consumer)  # losing partitions: make what was learned durable first
        self._drop(partitions)

    def on_lost(self, consumer: Consumer, partitions: list[TP]) -> None:
        if consumer is not self.consumer and self.consumer is not None:
            return
        # The group already gave these away: committing now would be a zombie's commit.
        log.warning(
            "partitions %s were lost to the group (this process was presumed dead); their "
            "uncommitted work is dropped and nothing is committed for them",
            [tp.partition for tp in partitions],
        )
        if self.checkpointing is not None:
            self.roll_back(consumer)
        self._drop(partitions)

    # -- the loop's side ---------------------------------------------------------------------

    def route(
        self, messages: list[Any], on_error: Callable[[Any], None]
    ) -> Iterator[tuple[Task, list[Any]]]:
        """The messages of each task, in consume order; errors go to ``on_error``.

        A record whose partition has no task was fetched just before the partition was
        revoked: its new owner learns it, and nothing of ours moved past it.
        """
        by_input = self.by_input
        # any(), not a comparison with None: KafkaError's == None leaves a TypeError set in
        # the C extension, which the next call into it reports as a SystemError.
        if messages and not any(map(_error, messages)):
            inputs = set(zip(map(_topic, messages), map(_partition, messages), strict=True))
            if len(inputs) == 1:  # the usual batch: one partition's records, no error
                task = by_input.get(inputs.pop())
                if task is not None:
                    yield task, messages
                return
        groups: dict[str, tuple[Task, list[Any]]] = {}
        for msg in messages:
            if msg.error() is not None:
                on_error(msg.error())
                continue
            task = by_input.get((msg.topic(), msg.partition()))
            if task is None:
                continue
            group = groups.get(task.key)
            if group is None:
                group = groups[task.key] = (task, [])
            group[1].append(msg)
        yield from groups.values()

    def take_outputs(self) -> list[Output]:
        return [item for task in self.tasks.values() for item in task.take_outputs()]

    @property
    def pending_outputs(self) -> int:
        return sum(len(task.pending) for task in self.tasks.values())

    def roll_back(self, consumer: Consumer) -> None:
        """Every task back to its last committed state (or a fresh one), the consumer too."""
        self._rebuild()
        self._resume_all(consumer)  # the rebuilt tasks have nothing buffered
        self._seek(consumer)

    def _rebuild(self) -> None:
        assert self.checkpointing is not None
        committed = self.checkpointing.committed
        for key in list(self.tasks):
            state = committed[key].thaw() if key in committed else self.fresh(key)
            self.tasks[key] = self.build(key, state)
        self._index()

    def replace(self, key: str, state: TrainState) -> Task:
        """Task ``key`` made again from ``state`` (its models changed on request), owing the
        outputs the old one owed."""
        old = self.tasks[key]
        task = self.tasks[key] = self.build(key, state)
        task.pending = old.take_outputs()
        self._index()
        return task

    def renew(self, states: Mapping[str, TrainState]) -> dict[str, Task]:
        """Tasks made again from states equal to their own (a snapshot of them, thawed: the
        same models in fresh objects, :mod:`streamtrain.train.handover`), each owing what the
        old one owed. Built as a rollback builds them, so nothing keeps the old objects."""
        renewed = {}
        for key, state in states.items():
            old = self.tasks[key]
            task = self.tasks[key] = renewed[key] = self.build(key, state)
            task.pending = old.take_outputs()
        self._index()
        return renewed

    def leave(self) -> None:
        """The consumer is gone: every task back to its committed state, nothing assigned (a
        new consumer's assignment restores and positions the tasks again)."""
        assert self.checkpointing is not None
        self._rebuild()
        self.paused.clear()  # the consumer that paused them is gone
        starts = dict(self.start_offsets)  # where this run started stays where it started
        self._drop(self.assignment)
        self.start_offsets.update(starts)

    def record_positions(self, consumer: Consumer) -> None:
        """Move tasks up to the consumer's positions (past markers that are not events)."""
        for (topic, partition), offset in self.positions(consumer).items():
            task = self.by_input.get((topic, partition))
            if task is not None:
                task.advance_to(topic, partition, offset)

    def positions(self, consumer: Consumer) -> dict[tuple[str, int], int]:
        if not self.assignment:
            return {}
        try:
            positions = consumer.position(self.assignment)
        except KafkaException:  # the consumer may already be unusable on a fatal error
            return {}
        return {
            (tp.topic, tp.partition): tp.offset for tp in positions if tp.offset != OFFSET_INVALID
        }

    def offset_of(self, topic: str, partition: int) -> int:
        task = self.by_input.get((topic, partition))
        if task is not None:
            offsets = task.offsets_of(topic)
            if partition in offsets:
                return offsets[partition]
        if (topic, partition) in self.start_offsets:
            return self.start_offsets[(topic, partition)]
        return OFFSET_BEGINNING if self.start == "earliest" else OFFSET_END

    def next_offset(self, topic: str, partition: int, low: int, high: int) -> int:
        """:meth:`offset_of` as a number: a log's start or end given as its watermarks."""
        offset = self.offset_of(topic, partition)
        if offset == OFFSET_BEGINNING:
            return low
        return high if offset < 0 else offset

    def drain(self, consumer: Consumer, now: float) -> None:
        """Joined tasks learn what their event-time merge lets go at ``now``; then partitions
        whose records pile up in a merge are paused until it takes them."""
        for task in self.tasks.values():
            if task.merge is not None:
                task.drain(now, lambda key, fetched: self._caught_up(consumer, key, fetched))
        self._pace(consumer)

    def _pace(self, consumer: Consumer) -> None:
        """Back-pressure, as Kafka Streams' ``buffered.records.per.partition``: an input far
        ahead of the others in event time (labels a day late, replayed at full speed) would
        otherwise buffer everything the consumer fetches."""
        over, under = [], []
        for key, task in self.by_input.items():
            merge = task.merge
            if merge is None:
                continue
            buffered = merge.buffered(key)
            if buffered >= MAX_BUFFERED and key not in self.paused:
                over.append(key)
            elif buffered <= MAX_BUFFERED // 2 and key in self.paused:
                under.append(key)
        try:
            if over:
                consumer.pause([TP(t, p) for t, p in over])
                self.paused.update(over)
            if under:
                consumer.resume([TP(t, p) for t, p in under])
                self.paused.difference_update(under)
        except KafkaException as err:  # not assigned any more: the next assignment resets it
            log.debug("pausing or resuming %s failed: %s", over or under, err)

    def _resume_all(self, consumer: Consumer | None) -> None:
        if self.paused and consumer is not None:
            try:
                consumer.resume([TP(t, p) for t, p in self.paused])
            except KafkaException as err:
                log.debug("resuming %s failed: %s", sorted(self.paused), err)
        self.paused.clear()

    def _caught_up(self, consumer: Consumer, key: tuple[str, int], fetched: int) -> bool:
        """Nothing in the partition's log past what its task was handed (as of the last
        fetch response: the cached high watermark, no broker round trip)."""
        topic, partition = key
        tp = TP(topic, partition)
        try:
            low, high = consumer.get_watermark_offsets(tp, cached=True)
            if high < 0:
                return False  # no fetch response yet
            if fetched < 0:
                fetched = self.next_offset(topic, partition, low, high)
            if fetched >= high:
                return True
            # The position moves past transaction markers, which are never handed over.
            (position,) = consumer.position([tp])
        except KafkaException:
            return False
        return bool(position.offset >= high)

    def _pin_starts(
        self, consumer: Consumer, fresh: list[TP], by_time: dict[tuple[str, int], int]
    ) -> None:
        """Remember the offset each fresh partition starts at: found by time, or the log end
        as of now for ``latest`` (records that arrive later are this run's to learn)."""
        for tp in fresh:
            key = (tp.topic, tp.partition)
            if key in self.start_offsets:
                continue
            offset = by_time.get(key, -1)
            # No record at or after the time, or starting at the end: the end, as of now.
            if offset < 0 and (self.start != "earliest" or key in by_time):
                try:
                    _low, offset = consumer.get_watermark_offsets(
                        TP(tp.topic, tp.partition), timeout=self.timeout
                    )
                except KafkaException:
                    continue  # unknown: the consumer's own reset applies, as before
            if offset >= 0:
                self.start_offsets[key] = offset

    def learned_this_run(self) -> int:
        return self.learned_by_departed + sum(
            t.events_learned - self._learned_at_restore(k) for k, t in self.tasks.items()
        )

    # -- internals ---------------------------------------------------------------------------

    def _restore(self, keys: list[str]) -> None:
        assert self.checkpointing is not None
        for key, (state, header) in self.checkpointing.restore(keys, self.fresh).items():
            self.tasks[key] = self.build(key, state)
            if header is not None:
                self.restored_from[key] = header
        self._index()

    def _learned_at_restore(self, key: str) -> int:
        header = self.restored_from.get(key)
        return header.events_learned if header is not None else 0

    def _has_offset(self, topic: str, partition: int) -> bool:
        task = self.by_input.get((topic, partition))
        return task is not None and partition in task.offsets_of(topic)

    def _index(self) -> None:
        if self.partitioned:
            name = self.name or ""
            self.by_input = {
                (tp.topic, tp.partition): self.tasks[replica_key(name, tp.partition)]
                for tp in self.assignment
                if replica_key(name, tp.partition) in self.tasks
            }
        else:
            (task,) = self.tasks.values()
            self.by_input = {(tp.topic, tp.partition): task for tp in self.assignment}
        inputs: dict[str, list[tuple[str, int]]] = {key: [] for key in self.tasks}
        for key, task in self.by_input.items():
            inputs[task.key].append(key)
        for task in self.tasks.values():
            task.set_inputs(inputs[task.key])

    def _drop(self, partitions: list[TP]) -> None:
        gone_inputs = {(tp.topic, tp.partition) for tp in partitions}
        self.assignment = [
            tp for tp in self.assignment if (tp.topic, tp.partition) not in gone_inputs
        ]
        for gone_input in gone_inputs:
            self.start_offsets.pop(gone_input, None)
            self.paused.discard(gone_input)
        # A partitioned task goes when its last input does.
        gone = {p for _t, p in gone_inputs} - {tp.partition for tp in self.assignment}
        if self.partitioned and self.name:
            for partition in gone:
                key = replica_key(self.name, partition)
                task = self.tasks.pop(key, None)
                if task is not None:
                    self.learned_by_departed += task.events_learned - self._learned_at_restore(key)
                    self.restored_from.pop(key, None)
                if self.checkpointing is not None:
                    self.checkpointing.forget(key)
        self._index()

    def _seek(self, consumer: Consumer) -> None:
        """Rewind every assigned partition to its task's offset."""
        for tp in self.assignment:
            try:
                consumer.seek(TP(tp.topic, tp.partition, self.offset_of(tp.topic, tp.partition)))
            except KafkaException:
                # Not fetching yet: re-assigning with explicit offsets does the same.
                consumer.assign(
                    [
                        TP(t.topic, t.partition, self.offset_of(t.topic, t.partition))
                        for t in self.assignment
                    ]
                )
                return
