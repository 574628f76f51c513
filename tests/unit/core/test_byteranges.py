"""Unit tests for proxpi_min/core/byteranges.py: one HTTP byte range, or the whole file."""

from __future__ import annotations

from typing import Optional

import pytest

from proxpi_min.core.byteranges import ByteRange, content_range_size, parse_content_range, parse_range
from proxpi_min.core.errors import RangeNotSatisfiable


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-99", ByteRange(0, 99)),
        ("bytes=0-0", ByteRange(0, 0)),
        ("bytes=100-", ByteRange(100, None)),
        ("bytes=0-", ByteRange(0, None)),
        ("bytes=-500", ByteRange(None, 500)),
        ("bytes=-0", ByteRange(None, 0)),
        ("bytes=5-5", ByteRange(5, 5)),
        ("Bytes=1-2", ByteRange(1, 2)),  # the unit is case-insensitive
        ("BYTES=1-2", ByteRange(1, 2)),
        (" bytes=1-2 ", ByteRange(1, 2)),
        ("bytes= 1-2", ByteRange(1, 2)),
        ("bytes=123456789012-", ByteRange(123456789012, None)),
    ],
)
def test_parse_range(header: str, expected: ByteRange) -> None:
    assert parse_range(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        # several ranges: served as a whole file
        "bytes=0-1,5-6",
        "bytes=0-1, 5-6",
        "bytes=-5,0-1",
        # other units
        "items=0-1",
        "none",
        # malformed
        "bytes",
        "bytes=",
        "bytes=-",
        "bytes=abc",
        "bytes=a-b",
        "bytes=1",
        "bytes=5-1",  # last < first is invalid (RFC 9110 14.1.1)
        "bytes=1-2-3",
        "bytes=+1-2",
        "bytes=1-+2",
        "bytes=-1-2",
        "bytes=1.5-2",
        "bytes=0x1-2",
        "bytes=1 - 2",
        "=0-1",
        "0-1",
    ],
)
def test_parse_range_ignores(header: Optional[str]) -> None:
    assert parse_range(header) is None


@pytest.mark.parametrize("header", ["bytes=\u00b2-", "bytes=0-\u00b9", "bytes=-\u00b3", "bytes=\u0661-\u0662"])
def test_parse_range_ignores_non_ascii_digits(header: str) -> None:
    assert parse_range(header) is None


@pytest.mark.parametrize("spec", ["{n}-", "-{n}", "0-{n}", "{n}-{n}"])
def test_parse_range_ignores_numbers_past_what_int_takes(spec: str) -> None:
    assert parse_range("bytes=" + spec.format(n="9" * 5000)) is None


@pytest.mark.parametrize(
    ("byte_range", "size", "expected"),
    [
        # normal
        (ByteRange(0, 99), 1000, (0, 100)),
        (ByteRange(10, 19), 1000, (10, 20)),
        (ByteRange(0, 0), 1000, (0, 1)),
        (ByteRange(999, 999), 1000, (999, 1000)),
        (ByteRange(0, 999), 1000, (0, 1000)),
        # last past the end is cut to the end
        (ByteRange(0, 5000), 1000, (0, 1000)),
        (ByteRange(500, 1000), 1000, (500, 1000)),
        # open-ended
        (ByteRange(100, None), 1000, (100, 1000)),
        (ByteRange(0, None), 1000, (0, 1000)),
        (ByteRange(999, None), 1000, (999, 1000)),
        # suffix
        (ByteRange(None, 100), 1000, (900, 1000)),
        (ByteRange(None, 1), 1000, (999, 1000)),
        (ByteRange(None, 1000), 1000, (0, 1000)),
        (ByteRange(None, 5000), 1000, (0, 1000)),  # longer than the file: all of it
    ],
)
def test_resolve(byte_range: ByteRange, size: int, expected: tuple) -> None:
    assert byte_range.resolve(size) == expected


@pytest.mark.parametrize(
    ("byte_range", "size"),
    [
        (ByteRange(1000, None), 1000),
        (ByteRange(1000, 2000), 1000),
        (ByteRange(5000, None), 1000),
        (ByteRange(None, 0), 1000),  # an empty suffix
        (ByteRange(0, None), 0),  # nothing is satisfiable in an empty file
        (ByteRange(0, 0), 0),
        (ByteRange(None, 10), 0),
    ],
)
def test_resolve_not_satisfiable(byte_range: ByteRange, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as info:
        byte_range.resolve(size)
    assert info.value.size == size  # for "Content-Range: bytes */<size>"
    assert info.value.status == 416


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-99", 1000, (0, 100)),
        ("bytes=-22", 1000, (978, 1000)),  # uv reads the zip's end of central directory so
        ("bytes=900-", 1000, (900, 1000)),
    ],
)
def test_parse_then_resolve(header: str, size: int, expected: tuple) -> None:
    byte_range = parse_range(header)
    assert byte_range is not None
    assert byte_range.resolve(size) == expected


@pytest.mark.parametrize(
    ("byte_range", "header"),
    [
        (ByteRange(0, 99), "bytes=0-99"),
        (ByteRange(100, None), "bytes=100-"),
        (ByteRange(None, 500), "bytes=-500"),
    ],
)
def test_header_round_trips(byte_range: ByteRange, header: str) -> None:
    assert byte_range.header() == header
    assert parse_range(byte_range.header()) == byte_range


@pytest.mark.parametrize(
    "value, expected",
    [
        ("bytes 0-99/1000", (0, 1000)),
        ("bytes 900-999/1000", (900, 1000)),
        ("bytes */1000", None),  # a 416's: no range
        ("bytes 0-99/*", None),  # size unknown
        ("bytes 0-99", None),
        ("bytes ²-99/1000", None),  # str.isdigit would take it, int() would not
        ("bytes 0-99/1²", None),
        ("", None),
        (None, None),
    ],
)
def test_content_range_gives_the_first_byte_and_the_size(value, expected):
    assert parse_content_range(value) == expected


@pytest.mark.parametrize(
    "value, expected",
    [
        ("bytes 0-99/1000", 1000),
        ("bytes */1000", 1000),  # a 416's
        ("bytes 0-99/*", None),
        ("bytes */*", None),
        ("bytes 0-99", None),
        ("bytes */1²", None),
        ("bytes */", None),
        (None, None),
    ],
)
def test_content_range_size(value, expected):
    assert content_range_size(value) == expected
