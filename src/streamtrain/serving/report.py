"""A static, self-contained HTML report of a model's training from its metrics records.

:func:`read_metrics_records` reads every retained record of one model from the metrics topic
(format: :mod:`streamtrain.formats`); :func:`render_report` turns them into one HTML file
(the page template ``static/report.html``) whose charts uPlot draws (:mod:`.charts`), with the
script, its stylesheet and the charts' data inline: nothing is loaded from anywhere (its
Content-Security-Policy allows that one script by its hash and forbids every fetch), so it can
be mailed or archived as it is.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import html
import math
import string
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from streamtrain.config import KafkaSettings
from streamtrain.formats import DEFAULT_METRICS_TOPIC, FINAL, decode_metrics_record
from streamtrain.kafka.reader import TopicReader
from streamtrain.serving.charts import (
    Series,
    chart_data_json,
    chart_spec,
    defined_points,
    inline_css,
    inline_script,
    script_hash,
)
from streamtrain.serving.follower import ModelKeys

__all__ = [
    "Run",
    "read_metrics_records",
    "render_report",
    "split_runs",
]

STATIC_DIR = Path(__file__).parent / "static"
CUMULATIVE = "#2563eb"
ROLLING = "#f97316"
_GAP_SECONDS = 5.0


def read_metrics_records(
    kafka: KafkaSettings, name: str, topic: str = DEFAULT_METRICS_TOPIC
) -> list[dict[str, Any]]:
    """Every retained metrics record of model ``name``, ordered by the time it was written.

    Raises :class:`~streamtrain.errors.TopicMissing` when the topic does not exist.
    """
    keys = ModelKeys(name)
    records = []
    for record in TopicReader(kafka, topic, what="metrics topic").read_to_end():
        if record.key is not None and keys.owns_metrics(record.key):
            decoded = decode_metrics_record(record.value)
            if decoded is not None:
                records.append(decoded)
    records.sort(key=lambda r: _num(r.get("ts")) or 0.0)
    return records


# -- runs --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Run:
    """Consecutive records of one trainer process."""

    records: Sequence[dict[str, Any]]

    @property
    def first(self) -> dict[str, Any]:
        return self.records[0]

    @property
    def last(self) -> dict[str, Any]:
        return self.records[-1]

    @property
    def finished(self) -> bool:
        return self.last.get("kind") == FINAL


def split_runs(records: Sequence[dict[str, Any]]) -> list[Run]:
    """Cut the records where a trainer (re)started: after a final record, or when its clock
    (``elapsed_seconds``) went back."""
    runs: list[Run] = []
    current: list[dict[str, Any]] = []
    for record in records:
        if current:
            prev = current[-1]
            restarted = (_num(record.get("elapsed_seconds")) or 0.0) < (
                _num(prev.get("elapsed_seconds")) or 0.0
            )
            if prev.get("kind") == FINAL or restarted:
                runs.append(Run(current))
                current = []
        current.append(record)
    if current:
        runs.append(Run(current))
    return runs


# -- rendering ---------------------------------------------------------------------------


def render_report(
    name: str, records: Sequence[dict[str, Any]], *, generated_at: float | None = None
) -> str:
    """The report of model ``name`` as one HTML document."""
    generated = _utc(generated_at if generated_at is not None else time.time())
    if not records:
        body = f"<p class='empty'>No metrics records of model <b>{_e(name)}</b>.</p>"
        return _page(name, generated, body, [])
    runs = split_runs(records)
    last = records[-1]
    first = records[0]
    charts = _Charts()
    parts = [
        _summary(records, runs),
        _final_metrics(records),
        "<h2>Learning curves</h2>",
        "<p class='hint'>Progressive validation: each event is predicted before the model "
        "learns it. x: events learned. Solid: the metric over the whole run; dashed: over the "
        "rolling window (when the trainer tracked one). Drag on a chart to zoom, double-click "
        "to zoom out; the legend shows the values under the cursor.</p>",
        "<div class='grid'>",
        *_learning_curves(records, charts),
        "</div>",
        "<div class='grid'>",
        _card(
            "Throughput",
            "events learned per second",
            charts.add(_time_chart(records, "events_per_second", "events/s", "#0891b2", first)),
        ),
        _card(
            "Consumer lag",
            "records on the topic not yet learned",
            charts.add(_time_chart(records, "total_lag", "records", "#9333ea", first, "int")),
        ),
        "</div>",
        "<div class='grid'>",
        _card("Dead letters by reason", "records refused", _dead_letters(last)),
        _card("Runs", "one row per trainer process", _runs_table(runs)),
        "</div>",
    ]
    return _page(name, generated, "\n".join(parts), charts.specs)


class _Charts:
    """The specs of a page's charts, in the order their placeholders are written."""

    def __init__(self) -> None:
        self.specs: list[dict[str, Any]] = []

    def add(self, spec: dict[str, Any]) -> str:
        if not spec["series"]:
            return "<p class='empty'>No data.</p>"
        self.specs.append(spec)
        return f"<div class='chart' data-chart='{len(self.specs) - 1}'></div>"


def _summary(records: Sequence[dict[str, Any]], runs: list[Run]) -> str:
    last, first = records[-1], records[0]
    span = (_num(last.get("ts")) or 0.0) - (_num(first.get("ts")) or 0.0)
    learned = _num(last.get("events_learned"))
    dead = _num(last.get("dead_lettered"))
    state = (
        "finished (final report written)"
        if last.get("kind") == FINAL
        else f"last report at {_utc(_num(last.get('ts')) or 0.0)} — still running, or stopped "
        "without a final report"
    )
    rates = [r for r in (_num(r.get("events_per_second")) for r in records) if r is not None]
    facts = [
        ("Model spec", f"<code>{_e(str(last.get('spec', '—')))}</code>"),
        ("Input topic", f"<code>{_e(str(last.get('topic', '—')))}</code>"),
        ("Model version (last report)", f"<code>{_e(str(last.get('model_version', '—')))}</code>"),
        ("Events learned", _int(learned)),
        ("Dead letters", _int(dead)),
        ("Unlabelled events predicted", _int(_num(last.get("events_predicted")) or 0)),
        ("Reports", f"{len(records):,} over {_duration(span)} in {len(runs)} run(s)"),
        (
            "Throughput",
            f"mean {_compact(_mean(rates))}/s, peak {_compact(max(rates, default=0))}/s",
        ),
        ("From", _utc(_num(first.get("ts")) or 0.0)),
        ("State", _e(state)),
    ]
    rows = "".join(f"<div><dt>{k}</dt><dd>{v}</dd></div>" for k, v in facts)
    return f"<dl class='facts'>{rows}</dl>"


def _final_metrics(records: Sequence[dict[str, Any]]) -> str:
    last = records[-1]
    metrics = last.get("metrics") or {}
    rolling = last.get("rolling") or {}
    if not isinstance(metrics, dict) or not metrics:
        return ""
    rows = []
    for metric in _metric_names(records):
        values = [y for _, y in _points(records, "metrics", metric)]
        rows.append(
            "<tr>"
            f"<td>{_e(metric)}</td>"
            f"<td class='num strong'>{_metric(_num(metrics.get(metric)))}</td>"
            f"<td class='num'>{_metric(_num(rolling.get(metric)))}</td>"
            f"<td class='num'>{_metric(min(values, default=None))}</td>"
            f"<td class='num'>{_metric(max(values, default=None))}</td>"
            "</tr>"
        )
    return (
        "<h2>Final metrics</h2><table class='metrics'><thead><tr><th>metric</th>"
        "<th class='num'>final (whole run)</th><th class='num'>final (rolling window)</th>"
        "<th class='num'>whole run: lowest</th><th class='num'>whole run: highest</th>"
        "</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _learning_curves(records: Sequence[dict[str, Any]], charts: _Charts) -> Iterable[str]:
    for metric in _metric_names(records):
        cumulative = _points(records, "metrics", metric)
        rolling = _points(records, "rolling", metric)
        series = [Series("whole run", CUMULATIVE, cumulative, width=2.2)]
        if rolling:
            series.append(Series("rolling window", ROLLING, rolling, dashed=True, width=1.4))
        chart = chart_spec(series, x_label="events learned", y_label=metric)
        yield _card(metric, "learning curve", charts.add(chart))


def _points(
    records: Sequence[dict[str, Any]], field: str, metric: str
) -> list[tuple[float, float]]:
    out = []
    for r in records:
        values = r.get(field)
        x = _num(r.get("events_learned"))
        y = _num(values.get(metric)) if isinstance(values, dict) else None
        # Before the first event a metric is a placeholder (0), not a point of the curve.
        if x is not None and x > 0 and y is not None:
            out.append((x, y))
    return defined_points(out)


def _time_chart(
    records: Sequence[dict[str, Any]],
    field: str,
    unit: str,
    color: str,
    first: dict[str, Any],
    value_format: str = "compact",
) -> dict[str, Any]:
    t0 = _num(first.get("ts")) or 0.0
    points = []
    for r in records:
        t, y = _num(r.get("ts")), _num(r.get(field))
        if t is not None and y is not None:
            points.append((t - t0, y))
    return chart_spec(
        [Series(unit, color, points, fill=True)],
        x_label="seconds since the first report",
        y_label=unit,
        value_format=value_format,
        y_zero=True,
        gap=_GAP_SECONDS,
    )


def _dead_letters(last: dict[str, Any]) -> str:
    reasons = last.get("dead_letter_reasons") or {}
    counted = sorted(
        ((str(k), int(v)) for k, v in reasons.items() if isinstance(v, int) and v > 0),
        key=lambda kv: -kv[1],
    )
    if not counted:
        return "<p class='empty'>No dead letters: every record was learned.</p>"
    top = counted[0][1]
    rows = "".join(
        f"<tr><td><code>{_e(reason)}</code></td>"
        f"<td class='barcell'><div class='bar' style='width:{100 * n / top:.1f}%'></div></td>"
        f"<td class='num strong'>{n:,}</td></tr>"
        for reason, n in counted
    )
    total = sum(n for _, n in counted)
    return f"<table class='dlq'><tbody>{rows}</tbody></table><p class='hint'>{total:,} in all</p>"


def _runs_table(runs: list[Run]) -> str:
    rows = []
    for i, run in enumerate(runs, 1):
        start = (_num(run.first.get("ts")) or 0.0) - (_num(run.first.get("elapsed_seconds")) or 0)
        learned_from = _num(run.first.get("events_learned"))
        learned_to = _num(run.last.get("events_learned"))
        ended = "final report" if run.finished else "no final report"
        rows.append(
            f"<tr><td class='num'>{i}</td><td>{_utc(start)}</td>"
            f"<td class='num'>{_duration(_num(run.last.get('elapsed_seconds')) or 0.0)}</td>"
            f"<td class='num'>{_int(learned_from)} → {_int(learned_to)}</td>"
            f"<td>{ended}</td></tr>"
        )
    return (
        "<table class='runs'><thead><tr><th class='num'>#</th><th>started</th>"
        "<th class='num'>ran</th><th class='num'>events learned</th><th>ended with</th></tr>"
        f"</thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _card(title: str, hint: str, content: str) -> str:
    return (
        f"<section class='card'><h3>{_e(title)} <span class='hint'>{_e(hint)}</span></h3>"
        f"{content}</section>"
    )


def _page(name: str, generated: str, body: str, specs: Sequence[dict[str, Any]]) -> str:
    # Template substitutes plain text once; ``body`` is already-escaped HTML.
    # The charts' data is JSON (never run: no hash allows it); the one script that runs is
    # uPlot with charts.js, allowed by its hash.
    scripts, script_src = "", "'none'"
    if specs:
        script = inline_script()
        scripts = (
            f"<script type='application/json' id='chart-data'>{chart_data_json(specs)}</script>\n"
            f"<script>{script}</script>"
        )
        script_src = script_hash(script)
    return _template().substitute(
        name=_e(name),
        generated=_e(generated),
        body=body,
        uplot_css=inline_css(),
        scripts=scripts,
        script_src=script_src,
    )


@functools.cache
def _template() -> string.Template:
    return string.Template((STATIC_DIR / "report.html").read_text(encoding="utf-8"))


# -- small formatting helpers ------------------------------------------------------------


def _metric_names(records: Sequence[dict[str, Any]]) -> list[str]:
    names: dict[str, None] = {}
    for r in records:
        metrics = r.get("metrics")
        if isinstance(metrics, dict):
            names.update(dict.fromkeys(str(k) for k in metrics))
    return list(names)


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _int(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _metric(value: float | None) -> str:
    if value is None:
        return "—"
    value += 0.0  # -0.0 (a metric such as R2 or a difference at zero) prints as 0.0000
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.3e}"
    return f"{value:.4f}"


def _compact(value: float) -> str:
    a = abs(value)
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e4, "k")):
        if a >= size:
            text = f"{value / size:.1f}".removesuffix(".0")
            return text + suffix
    if a >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds // 60:.0f} min {seconds % 60:.0f} s"
    return f"{seconds / 3600:.1f} h"


def _utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
