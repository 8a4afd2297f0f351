"""Charts for the static HTML report: the specs ``static/charts.js`` draws with uPlot.

The same script draws the dashboard's charts. For the report it is inlined with uPlot itself
(``static/uplot/``, vendored), so the page loads nothing; :func:`inline_scripts` gives that
script and the hash its Content-Security-Policy allows it by.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

__all__ = [
    "Series",
    "chart_data_json",
    "chart_spec",
    "inline_css",
    "inline_script",
    "script_hash",
    "segments",
]

STATIC_DIR = Path(__file__).parent / "static"
_MAX_POINTS = 1_500  # per series: keeps a long run's report small and quick to open

Point = tuple[float, float]


@dataclasses.dataclass(frozen=True)
class Series:
    """One line of a chart: (x, y) ``points`` in drawing order."""

    label: str
    color: str
    points: Sequence[Point]
    dashed: bool = False
    width: float = 2.0
    fill: bool = False


def chart_spec(
    series: Sequence[Series],
    *,
    x_label: str,
    y_label: str,
    value_format: str = "metric",
    y_zero: bool = False,
    gap: float | None = None,
    markers: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The spec of one chart, as ``charts.js`` reads it; long series are thinned.
    ``markers``: vertical lines, each ``{"x", "label", "color"}``.

    >>> spec = chart_spec([Series("a", "#000", [(1, 0.5), (2, 0.6)])], x_label="x", y_label="y")
    >>> spec["series"][0]["points"], spec["yZero"]
    ([[1, 0.5], [2, 0.6]], False)
    """
    return {
        "xLabel": x_label,
        "yLabel": y_label,
        "format": value_format,
        "yZero": y_zero,
        "gap": gap,
        "series": [
            {
                "label": s.label,
                "color": s.color,
                "width": s.width,
                "dash": s.dashed,
                "fill": s.fill,
                "points": [[x, y] for x, y in _thin(s.points)],
            }
            for s in series
            if s.points
        ],
        "markers": [dict(m) for m in markers],
    }


def segments(points: Sequence[Point]) -> list[list[Point]]:
    """``points`` cut where x goes back (a restarted trainer reports from its checkpoint).

    >>> segments([(1, 0.1), (2, 0.2), (1, 0.3)])
    [[(1, 0.1), (2, 0.2)], [(1, 0.3)]]
    """
    out: list[list[Point]] = []
    for point in points:
        if not out or point[0] < out[-1][-1][0]:
            out.append([])
        out[-1].append(point)
    return out


def chart_data_json(specs: Sequence[dict[str, Any]]) -> str:
    """``specs`` as JSON safe inside ``<script type="application/json">``: no ``<`` in it."""
    return orjson.dumps(list(specs)).decode().replace("<", "\\u003c")


@functools.cache
def inline_script() -> str:
    """uPlot and ``charts.js``, and the call that draws the page's charts: one script."""
    parts = [
        (STATIC_DIR / "uplot" / "uPlot.iife.min.js").read_text(encoding="utf-8"),
        (STATIC_DIR / "charts.js").read_text(encoding="utf-8"),
        "window.StreamtrainCharts.renderPage();",
    ]
    text = "\n".join(parts)
    if "</script" in text.lower():  # would end the element early
        raise ValueError("an inlined script contains '</script'")
    return text


@functools.cache
def inline_css() -> str:
    """uPlot's stylesheet, for a ``<style>`` element."""
    return (STATIC_DIR / "uplot" / "uPlot.min.css").read_text(encoding="utf-8")


def script_hash(text: str) -> str:
    """The CSP source (``'sha256-…'``) allowing an inline script of exactly ``text``."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


def _thin(points: Sequence[Point]) -> Sequence[Point]:
    if len(points) <= _MAX_POINTS:
        return points
    stride = math.ceil(len(points) / _MAX_POINTS)
    kept = list(points[::stride])
    if kept[-1] != points[-1]:
        kept.append(points[-1])
    return kept
