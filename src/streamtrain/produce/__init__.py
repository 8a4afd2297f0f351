"""Replay a dataset or a file into a Kafka topic in the training-event wire format."""

from streamtrain.produce.replayer import Replayer
from streamtrain.produce.settings import LabelReport, ProduceReport, ProduceSettings

__all__ = ["LabelReport", "ProduceReport", "ProduceSettings", "Replayer"]
