"""A named model as of its latest committed checkpoint, ready to predict.

The model a checkpoint serves is its champion: with challengers, the one the promotion gate
(or ``models promote``) chose last; answers then carry its label (``model_label``) beside the
version."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from streamtrain.errors import StreamtrainError
from streamtrain.formats import replica_partition
from streamtrain.models.prediction import answer_from_proba, predict_answer
from streamtrain.models.problem import Problem, problem_of
from streamtrain.records.models import served_features
from streamtrain.state.envelope import CheckpointHeader, open_envelope
from streamtrain.state.history import kept_version
from streamtrain.state.payload import model_of
from streamtrain.state.store import CheckpointStore


class ModelNotFound(StreamtrainError):
    exit_code = 4


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
        return cls(opened.header, model_of(opened))

    @classmethod
    def pinned(cls, history: CheckpointStore, name: str, version: int) -> ModelSnapshot:
        """Kept version ``version`` of ``name`` from its history topic
        (:class:`~streamtrain.state.history.VersionNotKept` if it is not kept)."""
        opened = kept_version(history, name, version)
        return cls(opened.header, model_of(opened))

    @classmethod
    def from_bytes(cls, data: bytes, store: CheckpointStore, name: str) -> ModelSnapshot:
        opened = open_envelope(data, store.key, what=f"checkpoint of model {name!r}")
        return cls(opened.header, model_of(opened))

    @property
    def problem(self) -> Problem:
        return problem_of(self.model)

    @property
    def version(self) -> str:
        return self.header.model_version

    def age_seconds(self) -> float:
        return max(time.time() - self.header.created_at, 0.0)

    def predict(self, x: Any) -> dict[str, Any]:
        """Predict one features object (validated as :func:`served_features` says)."""
        answer = predict_answer(self.model, self.problem, served_features(self.model, x))
        answer["model_version"] = self.version
        if self.header.champion is not None:
            answer["model_label"] = self.header.champion
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
            **({} if h.champion is None else {"champion": h.champion}),
            **({} if h.promotion_rule is None else {"promotion_rule": h.promotion_rule}),
            "checkpointed_at": h.created_at,
            "checkpoint_age_seconds": round(self.age_seconds(), 3),
        }


@dataclasses.dataclass(frozen=True)
class ReplicaSet:
    """A partitioned model: one replica per input partition, answering together.

    A classifier's probabilities are the mean of the replicas' (a label a replica has never
    seen counts as 0 for it) and its prediction their arg-max; a regressor's prediction is
    the mean. Each replica learned from its own partition only, so the mean is an ensemble
    of models trained on disjoint shards of the stream.
    """

    name: str
    replicas: tuple[ModelSnapshot, ...]  # ordered by partition

    @property
    def problem(self) -> Problem:
        return self.replicas[0].problem

    @property
    def version(self) -> str:
        return ",".join(r.version for r in self.replicas)

    @property
    def events_learned(self) -> int:
        return sum(r.header.events_learned for r in self.replicas)

    def age_seconds(self) -> float:
        return max(r.age_seconds() for r in self.replicas)

    def predict(self, x: Any) -> dict[str, Any]:
        features = served_features(self.replicas[0].model, x)
        answer: dict[str, Any]
        if self.problem is Problem.CLASSIFICATION:
            totals: dict[Any, float] = {}
            for replica in self.replicas:
                for label, p in replica.model.predict_proba_one(features).items():
                    totals[label] = totals.get(label, 0.0) + float(p)
            n = len(self.replicas)
            answer = answer_from_proba({label: total / n for label, total in totals.items()})
        else:
            values = [float(r.model.predict_one(features)) for r in self.replicas]
            answer = {"prediction": sum(values) / len(values)}
        answer["model_version"] = self.version
        labels = [r.header.champion for r in self.replicas]
        if any(label is not None for label in labels):
            answer["model_label"] = ",".join(label or "" for label in labels)
        answer["events_learned"] = self.events_learned
        answer["replicas"] = {r.header.model_name: r.version for r in self.replicas}
        return answer

    def describe(self) -> dict[str, Any]:
        first = self.replicas[0].header
        return {
            "name": self.name,
            "spec": first.model_spec,
            "version": self.version,
            "events_learned": self.events_learned,
            "replicas": [r.describe() for r in self.replicas],
            "checkpoint_age_seconds": round(self.age_seconds(), 3),
        }


def load_model(store: CheckpointStore, name: str) -> ModelSnapshot | ReplicaSet:
    """A named model's latest committed state: one model, or a partitioned model's replicas."""
    opened = store.latest(name)
    if opened is not None:
        return ModelSnapshot(opened.header, model_of(opened))
    replicas = []
    for key, raw in store.all_latest().items():
        partition = replica_partition(key, name)
        if partition is not None and raw is not None:
            replicas.append((partition, ModelSnapshot.from_bytes(raw, store, key)))
    if not replicas:
        raise ModelNotFound(
            f"no checkpoint of model {name!r} in {store.topic!r} "
            f"(train one with `streamtrain train --name {name}`)"
        )
    return ReplicaSet(name, tuple(r for _, r in sorted(replicas, key=lambda pr: pr[0])))
