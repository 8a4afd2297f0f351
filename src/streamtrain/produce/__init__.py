"""Replay a dataset or a file into a Kafka topic in the training-event wire format."""

from streamtrain.produce.replayer import ProduceReport, ProduceSettings, Replayer

__all__ = ["ProduceReport", "ProduceSettings", "Replayer"]
