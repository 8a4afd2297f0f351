"""A named model as of its latest committed checkpoint, ready to predict.

The model a checkpoint serves is its champion: with challengers, the one the promotion gate
(or ``models promote``) chose last; answers then carry its label (``model_label``) beside the
version. :meth:`ModelSnapshot.describe` (``GET /model``) lists the champion and the
challengers the checkpoint holds (:func:`models_of`)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

from streamtrain.errors import StreamtrainError
from streamtrain.formats import replica_partition
from streamtrain.models.prediction import answer_from_proba, predict_answer
from streamtrain.models.problem import Problem, problem_of
from streamtrain.records.models import served_features
from streamtrain.serving.curves import FOUNDER, plain_number
from streamtrain.state.envelope import CheckpointHeader, OpenedCheckpoint, load_state, open_envelope
from streamtrain.state.history import kept_version
from streamtrain.state.store import CheckpointStore


class ModelNotFound(StreamtrainError):
    exit_code = 4


@dataclasses.dataclass(frozen=True)
class ModelSnapshot:
    header: CheckpointHeader
    model: Any
    # The champion and the challengers, as :func:`models_of` describes them (empty: the
    # champion alone, from the header).
    models: tuple[dict[str, Any], ...] = ()

    @classmethod
    def opened(cls, opened: OpenedCheckpoint) -> ModelSnapshot:
        """The snapshot of a verified checkpoint."""
        payload = load_state(opened)
        return cls(opened.header, payload["model"], models_of(opened.header, payload))

    @classmethod
    def latest(cls, store: CheckpointStore, name: str) -> ModelSnapshot:
        opened = store.latest(name)
        if opened is None:
            raise ModelNotFound(
                f"no checkpoint of model {name!r} in {store.topic!r} "
                f"(train one with `streamtrain train --name {name}`)"
            )
        return cls.opened(opened)

    @classmethod
    def pinned(cls, history: CheckpointStore, name: str, version: int) -> ModelSnapshot:
        """Kept version ``version`` of ``name`` from its history topic
        (:class:`~streamtrain.state.history.VersionNotKept` if it is not kept)."""
        return cls.opened(kept_version(history, name, version))

    @classmethod
    def from_bytes(cls, data: bytes, store: CheckpointStore, name: str) -> ModelSnapshot:
        return cls.opened(open_envelope(data, store.key, what=f"checkpoint of model {name!r}"))

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
            "models": list(self.models or models_of(h, {})),
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
        return ModelSnapshot.opened(opened)
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


def models_of(header: CheckpointHeader, payload: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    """The champion, then each challenger, of a checkpoint's state: ``label``, ``role``,
    ``spec``, ``events_learned`` (by that model), ``metrics`` (its own, progressive),
    ``started_at`` (the run's events learned when it began) and, for the champion,
    ``champion_since`` (the events learned when it was promoted; 0: the model the run began
    with, never promoted over)."""
    gate = payload.get("promotion") or {}
    learned = header.events_learned
    if gate.get("promotions"):
        learned = int(gate["learned_before"]) + int(gate["events"]) - int(gate["since"])
    champion = {
        "label": header.champion or FOUNDER,
        "role": "champion",
        "spec": header.model_spec,
        "events_learned": learned,
        "metrics": {name: plain_number(v) for name, v in header.metrics.items()},
        "started_at": int(gate.get("started_at", 0)),
        "champion_since": int(gate.get("since", 0)) if gate.get("promotions") else 0,
    }
    challengers = [
        {
            "label": label,
            "role": "challenger",
            "spec": str(plain.get("spec", "")),
            "events_learned": int(plain.get("events_learned", 0)),
            "metrics": {n: plain_number(m.get()) for n, m in plain.get("metrics", {}).items()},
            "started_at": int(plain.get("started_at", 0)),
            "model_errors": int(plain.get("model_errors", 0)),
        }
        for label, plain in (payload.get("challengers") or {}).items()
    ]
    return (champion, *challengers)
