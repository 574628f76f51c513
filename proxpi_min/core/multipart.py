"""A multipart/form-data body (RFC 7578, RFC 2046 5.1) split into parts as it arrives:
fed in chunks, it yields each part's head and its bytes, never holding a part whole."""

from __future__ import annotations

import email.parser
import email.policy
from typing import Iterator, NamedTuple, Optional, Union

from .errors import BadRequest

__all__ = ["END", "MultipartParser", "PartEnd", "PartHead", "boundary_of"]

MAX_HEAD = 16 * 1024  # bytes of one part's header block
MAX_PARTS = 1000  # a form with more is not an upload
_MAX_BOUNDARY = 70  # RFC 2046 5.1.1
_CRLF = b"\r\n"


class PartHead(NamedTuple):
    """A part starts: its form field name, and its file name if it is a file."""

    name: str
    filename: Optional[str]
    content_type: Optional[str]


class PartEnd(NamedTuple):
    """The part that started last is complete."""


END = PartEnd()
Piece = Union[PartHead, bytes, PartEnd]  # what :meth:`MultipartParser.feed` yields


def boundary_of(content_type: Optional[str]) -> bytes:
    """The boundary of a ``multipart/form-data`` Content-Type header.

    :raises BadRequest: another type, or no usable boundary.
    """
    header = email.policy.HTTP.header_factory("content-type", content_type or "")
    if header.content_type != "multipart/form-data":
        raise BadRequest(f"an upload is multipart/form-data, not {header.content_type or 'untyped'}")
    boundary = header.params.get("boundary") or ""
    if not 0 < len(boundary) <= _MAX_BOUNDARY or not boundary.isascii() or not boundary.isprintable():
        raise BadRequest("the multipart/form-data Content-Type has no valid boundary")
    return boundary.encode("ascii")


class MultipartParser:
    """Feed the body with :meth:`feed`; call :meth:`close` at its end."""

    def __init__(self, boundary: bytes) -> None:
        self._delimiter = _CRLF + b"--" + boundary
        # The first boundary line may open the body with no CRLF before it.
        self._buffer = _CRLF
        self._state = self._preamble
        self._parts = 0
        self.done = False  # the closing boundary was seen

    def feed(self, data: bytes) -> Iterator[Piece]:
        """The pieces *data* completes, in order.

        :raises BadRequest: the body is not well-formed multipart.
        """
        self._buffer += data
        while True:
            step = self._state()
            if step is None:
                return
            yield from step

    def close(self) -> None:
        """:raises BadRequest: the body ended before its closing boundary."""
        if not self.done:
            raise BadRequest("the multipart body ended before its closing boundary")

    # Each state consumes what it can of the buffer; None when it needs more bytes.

    def _preamble(self) -> Optional[tuple]:
        found = self._buffer.find(self._delimiter)
        if found < 0:
            self._buffer = self._buffer[-len(self._delimiter) :]
            return None
        self._buffer = self._buffer[found + len(self._delimiter) :]
        self._state = self._after_boundary
        return ()

    def _after_boundary(self) -> Optional[tuple]:
        if self._buffer.startswith(b"--"):
            self.done = True
            self._buffer = b""
            self._state = self._epilogue
            return ()
        line_end = self._buffer.find(_CRLF)
        if line_end < 0:
            if len(self._buffer) > MAX_HEAD:
                raise BadRequest("a multipart boundary line does not end")
            return None
        if self._buffer[:line_end].strip(b" \t"):  # only transport padding may follow
            raise BadRequest("a multipart boundary is followed by other text")
        self._buffer = self._buffer[line_end + 2 :]
        self._state = self._head
        return ()

    def _head(self) -> Optional[tuple]:
        if self._buffer.startswith(_CRLF):
            block, rest = b"", self._buffer[2:]
        else:
            end = self._buffer.find(_CRLF + _CRLF, 0, MAX_HEAD + 4)
            if end < 0:
                if len(self._buffer) > MAX_HEAD:
                    raise BadRequest(f"a multipart part's headers pass {MAX_HEAD} bytes")
                return None
            block, rest = self._buffer[: end + 2], self._buffer[end + 4 :]
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise BadRequest(f"the form has more than {MAX_PARTS} parts")
        self._buffer = rest
        self._state = self._body
        return (_part_head(block),)

    def _body(self) -> Optional[tuple]:
        found = self._buffer.find(self._delimiter)
        if found < 0:
            keep = len(self._delimiter) - 1  # a delimiter may straddle two chunks
            if len(self._buffer) <= keep:
                return None
            data, self._buffer = self._buffer[:-keep], self._buffer[-keep:]
            self._state = self._more
            return (data,)
        data, self._buffer = self._buffer[:found], self._buffer[found + len(self._delimiter) :]
        self._state = self._after_boundary
        return (data, END) if data else (END,)

    def _more(self) -> Optional[tuple]:
        # After a part's bytes up to the buffer's tail: wait for the next chunk.
        self._state = self._body
        return None

    def _epilogue(self) -> Optional[tuple]:
        self._buffer = b""  # RFC 2046: ignored
        return None


def _part_head(block: bytes) -> PartHead:
    """A part's headers (RFC 7578 4.2: Content-Disposition form-data with a name)."""
    headers = email.parser.BytesHeaderParser(policy=email.policy.HTTP).parsebytes(block)
    disposition = headers.get("content-disposition")
    if disposition is None or disposition.content_disposition != "form-data":
        raise BadRequest("a multipart part has no Content-Disposition: form-data")
    params = disposition.params
    name = params.get("name")
    if name is None:
        raise BadRequest("a multipart part has no field name")
    content_type = headers.get("content-type")
    return PartHead(str(name), params.get("filename"), content_type.content_type if content_type else None)
