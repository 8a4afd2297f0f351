"""The learning thread's side of a named trainer's commits: snapshot every task, hand the
snapshot to the committer (:mod:`streamtrain.train.committer`), collect and settle outcomes,
and go on learning on thawed copies of what was snapshotted.

Why thawed copies (bench/PROFILE.md): pickling an object reads its ``__dict__``, which on
CPython 3.11 moves its attributes out of their fast inline storage for good. So after the first
snapshot, the live model learned 1.2-1.4x slower per event than an unnamed trainer's. The
snapshot's own bytes thawed (:func:`streamtrain.state.payload.thaw`) give the same models
in fresh objects with their attributes inline; the task is made again from them the way a
rollback or a restart makes it (``TaskRegistry.renew``), so no stale reference survives in the
step, the challengers, the gate or the drift detectors. The learning is bit for bit the same:
the thawed state is the one a restart from this snapshot would resume.

Only the learning thread calls into this module; it is the one writer of the tasks, of
``Checkpointing.committed`` and of what is counted here.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable

from confluent_kafka import Consumer

from streamtrain.kafka.transactions import TransactionAborted, is_stale_member
from streamtrain.state.payload import TrainState
from streamtrain.train.checkpointing import Checkpointing, Snapshot
from streamtrain.train.committer import Committer, Outcome
from streamtrain.train.outputs import Outputs
from streamtrain.train.registry import TaskRegistry
from streamtrain.train.reporting import ClientErrors
from streamtrain.train.requests import Requests
from streamtrain.train.step import RiverStep
from streamtrain.train.tasks import Task

__all__ = ["RETHAW_SHARE", "HandOver", "Rethaw"]

log = logging.getLogger(__name__)

# Checkpoints refused in a row for a stale group member before a static member joins again.
_REJOIN_AFTER_REFUSALS = 5
# A task goes on from the snapshot's thawed copy when that costs at most this share of the
# time it spent learning since its previous snapshot. Until the next snapshot (about that much
# learning again) the snapshotted objects would take 1.2-1.4x as long per event as the copy,
# so at 5 % the re-thaw earns several times what it costs; a task that learns little (a
# trickle) is not paused for it.
RETHAW_SHARE = 0.05
# The cost per payload byte until one is measured. Thaw + task build took 1.4-3.8 ms for the
# bench's model (6 KB) and 0.3-0.8 s for it with 3 challengers (1.1 MB) on a loaded 2-core
# machine: 250-700 ns a byte either way, the unpickled objects' walk (payload.inline) most of
# it. So the bench model renews at every checkpoint, the 3-challenger one not (0.3 s against
# 5 % of a second's learning).
_FIRST_SECONDS_PER_BYTE = 3e-7


class Rethaw:
    """Decides, task by task after each snapshot, whether it goes on from the snapshot's thawed
    copy, and does it: when the predicted cost (payload bytes x the last measured cost per
    byte) is at most ``share`` of the task's learning time since its previous snapshot.

    Only tasks on River's per-event step qualify: the compiled path learns in its own arrays
    (River's objects are only written back for the snapshot), and a joined task's merge holds
    fetched records that are not in the snapshot."""

    def __init__(
        self, share: float | None = None, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.share = RETHAW_SHARE if share is None else share
        self.clock = clock
        self.seconds_per_byte = _FIRST_SECONDS_PER_BYTE
        self.done = 0  # tasks renewed
        self.skipped = 0  # tasks that kept learning on the snapshotted objects
        self.seconds = 0.0  # spent renewing
        # The task object and its learning time at its previous snapshot (weakly: a task
        # dropped or rolled back must not keep its models alive here).
        self._marks: dict[str, tuple[weakref.ref[Task], float]] = {}

    def after(self, snapshot: Snapshot, registry: TaskRegistry) -> None:
        renew: dict[str, TrainState] = {}
        size = 0
        started = self.clock()
        for taken in snapshot.tasks:
            task = registry.tasks.get(taken.key)
            if task is None or not isinstance(task.step, RiverStep):
                continue
            mark = self._marks.get(taken.key)
            since = mark[1] if mark is not None and mark[0]() is task else 0.0
            learning = task.learn_seconds - since
            payload = len(taken.state.payload)
            if payload * self.seconds_per_byte > self.share * learning:
                self._marks[taken.key] = (weakref.ref(task), task.learn_seconds)
                self.skipped += 1
                continue
            renew[taken.key] = taken.state.thaw()
            size += payload
        if not renew:
            return
        for key, task in registry.renew(renew).items():
            self._marks[key] = (weakref.ref(task), task.learn_seconds)
        took = self.clock() - started
        self.seconds_per_byte = took / max(size, 1)
        self.done += len(renew)
        self.seconds += took
        log.debug("renewed %d task(s) from their snapshot in %.1f ms", len(renew), took * 1e3)


class HandOver:
    """Snapshot, submit, collect, settle: a named trainer's commits, seen from the learning
    thread. ``requests`` (promotions, challenger changes) are applied in each snapshot's
    transaction."""

    def __init__(
        self,
        checkpointing: Checkpointing,
        committer: Committer[Snapshot],
        outputs: Outputs,
        requests: Requests | None,
        errors: ClientErrors,
        *,
        partitioned: bool,
        rethaw: Rethaw | None = None,
    ) -> None:
        self.checkpointing = checkpointing
        self.committer = committer
        self.outputs = outputs
        self.requests = requests
        self.errors = errors
        self.partitioned = partitioned
        self.rethaw = rethaw if rethaw is not None else Rethaw()
        self.refused_in_a_row = 0  # stale-member refusals of a static member, in a row

    def due(self, now: float, learned_since: int) -> bool:
        """A checkpoint is due: ``learned_since`` reached ``every`` (then it waits for a commit
        in flight, which bounds the events learned past the last commit), or the interval has
        passed and no commit is in flight.

        The interval counts from the last commit settled, so while one is still being sent the
        next was already due by time; taking it then blocked learning until the commit ended
        and checkpointed twice in a row (bench/PROFILE.md). It is taken at the first batch
        boundary after that commit instead.
        """
        checkpointing = self.checkpointing
        if learned_since >= checkpointing.every:
            return True
        return not self.committer.busy and checkpointing.due(now, learned_since)

    def checkpoint(self, consumer: Consumer, registry: TaskRegistry, *, wait: bool) -> bool:
        """Commit every task's state, its outputs and the offsets (``wait``: before returning;
        else, with a committer in the background, while learning goes on). False: a commit was
        rolled back, and so were the tasks."""
        checkpointing, committer = self.checkpointing, self.committer
        if not self.collect(consumer, registry, block=True):  # the previous commit first
            return False
        registry.record_positions(consumer)
        if self.requests is not None:  # promote, add/remove challengers: this transaction
            self.requests.apply(registry.tasks, registry.replace)
        states = {key: task.state() for key, task in registry.tasks.items()}
        values = {key: task.sync().values() for key, task in registry.tasks.items()}
        outputs = self.outputs.records(registry.take_outputs())
        snapshot = checkpointing.prepare(
            states, values, outputs, consumer.consumer_group_metadata()
        )
        committer.submit(snapshot)
        # While it is sent: learning goes on with fresh objects (see the module doc).
        self.rethaw.after(snapshot, registry)
        return self.collect(consumer, registry, block=wait)

    def collect(
        self,
        consumer: Consumer,
        registry: TaskRegistry,
        *,
        block: bool,
        learned: bool = False,
        roll_back: bool = True,
    ) -> bool:
        """Settle the last commit if it ended (``block``: wait for it); False if it was rolled
        back (the tasks too, when ``roll_back``)."""
        committer = self.committer
        outcome = committer.wait() if block else committer.poll(learned=learned)
        if outcome is None:
            return True
        return self.settle(consumer, registry, outcome, roll_back)

    def settle(
        self,
        consumer: Consumer,
        registry: TaskRegistry,
        outcome: Outcome[Snapshot],
        roll_back: bool,
    ) -> bool:
        """Apply a commit's outcome on this (the learning) thread: remember what is committed;
        on abort roll the tasks back and say so (False); raise what cannot be rolled back."""
        error = outcome.error
        if error is not None and not isinstance(error, TransactionAborted):
            raise error  # fenced, denied, stuck for good: from the committer thread
        self.checkpointing.settle(outcome.job, error)
        if error is None:
            self.refused_in_a_row = 0
            return True
        if roll_back:
            registry.roll_back(consumer)
        # A static member the group no longer knows gets the same answer forever.
        stale = is_stale_member(error.error) and not self.partitioned
        self.refused_in_a_row = self.refused_in_a_row + 1 if stale else 0
        if self.refused_in_a_row >= _REJOIN_AFTER_REFUSALS:
            self.errors.consumer_failed = error.error
        return False
