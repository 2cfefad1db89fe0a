"""Durations as people write them in config files: `90`, `5s`, `15m`, `2h`, `30d`, `250ms`."""

from __future__ import annotations

import re

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def duration_seconds(value: str | float) -> float:
    """Seconds from a number (seconds) or a number with a unit; ValueError otherwise."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.fullmatch(str(value).strip())
        if match is None:
            raise ValueError(
                f"{value!r} is not a duration; write seconds or a number with a unit"
                " (e.g. 0s, 5s, 5m, 2h, 1d)"
            )
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds < 0:
        raise ValueError(f"{value!r}: a duration cannot be negative")
    return seconds


_RATE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:/\s*(s|sec|second|m|min|minute|h|hour))?")
_PER = {None: 1.0, "s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0,
        "minute": 60.0, "h": 3600.0, "hour": 3600.0}  # fmt: skip


def rate_per_second(value: str | float) -> float:
    """Events per second from ``"100/s"``, ``"6000/m"``, ``"10/h"`` or a number (per
    second); ValueError otherwise. 0 means no limit."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        rate = float(value)
    else:
        match = _RATE.fullmatch(str(value).strip().lower())
        if match is None:
            raise ValueError(f"{value!r} is not a rate; write e.g. 100/s, 6000/m or 10/h")
        rate = float(match.group(1)) / _PER[match.group(2)]
    if rate < 0 or rate > 1_000_000:
        raise ValueError(f"{value!r}: a rate is from 0 (no limit) to 1000000/s")
    return rate
