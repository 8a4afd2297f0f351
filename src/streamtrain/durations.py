"""Durations as users write them on the command line and in config files.

A duration is a non-negative number and a unit, ``ms``, ``s``, ``m`` or ``h`` (``0`` alone is
allowed), that comes to whole milliseconds: the unit of Kafka record timestamps, which is what
event-time durations (``--label-ttl``, ``--label-delay``) are compared with.

>>> [parse_duration_ms(t) for t in ("250ms", "30s", "1.5s", "2m", "0")]
[250, 30000, 1500, 120000, 0]
>>> parse_duration_ms("ten seconds")
Traceback (most recent call last):
  ...
ValueError: 'ten seconds' is not a duration such as 250ms, 30s, 2m or 0
"""

from __future__ import annotations

import decimal
import re

__all__ = ["DURATION", "parse_duration_ms"]

DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


def parse_duration_ms(text: str) -> int:
    """Whole milliseconds in ``text`` (see the module doc); ``ValueError`` with a reason."""
    cleaned = text.strip()
    if cleaned == "0":
        return 0
    match = DURATION.fullmatch(cleaned)
    if match is None:
        raise ValueError(f"{text!r} is not a duration such as 250ms, 30s, 2m or 0")
    ms = decimal.Decimal(match[1]) * _UNIT_MS[match[2]]
    if ms != ms.to_integral_value():
        raise ValueError(f"{text!r} is not a whole number of milliseconds")
    return int(ms)
