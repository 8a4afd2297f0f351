"""The task registry a trainer's settings call for: how each task is built (River or compiled,
joined or not, reading records in which shape) and where a task without a checkpoint starts."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from streamtrain.config import KafkaSettings
from streamtrain.errors import ConfigError
from streamtrain.models.problem import Problem
from streamtrain.records import EventShape
from streamtrain.state.payload import TrainState
from streamtrain.train.challengers import Roster
from streamtrain.train.checkpointing import Checkpointing
from streamtrain.train.drift import PROMOTE_BEST
from streamtrain.train.progressive import ProgressiveEvaluator
from streamtrain.train.promotion import PromotionRule
from streamtrain.train.registry import TaskRegistry
from streamtrain.train.settings import TrainSettings
from streamtrain.train.tasks import Task, join_spec

__all__ = ["check_drift", "new_registry", "promotion_rule"]


def new_registry(
    settings: TrainSettings,
    kafka: KafkaSettings,
    template: ProgressiveEvaluator,
    shape: EventShape,
    checkpointing: Checkpointing | None,
    checkpoint: Callable[[Consumer], object],
    clock: Callable[[], float],
    roster: Roster | None = None,
    promotion: PromotionRule | None = None,
) -> TaskRegistry:
    """The registry of a trainer's tasks, each built as ``settings`` say (River or compiled,
    joined or not, with the challengers of ``roster`` and the gate of ``promotion``), reading
    records as ``shape`` says."""
    ts = settings.from_timestamp
    join = join_spec(settings)
    drift = settings.drift_policy()

    def champion_spec() -> str:  # a named model's, as its checkpoint says
        return checkpointing.model_spec if checkpointing is not None else settings.model

    return TaskRegistry(
        name=settings.name,
        partitioned=settings.partitioned,
        build=lambda key, state: Task.from_state(
            key,
            state,
            fast=settings.fast_path,
            join=join,
            shape=shape,
            roster=roster,
            drift=drift,
            promotion=promotion,
            spec=champion_spec(),
            keep_versions=settings.keep_versions,
        ),
        start=settings.start,
        fresh=functools.partial(_fresh_state, template, settings.partitioned),
        checkpointing=checkpointing,
        checkpoint=checkpoint,
        offsets_for_times=None
        if ts is None
        else lambda consumer, tps: consumer.offsets_for_times(
            [TopicPartition(tp.topic, tp.partition, ts) for tp in tps],
            timeout=kafka.connect_timeout,
        ),
        clock=clock,
        timeout=kafka.connect_timeout,
    )


def promotion_rule(settings: TrainSettings, metrics: Mapping[str, Any]) -> PromotionRule | None:
    """The gate's rule for a run with ``metrics``: on ``promote_on``, or the first metric.

    None when the metric cannot be windowed and nobody asked for a gate (no challengers, no
    ``promote_on``); misuse otherwise."""
    on = settings.promote_on or next(iter(metrics))
    metric = metrics.get(on)
    if metric is None:
        raise ConfigError(f"promote-on {on}: not a metric of this run (add it with --metric)")
    if not hasattr(metric, "revert"):
        if settings.promote_on or settings.challengers or settings.on_drift == PROMOTE_BEST:
            raise ConfigError(f"promote-on {on}: River cannot window this metric; pick another")
        return None
    return settings.promotion_rule(on, bool(metric.bigger_is_better))


def check_drift(settings: TrainSettings, problem: Problem) -> None:
    """The drift detection asked for fits a model of ``problem`` (a binary detector takes a
    classifier's 0/1 errors only): misuse otherwise, found before any network wait."""
    drift = settings.drift_policy()
    if drift is not None:
        drift.check(problem)


def _fresh_state(template: ProgressiveEvaluator, partitioned: bool, _key: str) -> TrainState:
    """A task's state before any checkpoint: the single task starts from the model object given
    (library use); a partitioned model's replicas from clones of it."""
    if not partitioned:
        return TrainState(template.model, template.metrics, 0, {}, {}, template.rolling)
    metrics = {name: m.clone() for name, m in template.metrics.items()}
    rolling = {name: m.clone() for name, m in template.rolling.items()}
    return TrainState(template.model.clone(), metrics, 0, {}, {}, rolling)
