"""Test input topics whose logs hold exactly what the tests' oracles replay.

The exactly-once tests compare a trainer's model with River trained offline on each
partition's events *in log order*, so the log must be in the order the events were sent. A
plain producer does not promise that: a batch retried after a transient error (frequent on a
topic created a moment ago, while its leader is still being announced) can land behind the
batch sent after it. That reordering once showed up as a model that "differed from the
offline one" from its first checkpoint on, a false exactly-once failure. Hence an idempotent
producer (ordered per partition, retries included) and a read-back check.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def create_topic(
    bootstrap: str,
    topic: str,
    partitions: int = 1,
    replication: int = 1,
    config: Mapping[str, Any] | None = None,
) -> None:
    admin = AdminClient({**(config or {}), "bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, replication)])[topic].result(60)


def fill(
    bootstrap: str,
    topic: str,
    values: Sequence[bytes],
    *,
    keys: Sequence[bytes | None] | None = None,
    partitions: int = 1,
    replication: int = 1,
    timestamps: Sequence[int] | None = None,
    to: Sequence[int] | None = None,
    config: Mapping[str, Any] | None = None,
    append: bool = False,
) -> dict[int, list[bytes]]:
    """Create ``topic`` (``append``: it exists, write after what it holds) and write
    ``values`` round-robin over its partitions (or each to partition ``to[i]``), in order,
    with record timestamps ``timestamps[i]`` if given. ``config`` adds client settings (a
    secured broker's SASL_SSL login).

    Returns each partition's values as read back from the log, after checking that the log
    ends with exactly the values sent to it, in the order sent.
    """
    if not append:
        create_topic(bootstrap, topic, partitions, replication, config)
    sent: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
    producer = Producer(
        {
            **(config or {}),
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "enable.idempotence": True,
        }
    )
    for i, value in enumerate(values):
        partition = to[i] if to is not None else i % partitions
        key = keys[i] if keys is not None else None
        when = {"timestamp": timestamps[i]} if timestamps is not None else {}
        while True:
            try:
                producer.produce(topic, key=key, value=value, partition=partition, **when)
                break
            except BufferError:
                producer.poll(0.1)
        sent[partition].append(value)
    assert producer.flush(120) == 0
    logged = read_log(bootstrap, topic, partitions, config=config)
    for p in range(partitions):
        tail = logged[p][len(logged[p]) - len(sent[p]) :]
        assert tail == sent[p] and (append or len(logged[p]) == len(sent[p])), (
            f"partition {p} of {topic} is not in the order sent"
        )
    return logged


def read_log(
    bootstrap: str,
    topic: str,
    partitions: int,
    timeout: float = 60,
    config: Mapping[str, Any] | None = None,
) -> dict[int, list[bytes]]:
    """Every value in each partition of ``topic``, in log order, up to its current end."""
    out: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
    for msg in read_messages(bootstrap, topic, range(partitions), timeout, config):
        value = msg.value()
        assert value is not None
        out[msg.partition() or 0].append(value)
    return out


def read_messages(
    bootstrap: str,
    topic: str,
    partitions: Iterable[int] | None = None,
    timeout: float = 60,
    config: Mapping[str, Any] | None = None,
) -> list[Message]:
    """Every record of ``topic`` (of ``partitions``, default all), each once, sorted by
    partition and offset, up to the log's end.

    Done is decided by offsets, not by counting records. Counting once stopped a produce
    test's read at 146 distinct labels of the 150 delivered: either a record came twice and
    stood in for an unread one, or the ends were read a moment early. Records are now kept
    by offset (a second delivery changes nothing), and the ends are asked again once
    reached. Offsets of transaction markers and aborted records are never delivered, but the
    position moves past them.
    """
    consumer = Consumer(
        {
            **(config or {}),
            "bootstrap.servers": bootstrap,
            "group.id": "test-log-reader",
            "enable.auto.commit": False,
        }
    )
    seen: dict[tuple[int, int], Message] = {}
    try:
        if partitions is None:
            metadata = consumer.list_topics(topic, timeout=30).topics[topic]
            assert metadata.error is None, metadata.error
            partitions = sorted(metadata.partitions)
        wanted = list(partitions)
        deadline = time.monotonic() + timeout
        ends = _ends(consumer, topic, wanted)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in wanted])
        assigned = [TopicPartition(topic, p) for p in wanted]
        while True:
            positions = {tp.partition: tp.offset for tp in consumer.position(assigned)}
            if all(ends[p] == 0 or positions[p] >= ends[p] for p in wanted):
                latest = _ends(consumer, topic, wanted)
                if latest == ends:
                    break
                ends = latest
            assert time.monotonic() < deadline, f"reading {topic} back: at {positions} of {ends}"
            # consume() waits for its whole count or its timeout, so ask with a short one.
            for msg in consumer.consume(10_000, 0.2):
                assert msg.error() is None, msg.error()
                seen.setdefault((msg.partition() or 0, msg.offset() or 0), msg)
    finally:
        consumer.close()
    return [seen[k] for k in sorted(seen)]


def _ends(consumer: Consumer, topic: str, partitions: list[int]) -> dict[int, int]:
    return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), 30)[1] for p in partitions}
