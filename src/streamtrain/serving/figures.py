"""Figures as the report prints them: never ``-0.0000``, never ``nan``; text escaped."""

from __future__ import annotations

import datetime as dt
import html
from typing import Any

from streamtrain.serving.curves import plain_number

__all__ = [
    "compact_text",
    "duration_text",
    "escape",
    "int_text",
    "metric_text",
    "number",
    "utc_text",
]


def number(value: Any) -> float | None:
    """A finite number (never -0.0: it would print as -0.0000), else None."""
    return plain_number(value)


def escape(text: str) -> str:
    return html.escape(text, quote=True)


def int_text(value: float | None) -> str:
    return "—" if value is None else f"{round(value):,}"  # an int: no -0


def metric_text(value: float | None) -> str:
    """Four decimals, or three significant digits beyond them; a zero has no sign.

    >>> metric_text(-0.0), metric_text(-0.00004), metric_text(0.61234), metric_text(None)
    ('0.0000', '-4.000e-05', '0.6123', '—')
    """
    if value is None:
        return "—"
    value += 0.0  # -0.0 (a metric such as R2 or a difference at zero) prints as 0.0000
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.3e}"
    return f"{value:.4f}"


def compact_text(value: float) -> str:
    a = abs(value)
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e4, "k")):
        if a >= size:
            text = f"{value / size:.1f}".removesuffix(".0")
            return text + suffix
    if a >= 100 or float(value).is_integer():
        return f"{value + 0.0:,.0f}"
    return f"{value:.3g}"


def duration_text(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds // 60:.0f} min {seconds % 60:.0f} s"
    return f"{seconds / 3600:.1f} h"


def utc_text(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
