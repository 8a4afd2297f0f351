"""The topic reader's bookkeeping, without a broker: where a read ends and when it is stuck,
when a follower has caught up."""

from __future__ import annotations

from streamtrain.kafka.reader import CatchUp, EndWatch, readable_ends


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
