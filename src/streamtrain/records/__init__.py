"""The shape of a record: which fields of a decoded event are its id, features and label.

A format turns bytes into a dict (JSON today); a shape turns that dict into ``(id, x, y)``.
The seed's ``{"x": {...}, "y": ...}`` is the default shape (:data:`SEED`); ``train --target``
picks a :class:`RecordShape` for flat records. Steps take either (:class:`EventShape`).
"""

from streamtrain.records.seed import SEED, EventShape, SeedShape
from streamtrain.records.shape import RecordShape, flatten

__all__ = ["SEED", "EventShape", "RecordShape", "SeedShape", "flatten"]
