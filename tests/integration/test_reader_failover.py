"""A read-back to the end of a topic rides out the crash of its partition's leader. A trainer
restores its checkpoints with this read after a failed commit, so a broker crash must not end
the trainer: the read waits (bounded by its patience) for the new leader, and the client's
reports of connections refused by the dead broker are not failed fetches."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka.admin import AdminClient
from topics import fill

from streamtrain.broker import LocalCluster
from streamtrain.config import KafkaSettings
from streamtrain.kafka.reader import TopicReader

pytestmark = pytest.mark.kafka


def test_a_read_to_the_end_waits_for_a_new_leader_after_a_crash(
    kafka_cluster: LocalCluster, unique_name: Callable[..., str]
) -> None:
    bootstrap = kafka_cluster.bootstrap
    topic = unique_name("readback")
    values = [b"%06d" % i for i in range(2_000)]
    fill(bootstrap, topic, values, replication=3)
    meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=30)
    leader = meta.topics[topic].partitions[0].leader
    # Each call's own bound is shorter than the time the controller takes to fence the dead
    # leader (9 s): only the read's patience may cover the gap.
    settings = KafkaSettings(bootstrap_servers=bootstrap, connect_timeout=3)
    reader = TopicReader(settings, topic, what="test topic")
    assert kafka_cluster.stop_node(leader, hard=True)
    try:
        read = [record.value for record in reader.read_to_end(patience=90)]
    finally:
        kafka_cluster.start_node(leader, wait_seconds=120)
    assert read == values
