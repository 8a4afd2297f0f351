"""One progress series for a model trained by several processes (``train --partitioned``).

Each trainer process publishes records about the replicas (tasks) it holds right now; a
dashboard that plotted them as they come would zigzag between processes. :class:`ProcessMerger`
keeps the newest report of every task (a task moves between processes; the newest report wins)
and of every process, and turns each incoming record into a model-wide one:

* ``events_learned``, ``events_predicted``, ``dead_lettered`` and its reasons: sums over tasks;
* ``metrics`` and ``rolling``: the mean over tasks weighted by events learned (as ``train``
  reports a partitioned model: each replica is scored on its own partition's stream);
* ``events_per_second``: the sum over processes that reported within ``live_seconds`` of the
  newest record and have not finished; ``lag`` and ``positions``: per partition, from the
  newest record that mentions it;
* ``join`` (labels joined later): its counts and sizes summed over tasks, the label delay
  quantiles of the task with the most joins (as ``train`` reports them), ``joins_per_second``
  summed over the live processes;
* ``challengers``: per label, from the tasks' own, combined as the champion's are (counts
  summed, metrics weighted by the challenger's events learned);
* ``drift``: detections by model label summed over tasks, their recent detections merged in
  event-time order;
* ``processes``: how many processes are live; ``kind`` is ``final`` once every one finished.

Records without ``tasks`` (a single-process model) pass through unchanged.
"""

from __future__ import annotations

from typing import Any

from streamtrain.formats import FINAL, PROGRESS
from streamtrain.state.envelope import model_version

__all__ = ["ProcessMerger"]


class ProcessMerger:
    def __init__(self, live_seconds: float = 10.0) -> None:
        self.live_seconds = live_seconds
        self._tasks: dict[str, tuple[float, dict[str, Any]]] = {}  # key -> (ts, summary)
        self._processes: dict[str, dict[str, Any]] = {}  # process -> its newest record
        self._partitions: dict[str, tuple[float, int, int | None]] = {}  # p -> (ts, lag, pos)

    def merge(self, record: dict[str, Any]) -> dict[str, Any]:
        tasks = record.get("tasks")
        if not isinstance(tasks, dict) or not tasks:
            return record
        ts = _number(record.get("ts"))
        self._processes[str(record.get("process"))] = record
        for key, summary in tasks.items():
            if isinstance(summary, dict) and ts >= self._tasks.get(key, (-1.0, {}))[0]:
                self._tasks[key] = (ts, summary)
        lag = _mapping(record.get("lag"))
        positions = _mapping(record.get("positions"))
        for partition in set(lag) | set(positions):
            if ts >= self._partitions.get(partition, (-1.0, 0, None))[0]:
                self._partitions[partition] = (
                    ts,
                    int(_number(lag.get(partition))),
                    int(_number(positions[partition])) if partition in positions else None,
                )
        return self._combined(record, ts)

    def _combined(self, record: dict[str, Any], ts: float) -> dict[str, Any]:
        summaries = [summary for _, summary in self._tasks.values()]
        learned = sum(int(_number(s.get("events_learned"))) for s in summaries)
        reasons: dict[str, int] = {}
        for s in summaries:
            for reason, n in (s.get("dead_letter_reasons") or {}).items():
                reasons[reason] = reasons.get(reason, 0) + int(n)
        newest = max(_number(r.get("ts")) for r in self._processes.values())
        live = [
            r
            for r in self._processes.values()
            if r.get("kind") != FINAL and newest - _number(r.get("ts")) <= self.live_seconds
        ]
        ordered = sorted(self._partitions.items(), key=lambda item: int(item[0]))
        positions = {p: pos for p, (_, _, pos) in ordered if pos is not None}
        lag = {p: n for p, (_, n, _) in ordered}
        merged = dict(record)
        merged.update(
            kind=FINAL if not live else PROGRESS,
            ts=max(ts, newest),
            events_learned=learned,
            events_predicted=sum(int(_number(s.get("events_predicted"))) for s in summaries),
            dead_lettered=sum(int(_number(s.get("dead_lettered"))) for s in summaries),
            dead_letter_reasons=reasons,
            metrics=_weighted(summaries, "metrics", learned),
            rolling=_weighted(summaries, "rolling", learned),
            events_per_second=sum(_number(r.get("events_per_second")) for r in live),
            lag=lag,
            total_lag=sum(lag.values()),
            positions=positions,
            model_version=model_version(
                str(record.get("topic")), {int(p): o for p, o in positions.items()}
            ),
            processes=len(live),
            tasks={key: summary for key, (_, summary) in sorted(self._tasks.items())},
        )
        join = _join(summaries, live)
        if join is not None:
            merged["join"] = join
        challengers = _challengers(summaries)
        if challengers:
            merged["challengers"] = challengers
        drift = _drift(summaries)
        if drift is not None:
            merged["drift"] = drift
        return merged


def _drift(summaries: list[dict[str, Any]]) -> dict[str, Any] | None:
    parts = [s["drift"] for s in summaries if isinstance(s.get("drift"), dict)]
    if not parts:
        return None
    counts: dict[str, int] = {}
    recent: list[dict[str, Any]] = []
    for part in parts:
        for label, n in _mapping(part.get("detections")).items():
            counts[label] = counts.get(label, 0) + int(_number(n))
        recent += [r for r in part.get("recent") or [] if isinstance(r, dict)]
    recent.sort(key=lambda r: _number(r.get("timestamp")))
    return {**parts[0], "detections": counts, "recent": recent[-100:]}


def _challengers(summaries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    by_label: dict[str, list[dict[str, Any]]] = {}
    for s in summaries:
        for label, report in _mapping(s.get("challengers")).items():
            if isinstance(report, dict):
                by_label.setdefault(label, []).append(report)
    out = {}
    for label, reports in by_label.items():
        learned = sum(int(_number(r.get("events_learned"))) for r in reports)
        out[label] = {
            "spec": reports[0].get("spec"),
            "metrics": _weighted(reports, "metrics", learned),
            "rolling": _weighted(reports, "rolling", learned),
            "events_learned": learned,
            "model_errors": sum(int(_number(r.get("model_errors"))) for r in reports),
            "started_at": min(int(_number(r.get("started_at"))) for r in reports),
        }
    return out


def _join(summaries: list[dict[str, Any]], live: list[dict[str, Any]]) -> dict[str, Any] | None:
    joins = [s["join"] for s in summaries if isinstance(s.get("join"), dict)]
    if not joins:
        return None
    total: dict[str, Any] = {}
    for join in joins:
        for name, value in join.items():
            if not name.startswith("label_delay"):
                total[name] = total.get(name, 0) + int(_number(value))
    largest = max(joins, key=lambda j: _number(j.get("joined")))
    rates = [
        r["join"]["joins_per_second"]
        for r in live
        if isinstance(r.get("join"), dict) and _is_number(r["join"].get("joins_per_second"))
    ]
    return {
        **total,
        **{k: v for k, v in largest.items() if k.startswith("label_delay")},
        "joins_per_second": sum(rates) if rates else None,
    }


def _weighted(summaries: list[dict[str, Any]], field: str, total: int) -> dict[str, float]:
    out: dict[str, float] = {}
    if total <= 0:
        return out
    for s in summaries:
        weight = _number(s.get("events_learned")) / total
        for name, value in (s.get(field) or {}).items():
            out[name] = out.get(name, 0.0) + weight * _number(value)
    return out


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(value: Any) -> float:
    return float(value) if _is_number(value) else 0.0
