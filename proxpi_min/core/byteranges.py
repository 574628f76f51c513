"""HTTP byte ranges (RFC 9110 section 14): one range is served, others are ignored."""

from __future__ import annotations

from typing import NamedTuple, Optional

from .errors import RangeNotSatisfiable
from .units import parse_decimal

__all__ = ["ByteRange", "content_range_size", "parse_content_range", "parse_range"]


class ByteRange(NamedTuple):
    """``bytes=first-last`` (last optional) or a suffix ``bytes=-length``."""

    first: Optional[int]
    last: Optional[int]

    def resolve(self, size: int) -> tuple[int, int]:
        """(start, stop) offsets of the range in a file of *size* bytes.

        :raises RangeNotSatisfiable: the range lies outside the file (RFC 9110 15.5.17).
        """
        if self.first is None:
            if self.last == 0 or size == 0:
                raise RangeNotSatisfiable(f"bytes=-{self.last} of {size} bytes", size)
            return max(size - self.last, 0), size
        if self.first >= size:
            raise RangeNotSatisfiable(f"bytes={self.first}- is past the end ({size} bytes)", size)
        stop = size if self.last is None else min(self.last + 1, size)
        return self.first, stop

    def header(self) -> str:
        """The range as a Range header value, to pass on upstream."""
        first = "" if self.first is None else str(self.first)
        last = "" if self.last is None else str(self.last)
        return f"bytes={first}-{last}"


def parse_range(header: Optional[str]) -> Optional[ByteRange]:
    """The single byte range in a Range header, or None to serve the whole file.

    Several ranges, other units or a malformed value are ignored, as RFC 9110 allows
    (a server may always answer 200 with the full content).
    """
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_text, dash, last_text = spec.strip().partition("-")
    first, last = parse_decimal(first_text), parse_decimal(last_text)
    if not dash or (first_text and first is None) or (last_text and last is None):
        return None
    if first is None:
        return None if last is None else ByteRange(None, last)
    if last is not None and last < first:
        return None
    return ByteRange(first, last)


def parse_content_range(value: Optional[str]) -> Optional[tuple[int, int]]:
    """(offset of the first byte, the file's size) that a 206's Content-Range names
    (``bytes first-last/size``, RFC 9110 14.4); None for any other shape, an unknown
    size (``*``) among them."""
    first = parse_decimal((value or "").partition("/")[0].rpartition(" ")[2].partition("-")[0])
    size = content_range_size(value)
    return None if first is None or size is None else (first, size)


def content_range_size(value: Optional[str]) -> Optional[int]:
    """The file's size that a Content-Range names, in a 206's ``bytes first-last/size``
    or a 416's ``bytes */size`` (RFC 9110 14.4); None if unknown (``*``) or no number."""
    return parse_decimal((value or "").partition("/")[2])
