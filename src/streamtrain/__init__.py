"""streamtrain: train River models online on Apache Kafka streams."""

import logging

from streamtrain.config import KafkaSettings
from streamtrain.produce import ProduceSettings, Replayer
from streamtrain.train.progress import Progress, Summary
from streamtrain.train.settings import TrainSettings
from streamtrain.train.trainer import Trainer

__all__ = [
    "KafkaSettings",
    "ProduceSettings",
    "Progress",
    "Replayer",
    "Summary",
    "TrainSettings",
    "Trainer",
]

# A library stays silent unless its user configures logging (the CLI does, see cli/common.py).
logging.getLogger("streamtrain").addHandler(logging.NullHandler())
