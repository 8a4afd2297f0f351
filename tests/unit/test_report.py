"""The HTML report: self-contained, escaped, and true to the records it is made of."""

from __future__ import annotations

import itertools
import math
import re
from html.parser import HTMLParser
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from streamtrain.serving.charts import axis_format, nice_ticks
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
    """Collects every attribute that would make a browser fetch something."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "srcset", "action", "data") and value:
                self.refs.append((tag, name, value))


def test_report_shows_the_run() -> None:
    records = _two_runs()
    page = render_report("m", records, generated_at=1_800_000_100.0)
    last = records[-1]
    assert "streamtrain report · m" in page
    assert page.count("<svg") == 2 + 2  # ROCAUC and LogLoss curves, throughput, lag
    assert f"{last['metrics']['ROCAUC']:.4f}" in page  # final cumulative
    assert f"{last['rolling']['ROCAUC']:.4f}" in page  # final rolling
    assert f"{last['events_learned']:,}" in page
    assert "2 run(s)" in page
    assert "final report" in page and "no final report" in page
    assert "bad-features" in page and ">21<" in page  # dead letters by reason
    assert "2026-" not in page or "UTC" in page
    # the whole-run and rolling-window series of ROCAUC, the whole-run one of LogLoss
    assert page.count("stroke-dasharray='6 4'") == 1 + 1  # rolling line + its legend


def test_report_is_self_contained_and_escapes_record_text() -> None:
    records = _two_runs()
    records[-1] = _record(21, 5.5, spec=EVIL, dead_letter_reasons={"<img src=x onerror=1>": 3})
    page = render_report(EVIL, records)
    parser = _Refs()
    parser.feed(page)
    assert parser.refs == []  # nothing to fetch: no src, no href
    assert "script" not in parser.tags and "img" not in parser.tags
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=1&gt;" in page
    assert "default-src 'none'" in page  # CSP: even an injected reference would not load


def test_a_metric_at_negative_zero_prints_without_its_sign() -> None:
    records = [_record(i, i * 0.5, metrics={"R2": -0.0}, rolling={"R2": -0.0}) for i in range(3)]
    page = render_report("m", records, generated_at=1_800_000_100.0)
    assert "0.0000" in page and "-0.0000" not in page


def test_report_of_no_records() -> None:
    page = render_report("nobody", [])
    assert "No metrics records" in page and "<svg" not in page


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
    page = render_report("m", records)
    curve = re.search(r"<svg[^>]*aria-label='ROCAUC by events learned'.*?</svg>", page)
    assert curve is not None
    first_path = re.search(r"<path d='([^']*)' fill='none'", curve.group(0))
    assert first_path is not None
    assert first_path.group(1).count("M") == 2


@given(
    lo=st.floats(-1e12, 1e12, allow_nan=False),
    span=st.floats(1e-9, 1e12, allow_nan=False),
    count=st.integers(2, 12),
)
def test_nice_ticks_are_even_and_inside(lo: float, span: float, count: int) -> None:
    hi = lo + span
    if span < abs(lo) * 1e-6:
        return  # below what a double resolves at this magnitude; charts pad such ranges
    step, ticks = nice_ticks(lo, hi, count)
    assert step > 0
    assert 1 <= len(ticks) <= 2 * count + 2
    tol = step * 1e-6
    assert all(lo - tol <= t <= hi + tol for t in ticks)
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert all(math.isclose(g, step, rel_tol=1e-6, abs_tol=tol) for g in gaps)
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert any(math.isclose(mantissa, m, rel_tol=1e-9) for m in (1, 2, 5, 10))


def test_axis_labels_use_one_unit() -> None:
    fmt = axis_format([2000, 4000, 6000, 8000, 10000, 12000], 2000)
    assert [fmt(v) for v in (2000, 10000, 12000)] == ["2k", "10k", "12k"]
    fmt = axis_format([0.5, 0.52, 0.54], 0.02)
    assert [fmt(v) for v in (0.5, 0.52)] == ["0.50", "0.52"]
    fmt = axis_format([0, 500, 1000, 1500], 500)
    assert fmt(1500) == "1,500"
