"""streamtrain: train River models online on Apache Kafka streams.

The public names are imported lazily, so that ``python -m streamtrain`` starts (and installs
its signal handlers) before River and the Kafka client are loaded.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamtrain.config import KafkaSettings
    from streamtrain.produce import ProduceSettings, Replayer
    from streamtrain.train.progress import Progress, Summary
    from streamtrain.train.settings import TrainSettings
    from streamtrain.train.trainer import Trainer

_EXPORTS = {
    "KafkaSettings": "streamtrain.config",
    "ProduceSettings": "streamtrain.produce",
    "Replayer": "streamtrain.produce",
    "Progress": "streamtrain.train.progress",
    "Summary": "streamtrain.train.progress",
    "TrainSettings": "streamtrain.train.settings",
    "Trainer": "streamtrain.train.trainer",
}

__all__ = [
    "KafkaSettings",
    "ProduceSettings",
    "Progress",
    "Replayer",
    "Summary",
    "TrainSettings",
    "Trainer",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'streamtrain' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


# A library stays silent unless its user configures logging (the CLI does, see cli/common.py).
logging.getLogger("streamtrain").addHandler(logging.NullHandler())
