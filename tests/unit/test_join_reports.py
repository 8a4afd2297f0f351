"""The join where users look: metrics records, the terminal views, Prometheus, the dashboard's
records (one process, and several merged)."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from streamtrain.join.state import JoinState
from streamtrain.serving.app import create_app
from streamtrain.serving.curves import ADDED
from streamtrain.serving.follower import MetricsHub, StaticSnapshotSource
from streamtrain.serving.merge import ProcessMerger
from streamtrain.train.progress import Progress, Summary, joins_per_second
from streamtrain.train.telemetry import final_record, progress_record
from streamtrain.train.view import LiveView, LogView, final_line

OUTCOMES = ("expired", "defaulted", "unmatched", "duplicate", "evicted")


def join(joined: int, *, pending: int = 0, delays: tuple[int, ...] = (), **counts: int) -> Any:
    """The summary of a real join state holding these counts, pending entries and delays."""
    state = JoinState(counts={"joined": joined, **dict.fromkeys(OUTCOMES, 0), **counts})
    for ms in delays:
        state.observe_delay(ms)
    return {**state.summary(), "pending": pending}


def progress(elapsed: float, joined: Any | None, **extra: Any) -> Progress:
    fields: dict[str, Any] = {
        "topic": "events",
        "model": "LogisticRegression",
        "events_learned": 100,
        "dead_lettered": 0,
        "events_per_second": 50.0,
        "elapsed_seconds": elapsed,
        "metrics": {"ROCAUC": 0.75},
        "lag": {0: 0},
        "dead_letter_reasons": {},
        "name": "m",
        "join": joined,
    }
    fields.update(extra)
    return Progress(**fields)


def summary(joined: Any | None) -> Summary:
    return Summary(
        topic="events",
        group="g",
        model="LogisticRegression",
        events_learned=120,
        dead_lettered=3,
        dead_letter_reasons={"label-expired": 3},
        dead_letter_failures=0,
        metrics={"ROCAUC": 0.8},
        positions={0: 150},
        elapsed_seconds=9.0,
        events_per_second=13.3,
        stopped_because="idle",
        join=joined,
    )


# -- the rate --------------------------------------------------------------------------------


def test_joins_per_second_is_the_change_over_the_interval() -> None:
    before, after = progress(2.0, join(40)), progress(6.0, join(140))
    assert joins_per_second(before, after) == pytest.approx((140 - 40) / (6.0 - 2.0))
    assert joins_per_second(None, after) is None  # nothing to compare with yet
    assert joins_per_second(progress(2.0, None), after) is None
    assert joins_per_second(after, progress(1.0, join(150))) is None  # another run
    # A rollback or a task moved away lowers the count: no negative rate.
    assert joins_per_second(after, progress(7.0, join(100))) == 0


# -- metrics records ------------------------------------------------------------------------


def test_records_carry_join_only_when_labels_are_joined() -> None:
    plain = progress_record(progress(1.0, None))
    assert "join" not in plain and plain["events_learned"] == 100
    first_join = join(30, pending=4, delays=(5, 5, 900))
    first = progress_record(progress(1.0, first_join))
    assert first["join"] == {**first_join, "joins_per_second": None}
    second_join = join(90, pending=2, delays=(5, 5, 900, 7), expired=3, unmatched=1)
    second = progress_record(progress(3.0, second_join), previous=progress(1.0, first_join))
    assert {k: v for k, v in second["join"].items() if k != "joins_per_second"} == second_join
    assert second["join"]["joins_per_second"] == pytest.approx((90 - 30) / (3.0 - 1.0))
    assert second["join"]["pending"] == 2 and second["join"]["expired"] == 3
    json.dumps(second)  # the record goes on the topic as JSON


def test_the_final_record_has_the_summary_join_and_the_last_rate() -> None:
    last = progress(5.0, join(100, pending=3))
    end = join(110, pending=0, delays=(12,), expired=3)
    final = final_record(last, summary(end), join_rate=42.5)
    assert final["kind"] == "final"
    assert final["join"] == {**end, "joins_per_second": 42.5}
    assert final["events_learned"] == 120 and final["total_lag"] == 0
    assert "join" not in final_record(progress(5.0, None), summary(None), None)


# -- terminal views ---------------------------------------------------------------------------


def test_live_view_shows_the_join_and_its_rate() -> None:
    out = io.StringIO()
    view = LiveView("m", Console(file=out, width=160, color_system=None))
    view.on_progress(progress(1.0, join(10, pending=7, delays=(250,))))
    last = join(1210, pending=5, delays=(250, 250, 4000), expired=2, unmatched=9)
    view.on_progress(progress(4.0, last))
    view.on_finish(summary(last))
    text = out.getvalue()
    rate = (1210 - 10) / (4.0 - 1.0)
    assert re.search(rf"joins/s +{rate:,.0f} ", text)
    assert "5 predictions, 0 labels held" in text
    assert "1,210  (expired 2, defaulted 0, unmatched 9, duplicate 0, evicted 0)" in text
    assert f"p50 {last['label_delay_p50_ms']:.0f} ms" in text
    assert "joined 1,210 labels (5 still pending, 2 expired, 9 unmatched)" in text
    assert text.rstrip().endswith("[idle]")  # the final line is not read as rich markup


def test_live_view_without_a_join_has_no_join_rows() -> None:
    out = io.StringIO()
    view = LiveView("m", Console(file=out, width=160, color_system=None))
    view.on_progress(progress(1.0, None))
    view.on_finish(summary(None))
    assert "joins/s" not in out.getvalue() and "labels held" not in out.getvalue()
    assert "joined" not in out.getvalue()


def test_log_lines_show_the_join_with_the_rate_since_the_last_line() -> None:
    out = io.StringIO()
    view = LogView(out, every=0.0)
    view.on_progress(progress(1.0, join(10, pending=7)))
    view.on_progress(progress(3.0, join(50, pending=6, delays=(30, 50), unmatched=4)))
    first, second = out.getvalue().splitlines()
    assert "pending=7 held_labels=0 joined=10 expired=0" in first
    assert "joins=" not in first and "label_delay" not in first  # no rate, no delay yet
    assert f"joins={(50 - 10) / 2.0:.0f}/s" in second
    assert "pending=6" in second and "unmatched=4" in second
    assert "label_delay_p50_ms=" in second and "label_delay_p99_ms=" in second
    view.on_finish(summary(join(60, pending=1)))
    assert "joined 60 labels (1 still pending" in out.getvalue().splitlines()[-1]
    assert "joined" not in final_line(summary(None))


# -- Prometheus ---------------------------------------------------------------------------


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(hub: MetricsHub) -> tuple[dict[str, tuple[str, str]], Samples]:
    """Each family's (type, help) by name, and every sample by name and labels."""
    with TestClient(create_app("m", StaticSnapshotSource(None), hub)) as client:
        text = client.get("/metrics").text
    families, samples = {}, {}
    for family in text_string_to_metric_families(text):
        families[family.name] = (family.type, family.documentation)
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return families, samples


def test_prometheus_shows_the_newest_records_join() -> None:
    hub = MetricsHub()
    hub.publish({"join": join(5)})
    newest = join(300, pending=12, delays=(1500, 1500, 1500, 90_000), expired=4, evicted=1)
    hub.publish({"events_learned": 300, "join": {**newest, "joins_per_second": 20.0}})
    families, samples = _scrape(hub)
    model = (("model", "m"),)
    assert samples[("streamtrain_join_pending", model)] == newest["pending"]
    assert samples[("streamtrain_join_held_labels", model)] == newest["held_labels"]
    for field in ("joined", *OUTCOMES):
        assert samples[(f"streamtrain_join_{field}_total", model)] == newest[field], field
    for quantile, field in (("0.5", "label_delay_p50_ms"), ("0.99", "label_delay_p99_ms")):
        key = ("streamtrain_join_label_delay_seconds", (("model", "m"), ("quantile", quantile)))
        assert samples[key] == pytest.approx(newest[field] / 1000)
    kind, text = families["streamtrain_join_joined"]
    assert kind == "counter" and "rate()" in text
    assert families["streamtrain_join_pending"][0] == "gauge"


def test_prometheus_has_no_join_series_without_a_join() -> None:
    hub = MetricsHub()
    before, _ = _scrape(hub)
    hub.publish({"events_learned": 3})
    plain, _ = _scrape(hub)
    assert "streamtrain_model_loaded" in plain  # the scrape worked
    assert not any(name.startswith("streamtrain_join") for name in {**before, **plain})
    hub.publish({"join": {**join(3), "pending": "many"}})  # a mistyped field is left out
    odd, samples = _scrape(hub)
    assert samples[("streamtrain_join_joined_total", (("model", "m"),))] == 3
    # No delay before a first observed one: neither it nor the mistyped field is a family.
    assert "streamtrain_join_pending" not in odd
    assert "streamtrain_join_label_delay_seconds" not in odd


# -- the dashboard's records ----------------------------------------------------------------


def _task(learned: int, joined: Any) -> dict[str, Any]:
    return {
        "events_learned": learned,
        "events_predicted": 0,
        "dead_lettered": 0,
        "dead_letter_reasons": {},
        "metrics": {},
        "rolling": {},
        "offsets": {},
        "join": joined,
    }


def _record(process: str, ts: float, tasks: dict[str, Any], rate: float | None) -> dict[str, Any]:
    """A process's record: its own join (as ``progress_record`` writes it) when tasks join."""
    record: dict[str, Any] = {
        "kind": "progress",
        "ts": ts,
        "topic": "t",
        "process": process,
        "events_per_second": 10.0,
        "lag": {},
        "positions": {},
        "tasks": tasks,
    }
    joins = [t["join"] for t in tasks.values() if "join" in t]
    if joins:
        record["join"] = {"joined": sum(j["joined"] for j in joins), "joins_per_second": rate}
    return record


def test_merged_join_sums_counts_and_takes_the_busiest_tasks_delays() -> None:
    small = join(10, pending=3, delays=(900, 900), expired=1)
    big = join(50, pending=1, delays=(20, 20, 20, 40), unmatched=2)
    other = join(30, pending=2, delays=(5,), duplicate=1)
    merger = ProcessMerger()
    merger.merge(_record("A", 1.0, {"m/p0": _task(10, small), "m/p1": _task(50, big)}, 12.0))
    merged = merger.merge(_record("B", 1.5, {"m/p2": _task(30, other)}, None))["join"]
    parts = (small, big, other)
    for field in ("pending", "held_labels", "joined", *OUTCOMES):
        assert merged[field] == sum(p[field] for p in parts), field
    assert merged["label_delay_p50_ms"] == big["label_delay_p50_ms"]
    assert merged["label_delay_p99_ms"] == big["label_delay_p99_ms"]
    assert merged["joins_per_second"] == 12.0  # B has no rate yet
    later = merger.merge(_record("B", 2.0, {"m/p2": _task(30, other)}, 3.5))["join"]
    assert later["joins_per_second"] == 12.0 + 3.5


def test_merged_records_of_a_model_without_join_have_none() -> None:
    merger = ProcessMerger()
    task = _task(10, None)
    del task["join"]
    merged = merger.merge(_record("A", 1.0, {"m/p0": task}, None))
    assert merged["events_learned"] == 10 and "join" not in merged


def test_the_page_gets_the_join_in_its_records_and_its_script() -> None:
    hub = MetricsHub()
    joined = {**join(7, pending=2, delays=(5,)), "joins_per_second": 1.5}
    hub.publish({"events_learned": 7, "join": joined})
    with TestClient(create_app("m", StaticSnapshotSource(None), hub)) as client:
        page = client.get("/").text
        script = client.get("/static/join.js")
        with client.stream("GET", "/events") as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    history = json.loads(line.removeprefix("data: "))
                    hub.close_subscribers()
    (record,) = history  # as published, with every model's view added (serving/curves.py)
    assert {k: v for k, v in record.items() if k not in ADDED} == {
        "events_learned": 7,
        "join": joined,
    }
    assert 'id="join"' in page and "static/join.js" in page
    assert script.status_code == 200
    # Every figure the card shows is a field the records carry.
    for field in ("pending", "joins_per_second", "label_delay_p50_ms", "expired", "unmatched"):
        assert f"join.{field}" in script.text or f'"{field}"' in script.text, field
