"""Run a real Apache Kafka broker locally from the official jars: KRaft, no ZooKeeper, no Docker."""

from streamtrain.broker.cluster import ClusterStatus, LocalCluster, NodeStatus
from streamtrain.broker.node import BrokerStatus
from streamtrain.broker.runtime import KAFKA_VERSION, ensure_kafka_jars
from streamtrain.broker.single import LocalBroker

__all__ = [
    "KAFKA_VERSION",
    "BrokerStatus",
    "ClusterStatus",
    "LocalBroker",
    "LocalCluster",
    "NodeStatus",
    "ensure_kafka_jars",
]
