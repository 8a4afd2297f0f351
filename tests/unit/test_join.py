"""The join of labels that arrive later, without Kafka: River's delayed progressive validation
is the oracle, and a task frozen and thawed at any point ends where an uninterrupted one does."""

from __future__ import annotations

import dataclasses
import random
from itertools import islice
from typing import Any

import orjson
import pytest
from river import datasets, evaluate, linear_model, metrics, preprocessing

from streamtrain.join.merge import EventTimeMerge
from streamtrain.join.state import NO_DEFAULT, JoinPolicy
from streamtrain.state.payload import TrainState, freeze, thaw
from streamtrain.train.tasks import JoinSpec, Task

FEATURES, LABELS = "features", "labels"


@dataclasses.dataclass(frozen=True)
class Rec:
    """A consumed record, as the task reads one."""

    src: str
    ts: int
    at: int
    data: bytes
    part: int = 0
    k: bytes | None = None

    def topic(self) -> str:
        return self.src

    def partition(self) -> int:
        return self.part

    def offset(self) -> int:
        return self.at

    def value(self) -> bytes:
        return self.data

    def key(self) -> bytes | None:
        return self.k

    def headers(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return 1, self.ts


def phishing(n: int) -> list[Any]:
    return list(islice(datasets.Phishing(), n))


def logs(
    stream: list[tuple[dict[str, float], Any]], delays: list[int], drop: set[int] = frozenset()
) -> tuple[list[Rec], list[Rec]]:
    """Feature i at time i; its label at i + delays[i], the labels log in due order."""
    features = [
        Rec(FEATURES, i, i, orjson.dumps({"id": str(i), "x": x}))
        for i, (x, _y) in enumerate(stream)
    ]
    due = sorted(
        ((i + delays[i], i) for i in range(len(stream)) if i not in drop), key=lambda d: d[0]
    )
    labels = [
        Rec(LABELS, t, at, orjson.dumps({"id": str(i), "y": stream[i][1]}))
        for at, (t, i) in enumerate(due)
    ]
    return features, labels


def fresh_task(policy: JoinPolicy | None = None) -> Task:
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    state = TrainState(
        model, {"ROCAUC": metrics.ROCAUC(), "Accuracy": metrics.Accuracy()}, 0, {}, {}
    )
    task = Task.from_state("t", state, join=JoinSpec(LABELS, policy or JoinPolicy()))
    task.set_inputs([(FEATURES, 0), (LABELS, 0)])
    return task


def run(
    task: Task,
    features: list[Rec],
    labels: list[Rec],
    rng: random.Random,
    ends: tuple[int, int] | None = None,
) -> Task:
    """Feed both logs in random chunks, as fetches interleave; drain after each. ``ends``:
    where the logs end (an input is caught up there), if not with the records given."""
    last = {
        (FEATURES, 0): features[-1].at + 1 if features else 0,
        (LABELS, 0): labels[-1].at + 1 if labels else 0,
    }
    if ends is not None:
        last = {(FEATURES, 0): ends[0], (LABELS, 0): ends[1]}
    fi = li = 0
    while fi < len(features) or li < len(labels):
        if li >= len(labels) or (fi < len(features) and rng.random() < 0.5):
            n = rng.randint(1, 40)
            task.learn(features[fi : fi + n])
            fi += n
        else:
            n = rng.randint(1, 40)
            task.learn(labels[li : li + n])
            li += n
        task.drain(0.0, lambda key, fetched: fetched >= last[key] or last[key] == 0)
    return task


def fingerprint(task: Task) -> tuple[Any, ...]:
    """The task's learned state, exactly: model parameters, metrics, what waits, counters."""
    model = task.evaluator.model
    scaler, lr = model["StandardScaler"], model["LogisticRegression"]
    state = task.state()
    return (
        task.evaluator.values(),
        dict(scaler.means),
        dict(scaler.vars),
        dict(scaler.counts),
        dict(lr.weights),
        lr.intercept,
        freeze(dataclasses.replace(state, model=None, metrics={})),
        state.offsets,
        state.label_offsets,
    )


def river_scores(stream: list[Any], delay: Any) -> dict[str, float]:
    """River's scores; ``delay`` a constant or a list of per-event delays."""
    out = {}
    for name, metric in (("ROCAUC", metrics.ROCAUC()), ("Accuracy", metrics.Accuracy())):
        model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
        if isinstance(delay, list):
            it = iter(delay)  # River asks for each event's delay once, in order

            def each(_x: Any, _y: Any, it: Any = it) -> int:
                return next(it)

            evaluate.progressive_val_score(stream, model, metric, delay=each)
        else:
            evaluate.progressive_val_score(stream, model, metric, delay=delay)
        out[name] = metric.get()
    return out


@pytest.mark.parametrize("k", [0, 1, 25, 400])
def test_constant_delay_scores_exactly_as_river(k: int) -> None:
    stream = phishing(300)
    features, labels = logs(stream, [k] * len(stream))
    task = run(fresh_task(), features, labels, random.Random(k))
    assert task.evaluator.values() == river_scores(stream, k)
    assert task.events_learned == len(stream) and task.events_predicted == len(stream)
    assert task.offsets == {0: len(stream)} and task.label_offsets == {0: len(stream)}


def test_random_delays_score_exactly_as_river_however_fetches_interleave() -> None:
    stream = phishing(400)
    rng = random.Random(5)
    delays = [rng.randint(0, 60) for _ in stream]
    expected = river_scores(stream, delays)
    features, labels = logs(stream, delays)
    finals = []
    for seed in range(3):
        task = run(fresh_task(), features, labels, random.Random(seed))
        assert task.evaluator.values() == expected
        finals.append(fingerprint(task))
    assert finals[0] == finals[1] == finals[2]  # bit-identical state, pending joins included


def test_a_task_thawed_midway_ends_bit_identical() -> None:
    stream = phishing(300)
    rng = random.Random(2)
    features, labels = logs(stream, [rng.randint(0, 80) for _ in stream])
    whole = run(fresh_task(), features, labels, random.Random(1))
    ends = (len(features), len(labels))
    task = run(fresh_task(), features[:150], labels[:100], random.Random(1), ends)
    state = task.state()
    restored = thaw(freeze(state), state.events_learned, state.offsets, state.label_offsets)
    resumed = Task.from_state("t", restored, join=JoinSpec(LABELS, JoinPolicy()))
    resumed.set_inputs([(FEATURES, 0), (LABELS, 0)])
    # Records past the task's offsets (some were buffered, not learned) are fed again.
    rest = features[resumed.offsets[0] :], labels[resumed.label_offsets[0] :]
    run(resumed, *rest, random.Random(3), ends)
    assert resumed.events_learned == len(stream)
    assert fingerprint(resumed) == fingerprint(whole)


def test_expiry_grace_duplicates_and_overflow_account_for_every_record() -> None:
    stream = phishing(200)
    delays = [5] * len(stream)
    delays[10] = 500  # beyond the TTL: expires
    delays[20] = -3  # before its features: held, then joined
    features, labels = logs(stream, delays, drop={30, 31})
    extra = [
        Rec(LABELS, 60, 10_000, orjson.dumps({"id": "40", "y": True})),  # joined at 45
        Rec(LABELS, 61, 10_001, orjson.dumps({"id": "nobody", "y": True})),  # never matched
        Rec(LABELS, 62, 10_002, orjson.dumps({"y": True})),  # no id
    ]
    labels = sorted(labels + extra, key=lambda r: r.ts)
    labels = [dataclasses.replace(r, at=i) for i, r in enumerate(labels)]
    for default in (NO_DEFAULT, False):
        task = run(
            fresh_task(JoinPolicy(ttl_ms=50, grace_ms=5, default_label=default)),
            features,
            labels,
            random.Random(0),
        )
        join = task.join_state
        assert join is not None
        counts = join.counts
        reasons = task.dead_letter_reasons
        expired = 3  # 10 (too late), 30 and 31 (dropped)
        if default is NO_DEFAULT:
            assert counts["expired"] == reasons["label-expired"] == expired
        else:
            assert counts["defaulted"] == expired and "label-expired" not in reasons
        # "nobody" is unmatched; label 10 comes after its prediction expired and, the last
        # record, waits out its grace at the end of the stream.
        assert counts["unmatched"] == reasons["unmatched-label"] == 1
        assert list(join.held) == ["10"]
        assert counts["duplicate"] == reasons["duplicate-label"] == 1
        assert reasons["bad-id"] == 1
        assert counts["joined"] == len(stream) - expired
        # Every record accounted for: features predicted; labels joined, refused or held.
        assert task.events_predicted == len(features)
        refused = sum(reasons.values()) - reasons["label-expired"]
        assert counts["joined"] + refused + len(join.held) == len(labels)
        assert task.events_learned == counts["joined"] + counts["defaulted"]


def test_max_pending_expires_the_oldest_early() -> None:
    stream = phishing(100)
    features, labels = logs(stream, [1000] * len(stream))
    task = run(fresh_task(JoinPolicy(max_pending=10)), features, labels, random.Random(0))
    join = task.join_state
    assert join is not None
    assert join.counts["evicted"] == 90 == task.dead_letter_reasons["label-expired"]
    assert join.counts["joined"] == 10 and len(join.pending) == 0
    # The 90 labels of evicted predictions are unmatched at the end of the stream? No: they
    # wait (grace 0, and stream time stops at the last label); they are held or refused.
    assert join.counts["unmatched"] + len(join.held) == 90


def test_a_regressor_scores_exactly_as_river_with_random_delays() -> None:
    stream = list(datasets.TrumpApproval())
    rng = random.Random(9)
    delays = [rng.randint(0, 40) for _ in stream]
    features, labels = logs(stream, delays)

    def model() -> Any:
        return preprocessing.StandardScaler() | linear_model.LinearRegression()

    state = TrainState(model(), {"MAE": metrics.MAE(), "RMSE": metrics.RMSE()}, 0, {}, {})
    task = Task.from_state("t", state, join=JoinSpec(LABELS, JoinPolicy()))
    task.set_inputs([(FEATURES, 0), (LABELS, 0)])
    run(task, features, labels, random.Random(1))
    for name, metric in (("MAE", metrics.MAE()), ("RMSE", metrics.RMSE())):
        it = iter(delays)
        oracle = model()
        evaluate.progressive_val_score(stream, oracle, metric, delay=lambda _x, _y, it=it: next(it))
        assert task.evaluator.values()[name] == metric.get()
    for x, _y in stream[:50]:
        assert task.evaluator.model.predict_one(x) == oracle.predict_one(x)


class PacedConsumer:
    """What the registry asks of a consumer while it drains joined tasks."""

    def __init__(self) -> None:
        self.paused: set[tuple[str, int]] = set()
        self.calls: list[tuple[str, list[tuple[str, int]]]] = []

    def get_watermark_offsets(self, tp: Any, timeout: Any = None, cached: bool = False) -> Any:
        return 0, 10**9  # the logs hold far more than was fetched: nothing is caught up

    def position(self, tps: list[Any]) -> list[Any]:
        from confluent_kafka import OFFSET_INVALID, TopicPartition

        return [TopicPartition(tp.topic, tp.partition, OFFSET_INVALID) for tp in tps]

    def pause(self, tps: list[Any]) -> None:
        keys = [(tp.topic, tp.partition) for tp in tps]
        self.calls.append(("pause", keys))
        self.paused.update(keys)

    def resume(self, tps: list[Any]) -> None:
        keys = [(tp.topic, tp.partition) for tp in tps]
        self.calls.append(("resume", keys))
        self.paused.difference_update(keys)


def test_an_input_far_ahead_is_paused_until_the_merge_takes_its_records() -> None:
    from confluent_kafka import TopicPartition

    from streamtrain.train.registry import MAX_BUFFERED, TaskRegistry

    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    registry = TaskRegistry(
        name=None,
        partitioned=False,
        build=lambda key, state: Task.from_state(key, state, join=JoinSpec(LABELS, JoinPolicy())),
        start="earliest",
        fresh=lambda _key: TrainState(model, {"ROCAUC": metrics.ROCAUC()}, 0, {}, {}),
        clock=lambda: 0.0,
    )
    consumer = PacedConsumer()
    registry.consumer = consumer
    registry.on_assign(consumer, [TopicPartition(FEATURES, 0), TopicPartition(LABELS, 0)])  # type: ignore[arg-type]
    stream = phishing(1250) * 5
    features, labels = logs(stream, [10] * len(stream))
    (task,) = registry.tasks.values()
    task.learn(features[: MAX_BUFFERED + 1])
    registry.drain(consumer, 0.0)  # type: ignore[arg-type]
    assert consumer.paused == {(FEATURES, 0)} and task.events_learned == 0
    task.learn(labels)  # the labels come: the merge takes the features, which resume
    registry.drain(consumer, 0.0)  # type: ignore[arg-type]
    assert consumer.paused == set() and task.events_learned > MAX_BUFFERED - 20
    assert [kind for kind, _ in consumer.calls] == ["pause", "resume"]


def test_ids_from_record_keys_join_the_same_way() -> None:
    stream = phishing(200)
    rng = random.Random(4)
    delays = [rng.randint(0, 30) for _ in stream]
    by_value = logs(stream, delays)

    def keyed(recs: list[Rec]) -> list[Rec]:
        out = []
        for r in recs:
            event = orjson.loads(r.data)
            key = event.pop("id").encode()
            out.append(dataclasses.replace(r, data=orjson.dumps(event), k=key))
        return out

    by_key = keyed(by_value[0]), keyed(by_value[1])
    assert b'"id"' not in by_key[0][0].data
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    state = TrainState(model, {"ROCAUC": metrics.ROCAUC()}, 0, {}, {})
    task = Task.from_state("t", state, join=JoinSpec(LABELS, JoinPolicy(), id_from="key"))
    task.set_inputs([(FEATURES, 0), (LABELS, 0)])
    run(task, *by_key, random.Random(0))
    reference = run(fresh_task(), *by_value, random.Random(0))
    assert task.join_state is not None and task.join_state.counts["joined"] == len(stream)
    assert task.evaluator.values()["ROCAUC"] == reference.evaluator.values()["ROCAUC"]


def test_ties_between_partitions_do_not_depend_on_the_order_they_were_assigned() -> None:
    """Records of two feature partitions stamped the same millisecond: merged by (topic,
    partition), whichever partition the group handed over first."""
    orders = []
    for inputs in ([("f", 0), ("f", 1), ("l", 0)], [("l", 0), ("f", 1), ("f", 0)]):
        merge = EventTimeMerge(inputs, max_wait=0.0)
        for key in inputs:
            for ts in (5, 7):
                merge.add(key, ts, 0 if key[0] == "l" else 1, (key, ts))
        orders.append(list(merge.take(0.0, lambda _key: True)))
    assert orders[0] == orders[1]
    assert orders[0][:3] == [(("l", 0), 5), (("f", 0), 5), (("f", 1), 5)]
