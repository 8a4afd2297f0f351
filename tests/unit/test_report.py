"""The HTML report: self-contained, escaped, and true to the records it is made of."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

import streamtrain.serving
from streamtrain.serving.charts import inline_script, script_hash, segments
from streamtrain.serving.curves import ModelViews
from streamtrain.serving.report import render_report, split_runs

EVIL = "<script>alert(1)</script>"


def _record(i: int, elapsed: float, kind: str = "progress", **extra: Any) -> dict[str, Any]:
    record = {
        "format": 1,
        "kind": kind,
        "ts": 1_800_000_000.0 + i * 0.5,
        "model": "m",
        "topic": "events",
        "spec": "StandardScaler | LogisticRegression",
        "events_learned": 1000 * (i + 1),
        "events_per_second": 2000.0,
        "elapsed_seconds": elapsed,
        "dead_lettered": i,
        "dead_letter_reasons": {"bad-features": i},
        "metrics": {"ROCAUC": 0.5 + i / 100, "LogLoss": 0.7 - i / 200},
        "rolling": {"ROCAUC": 0.55 + i / 100},
        "total_lag": max(0, 50 - 5 * i),
        "model_version": f"events:0@{1000 * (i + 1)}",
    }
    record.update(extra)
    return record


def _two_runs() -> list[dict[str, Any]]:
    first = [_record(i, i * 0.5) for i in range(10)]
    first[-1]["kind"] = "final"
    second = [_record(10 + i, i * 0.5) for i in range(12)]
    return first + second


class _Refs(HTMLParser):
    """Collects every attribute that would make a browser fetch something, and the scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.tags: list[str] = []
        self.scripts: list[tuple[str | None, str]] = []  # (type, text)
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "srcset", "action", "data") and value:
                self.refs.append((tag, name, value))
        if tag == "script":
            self._in_script = True
            self.scripts.append((dict(attrs).get("type"), ""))

    def handle_data(self, data: str) -> None:
        if self._in_script:
            kind, text = self.scripts[-1]
            self.scripts[-1] = (kind, text + data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False


def _charts(page: str) -> list[dict[str, Any]]:
    """The chart specs a report's script draws, in the order of their placeholders."""
    found = re.search(r"<script type='application/json' id='chart-data'>(.*?)</script>", page)
    assert found is not None
    specs: list[dict[str, Any]] = json.loads(found.group(1))
    assert page.count("data-chart='") == len(specs)
    return specs


def test_report_shows_the_run() -> None:
    records = _two_runs()
    page = render_report("m", records, generated_at=1_800_000_100.0)
    last = records[-1]
    assert "streamtrain report · m" in page
    charts = _charts(page)
    # ROCAUC and LogLoss curves, throughput, lag
    assert [c["yLabel"] for c in charts] == ["ROCAUC", "LogLoss", "events/s", "records"]
    assert f"{last['metrics']['ROCAUC']:.4f}" in page  # final cumulative
    assert f"{last['rolling']['ROCAUC']:.4f}" in page  # final rolling
    assert f"{last['events_learned']:,}" in page
    assert "2 run(s)" in page
    assert "final report" in page and "no final report" in page
    assert "bad-features" in page and ">21<" in page  # dead letters by reason
    assert "2026-" not in page or "UTC" in page
    # the whole-run and rolling-window series of ROCAUC, the whole-run one of LogLoss
    assert [[s["label"] for s in c["series"]] for c in charts[:2]] == [
        ["whole run", "rolling window"],
        ["whole run"],
    ]
    assert charts[0]["series"][0]["points"] == [
        [r["events_learned"], r["metrics"]["ROCAUC"]] for r in records
    ]
    assert charts[2]["series"][0]["points"][0] == [0.0, 2000.0]  # seconds since the first


def test_report_is_self_contained_and_escapes_record_text() -> None:
    records = _two_runs()
    records[-1] = _record(
        21,
        5.5,
        spec=EVIL,
        dead_letter_reasons={"<img src=x onerror=1>": 3},
        metrics={"ROCAUC": 0.7, EVIL: 0.5},
    )
    page = render_report(EVIL, records)
    parser = _Refs()
    parser.feed(page)
    assert parser.refs == []  # nothing to fetch: no src, no href
    assert "img" not in parser.tags
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=1&gt;" in page
    assert "default-src 'none'" in page  # CSP: even an injected reference would not load
    # Two scripts: the charts' data (JSON, never run) and uPlot with charts.js, the only one
    # the policy lets run, by its hash.
    (data_type, data), (code_type, code) = parser.scripts
    assert data_type == "application/json" and code_type is None
    assert code == inline_script()
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page)
    assert policy is not None
    assert f"script-src {script_hash(code)}" in policy.group(1)
    assert "unsafe-inline" not in policy.group(1).split("script-src")[1]
    assert "<" not in data  # record text cannot end the element…
    assert EVIL in [c["yLabel"] for c in json.loads(data)]  # …and reaches the chart as it is


def test_a_metric_at_negative_zero_prints_without_its_sign() -> None:
    records = [_record(i, i * 0.5, metrics={"R2": -0.0}, rolling={"R2": -0.0}) for i in range(3)]
    page = render_report("m", records, generated_at=1_800_000_100.0)
    assert "0.0000" in page and "-0.0000" not in page


def _challenged_run() -> list[dict[str, Any]]:
    """c0 (LogisticRegression) with challengers tree and arf; tree is promoted after report 4;
    the champion's detector fires at 4,500 events, arf's at 2,500."""
    records = []
    for i in range(8):
        promoted = i >= 4
        auc = [-0.0, 0.6, 0.62, 0.63, 0.8, 0.81, 0.82, 0.83][i]
        c0 = {
            "spec": "LogisticRegression",
            "metrics": {"ROCAUC": 0.64, "LogLoss": -0.0},
            "rolling": {},
            "events_learned": 1000 * (i + 1),
            "started_at": 0,
        }
        tree = {
            "spec": "HoeffdingTreeClassifier",
            "metrics": {"ROCAUC": 0.0 if i < 2 else 0.7},
            "rolling": {},
            "events_learned": 1000 * (i + 1),
            "started_at": 0,
        }
        arf = {
            "spec": "ARFClassifier",
            "metrics": {"ROCAUC": 0.75},
            "rolling": {},
            "events_learned": 1000 * (i + 1) - 500,
            "started_at": 500,
        }
        recent = [{"label": "arf", "events": 2500, "action": "alert"}]
        if i >= 5:
            recent.append({"label": "champion", "events": 4500, "action": "alert"})
        records.append(
            _record(i, i * 0.5, metrics={"ROCAUC": auc, "LogLoss": 0.3}, rolling={},
                    challengers={"c0": c0, "arf": arf} if promoted else {"tree": tree, "arf": arf},
                    drift={"detector": "ADWIN", "recent": recent})
        )  # fmt: skip
    return records


def test_report_draws_every_model_with_its_promotions_and_drifts() -> None:
    page = render_report("m", _challenged_run())
    roc = _charts(page)[0]
    assert [s["label"] for s in roc["series"]] == [
        "c0 · LogisticRegression",
        "tree · HoeffdingTreeClassifier",
        "arf · ARFClassifier",
    ]
    c0, tree, arf = (dict((int(x), y) for x, y in s["points"]) for s in roc["series"])
    # c0: champion until report 4 (from where ROCAUC is defined), then a challenger; tree:
    # a challenger from where defined, then the champion.
    assert c0 == {2000: 0.6, 3000: 0.62, 4000: 0.63, 5000: 0.64, 6000: 0.64, 7000: 0.64, 8000: 0.64}
    assert tree == {3000: 0.7, 4000: 0.7, 5000: 0.8, 6000: 0.81, 7000: 0.82, 8000: 0.83}
    assert len(arf) == 8 and len({s["color"] for s in roc["series"]}) == 3
    assert [m["label"] for m in roc["markers"]] == ["tree replaces c0", "drift · arf", "drift · c0"]
    assert [m["x"] for m in roc["markers"]] == [5000, 2500, 4500]
    models = re.search(r"<h2>Models.*?</table>", page)
    assert models is not None
    rows = re.findall(r"<tr><td class='strong'[^>]*>(\w+)</td>(.*?)</tr>", models.group(0))
    assert [(label, "champion" in rest) for label, rest in rows] == [
        ("c0", False),
        ("tree", True),
        ("arf", False),
    ]
    assert ">5,000<" in rows[1][1]  # tree: champion since the report that showed it
    assert ">500<" in rows[2][1]  # arf began at event 500
    changes = re.search(r"<h2>Promotions and drift detections.*?</table>", page)
    assert changes is not None
    assert re.findall(r"<td class='num'>([\d,]+)</td><td>(\w+)</td>", changes.group(0)) == [
        ("2,500", "drift"),
        ("4,500", "drift"),
        ("5,000", "promotion"),
    ]
    assert "-0.0000" not in page  # c0's LogLoss at -0.0 among them


def test_report_of_no_records() -> None:
    page = render_report("nobody", [])
    assert "No metrics records" in page and "<script" not in page
    assert "script-src 'none'" in page


def test_curves_start_where_the_metric_is_defined() -> None:
    # River's ROCAUC is 0 (-0.0) until both classes were seen: those reports are no points of
    # the curve, nor the run's lowest value.
    values = [-0.0, 0.0, 0.0, 0.62, 0.71, 0.0, 0.66]
    records = [_record(i, i * 0.5, metrics={"ROCAUC": v}, rolling={}) for i, v in enumerate(values)]
    page = render_report("m", records)
    curve = _charts(page)[0]["series"][0]["points"]
    assert curve == [[4000, 0.62], [5000, 0.71], [6000, 0.0], [7000, 0.66]]
    row = re.search(r"<tr><td>ROCAUC</td>(.*?)</tr>", page)
    assert row is not None
    assert re.findall(r">([-\d.]+)<", row.group(1)) == ["0.6600", "0.0000", "0.7100"]


def test_a_metric_that_never_leaves_its_placeholder_has_no_curve() -> None:
    # R2 (bigger is better) at 0 all run long is River's placeholder: no curve, no lowest; a
    # metric where smaller is better is a value at 0 (a perfect MAE), drawn from the start.
    records = [_record(i, i * 0.5, metrics={"R2": 0.0, "MAE": 0.0}, rolling={}) for i in range(3)]
    page = render_report("m", records)
    (mae,) = _charts(page)[:1]
    assert mae["yLabel"] == "MAE" and [y for _, y in mae["series"][0]["points"]] == [0.0] * 3
    row = re.search(r"<tr><td>R2</td>(.*?)</tr>", page)
    assert row is not None
    assert re.findall(r">([^<>]+)<", row.group(1)) == ["0.0000", "—", "—", "—"]


def test_runs_split_at_final_records_and_restarts() -> None:
    records = _two_runs()
    assert [len(r.records) for r in split_runs(records)] == [10, 12]
    assert [r.finished for r in split_runs(records)] == [True, False]
    # A killed trainer writes no final record; its successor's clock starts again.
    killed = [_record(i, i * 0.5) for i in range(5)] + [_record(5 + i, i) for i in range(3)]
    assert [len(r.records) for r in split_runs(killed)] == [5, 3]
    assert split_runs([]) == []


def test_learning_curve_breaks_where_events_learned_went_back() -> None:
    # After a crash, a restored trainer reports from its last checkpoint, behind the last
    # report of the crashed one: that must not be drawn as a line going backwards.
    records = [_record(i, i * 0.5) for i in range(6)] + [_record(2 + i, i) for i in range(4)]
    # charts.js starts a new line where x goes back; the spec keeps the points in order.
    page = render_report("m", records)
    points = [(x, y) for x, y in _charts(page)[0]["series"][0]["points"]]
    assert [len(s) for s in segments(points)] == [6, 4]


_POINT = st.tuples(st.integers(1, 50), st.sampled_from([-0.0, 0.0, 0.25, 0.5]))


@given(st.lists(_POINT, max_size=30))
def test_a_curve_drops_only_leading_zeros_of_each_segment(points: list[tuple[int, float]]) -> None:
    views = ModelViews()
    kept = [
        (x, m["metrics"]["ROCAUC"])
        for x, y in points
        for m in views.annotate({"events_learned": x, "metrics": {"ROCAUC": y}})["models"]
        if m["metrics"]["ROCAUC"] is not None
    ]
    for seg in segments(points):
        tail = seg[next((i for i, (_, y) in enumerate(seg) if y != 0), len(seg)) :]
        assert tail == kept[: len(tail)]  # each segment's points from its first non-zero on
        assert all(str(y) != "-0.0" for _, y in kept[: len(tail)])
        kept = kept[len(tail) :]
    assert kept == []


def test_every_static_file_is_package_data() -> None:
    # A wheel carries only what pyproject's package-data names: uPlot's files sit a folder down.
    root = Path(__file__).resolve().parents[2]
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["streamtrain.serving"]
    package = Path(streamtrain.serving.__file__).parent
    files = [p.relative_to(package).as_posix() for p in (package / "static").rglob("*")]
    files = [f for f in files if (package / f).is_file()]
    assert "static/uplot/uPlot.iife.min.js" in files and "static/uplot/LICENSE" in files

    def matches(path: str, pattern: str) -> bool:  # setuptools' globs: "*" stops at "/"
        parts, globs = path.split("/"), pattern.split("/")
        return len(parts) == len(globs) and all(map(fnmatch.fnmatchcase, parts, globs))

    missing = [f for f in files if not any(matches(f, p) for p in patterns)]
    assert missing == []
