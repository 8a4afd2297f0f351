"""Durations as users write them on the command line and in config files.

A duration is a non-negative number followed by a unit: ``ms``, ``s``, ``m``, ``h`` or ``d``
(``0`` alone is allowed). Results are whole milliseconds, the unit of Kafka record
timestamps, which is what event-time durations are compared with.

>>> parse_duration_ms("30s"), parse_duration_ms("250ms"), parse_duration_ms("1.5m")
(30000, 250, 90000)
>>> parse_duration_ms("0")
0
>>> parse_duration_ms("ten seconds")
Traceback (most recent call last):
  ...
ValueError: 'ten seconds' is not a duration (a number and a unit: ms, s, m, h or d; e.g. 30s)
"""

from __future__ import annotations

import math
import re

__all__ = ["format_duration_ms", "parse_duration_ms"]

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*")


def parse_duration_ms(text: str) -> int:
    """Milliseconds in ``text`` (see the module doc); ``ValueError`` with a reason otherwise."""
    if text.strip() == "0":
        return 0
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration (a number and a unit: ms, s, m, h or d; e.g. 30s)"
        )
    ms = float(match.group(1)) * _UNITS_MS[match.group(2)]
    if not math.isfinite(ms) or ms > 2**62:
        raise ValueError(f"{text!r} is too long a duration")
    return round(ms)


def format_duration_ms(ms: int) -> str:
    """The shortest exact spelling of ``ms``.

    >>> format_duration_ms(90_000), format_duration_ms(250), format_duration_ms(0)
    ('90s', '250ms', '0')
    """
    if ms == 0:
        return "0"
    for unit in ("d", "h", "m", "s"):
        if ms % _UNITS_MS[unit] == 0:
            return f"{ms // _UNITS_MS[unit]}{unit}"
    return f"{ms}ms"
