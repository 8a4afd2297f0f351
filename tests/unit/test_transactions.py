"""TransactionalProducer against scripted fake producers: what it does with each kind of error
(see ``kafka_fakes``; the trainer-level consequences are in ``test_trainer_control``)."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import TopicPartition as TP
from kafka_fakes import FakeCluster, FakeGroupMetadata, FakeProducer, Script

from streamtrain.kafka.transactions import (
    MAX_REPLACEMENTS_IN_A_ROW,
    Fenced,
    TransactionAborted,
    TransactionalProducer,
    TransactionDenied,
    TransactionFatal,
)
from streamtrain.stopping import StopFlag

ABORTABLE = KafkaError(KafkaError._MSG_TIMED_OUT, "failed delivery", txn_requires_abort=True)
FATAL = KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, "out of order", fatal=True)
GROUP = "g"


class NoWait(StopFlag):
    """Backoffs without sleeping."""

    def wait(self, timeout: float | None = None) -> bool:
        return self.is_set()


class Harness:
    def __init__(self, deadline: float | None = None) -> None:
        self.cluster = FakeCluster()
        for topic in ("out", "in"):
            self.cluster.create_topic(topic)
        self.script = Script()
        self.made: list[FakeProducer] = []
        self.stop = NoWait()
        self.txn = TransactionalProducer(self._make, label="m", timeout=1.0, should_stop=self.stop)
        if deadline is not None:
            self.txn.deadline = deadline

    def _make(self, on_error: Any) -> FakeProducer:
        self.made.append(
            FakeProducer(self.cluster, {"transactional.id": "t"}, on_error, self.script)
        )
        return self.made[-1]

    def fail(self, method: str, at: Any, error: KafkaError | None, **how: Any) -> None:
        from kafka_fakes import Failure

        self.script.add(method, at, Failure(error, **how))

    def checkpoint(self, value: bytes, offset: int) -> None:
        self.txn.produce("out", value)
        meta = FakeGroupMetadata(GROUP, self.cluster.generations[GROUP])
        self.txn.commit([TP("in", 0, offset)], meta)

    def visible(self) -> list[Any]:
        return [rec.value for rec in self.cluster.committed("out")]

    def offset(self) -> int | None:
        return self.cluster.group_offsets[GROUP].get(("in", 0))


@pytest.fixture
def h() -> Any:
    harness = Harness()
    harness.txn.start()
    yield harness
    harness.script.released.set()


def test_a_commit_shows_records_and_offsets_together(h: Harness):
    h.txn.produce("out", b"a")
    with pytest.raises(Exception, match="undecided"):
        h.visible()  # read_committed readers wait at the open transaction
    h.txn.commit([TP("in", 0, 7)], FakeGroupMetadata(GROUP, 0))
    assert h.visible() == [b"a"] and h.offset() == 7
    assert h.made[0].txn is not None  # the next transaction is open


def test_an_abortable_error_aborts_in_place(h: Harness):
    h.fail("commit_transaction", 1, ABORTABLE)
    with pytest.raises(TransactionAborted) as caught:
        h.checkpoint(b"a", 1)
    assert not caught.value.replaced and caught.value.error.code() == KafkaError._MSG_TIMED_OUT
    assert len(h.made) == 1 and h.visible() == [] and h.offset() is None
    h.checkpoint(b"b", 2)
    assert h.visible() == [b"b"] and h.offset() == 2


def test_a_stale_group_generation_is_refused_and_aborted(h: Harness):
    h.txn.produce("out", b"zombie")
    with pytest.raises(TransactionAborted) as caught:
        h.txn.commit([TP("in", 0, 5)], FakeGroupMetadata(GROUP, -1))
    assert caught.value.error.code() == KafkaError.ILLEGAL_GENERATION
    assert h.visible() == [] and h.offset() is None and len(h.made) == 1


@pytest.mark.parametrize("method", ["send_offsets_to_transaction", "commit_transaction"])
def test_a_fatal_error_replaces_the_producer_under_the_same_id(h: Harness, method: str):
    h.fail(method, 1, FATAL)
    with pytest.raises(TransactionAborted) as caught:
        h.checkpoint(b"a", 1)
    assert caught.value.replaced and h.txn.replacements == 1
    old, new = h.made
    assert new.txn_id == old.txn_id and new.epoch == old.epoch + 1
    assert h.visible() == []  # the new producer's init_transactions aborted the old transaction
    with pytest.raises(KafkaException) as late:
        old.abort_transaction()  # the old one is done for
    assert late.value.args[0].fatal()
    h.checkpoint(b"b", 2)
    assert h.visible() == [b"b"] and h.offset() == 2


def test_a_failed_abort_replaces_the_producer(h: Harness):
    h.fail("commit_transaction", 1, ABORTABLE)
    h.fail("abort_transaction", 1, FATAL)
    with pytest.raises(TransactionAborted) as caught:
        h.checkpoint(b"a", 1)
    assert caught.value.replaced and len(h.made) == 2 and h.visible() == []


RETRIABLE = KafkaError(KafkaError.COORDINATOR_NOT_AVAILABLE, "no coordinator", retriable=True)


def test_a_retriable_error_is_retried_without_abort(h: Harness):
    h.fail("commit_transaction", 1, RETRIABLE)
    h.checkpoint(b"a", 1)
    assert h.visible() == [b"a"] and h.script.calls["commit_transaction"] == 2
    assert not [e for e in h.cluster.journal if e[0] == "aborted"] and len(h.made) == 1


@pytest.mark.parametrize("call", ["send_offsets_to_transaction", "commit_transaction"])
def test_a_timed_out_commit_is_settled_by_a_new_producer_not_retried(h: Harness, call: str):
    """Retried after a broker restart these calls can block for good (librdkafka 5456, 5511)."""
    h.fail(call, 1, KafkaError(KafkaError._TIMED_OUT, "timeout", retriable=True))
    with pytest.raises(TransactionAborted) as caught:
        h.checkpoint(b"a", 1)
    assert caught.value.replaced and len(h.made) == 2 and h.script.calls[call] == 1


def test_stopping_while_a_call_keeps_failing_gives_up(h: Harness):
    h.fail("commit_transaction", range(1, 100), RETRIABLE)
    h.stop.set()
    with pytest.raises(TransactionFatal, match="stopped while commit_transaction"):
        h.checkpoint(b"a", 1)


def test_missing_rights_are_fatal_without_replacement(h: Harness):
    denied = KafkaError(KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, "denied", fatal=True)
    h.fail("commit_transaction", 1, denied)
    with pytest.raises(TransactionDenied) as caught:
        h.checkpoint(b"a", 1)
    # A fatal transactional failure whose exit code and message say which right is missing.
    assert isinstance(caught.value, TransactionFatal) and caught.value.error is denied
    assert caught.value.exit_code == 8 and len(h.made) == 1
    assert "needs WRITE on transactional id" in str(caught.value)


def test_a_newer_producer_fences_this_one(h: Harness):
    FakeProducer(h.cluster, {"transactional.id": "t"}).init_transactions()
    with pytest.raises(Fenced) as caught:
        h.checkpoint(b"a", 1)
    assert caught.value.exit_code == 6 and len(h.made) == 1 and h.offset() is None


def test_replacements_that_keep_failing_give_up(h: Harness):
    h.fail("commit_transaction", 1, FATAL)
    h.fail("init_transactions", range(2, 100), FATAL)  # every replacement fails to start
    with pytest.raises(TransactionFatal, match="times in a row"):
        h.checkpoint(b"a", 1)
    assert len(h.made) == 1 + MAX_REPLACEMENTS_IN_A_ROW


def test_a_stuck_init_at_start_is_fatal():
    harness = Harness(deadline=0.3)
    harness.fail("init_transactions", 1, None)
    try:
        with pytest.raises(TransactionFatal, match="did not return"):
            harness.txn.start()
    finally:
        harness.script.released.set()


@pytest.mark.parametrize("landed", [False, True])
def test_a_stuck_commit_is_abandoned_and_the_broker_settles_it(landed: bool):
    harness = Harness(deadline=0.3)
    harness.txn.start()
    harness.fail("commit_transaction", 1, None, landed=landed)
    try:
        with pytest.raises(TransactionAborted) as caught:
            harness.checkpoint(b"a", 1)
        assert caught.value.replaced and len(harness.made) == 2
        assert harness.visible() == ([b"a"] if landed else [])
    finally:
        harness.script.released.set()
