"""The committer thread (``streamtrain.train.committer``): its hand-over rules with a fake send,
then a named trainer whose commit is still in flight while it learns on (``kafka_fakes``)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from kafka_fakes import FakeClients
from test_trainer_control import NAME, TOPIC, check_end, make_cluster, make_trainer, store

from streamtrain.kafka.transactions import Fenced, TransactionAborted
from streamtrain.train.committer import Committer

WAIT = 10.0


class Sender:
    """A ``send`` that blocks each job until the test lets it go, and fails as told."""

    def __init__(self) -> None:
        self.started = threading.Semaphore(0)
        self.go = threading.Semaphore(0)
        self.sent: list[str] = []
        self.threads: set[str] = set()
        self.fail: dict[str, BaseException] = {}
        self.idle = threading.Event()

    def __call__(self, job: str, in_flight: Any) -> None:
        self.threads.add(threading.current_thread().name)
        self.started.release()
        assert self.go.acquire(timeout=WAIT)
        in_flight()
        if job in self.fail:
            raise self.fail[job]
        self.sent.append(job)


@pytest.fixture
def sender() -> Any:
    made = Sender()
    yield made
    for _ in range(10):
        made.go.release()  # nothing is left blocked


def test_a_job_is_sent_off_the_caller_thread_and_collected_once(sender: Sender) -> None:
    committer: Committer[str] = Committer(sender)
    committer.submit("a")
    assert sender.started.acquire(timeout=WAIT)
    assert committer.busy and committer.poll(learned=True) is None  # still in flight
    sender.go.release()
    outcome = committer.wait()
    assert outcome is not None and (outcome.job, outcome.error) == ("a", None)
    assert committer.wait() is None and committer.poll() is None  # handed over once
    assert not committer.busy
    assert sender.threads == {"streamtrain-committer"}
    committer.close()


def test_one_commit_in_flight_at_a_time(sender: Sender) -> None:
    committer: Committer[str] = Committer(sender)
    committer.submit("a")
    with pytest.raises(RuntimeError):
        committer.submit("b")  # the previous outcome must be collected first
    sender.go.release()
    assert committer.wait() is not None
    committer.submit("b")
    sender.go.release()
    assert committer.wait() is not None
    assert sender.sent == ["a", "b"]
    committer.close()


def test_an_abort_is_surfaced_once_then_the_next_commit_goes_on(sender: Sender) -> None:
    aborted = TransactionAborted("broker said so")
    sender.fail["a"] = aborted
    committer: Committer[str] = Committer(sender)
    committer.submit("a")
    sender.go.release()
    assert sender.started.acquire(timeout=WAIT)
    outcome = None
    while outcome is None:  # as the learning thread finds it: at a batch boundary
        outcome = committer.poll()
    assert outcome.error is aborted and outcome.job == "a"
    assert committer.poll() is None and committer.wait() is None
    committer.submit("b")
    sender.go.release()
    outcome = committer.wait()
    assert outcome is not None and outcome.error is None and sender.sent == ["b"]
    committer.close()


def test_errors_that_end_a_run_are_handed_over_too(sender: Sender) -> None:
    sender.fail["a"] = Fenced("taken over")
    committer: Committer[str] = Committer(sender)
    committer.submit("a")
    sender.go.release()
    outcome = committer.close()  # close waits for the commit in flight and returns its outcome
    assert outcome is not None and isinstance(outcome.error, Fenced)


def test_close_waits_for_the_commit_in_flight(sender: Sender) -> None:
    committer: Committer[str] = Committer(sender)
    committer.submit("a")
    assert sender.started.acquire(timeout=WAIT)
    closed = threading.Event()
    closer = threading.Thread(target=lambda: (committer.close(), closed.set()))
    closer.start()
    assert not closed.wait(0.3)  # still committing
    sender.go.release()
    assert closed.wait(WAIT) and sender.sent == ["a"]
    closer.join()


def test_an_idle_committer_serves_the_producer() -> None:
    served = threading.Event()
    committer: Committer[str] = Committer(lambda job, in_flight: None, served.set)
    assert served.wait(WAIT)
    committer.close()


def test_without_a_thread_the_caller_sends(sender: Sender) -> None:
    sender.go.release()
    committer: Committer[str] = Committer(sender, background=False)
    committer.submit("a")  # returns once sent
    assert sender.threads == {threading.current_thread().name} and sender.sent == ["a"]
    outcome = committer.poll()
    assert outcome is not None and outcome.error is None
    assert committer.close() is None


# -- a trainer learning ahead of its commit ----------------------------------------------------


def test_learning_goes_on_while_a_commit_is_in_flight() -> None:
    """The first commit hangs until 100 records were handed out: they are learned meanwhile."""
    clients = FakeClients(make_cluster())
    clients.hang("commit_transaction", 1)
    learned_at_release: list[int] = []

    def let_go(consumer: Any) -> None:
        learned_at_release.append(trainer.events_learned)
        clients.release()

    clients.cluster.after(100, let_go)
    trainer = make_trainer(clients, checkpoint_every=60)
    summary = trainer.run()
    first = next(iter(store(clients.cluster).history([NAME]))).header
    assert first.offsets[TOPIC][0] < 100 and first.events_learned < learned_at_release[0]
    assert summary.checkpoints == len([e for e in clients.cluster.journal if e[0] == "committed"])
    check_end(trainer, summary)


def test_a_checkpoint_due_by_time_waits_for_the_commit_in_flight_as_learning_goes_on() -> None:
    """The interval passes twice while the first commit hangs until 100 records were handed
    out: learning goes on to there (it used to stop at the second, waiting for the commit),
    and the next checkpoint is taken once the commit ended."""
    clients = FakeClients(make_cluster())
    clock = clients.cluster.clock
    clients.hang("commit_transaction", 1)
    at_release: list[tuple[int, bool]] = []

    def let_go(consumer: Any) -> None:
        at_release.append((trainer.events_learned, clients.script.released.is_set()))
        clients.release()

    clients.cluster.after(20, lambda _c: clock.advance(2.0))  # the first checkpoint is due
    clients.cluster.after(40, lambda _c: clock.advance(2.0))  # and the next, in flight
    clients.cluster.after(100, let_go)
    backstop = threading.Timer(WAIT, clients.release)  # the old behaviour: no deadlock here
    backstop.start()
    try:
        trainer = make_trainer(clients, checkpoint_every=10**6, checkpoint_interval=1.0)
        summary = trainer.run()
    finally:
        backstop.cancel()
    [(learned, released_before)] = at_release
    assert not released_before and learned >= 80
    first, second = list(store(clients.cluster).history([NAME]))[:2]
    assert first.header.events_learned < 40 and second.header.events_learned >= learned
    check_end(trainer, summary)


def test_a_checkpoint_due_by_count_still_waits_for_the_commit_in_flight() -> None:
    """``checkpoint_every`` bounds the events learned past the last commit: at the next count
    due, learning waits for the commit in flight, as before."""
    clients = FakeClients(make_cluster())
    clients.hang("commit_transaction", 1)
    at_release: list[int] = []

    def let_go() -> None:
        at_release.append(trainer.events_learned)
        clients.release()

    releaser = threading.Timer(1.0, let_go)
    releaser.start()
    try:
        trainer = make_trainer(clients, checkpoint_every=20)
        summary = trainer.run()
    finally:
        releaser.cancel()
    assert at_release and at_release[0] < 60  # stopped at the second checkpoint due
    check_end(trainer, summary)


def test_partitions_lost_with_a_commit_in_flight() -> None:
    """The group moves on while the first commit waits to send its offsets (now stale): on_lost
    waits for its outcome, an abort, then rolls back to nothing committed; the run still ends
    as River's."""
    clients = FakeClients(make_cluster())
    cluster = clients.cluster
    clients.hang("send_offsets_to_transaction", 1)
    seen: dict[str, int] = {}

    def expel(consumer: Any) -> None:
        seen["learned"] = trainer.events_learned
        consumer.lose()
        clients.release()

    def watch(entry: tuple[Any, ...]) -> None:
        if entry[0] == "lost":
            seen["aborted"] = len([e for e in cluster.journal if e[0] == "aborted"])
            seen["task"] = trainer.tasks[NAME].events_learned

    cluster.after(90, expel)
    cluster.watchers.append(watch)
    trainer = make_trainer(clients, checkpoint_every=60)
    summary = trainer.run()
    assert seen["learned"] > 60 and seen["aborted"] == 1 and seen["task"] == 0
    check_end(trainer, summary)
