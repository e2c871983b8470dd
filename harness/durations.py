"""Durations as a user writes them in a YAML file or on the command line: a
number of seconds, or a number with a unit (90s, 15m, 12h, 1.5d)."""

from __future__ import annotations

import re
from typing import Any

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_SECONDS_PER = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """Seconds; ValueError naming what was expected."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    found = _DURATION.match(value) if isinstance(value, str) else None
    if found is None:
        raise ValueError(f"expected a duration such as 90s, 15m, 12h or 1.5d, got {value!r}")
    return float(found.group(1)) * _SECONDS_PER[found.group(2)]


def show_duration(seconds: float) -> str:
    """12h, 90m, 45s: the largest unit that divides it, else seconds."""
    for unit in ("d", "h", "m"):
        if seconds >= _SECONDS_PER[unit] and seconds % _SECONDS_PER[unit] == 0:
            return f"{seconds / _SECONDS_PER[unit]:g}{unit}"
    return f"{seconds:g}s"
