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
import functools
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
    inline_css,
    inline_script,
    script_hash,
)
from streamtrain.serving.curves import ModelViews
from streamtrain.serving.figures import (
    compact_text,
    duration_text,
    escape,
    int_text,
    metric_text,
    number,
    utc_text,
)
from streamtrain.serving.follower import ModelKeys
from streamtrain.serving.report_models import changes_table, color_of, models_of_run, models_table

__all__ = [
    "Run",
    "read_metrics_records",
    "render_report",
    "split_runs",
]

STATIC_DIR = Path(__file__).parent / "static"
CUMULATIVE = "#2563eb"
ROLLING = "#f97316"
DRIFT = "#dc2626"
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
    records.sort(key=lambda r: number(r.get("ts")) or 0.0)
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
            restarted = (number(record.get("elapsed_seconds")) or 0.0) < (
                number(prev.get("elapsed_seconds")) or 0.0
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
    generated = utc_text(generated_at if generated_at is not None else time.time())
    if not records:
        body = f"<p class='empty'>No metrics records of model <b>{escape(name)}</b>.</p>"
        return _page(name, generated, body, [])
    views = ModelViews()  # every model's figures, as the dashboard has them
    records = [views.annotate(r) for r in records]
    runs = split_runs(records)
    last = records[-1]
    first = records[0]
    charts = _Charts()
    parts = [
        _summary(records, runs),
        _final_metrics(records),
        models_table(last),
        changes_table(last),
        "<h2>Learning curves</h2>",
        "<p class='hint'>Progressive validation: each event is predicted before the model "
        "learns it. x: events learned. Solid: the metric over the whole run; dashed: over the "
        "rolling window (when the trainer tracked one); with challengers, one colour per "
        "model, promotions and drift detections marked. A curve starts where its metric is "
        "defined. Drag on a chart to zoom, double-click to zoom out; the legend shows the "
        "values under the cursor.</p>",
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
    span = (number(last.get("ts")) or 0.0) - (number(first.get("ts")) or 0.0)
    learned = number(last.get("events_learned"))
    dead = number(last.get("dead_lettered"))
    state = (
        "finished (final report written)"
        if last.get("kind") == FINAL
        else f"last report at {utc_text(number(last.get('ts')) or 0.0)} — still running, or "
        "stopped without a final report"
    )
    rates = [r for r in (number(r.get("events_per_second")) for r in records) if r is not None]
    facts = [
        ("Model spec", f"<code>{escape(str(last.get('spec', '—')))}</code>"),
        ("Input topic", f"<code>{escape(str(last.get('topic', '—')))}</code>"),
        (
            "Model version (last report)",
            f"<code>{escape(str(last.get('model_version', '—')))}</code>",
        ),
        ("Events learned", int_text(learned)),
        ("Dead letters", int_text(dead)),
        ("Unlabelled events predicted", int_text(number(last.get("events_predicted")) or 0)),
        ("Reports", f"{len(records):,} over {duration_text(span)} in {len(runs)} run(s)"),
        (
            "Throughput",
            f"mean {compact_text(_mean(rates))}/s, peak {compact_text(max(rates, default=0))}/s",
        ),
        ("From", utc_text(number(first.get("ts")) or 0.0)),
        ("State", escape(state)),
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
            f"<td>{escape(metric)}</td>"
            f"<td class='num strong'>{metric_text(number(metrics.get(metric)))}</td>"
            f"<td class='num'>{metric_text(number(rolling.get(metric)))}</td>"
            f"<td class='num'>{metric_text(min(values, default=None))}</td>"
            f"<td class='num'>{metric_text(max(values, default=None))}</td>"
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
    last = records[-1]
    models = models_of_run(records)
    markers = [
        {
            "x": p["events"],
            "label": f"{p['to']} replaces {p['from']}",
            "color": color_of(models, p["to"]),
            "solid": True,
        }
        for p in last.get("promotions") or []
    ]
    markers += [
        {"x": d["events"], "label": f"drift · {d['model']}" if len(models) > 1 else "drift",
         "color": DRIFT}
        for d in last.get("drifts") or []
    ]  # fmt: skip
    for metric in _metric_names(records):
        series = []
        if len(models) > 1:
            for m in models:
                label = m["label"]
                series.append(
                    Series(f"{label} · {m['spec']}", m["color"],
                           _points(records, "metrics", metric, label), width=2.2)
                )  # fmt: skip
                rolling = _points(records, "rolling", metric, label)
                if rolling:
                    series.append(Series(f"{label} rolling", m["color"], rolling, True, 1.0))
        else:
            series.append(
                Series("whole run", CUMULATIVE, _points(records, "metrics", metric), width=2.2)
            )
            rolling = _points(records, "rolling", metric)
            if rolling:
                series.append(Series("rolling window", ROLLING, rolling, dashed=True, width=1.4))
        chart = chart_spec(series, x_label="events learned", y_label=metric, markers=markers)
        yield _card(metric, "learning curve", charts.add(chart))


def _points(
    records: Sequence[dict[str, Any]], field: str, metric: str, label: str | None = None
) -> list[tuple[float, float]]:
    """Model ``label``'s defined values of ``metric`` (:mod:`.curves`), or the champion's of
    each record when ``label`` is None; none before the first event learned."""
    out = []
    for r in records:
        x = number(r.get("events_learned"))
        for m in r.get("models") or []:
            if (m["champion"] if label is None else m["label"] == label) and x and x > 0:
                y = number(m[field].get(metric))
                if y is not None:
                    out.append((x, y))
    return out


def _time_chart(
    records: Sequence[dict[str, Any]],
    field: str,
    unit: str,
    color: str,
    first: dict[str, Any],
    value_format: str = "compact",
) -> dict[str, Any]:
    t0 = number(first.get("ts")) or 0.0
    points = []
    for r in records:
        t, y = number(r.get("ts")), number(r.get(field))
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
        f"<tr><td><code>{escape(reason)}</code></td>"
        f"<td class='barcell'><div class='bar' style='width:{100 * n / top:.1f}%'></div></td>"
        f"<td class='num strong'>{n:,}</td></tr>"
        for reason, n in counted
    )
    total = sum(n for _, n in counted)
    return f"<table class='dlq'><tbody>{rows}</tbody></table><p class='hint'>{total:,} in all</p>"


def _runs_table(runs: list[Run]) -> str:
    rows = []
    for i, run in enumerate(runs, 1):
        start = (number(run.first.get("ts")) or 0.0) - (
            number(run.first.get("elapsed_seconds")) or 0
        )
        learned_from = number(run.first.get("events_learned"))
        learned_to = number(run.last.get("events_learned"))
        ended = "final report" if run.finished else "no final report"
        rows.append(
            f"<tr><td class='num'>{i}</td><td>{utc_text(start)}</td>"
            f"<td class='num'>{duration_text(number(run.last.get('elapsed_seconds')) or 0.0)}</td>"
            f"<td class='num'>{int_text(learned_from)} → {int_text(learned_to)}</td>"
            f"<td>{ended}</td></tr>"
        )
    return (
        "<table class='runs'><thead><tr><th class='num'>#</th><th>started</th>"
        "<th class='num'>ran</th><th class='num'>events learned</th><th>ended with</th></tr>"
        f"</thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _card(title: str, hint: str, content: str) -> str:
    return (
        f"<section class='card'><h3>{escape(title)} <span class='hint'>{escape(hint)}</span></h3>"
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
        name=escape(name),
        generated=escape(generated),
        body=body,
        uplot_css=inline_css(),
        scripts=scripts,
        script_src=script_src,
    )


@functools.cache
def _template() -> string.Template:
    return string.Template((STATIC_DIR / "report.html").read_text(encoding="utf-8"))


def _metric_names(records: Sequence[dict[str, Any]]) -> list[str]:
    names: dict[str, None] = {}
    for r in records:
        metrics = r.get("metrics")
        if isinstance(metrics, dict):
            names.update(dict.fromkeys(str(k) for k in metrics))
    return list(names)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0
