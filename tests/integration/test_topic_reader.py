"""TopicReader on a real broker: the end of a read waits for undecided transactions, and every
wait is bounded."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from confluent_kafka import Producer
from topics import create_topic

from streamtrain.broker.process import free_ports
from streamtrain.config import KafkaSettings
from streamtrain.errors import BrokerUnreachable, TopicMissing, TopicReadError
from streamtrain.kafka.reader import Fetch, TopicReader

pytestmark = pytest.mark.kafka


def _transactional(bootstrap: str, name: str) -> Producer:
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": name})
    producer.init_transactions(30)
    return producer


def _committed(bootstrap: str, topic: str, *values: bytes) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for value in values:
        producer.produce(topic, key=b"k", value=value)
    assert producer.flush(30) == 0


def test_missing_topic_and_absent_broker_are_typed_errors(
    kafka_bootstrap: str, unique_name: Callable[..., str]
) -> None:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    with pytest.raises(TopicMissing, match=r"metrics topic .* does not exist"):
        list(TopicReader(kafka, unique_name("absent"), what="metrics topic").read_to_end())
    (port,) = free_ports(1)
    nobody = KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}", connect_timeout=1.0)
    started = time.monotonic()
    with pytest.raises(BrokerUnreachable):
        list(TopicReader(nobody, "any").read_to_end(patience=2))
    assert time.monotonic() - started < 10  # asked again for the read's patience, no longer


def test_a_read_ends_after_the_transaction_open_at_its_start(
    kafka_bootstrap: str, unique_name: Callable[..., str]
) -> None:
    topic = unique_name("read")
    create_topic(kafka_bootstrap, topic)
    _committed(kafka_bootstrap, topic, b"before")
    aborted = _transactional(kafka_bootstrap, unique_name("tx"))
    aborted.begin_transaction()
    aborted.produce(topic, key=b"k", value=b"aborted")
    aborted.flush(30)
    aborted.abort_transaction(30)
    open_tx = _transactional(kafka_bootstrap, unique_name("tx"))
    open_tx.begin_transaction()
    open_tx.produce(topic, key=b"k", value=b"undecided")
    open_tx.flush(30)  # in the log, neither committed nor aborted

    reader = TopicReader(KafkaSettings(bootstrap_servers=kafka_bootstrap), topic)
    read: list[bytes | None] = []
    thread = threading.Thread(
        target=lambda: read.extend(r.value for r in reader.read_to_end(patience=60))
    )
    thread.start()
    time.sleep(2.0)
    assert thread.is_alive(), "the read ended before the open transaction was decided"
    open_tx.commit_transaction(30)
    thread.join(30)
    assert not thread.is_alive()
    assert read == [b"before", b"undecided"]

    _committed(kafka_bootstrap, topic, b"after")  # a later read sees it
    assert [r.value for r in reader.read_to_end()][-1] == b"after"


def test_a_read_stuck_behind_an_undecided_transaction_gives_up(
    kafka_bootstrap: str, unique_name: Callable[..., str]
) -> None:
    topic = unique_name("stuck")
    create_topic(kafka_bootstrap, topic)
    producer = _transactional(kafka_bootstrap, unique_name("tx"))
    producer.begin_transaction()
    producer.produce(topic, value=b"undecided")
    producer.flush(30)
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, connect_timeout=2.0)
    started = time.monotonic()
    try:
        with pytest.raises(TopicReadError, match="no progress"):
            list(TopicReader(kafka, topic).read_to_end(patience=1.0))
        assert time.monotonic() - started < 15
    finally:
        producer.abort_transaction(30)


def test_follow_waits_for_the_topic_then_reports_catching_up(
    kafka_bootstrap: str, unique_name: Callable[..., str]
) -> None:
    topic = unique_name("follow")
    reader = TopicReader(KafkaSettings(bootstrap_servers=kafka_bootstrap), topic)
    stop = threading.Event()
    waited: list[bool] = []
    fetches: list[Fetch] = []
    thread = threading.Thread(
        target=reader.follow, args=(stop, fetches.append), kwargs={"on_waiting": waited.append}
    )
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not waited and time.monotonic() < deadline:
            time.sleep(0.1)
        assert waited[:1] == [True], "the missing topic was not reported"
        create_topic(kafka_bootstrap, topic)
        _committed(kafka_bootstrap, topic, b"1", b"2", b"3")
        while time.monotonic() < deadline:
            values = [r.value for f in list(fetches) for r in f.records]
            if values == [b"1", b"2", b"3"] and fetches[-1].caught_up:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"followed {values}")
        assert waited[-1] is False
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
