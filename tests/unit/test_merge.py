"""Merging the metrics records of several processes of one partitioned model."""

from __future__ import annotations

from typing import Any

import pytest

from streamtrain.serving.merge import ProcessMerger


def task(learned: int, auc: float, reasons: dict[str, int] | None = None) -> dict[str, Any]:
    reasons = reasons or {}
    return {
        "events_learned": learned,
        "events_predicted": learned // 10,
        "dead_lettered": sum(reasons.values()),
        "dead_letter_reasons": reasons,
        "metrics": {"ROCAUC": auc},
        "rolling": {},
        "offsets": {},
    }


def record(process: str, ts: float, tasks: dict[str, Any], **extra: Any) -> dict[str, Any]:
    partitions = [key.rsplit("/p", 1)[1] for key in tasks]
    base: dict[str, Any] = {
        "format": 1,
        "kind": "progress",
        "ts": ts,
        "model": "m",
        "topic": "t",
        "process": process,
        "events_per_second": 100.0,
        "lag": {p: 5 for p in partitions},
        "positions": {p: tasks[f"m/p{p}"]["events_learned"] for p in partitions},
        "tasks": tasks,
    }
    base.update(extra)
    return base


def test_records_without_tasks_pass_through() -> None:
    single = {"ts": 1.0, "events_learned": 7, "metrics": {"ROCAUC": 0.5}, "tasks": {}}
    assert ProcessMerger().merge(single) is single


def test_two_processes_make_one_series() -> None:
    merger = ProcessMerger()
    a = merger.merge(record("A", 1.0, {"m/p0": task(100, 0.8), "m/p1": task(300, 0.9)}))
    assert a["events_learned"] == 400 and a["processes"] == 1
    b = merger.merge(record("B", 1.5, {"m/p2": task(100, 0.6, {"bad-features": 2})}))
    assert b["events_learned"] == 500
    assert b["events_predicted"] == 50
    assert b["dead_lettered"] == 2 and b["dead_letter_reasons"] == {"bad-features": 2}
    assert b["metrics"]["ROCAUC"] == pytest.approx((100 * 0.8 + 300 * 0.9 + 100 * 0.6) / 500)
    assert b["events_per_second"] == 200.0 and b["processes"] == 2
    assert b["lag"] == {"0": 5, "1": 5, "2": 5} and b["total_lag"] == 15
    assert b["model_version"] == "t:0@100,t:1@300,t:2@100"
    assert sorted(b["tasks"]) == ["m/p0", "m/p1", "m/p2"]


def test_alternating_processes_do_not_zigzag() -> None:
    merger = ProcessMerger()
    raw, merged = [], []
    for step in range(1, 20):
        # A's partition is ten times busier than B's: their own counts alternate 10, 2, 30, 4...
        process, key, learned = ("A", "m/p0", step * 10) if step % 2 else ("B", "m/p1", step)
        rec = record(process, step, {key: task(learned, 0.7)})
        raw.append(learned)
        merged.append(merger.merge(rec)["events_learned"])
    assert raw != sorted(raw)
    assert merged == sorted(merged)


def test_a_moved_task_counts_once_with_its_newest_report() -> None:
    merger = ProcessMerger()
    merger.merge(record("A", 1.0, {"m/p0": task(100, 0.8), "m/p1": task(100, 0.8)}))
    # B took p1 over (from A's checkpoint) and learned more; A's old report of p1 is stale.
    out = merger.merge(record("B", 2.0, {"m/p1": task(150, 0.85)}))
    assert out["events_learned"] == 250
    # A late record from A that still lists p1 with an older timestamp changes nothing.
    late = merger.merge(record("A", 1.5, {"m/p0": task(120, 0.8), "m/p1": task(110, 0.8)}))
    assert late["events_learned"] == 270


def test_silent_and_finished_processes() -> None:
    merger = ProcessMerger(live_seconds=5.0)
    merger.merge(record("A", 0.0, {"m/p0": task(10, 0.5)}))
    out = merger.merge(record("B", 30.0, {"m/p1": task(20, 0.5)}))
    assert out["processes"] == 1 and out["events_per_second"] == 100.0  # A went quiet
    assert out["events_learned"] == 30  # what A's task learned still counts
    out = merger.merge(record("B", 31.0, {"m/p1": task(25, 0.5)}, kind="final"))
    assert out["kind"] == "final" and out["processes"] == 0


def test_challengers_combine_over_the_processes_tasks() -> None:
    def with_challenger(learned: int, auc: float, c1_auc: float) -> dict[str, Any]:
        c1 = {"spec": "GaussianNB", "metrics": {"ROCAUC": c1_auc}, "rolling": {}}
        c1.update(events_learned=learned, model_errors=1, started_at=0)
        return {**task(learned, auc), "challengers": {"c1": c1}}

    merger = ProcessMerger()
    merger.merge(record("a", 1.0, {"m/p0": with_challenger(300, 0.9, 0.8)}))
    merged = merger.merge(record("b", 2.0, {"m/p1": with_challenger(100, 0.5, 0.4)}))
    c1 = merged["challengers"]["c1"]
    assert (c1["spec"], c1["events_learned"], c1["model_errors"]) == ("GaussianNB", 400, 2)
    assert c1["metrics"]["ROCAUC"] == pytest.approx(0.8 * 0.75 + 0.4 * 0.25)
    plain = ProcessMerger().merge(record("a", 1.0, {"m/p0": task(10, 0.5)}))
    assert "challengers" not in plain
