"""Inline SVG line charts with nice-number axes, for the static HTML report.

Everything a chart shows is written into the SVG itself (no script, no font or style loaded
from anywhere), and every text in it is HTML-escaped.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from html import escape

__all__ = ["Series", "axis_format", "nice_ticks", "svg_line_chart"]

_MAX_POINTS = 1_500  # per series: keeps a long run's report small and quick to open


@dataclasses.dataclass(frozen=True)
class Series:
    """One line of a chart: (x, y) ``points`` in drawing order."""

    label: str
    color: str
    points: Sequence[tuple[float, float]]
    dashed: bool = False
    width: float = 2.0
    fill: bool = False


def svg_line_chart(
    series: Sequence[Series],
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
        f"aria-label='{escape(y_label)} by {escape(x_label)}' font-size='11' "
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
            f"{escape(x_format(v))}</text>"
        )
    out.append(
        f"<line x1='{left}' x2='{left + pw}' y1='{top + ph}' y2='{top + ph}' stroke='#cbd5e1'/>"
        f"<text x='{left + pw}' y='{height - 4}' text-anchor='end' fill='#94a3b8'>"
        f"{escape(x_label)}</text>"
        f"<text transform='translate(13 {top + ph / 2:.0f}) rotate(-90)' text-anchor='middle' "
        f"fill='#94a3b8'>{escape(y_label)}</text>"
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
                f"{escape(s.label)}</text>"
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
