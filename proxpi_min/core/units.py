"""Numbers, sizes and durations: parsed from settings, headers and our own files,
written for people, and back-off delays."""

from __future__ import annotations

import re
from typing import Optional

__all__ = [
    "backoff",
    "format_duration",
    "human_duration",
    "human_size",
    "parse_decimal",
    "parse_duration",
    "parse_size",
]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*\Z", re.IGNORECASE | re.ASCII)
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*\Z", re.IGNORECASE | re.ASCII)
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# Past this many doublings every back-off is long at its maximum (and 2.0 ** 1024 overflows).
_MAX_DOUBLINGS = 64


def parse_decimal(text: Optional[str]) -> Optional[int]:
    """*text* as a whole number if it is ASCII digits only, as HTTP (RFC 9110 5.5) and
    our own files write numbers; None otherwise. ``str.isdigit`` admits ``"²"``, which
    ``int`` refuses, and ``int`` refuses more than 4,300 digits."""
    if not (text and text.isascii() and text.isdigit()):
        return None
    try:
        return int(text)
    except ValueError:  # past sys.get_int_max_str_digits()
        return None


def parse_size(text: str) -> int:
    """Bytes from ``"5368709120"``, ``"500M"``, ``"5G"``, ``"5GiB"`` (binary units).

    :raises ValueError: not a size.
    """
    match = _SIZE.match(text)
    if not match:
        raise ValueError(text)
    number, unit = match.group(1), _SIZE_UNITS[match.group(2).upper()]
    return int(number) * unit if number.isdigit() else int(float(number) * unit)


def parse_duration(text: str) -> float:
    """Seconds from ``"3600"``, ``"90m"``, ``"36h"``, ``"7d"``, ``"2w"``.

    :raises ValueError: not a duration.
    """
    match = _DURATION.match(text)
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * _DURATION_UNITS[match.group(2).lower()]


def format_duration(seconds: float) -> str:
    """``"7d"``, ``"1.5d"``, ``"36m"``, ``"40s"``: in the largest unit it reaches, as
    :func:`parse_duration` reads it (for messages that name a setting's value)."""
    for unit, size in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            value = seconds / size
            return f"{value:.0f}{unit}" if value >= 10 or value == int(value) else f"{value:.1f}{unit}"
    return f"{seconds:.0f}s"


def human_duration(seconds: float) -> str:
    """``"3 d 4 h"``, ``"3 h 5 min"``, ``"2 min 7 s"``, ``"9 s"``: the two largest whole
    units, for the dashboard (negative counts as zero)."""
    seconds = int(max(seconds, 0))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def human_size(size: float) -> str:
    """Bytes for a person: ``"512 B"``, ``"1.5 MiB"``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def backoff(first: float, maximum: float, failures: int) -> float:
    """Seconds to wait after *failures* failures in a row: *first*, doubling per failure,
    at most *maximum*; 0 after none."""
    if failures <= 0:
        return 0.0
    return min(first * 2 ** min(failures - 1, _MAX_DOUBLINGS), maximum)
