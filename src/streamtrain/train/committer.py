"""The committer: a named trainer's checkpoint transactions, sent on a thread of their own.

The learning thread snapshots every task at a batch boundary (pickled state, metric values,
deferred outputs, consumer group metadata: :meth:`Checkpointing.prepare
<streamtrain.train.checkpointing.Checkpointing.prepare>`), hands the snapshot to
:meth:`Committer.submit` and goes on learning while this thread produces the outputs and
checkpoint records, sends the offsets and commits. At most one commit is in flight: ``submit``
first waits for the previous one.

Who writes what:

* The transactional producer is used by this thread only (it also serves the producer's
  callbacks while idle), so the transaction API's calls never interleave.
* Nothing here writes trainer state. A finished commit's outcome waits in the committer until
  the learning thread collects it (:meth:`poll` at every batch boundary, :meth:`wait` before
  anything that reads what was committed or gives partitions up) and applies it there:
  ``Checkpointing.committed`` and every task keep the learning thread as their one writer.
* Each outcome is handed over exactly once; an abort found there makes the learning thread roll
  its tasks back to ``committed`` and seek the consumer back, dropping what it learned ahead.

A crash loses at most the commit in flight: the restarted trainer resumes from the last commit
that landed, whose consumer offsets were in the same transaction.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from streamtrain.faults import crash_point, will_crash

__all__ = ["Committer", "Outcome"]

log = logging.getLogger(__name__)

Job = TypeVar("Job")

# How often an idle committer serves the producer's delivery reports and error callbacks.
_IDLE_POLL = 0.1
# The crash point below waits at most this long for the learning thread to get ahead.
_FAULT_WAIT = 60.0
_STOP = object()


class Outcome(Generic[Job]):
    """A finished commit: the snapshot sent, and the exception it ended with (None: committed)."""

    __slots__ = ("error", "job")

    def __init__(self, job: Job, error: BaseException | None) -> None:
        self.job = job
        self.error = error


class Committer(Generic[Job]):
    """Runs ``send(job, in_flight)`` for each submitted job, one at a time, on one thread.

    ``send`` calls ``in_flight()`` with the transaction filled, just before committing it (a
    crash point). ``idle()`` runs every 0.1 s while nothing is submitted. Not ``background``:
    :meth:`submit` sends on the caller's thread (no thread is started; the caller serves the
    producer), and the outcome is collected the same way.
    """

    def __init__(
        self,
        send: Callable[[Job, Callable[[], None]], None],
        idle: Callable[[], None] = lambda: None,
        *,
        background: bool = True,
        name: str = "streamtrain-committer",
    ) -> None:
        self._send = send
        self.idle = idle  # serves the producer
        self._jobs: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._done = threading.Event()
        self._done.set()
        self._outcome: Outcome[Job] | None = None
        self._ahead = threading.Event()  # the learning thread learned past the job in flight
        self.busy = False  # a job submitted and its outcome not yet collected
        self.background = background
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, name=name, daemon=True)
            self._thread.start()

    # -- the learning thread's side ----------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Send ``job``; the previous outcome must have been collected (:meth:`wait`)."""
        if self.busy:
            raise RuntimeError("a commit is still in flight: wait() for it first")
        self.busy = True
        self._ahead.clear()
        self._done.clear()
        if self._thread is None:
            self._attempt(job)
        else:
            self._jobs.put(job)

    def poll(self, *, learned: bool = False) -> Outcome[Job] | None:
        """The outcome of the commit in flight if it has finished (once), else None.

        ``learned``: the caller learned events since the snapshot in flight was taken.
        """
        if not self.busy:
            return None
        if learned:
            self._ahead.set()
        if not self._done.is_set():
            return None
        return self._collect()

    def wait(self) -> Outcome[Job] | None:
        """Block until the commit in flight finishes; its outcome (once), or None if none."""
        if not self.busy:
            return None
        self._done.wait()
        return self._collect()

    def close(self) -> Outcome[Job] | None:
        """Wait for the commit in flight and end the thread; the uncollected outcome, if any."""
        outcome = self.wait()
        if self._thread is not None:
            self._jobs.put(_STOP)
            self._thread.join()
            self._thread = None
        return outcome

    def _collect(self) -> Outcome[Job]:
        outcome = self._outcome
        assert outcome is not None
        self._outcome = None
        self.busy = False
        return outcome

    # -- the committer thread ----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=_IDLE_POLL)
            except queue.Empty:
                self._serve_idle()
                continue
            if job is _STOP:
                return
            self._attempt(job)  # type: ignore[arg-type]

    def _attempt(self, job: Job) -> None:
        error: BaseException | None = None
        try:
            self._send(job, self._in_flight)
        except BaseException as failed:  # handed to the learning thread, which raises it
            error = failed
        self._outcome = Outcome(job, error)
        self._done.set()

    def _serve_idle(self) -> None:
        try:
            self.idle()
        except Exception as err:  # reported when the next commit fails the same way
            log.debug("serving the producer while idle failed: %s", err)

    def _in_flight(self) -> None:
        """Crash point ``commit-behind-learning``: killed with this commit filled but not yet
        committed, once the learning thread has learned past its snapshot."""
        if not self.background:
            return  # learning waits for this commit: it cannot get ahead
        if will_crash("commit-behind-learning") and not self._ahead.wait(_FAULT_WAIT):
            log.warning("commit-behind-learning: learning never got ahead; not crashing")
            return
        crash_point("commit-behind-learning")
