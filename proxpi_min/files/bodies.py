"""Response bodies for files: from the cache dir (sendfile), from the index's size alone
(HEAD), or passed straight from upstream, hash-checked; and the copy loop they share."""

from __future__ import annotations

import hashlib
import mimetypes
import os
import socket
from typing import Optional

from ..core.byteranges import ByteRange
from ..core.errors import IntegrityError, UpstreamError
from ..index.upstream import FileResponse

__all__ = [
    "CHUNK",
    "CachedBody",
    "FileBody",
    "SizeOnlyBody",
    "UpstreamBody",
    "content_type_for",
    "relay",
    "send_chunk",
]

CHUNK = 1024 * 1024  # bytes per upstream read and per sendfile call while streaming
ONE_WRITE = 64 * 1024  # cached bodies up to this size go out with their headers
_ENCODED_TYPES = {"gzip": "application/gzip", "bzip2": "application/x-bzip2", "xz": "application/x-xz"}


def content_type_for(filename: str, binary: bool) -> str:
    """The Content-Type of a distribution file; never with a Content-Encoding, since
    clients must get the exact bytes the index hashed."""
    if binary:
        return "application/octet-stream"
    if filename.endswith(".metadata"):
        return "text/plain; charset=utf-8"
    if filename.endswith(".whl"):
        return "application/zip"
    kind, encoding = mimetypes.guess_type(filename)
    if encoding:
        return _ENCODED_TYPES.get(encoding, "application/octet-stream")
    return kind or "application/octet-stream"


class FileBody:
    """What the handler sends for a file: status, headers and the body.

    ``length`` None means unknown (the handler sends it chunked). :meth:`send` writes
    the body to the socket and raises if it cannot be sent whole; :meth:`close`
    releases what the body holds and must always be called.
    """

    status = 200
    etag: Optional[str] = None
    length: Optional[int] = None
    content_range: Optional[str] = None
    sent = 0  # body bytes sent so far (for the request log)
    source = "upstream"  # where the bytes come from (request log, metrics)

    def send(self, conn: socket.socket, head: bytes, chunked: bool) -> None:
        """Send *head* (status line and headers), then the body."""
        conn.sendall(head)
        self._send_body(conn, chunked)

    def _send_body(self, conn: socket.socket, chunked: bool) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def _ranged(self, byte_range: Optional[ByteRange], total: int) -> tuple:
        """Set status and lengths for *byte_range* (None: the whole file) of a file of
        *total* bytes; returns its (start, stop) offsets.

        A range is answered 206 even when it spans the whole file: uv takes a 200 as
        "this index has no range support" and then downloads whole wheels.
        """
        start, stop = byte_range.resolve(total) if byte_range else (0, total)
        self.length = stop - start
        if byte_range is not None:
            self.status = 206
            self.content_range = f"bytes {start}-{stop - 1}/{total}"
        return start, stop


def relay(
    response: FileResponse,
    conn: socket.socket,
    chunked: bool,
    *,
    limit: Optional[int],
    skip: int = 0,
    hasher=None,
    expected: Optional[tuple] = None,
) -> int:
    """Copy an upstream body to the client: *skip* bytes dropped first, then at most
    *limit* bytes (None: to the end). With a *hasher* (the whole file), the last byte
    is held back until the digest matches *expected*.

    :returns: the bytes sent.
    :raises UpstreamError: fewer than *limit* bytes came (IntegrityError: bad hash).
    """
    sent = 0
    held = b""
    while limit is None or sent + len(held) < limit:
        chunk = response.read(CHUNK)
        if not chunk:
            break
        if skip:
            cut = min(skip, len(chunk))
            chunk, skip = chunk[cut:], skip - cut
        if limit is not None:
            chunk = chunk[: limit - sent - len(held)]
        if hasher is not None and chunk:
            hasher.update(chunk)
            chunk, held = held + chunk[:-1], chunk[-1:]
        if chunk:
            send_chunk(conn, chunk, 0, len(chunk), chunked)
            sent += len(chunk)
    if limit is not None and sent + len(held) < limit:
        raise UpstreamError(f"upstream ended {limit - sent - len(held)} bytes early: {response.url}")
    if hasher is not None and hasher.hexdigest() != expected[1]:
        raise IntegrityError(f"upstream bytes do not match the index hash: {response.url}")
    if held:
        send_chunk(conn, held, 0, len(held), chunked)
        sent += len(held)
    if chunked:
        conn.sendall(b"0\r\n\r\n")
    return sent


def send_chunk(conn: socket.socket, data_or_file, offset: int, count: int, chunked: bool) -> None:
    if chunked:
        conn.sendall(b"%x\r\n" % count)
    if isinstance(data_or_file, bytes):
        conn.sendall(data_or_file)
    else:
        conn.sendfile(data_or_file, offset, count)
    if chunked:
        conn.sendall(b"\r\n")


class CachedBody(FileBody):
    """A complete file from the cache, sent with ``socket.sendfile`` (zero copy)."""

    source = "cache"

    def __init__(self, file, size: int, byte_range: Optional[ByteRange]) -> None:
        self._file = file
        self._start = self._ranged(byte_range, size)[0]

    def send(self, conn: socket.socket, head: bytes, chunked: bool) -> None:
        if self.length is not None and self.length <= ONE_WRITE:
            # Headers and a small body in one write: one packet, no sendfile set-up.
            conn.sendall(head + os.pread(self._file.fileno(), self.length, self._start))
            self.sent = self.length
        else:
            super().send(conn, head, chunked)

    def _send_body(self, conn: socket.socket, chunked: bool) -> None:
        if self.length:
            self.sent = conn.sendfile(self._file, self._start, self.length)

    def close(self) -> None:
        self._file.close()


class SizeOnlyBody(FileBody):
    """Headers alone, for a HEAD on a file the index gave the size of."""

    def __init__(self, size: int) -> None:
        self.length = size


class UpstreamBody(FileBody):
    """Bytes passed straight from an upstream response (not cached), hash-checked when
    it is the whole file: the last byte is held back until the hash matches."""

    def __init__(self, response: FileResponse, target, whole_file: bool) -> None:
        self._response = response
        self._target = target
        self._verify = whole_file and target.hash is not None
        self.status = response.status
        self.length = response.length
        self.content_range = response.headers.get("Content-Range")

    def _send_body(self, conn: socket.socket, chunked: bool) -> None:
        hasher = hashlib.new(self._target.hash[0]) if self._verify else None
        self.sent = relay(
            self._response, conn, chunked, limit=self.length, hasher=hasher, expected=self._target.hash
        )

    def close(self) -> None:
        self._response.close()
