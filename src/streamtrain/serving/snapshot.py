"""A named model as of its latest committed checkpoint, ready to predict."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from streamtrain.data.events import Task, validate_features
from streamtrain.errors import StreamtrainError
from streamtrain.state.envelope import CheckpointHeader, load_state, open_envelope
from streamtrain.state.store import CheckpointStore
from streamtrain.train.progressive import task_of


class ModelNotFound(StreamtrainError):
    exit_code = 4


def label_key(label: Any) -> str:
    """A class label as a JSON object key: ``true``/``false`` for booleans, else ``str``."""
    if isinstance(label, bool):
        return "true" if label else "false"
    return str(label)


@dataclasses.dataclass(frozen=True)
class ModelSnapshot:
    header: CheckpointHeader
    model: Any

    @classmethod
    def latest(cls, store: CheckpointStore, name: str) -> ModelSnapshot:
        opened = store.latest(name)
        if opened is None:
            raise ModelNotFound(
                f"no checkpoint of model {name!r} in {store.topic!r} "
                f"(train one with `streamtrain train --name {name}`)"
            )
        return cls(opened.header, load_state(opened)["model"])

    @classmethod
    def from_bytes(cls, data: bytes, store: CheckpointStore, name: str) -> ModelSnapshot:
        opened = open_envelope(data, store.key, what=f"checkpoint of model {name!r}")
        return cls(opened.header, load_state(opened)["model"])

    @property
    def task(self) -> Task:
        return task_of(self.model)

    @property
    def version(self) -> str:
        return self.header.model_version

    def age_seconds(self) -> float:
        return max(time.time() - self.header.created_at, 0.0)

    def predict(self, x: Any) -> dict[str, Any]:
        """Predict one features object (validated like a training event's ``x``)."""
        features = validate_features(x)
        answer: dict[str, Any] = {}
        if self.task is Task.CLASSIFICATION:
            proba = self.model.predict_proba_one(features)
            answer["prediction"] = max(proba, key=proba.get) if proba else None
            answer["probabilities"] = {label_key(k): float(v) for k, v in proba.items()}
        else:
            answer["prediction"] = self.model.predict_one(features)
        answer["model_version"] = self.version
        answer["events_learned"] = self.header.events_learned
        return answer

    def describe(self) -> dict[str, Any]:
        h = self.header
        return {
            "name": h.model_name,
            "spec": h.model_spec,
            "version": h.model_version,
            "offsets": {t: {str(p): o for p, o in ps.items()} for t, ps in h.offsets.items()},
            "events_learned": h.events_learned,
            "dead_lettered": h.dead_lettered,
            "metrics": dict(h.metrics),
            "checkpointed_at": h.created_at,
            "checkpoint_age_seconds": round(self.age_seconds(), 3),
        }
