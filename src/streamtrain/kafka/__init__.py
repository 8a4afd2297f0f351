"""Thin helpers over confluent-kafka: client configs, reachability, topics."""
