"""The topic reader's bookkeeping, without a broker: where a read ends and when it is stuck,
when a follower has caught up."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import KafkaError

from streamtrain.kafka.reader import CatchUp, EndWatch, Record, fetch_of, readable_ends


@dataclass
class _Message:
    """The part of a confluent-kafka message the reader uses."""

    _partition: int = 0
    _offset: int = 0
    _key: bytes | None = None
    _value: bytes | None = None
    _error: KafkaError | None = None

    def error(self) -> KafkaError | None:
        return self._error

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


def _end(partition: int) -> _Message:
    return _Message(partition, _error=KafkaError(KafkaError._PARTITION_EOF))


TRANSPORT = KafkaError(KafkaError._TRANSPORT)


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_only_partitions_holding_records_are_read() -> None:
    # (low, high): empty from the start, emptied by retention or compaction, holding records
    ends = readable_ends({0: (0, 0), 1: (7, 7), 2: (3, 10), 3: (0, 1)})
    assert ends == {2: 10, 3: 1}


def test_a_read_ends_when_every_position_reaches_its_end() -> None:
    watch = EndWatch({0: 10, 1: 5}, patience=30.0, clock=_Clock())
    assert not watch.done
    watch.positions({0: 9, 1: 5})
    assert watch.pending == {0: 10}
    # A position past the end: the last records were a transaction's marker or aborted data.
    watch.positions({0: 11})
    assert watch.done and not watch.stalled()


def test_an_unknown_position_is_not_the_end() -> None:
    watch = EndWatch({0: 3}, patience=30.0, clock=_Clock())
    watch.positions({0: -1001})  # OFFSET_INVALID: nothing fetched yet
    assert watch.pending == {0: 3}


def test_a_read_is_stalled_only_after_patience_without_progress() -> None:
    clock = _Clock()
    watch = EndWatch({0: 10, 1: 10}, patience=5.0, clock=clock)
    clock.now += 4.0
    watch.progressed()  # a record came
    clock.now += 4.0
    assert not watch.stalled()
    watch.positions({0: 10})  # a partition finishing is progress too
    clock.now += 5.0
    assert not watch.stalled()
    clock.now += 0.5
    assert watch.stalled()
    watch.positions({1: 10})
    assert not watch.stalled()  # done is never stalled


def test_caught_up_when_every_partition_ended() -> None:
    catch_up = CatchUp([0, 1], batch=100)
    assert not catch_up.after(100, [0])
    assert catch_up.after(100, [1])


def test_caught_up_when_a_fetch_comes_back_short() -> None:
    # A read_committed reader of a busy transactional topic may never see an end of
    # partition: a short fetch means everything readable was read.
    catch_up = CatchUp([0, 1], batch=100)
    assert not catch_up.after(100, [])
    assert catch_up.after(99, [])


def test_once_caught_up_it_stays_so() -> None:
    catch_up = CatchUp([0], batch=10)
    assert catch_up.after(0, [])
    assert catch_up.after(10, [])
    assert catch_up.caught_up


def test_a_fetch_hands_over_records_with_decoded_keys() -> None:
    fetch = fetch_of(
        [_Message(1, 7, b"m", b"v"), _Message(0, 3, None, None), _Message(0, 4, b"\xff", b"")],
        CatchUp([0, 1], batch=10),
    )
    assert fetch.records == [
        Record("m", b"v", 1, 7),
        Record(None, None, 0, 3),
        Record("\ufffd", b"", 0, 4),
    ]
    assert fetch.caught_up  # short
    assert fetch.error is None and fetch.answered


def test_a_fetch_keeps_an_error_until_the_broker_answers_again() -> None:
    catch_up = CatchUp([0, 1], batch=3)
    failed = fetch_of([_Message(0, 1, b"k"), _Message(_error=TRANSPORT), _end(1)], catch_up)
    assert failed.error is None and failed.answered  # the end of partition 1 came after it
    failed = fetch_of([_Message(0, 1, b"k"), _end(1), _Message(_error=TRANSPORT)], catch_up)
    assert failed.error is TRANSPORT and not failed.answered
    assert not failed.caught_up  # a full fetch, partition 0 has not ended
    quiet = fetch_of([], catch_up)
    assert quiet.error is None and not quiet.answered and quiet.caught_up
