"""A local 3-node Kafka cluster for real: replicated topics, and producers that survive a node
going away and coming back without anyone doing anything.

The module runs a cluster of its own (own directory, own free ports), not the session's
``kafka_cluster``, since it stops and restarts its nodes.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from streamtrain.broker import LocalCluster
from streamtrain.cli.main import main

pytestmark = pytest.mark.kafka

PARTITIONS = 3
ISR_WAIT_SECONDS = 60.0


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    free_port_pairs: Callable[[int], list[tuple[int, int]]],
) -> Iterator[LocalCluster]:
    cluster = LocalCluster(data_dir=tmp_path_factory.mktemp("cluster"), ports=free_port_pairs(3))
    assert cluster.up(wait_seconds=180) is True
    try:
        yield cluster
    finally:
        assert cluster.down() is True


@pytest.fixture
def admin(cluster: LocalCluster) -> AdminClient:
    # Every test starts from a whole cluster, even after an earlier one failed half-way.
    cluster.up(wait_seconds=90)
    assert cluster.status().healthy
    return AdminClient({"bootstrap.servers": cluster.bootstrap})


def _create_topic(admin: AdminClient, topic: str) -> None:
    new = NewTopic(
        topic,
        num_partitions=PARTITIONS,
        replication_factor=3,
        config={"min.insync.replicas": "2"},
    )
    admin.create_topics([new])[topic].result(30)
    _wait_isr(admin, topic, 3)  # leaders elected and every replica in sync


def _partitions(admin: AdminClient, topic: str) -> list[tuple[int, int, list[int], list[int]]]:
    """(partition, leader, replicas, isr) of each partition, as node ids.

    Retried for a while: right after a node stops, a request the client had queued for it
    times out, and right after a topic is created, the node asked may not know it yet.
    """
    deadline = time.monotonic() + 45
    while True:
        future = admin.describe_topics(TopicCollection([topic]), request_timeout=5)[topic]
        try:
            description = future.result(10)
            break
        except (KafkaException, TimeoutError):
            if time.monotonic() > deadline:
                raise
            # "Timed out waiting for controller": the client still names a stopped node as
            # the controller; a metadata request refreshes that.
            with contextlib.suppress(KafkaException):
                admin.list_topics(timeout=5)
            time.sleep(0.25)
    return sorted(
        (
            info.id,
            info.leader.id if info.leader is not None else -1,
            sorted(node.id for node in info.replicas),
            sorted(node.id for node in info.isr),
        )
        for info in description.partitions
    )


def _wait_isr(admin: AdminClient, topic: str, size: int) -> float:
    """Seconds until every partition of ``topic`` has exactly ``size`` in-sync replicas."""
    started = time.monotonic()
    while True:
        partitions = _partitions(admin, topic)
        if all(len(isr) == size for _, _, _, isr in partitions):
            return time.monotonic() - started
        if time.monotonic() - started > ISR_WAIT_SECONDS:
            pytest.fail(f"ISR of {topic} not {size} within {ISR_WAIT_SECONDS} s: {partitions}")
        time.sleep(0.25)


def _consume_partitions(bootstrap: str, topic: str, **config: object) -> dict[int, list[int]]:
    """Every message of every partition of ``topic`` (values are ints), read to the end."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{topic}-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            **config,
        }
    )
    values: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    at_end: set[int] = set()
    deadline = time.monotonic() + 60
    try:
        while len(at_end) < PARTITIONS and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            partition, error, value = message.partition(), message.error(), message.value()
            assert partition is not None
            if error is not None:
                assert error.code() == KafkaError._PARTITION_EOF, error
                at_end.add(partition)
                continue
            assert value is not None
            values[partition].append(int(value))
    finally:
        consumer.close()
    assert len(at_end) == PARTITIONS, f"only partitions {at_end} read to the end"
    return values


def test_cluster_is_three_nodes_and_replicates_by_default(
    cluster: LocalCluster,
    admin: AdminClient,
    unique_name: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = cluster.status()
    assert [node.node_id for node in status.nodes] == [1, 2, 3]
    assert status.running_count == status.answering_count == 3
    assert len({node.pid for node in status.nodes}) == 3
    assert cluster.bootstrap == ",".join(node.bootstrap for node in status.nodes)
    assert sorted(admin.list_topics(timeout=30).brokers) == [1, 2, 3]

    topic = unique_name("rf3")
    _create_topic(admin, topic)
    for _, leader, replicas, isr in _partitions(admin, topic):
        assert replicas == isr == [1, 2, 3]
        assert leader in replicas
    # Leadership spreads over the nodes, so stopping any one node moves some leader.
    assert len({leader for _, leader, _, _ in _partitions(admin, topic)}) == 3

    # A topic created with no settings gets the cluster's defaults.
    plain = unique_name("defaults")
    admin.create_topics([NewTopic(plain, num_partitions=1)])[plain].result(30)
    _wait_isr(admin, plain, 3)
    assert [replicas for _, _, replicas, _ in _partitions(admin, plain)] == [[1, 2, 3]]
    resource = ConfigResource(ConfigResource.Type.TOPIC, plain)
    deadline = time.monotonic() + 30
    while True:
        future = admin.describe_configs([resource], request_timeout=5)[resource]
        try:  # the broker asked may not have seen the new topic yet
            configs = future.result(10)
            break
        except (KafkaException, TimeoutError):
            if time.monotonic() > deadline:
                raise
            # "Timed out waiting for controller": the client still names a stopped node as
            # the controller; a metadata request refreshes that.
            with contextlib.suppress(KafkaException):
                admin.list_topics(timeout=5)
            time.sleep(0.25)
    assert configs["min.insync.replicas"].value == "2"

    code = main(["broker", "status", "--data-dir", str(cluster.data_dir)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0, lines
    assert "3/3 running, 3/3 answering" in lines[0]
    assert len(lines) == 4


def test_idempotent_producer_survives_a_node_stopping_and_it_rejoins(
    cluster: LocalCluster, admin: AdminClient, unique_name: Callable[..., str]
) -> None:
    topic = unique_name("failover")
    _create_topic(admin, topic)
    victim = next(leader for partition, leader, _, _ in _partitions(admin, topic) if partition == 0)

    producer = Producer(
        {
            "bootstrap.servers": cluster.bootstrap,
            "enable.idempotence": True,  # implies acks=all
            "acks": "all",
            "linger.ms": 5,
        }
    )
    delivered: list[tuple[int, int]] = []
    failed: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, message: Message) -> None:
        if err is not None:
            failed.append(err)
        else:
            partition, value = message.partition(), message.value()
            assert partition is not None and value is not None
            delivered.append((partition, int(value)))

    def produce(values: range, pause: float = 0.0) -> None:
        for i in values:
            producer.produce(
                topic, value=b"%d" % i, partition=i % PARTITIONS, on_delivery=on_delivery
            )
            producer.poll(0)
            if pause:
                time.sleep(pause)

    total = 3000
    produce(range(0, 1000))
    # The node (leader of partition 0) stops while messages are in flight...
    stopper = threading.Thread(target=cluster.stop_node, args=(victim,))
    stopper.start()
    produce(range(1000, 2000), pause=0.001)
    stopper.join(60)
    assert not stopper.is_alive()
    # ...and stays down while the rest are written.
    assert cluster.running_pids()[victim] is None
    assert cluster.status().running_count == 2
    produce(range(2000, total))
    assert producer.flush(60) == 0
    assert failed == []
    assert sorted(value for _, value in delivered) == list(range(total))

    for _, leader, replicas, isr in _partitions(admin, topic):
        assert leader != victim
        assert replicas == [1, 2, 3]  # the replica is still assigned, just not in sync
        assert victim not in isr and len(isr) == 2

    # Started again, it catches up and the leaders take it back into the ISR on their own.
    assert cluster.start_node(victim, wait_seconds=90) is True
    _wait_isr(admin, topic, 3)
    assert cluster.status().healthy

    values = _consume_partitions(cluster.bootstrap, topic)
    for partition in range(PARTITIONS):
        # Exactly once and in order: no loss, no duplicate from a retried batch.
        assert values[partition] == list(range(partition, total, PARTITIONS))


def _java_string_hash(text: str) -> int:
    value = 0
    for unit in text.encode("utf-16-be").hex(" ", 2).split():
        value = (31 * value + int(unit, 16)) & 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _transaction_coordinator(admin: AdminClient, transactional_id: str) -> int:
    """The node coordinating ``transactional_id``: Kafka hashes the id onto a partition of
    ``__transaction_state`` (50 by default), and that partition's leader coordinates it."""
    hashed = _java_string_hash(transactional_id)
    partition = 0 if hashed == -(1 << 31) else abs(hashed) % 50
    return next(
        leader for p, leader, _, _ in _partitions(admin, "__transaction_state") if p == partition
    )


def _commit(producer: Producer, deadline: float) -> None:
    """``commit_transaction``, retried while the error says so (the documented contract)."""
    while True:
        try:
            producer.commit_transaction(max(1.0, deadline - time.monotonic()))
            return
        except KafkaException as err:
            error = err.args[0]
            if not error.retriable() or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_transaction_commits_after_its_coordinator_crashes(
    cluster: LocalCluster, admin: AdminClient, unique_name: Callable[..., str]
) -> None:
    topic = unique_name("txn")
    _create_topic(admin, topic)
    transactional_id = unique_name("txn-id")
    producer = Producer(
        {"bootstrap.servers": cluster.bootstrap, "transactional.id": transactional_id}
    )
    producer.init_transactions(60)  # creates __transaction_state, which needs all 3 nodes
    victim = _transaction_coordinator(admin, transactional_id)
    assert f"Initialized transactionalId {transactional_id} " in _text(
        cluster.node_log_path(victim)
    )

    total = 1000
    producer.begin_transaction()
    for i in range(total // 2):
        producer.produce(topic, value=b"%d" % i, partition=i % PARTITIONS)
    assert producer.flush(30) == 0
    # The coordinator dies as a crash would: no controlled shutdown, no leadership hand-over.
    assert cluster.stop_node(victim, hard=True) is True
    for i in range(total // 2, total):
        producer.produce(topic, value=b"%d" % i, partition=i % PARTITIONS)
    assert producer.flush(60) == 0
    _commit(producer, deadline=time.monotonic() + 60)  # with 2 of 3 nodes

    values = _consume_partitions(cluster.bootstrap, topic, **{"isolation.level": "read_committed"})
    for partition in range(PARTITIONS):
        assert values[partition] == list(range(partition, total, PARTITIONS))

    assert cluster.start_node(victim, wait_seconds=90) is True
    _wait_isr(admin, topic, 3)
    _wait_isr(admin, "__transaction_state", 3)


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")
