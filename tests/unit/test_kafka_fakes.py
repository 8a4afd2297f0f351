"""The fakes behave like the clients where the trainer relies on them (``kafka_fakes``)."""

from __future__ import annotations

from typing import Any

from confluent_kafka import OFFSET_INVALID
from confluent_kafka import TopicPartition as TP
from kafka_fakes import FakeCluster, FakeConsumer, FakeProducer


def consumer(cluster: FakeCluster, calls: list[Any], **conf: Any) -> FakeConsumer:
    c = FakeConsumer(cluster, {"group.id": "g", "auto.offset.reset": "earliest", **conf})
    c.subscribe(
        ["in"],
        on_assign=lambda _c, ps: calls.append(("assign", [tp.partition for tp in ps])),
        on_revoke=lambda _c, ps: calls.append(("revoke", [tp.partition for tp in ps])),
        on_lost=lambda _c, ps: calls.append(("lost", [tp.partition for tp in ps])),
    )
    return c


def test_rebalance_callbacks_run_inside_consume_one_step_per_call():
    cluster = FakeCluster()
    cluster.create_topic("in", 2)
    for i in range(4):
        cluster.append("in", i % 2, b"%d" % i)
    calls: list[Any] = []
    c = consumer(cluster, calls)
    assert calls == [] and c.consume(10, 0) == [] and calls == [("assign", [0, 1])]
    assert [m.value() for m in c.consume(10, 0)] == [b"0", b"1", b"2", b"3"]  # round-robin
    generation = c.consumer_group_metadata().generation
    c.revoke()
    assert c.consume(10, 0) == [] and calls[-1] == ("revoke", [0, 1]) and not c.assignment()
    assert c.consume(10, 0) == [] and calls[-1] == ("assign", [0, 1])
    assert c.consumer_group_metadata().generation == generation + 1
    c.lose()  # the group moved on at once; the member hears of it at its next poll
    assert cluster.generations["g"] > c.consumer_group_metadata().generation
    c.consume(10, 0)
    assert calls[-1] == ("lost", [0, 1])
    c.close()


def test_read_committed_stops_at_an_open_transaction_and_skips_aborted_ones():
    cluster = FakeCluster()
    cluster.create_topic("in")
    writer = FakeProducer(cluster, {"transactional.id": "w"})
    writer.init_transactions()
    for outcome in ("abort", "commit", None):
        writer.begin_transaction()
        writer.produce("in", outcome or "open")
        if outcome:
            getattr(writer, f"{outcome}_transaction")()
    cluster.append("in", 0, b"plain")  # after the open transaction
    committed = consumer(cluster, [], **{"isolation.level": "read_committed"})
    uncommitted = consumer(cluster, [])
    for c in (committed, uncommitted):
        c.consume(10, 0)  # joins
    assert [m.value() for m in committed.consume(10, 0)] == [b"commit"]
    assert committed.position([TP("in", 0)])[0].offset == 4  # markers take offsets
    assert committed.get_watermark_offsets(TP("in", 0)) == (0, 4)  # the last stable offset
    assert [m.value() for m in uncommitted.consume(10, 0)] == [
        b"abort",
        b"commit",
        b"open",
        b"plain",
    ]
    writer.commit_transaction()
    assert [m.value() for m in committed.consume(10, 0)] == [b"open", b"plain"]


def test_positions_are_unknown_until_fetched_after_a_seek():
    cluster = FakeCluster()
    cluster.create_topic("in")
    for i in range(3):
        cluster.append("in", 0, b"%d" % i)
    c = consumer(cluster, [])
    c.consume(10, 0)
    assert len(c.consume(2, 0)) == 2 and c.position([TP("in", 0)])[0].offset == 2
    c.seek(TP("in", 0, 0))
    assert c.position([TP("in", 0)])[0].offset == OFFSET_INVALID
    assert [m.offset() for m in c.consume(10, 0)] == [0, 1, 2]
