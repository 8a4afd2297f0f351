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
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
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
    consumer = Consumer(
        {
            **(config or {}),
            "bootstrap.servers": bootstrap,
            "group.id": "test-log-reader",
            "enable.auto.commit": False,
        }
    )
    out: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
    try:
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), 30)[1] for p in out}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in out if ends[p]])
        remaining = sum(ends.values())
        deadline = time.monotonic() + timeout
        while remaining:
            # consume() waits for its whole count or its timeout, so ask with a short one.
            batch = consumer.consume(10_000, 0.2)
            assert time.monotonic() < deadline, f"reading {topic} back: {remaining} to go"
            for msg in batch:
                assert msg.error() is None, msg.error()
                value = msg.value()
                assert value is not None
                out[msg.partition() or 0].append(value)
            remaining -= len(batch)
    finally:
        consumer.close()
    return out
