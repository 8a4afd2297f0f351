"""Replay a dataset or a file into a Kafka topic in the training-event wire format."""

from streamtrain.produce.replayer import Replayer
from streamtrain.produce.settings import ProduceReport, ProduceSettings

__all__ = ["ProduceReport", "ProduceSettings", "Replayer"]
