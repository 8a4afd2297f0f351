"""A static, self-contained HTML report of a model's training from its metrics records.

:func:`read_metrics_records` reads every retained record of one model from the metrics topic
(format: :mod:`streamtrain.formats`); :func:`render_report` turns them into one HTML file with
inline SVG charts and inline CSS: no script, nothing loaded from anywhere (its
Content-Security-Policy forbids it), so it can be mailed or archived as it is.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from streamtrain.config import KafkaSettings
from streamtrain.formats import DEFAULT_METRICS_TOPIC, FINAL, decode_metrics_record
from streamtrain.kafka.reader import TopicReader
from streamtrain.serving.follower import ModelKeys

__all__ = [
    "Run",
    "axis_format",
    "nice_ticks",
    "read_metrics_records",
    "render_report",
    "split_runs",
    "svg_line_chart",
]

CUMULATIVE = "#2563eb"
ROLLING = "#f97316"
_MAX_POINTS = 1_500  # per series: keeps a long run's report small and quick to open
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
        return _page(name, generated, body)
    runs = split_runs(records)
    last = records[-1]
    first = records[0]
    parts = [
        _summary(records, runs),
        _final_metrics(records),
        "<h2>Learning curves</h2>",
        "<p class='hint'>Progressive validation: each event is predicted before the model "
        "learns it. x: events learned. Solid: the metric over the whole run; dashed: over the "
        "rolling window (when the trainer tracked one).</p>",
        "<div class='grid'>",
        *_learning_curves(records),
        "</div>",
        "<div class='grid'>",
        _card(
            "Throughput",
            "events learned per second",
            _time_chart(records, "events_per_second", "events/s", "#0891b2", first),
        ),
        _card(
            "Consumer lag",
            "records on the topic not yet learned",
            _time_chart(records, "total_lag", "records", "#9333ea", first),
        ),
        "</div>",
        "<div class='grid'>",
        _card("Dead letters by reason", "records refused", _dead_letters(last)),
        _card("Runs", "one row per trainer process", _runs_table(runs)),
        "</div>",
    ]
    return _page(name, generated, "\n".join(parts))


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
        values = [
            v
            for v in (_num((r.get("metrics") or {}).get(metric)) for r in records)
            if v is not None
        ]
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


def _learning_curves(records: Sequence[dict[str, Any]]) -> Iterable[str]:
    for metric in _metric_names(records):
        cumulative = _points(records, "metrics", metric)
        rolling = _points(records, "rolling", metric)
        series = [_Series("whole run", CUMULATIVE, cumulative, width=2.2)]
        if rolling:
            series.append(_Series("rolling window", ROLLING, rolling, dashed=True, width=1.4))
        chart = svg_line_chart(
            series,
            x_label="events learned",
            y_label=metric,
            breaks=lambda a, b: b < a,
        )
        yield _card(metric, "learning curve", chart)


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
    return out


def _time_chart(
    records: Sequence[dict[str, Any]], field: str, unit: str, color: str, first: dict[str, Any]
) -> str:
    t0 = _num(first.get("ts")) or 0.0
    points = []
    for r in records:
        t, y = _num(r.get("ts")), _num(r.get(field))
        if t is not None and y is not None:
            points.append((t - t0, y))
    return svg_line_chart(
        [_Series(unit, color, points, fill=True)],
        x_label="seconds since the first report",
        y_label=unit,
        y_zero=True,
        breaks=lambda a, b: b - a > _GAP_SECONDS or b < a,
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


def _page(name: str, generated: str, body: str) -> str:
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>streamtrain report · {_e(name)}</title>
<style>{_CSS}</style>
</head>
<body>
<header><h1><span class="muted">streamtrain report ·</span> {_e(name)}</h1>
<div class="sub">generated {generated} from the metrics topic</div></header>
<main>
{body}
</main>
</body>
</html>
"""


_CSS = """
body{margin:0;background:#f4f6f9;color:#18212f;
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif}
header{background:#0f172a;color:#f8fafc;padding:16px 28px}
h1{margin:0;font-size:20px}.muted{color:#94a3b8;font-weight:500}.sub{color:#cbd5e1;font-size:13px}
main{padding:18px 28px 28px;max-width:1500px;margin:0 auto}
h2{font-size:16px;margin:24px 0 8px}h3{font-size:14px;margin:0 0 6px}
.hint{color:#64748b;font-weight:400;font-size:12.5px}
code{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:.92em}
.facts{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:10px 28px;
background:#fff;border:1px solid #e3e8ef;border-radius:10px;padding:14px 18px;margin:0}
.facts dt{color:#64748b;font-size:12px;text-transform:uppercase;letter-spacing:.4px}
.facts dd{margin:2px 0 0;font-weight:600;font-variant-numeric:tabular-nums;overflow-wrap:anywhere}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:14px;
margin-top:14px}
.card{background:#fff;border:1px solid #e3e8ef;border-radius:10px;padding:14px 16px}
svg{display:block;width:100%;height:auto}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:6px 10px;border-bottom:1px solid #eef2f6;text-align:left}
th{color:#64748b;font-weight:600;font-size:12.5px}
.num{text-align:right}.strong{font-weight:700}
table.metrics{background:#fff;border:1px solid #e3e8ef;border-radius:10px}
.barcell{width:60%}.bar{background:#f97316;height:12px;border-radius:3px;min-width:2px}
.empty{color:#64748b}
"""


# -- SVG charts --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Series:
    label: str
    color: str
    points: Sequence[tuple[float, float]]
    dashed: bool = False
    width: float = 2.0
    fill: bool = False


def svg_line_chart(
    series: Sequence[_Series],
    *,
    x_label: str,
    y_label: str,
    x_format: Callable[[float], str] | None = None,
    y_zero: bool = False,
    breaks: Callable[[float, float], bool] = lambda a, b: False,
    width: int = 640,
    height: int = 260,
) -> str:
    """An inline SVG line chart with nice-number axes; ``breaks(x0, x1)`` starts a new line."""
    drawn = [s for s in series if s.points]
    if not drawn:
        return "<p class='empty'>No data.</p>"
    xs = [x for s in drawn for x, _ in s.points]
    ys = [y for s in drawn for _, y in s.points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if y_zero:
        y0 = min(0.0, y0)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        d = abs(y0) * 0.05 or 1.0
        y0, y1 = y0 - d, y1 + d
    pad = (y1 - y0) * 0.06
    y1 += pad
    if not (y_zero and y0 == 0):
        y0 -= pad
    left, right, top, bottom = 64, 14, 30, 40
    pw, ph = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + ph - (y - y0) / (y1 - y0) * ph

    out = [
        f"<svg viewBox='0 0 {width} {height}' xmlns='http://www.w3.org/2000/svg' role='img' "
        f"aria-label='{_e(y_label)} by {_e(x_label)}' font-size='11' "
        "font-family='system-ui,sans-serif'>"
    ]
    y_step, y_ticks = nice_ticks(y0, y1, max(2, ph // 42))
    y_format = axis_format(y_ticks, y_step)
    for v in y_ticks:
        y = sy(v)
        label = y_format(v)
        out.append(
            f"<line x1='{left}' x2='{left + pw}' y1='{y:.1f}' y2='{y:.1f}' stroke='#eef2f6'/>"
            f"<text x='{left - 8}' y='{y + 4:.1f}' text-anchor='end' fill='#64748b'>{label}</text>"
        )
    x_step, x_ticks = nice_ticks(x0, x1, max(2, pw // 95))
    x_format = x_format or axis_format(x_ticks, x_step)
    for v in x_ticks:
        x = sx(v)
        out.append(
            f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{top}' y2='{top + ph}' stroke='#f3f5f8'/>"
            f"<text x='{x:.1f}' y='{top + ph + 16}' text-anchor='middle' fill='#64748b'>"
            f"{_e(x_format(v))}</text>"
        )
    out.append(
        f"<line x1='{left}' x2='{left + pw}' y1='{top + ph}' y2='{top + ph}' stroke='#cbd5e1'/>"
        f"<text x='{left + pw}' y='{height - 4}' text-anchor='end' fill='#94a3b8'>"
        f"{_e(x_label)}</text>"
        f"<text transform='translate(13 {top + ph / 2:.0f}) rotate(-90)' text-anchor='middle' "
        f"fill='#94a3b8'>{_e(y_label)}</text>"
    )
    for s in reversed(drawn):  # the first series (the main line) ends up on top
        points = _thin(s.points)
        path = []
        prev: float | None = None
        for x, y in points:
            cmd = "M" if prev is None or breaks(prev, x) else "L"
            path.append(f"{cmd}{sx(x):.1f} {sy(y):.1f}")
            prev = x
        if s.fill and len(points) > 1:
            base = sy(max(y0, 0.0))
            area = (
                f"M{sx(points[0][0]):.1f} {base:.1f}"
                + "".join(f"L{sx(x):.1f} {sy(y):.1f}" for x, y in points)
                + f"L{sx(points[-1][0]):.1f} {base:.1f}Z"
            )
            out.append(f"<path d='{area}' fill='{s.color}' fill-opacity='0.08'/>")
        dash = " stroke-dasharray='6 4'" if s.dashed else ""
        out.append(
            f"<path d='{' '.join(path)}' fill='none' stroke='{s.color}' "
            f"stroke-width='{s.width}' stroke-linejoin='round'{dash}/>"
        )
    if len(drawn) > 1:
        legend_x = left
        for s in drawn:
            dash = " stroke-dasharray='6 4'" if s.dashed else ""
            out.append(
                f"<line x1='{legend_x}' x2='{legend_x + 18}' y1='12' y2='12' stroke='{s.color}' "
                f"stroke-width='2.5'{dash}/><text x='{legend_x + 24}' y='16' fill='#475569'>"
                f"{_e(s.label)}</text>"
            )
            legend_x += 36 + 7 * len(s.label)
    out.append("</svg>")
    return "".join(out)


def nice_ticks(lo: float, hi: float, count: int) -> tuple[float, list[float]]:
    """A 1-2-5 step and the multiples of it within ``[lo, hi]``."""
    raw = (hi - lo) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    n = raw / magnitude
    step = (1 if n < 1.5 else 2 if n < 3 else 5 if n < 7 else 10) * magnitude
    # Multiples k·step rather than a running sum, which drifts over many ticks.
    first = math.ceil(lo / step - 1e-9)
    last = math.floor(hi / step + 1e-9)
    ticks = [k * step + 0.0 for k in range(first, last + 1)]  # + 0.0: no "-0"
    return step, ticks


def axis_format(ticks: Sequence[float], step: float) -> Callable[[float], str]:
    """Labels in one unit for a whole axis (2k 4k … 12k), decimals from the tick step."""
    top = max((abs(t) for t in ticks), default=0.0)
    units = ((1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "k"))  # from, divide by, suffix
    divisor, suffix = next(((d, s) for lo, d, s in units if top >= lo), (1.0, ""))
    scaled = step / divisor
    decimals = 0 if scaled >= 1 else min(6, math.ceil(-math.log10(scaled) - 1e-9))
    return lambda v: f"{v / divisor:,.{decimals}f}{suffix}"


def _thin(points: Sequence[tuple[float, float]]) -> Sequence[tuple[float, float]]:
    if len(points) <= _MAX_POINTS:
        return points
    stride = math.ceil(len(points) / _MAX_POINTS)
    kept = list(points[::stride])
    if kept[-1] != points[-1]:
        kept.append(points[-1])
    return kept


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
