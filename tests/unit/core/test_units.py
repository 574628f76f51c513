"""Unit tests for proxpi_min/core/units.py: numbers, sizes and durations read and written,
back-off delays."""

from __future__ import annotations

import sys

import pytest

from proxpi_min.core.units import (
    backoff,
    format_duration,
    human_duration,
    human_size,
    parse_decimal,
    parse_duration,
    parse_size,
)

DAY = 86400.0


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (40, "40s"), (300, "5m"), (3600, "1h"), (7 * DAY, "1w"), (3 * DAY, "3d"), (14 * DAY, "2w"),
        (36 * 3600, "1.5d"), (5400, "1.5h"), (3605, "1.0h"), (36 * DAY, "5.1w"),
    ],
)
def test_format_duration(seconds, expected) -> None:
    assert format_duration(seconds) == expected


@pytest.mark.parametrize("text", ["40s", "5m", "1h", "3d", "2w", "1.5d"])
def test_format_duration_reads_back_with_parse_duration(text: str) -> None:
    assert format_duration(parse_duration(text)) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [("3600", 3600.0), ("90m", 5400.0), ("36h", 129600.0), ("7d", 7 * DAY), ("2w", 14 * DAY), (" 1.5 D ", 1.5 * DAY)],
)
def test_parse_duration(text: str, expected: float) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "d", "-1s", "1y", "1 h 5 m", "\u0665m"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("5368709120", 5368709120), ("500M", 500 * 1024**2), ("5G", 5 * 1024**3), ("5GiB", 5 * 1024**3), ("1.5k", 1536)],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (-5, "0 s"), (9, "9 s"), (127, "2 min 7 s"), (60, "1 min 0 s"),
        (3 * 3600 + 5 * 60 + 9, "3 h 5 min"), (3 * DAY + 4 * 3600 + 59, "3 d 4 h"),
    ],
)
def test_human_duration(seconds: float, expected: str) -> None:
    assert human_duration(seconds) == expected


@pytest.mark.parametrize(
    ("size", "expected"),
    [(0, "0 B"), (512, "512 B"), (1536, "1.5 KiB"), (1.5 * 1024**2, "1.5 MiB"), (3 * 1024**3, "3.0 GiB"), (2 * 1024**4, "2.0 TiB")],
)
def test_human_size(size: float, expected: str) -> None:
    assert human_size(size) == expected


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(0, 0.0), (1, 2.0), (2, 4.0), (3, 8.0), (8, 256.0), (9, 300.0), (10_000, 300.0)],
)
def test_backoff_doubles_up_to_its_maximum(failures: int, expected: float) -> None:
    assert backoff(2.0, 300.0, failures) == expected


@pytest.mark.parametrize("text", ["", "lots", "-1", "5X", "M", "5 G B", "1e9", "0x10", "5GiBB", "\u0665G"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_parse_size_plain_bytes_are_exact() -> None:
    assert parse_size("9007199254740993") == 9007199254740993


@pytest.mark.parametrize(("text", "expected"), [("0", 0), ("42", 42), ("007", 7), ("9007199254740993", 9007199254740993)])
def test_parse_decimal(text: str, expected: int) -> None:
    assert parse_decimal(text) == expected


# "²" passes str.isdigit and fails int(); "٥" (Arabic-Indic five) passes both.
@pytest.mark.parametrize("text", [None, "", " 1", "1 ", "-1", "+1", "1.0", "1_000", "0x1f", "\u00b2", "\u0665", "1\u00b2"])
def test_parse_decimal_takes_ascii_digits_only(text) -> None:
    assert parse_decimal(text) is None


@pytest.mark.skipif(not getattr(sys, "get_int_max_str_digits", lambda: 0)(), reason="int() takes any length here")
def test_parse_decimal_refuses_what_int_refuses() -> None:
    limit = sys.get_int_max_str_digits()
    assert parse_decimal("9" * limit) == int("9" * limit)
    assert parse_decimal("9" * (limit + 1)) is None
