"""What a topic's metadata says about its existence: only "unknown" (or forbidden) is missing;
a topic whose leader is being elected after a broker crash exists and is never created again."""

from __future__ import annotations

from confluent_kafka import KafkaError
from confluent_kafka.admin import ClusterMetadata, PartitionMetadata, TopicMetadata

from streamtrain.kafka.clients import partition_count


def _metadata(error: KafkaError | None, partitions: int) -> ClusterMetadata:
    topic = TopicMetadata()
    topic.topic = "t"
    topic.partitions = {p: PartitionMetadata() for p in range(partitions)}
    topic.error = error
    metadata = ClusterMetadata()
    metadata.topics = {"t": topic}
    return metadata


def test_a_topic_with_partitions_exists() -> None:
    assert partition_count(_metadata(None, 3), "t") == 3
    assert partition_count(_metadata(None, 3), "other") is None


def test_unknown_or_forbidden_is_missing() -> None:
    unknown = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)
    forbidden = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    assert partition_count(_metadata(unknown, 0), "t") is None
    assert partition_count(_metadata(forbidden, 0), "t") is None


def test_a_transient_error_on_a_topic_with_partitions_is_not_missing() -> None:
    electing = KafkaError(KafkaError.LEADER_NOT_AVAILABLE)
    assert partition_count(_metadata(electing, 4), "t") == 4
    assert partition_count(_metadata(electing, 0), "t") is None  # nothing to count yet
