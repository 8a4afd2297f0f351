"""Durable model state: signed checkpoints in a compacted Kafka topic."""
