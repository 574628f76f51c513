"""What a response sends for a file: from the cache dir (sendfile), from a download as it
is written, from the index's size alone (HEAD), or passed straight from upstream,
hash-checked; and the copy loop they share."""

from __future__ import annotations

import mimetypes
import os
import socket
import ssl
from typing import Optional

from ..core.byteranges import ByteRange
from ..core.errors import FileCutShort, UpstreamError
from ..index.upstream import FileResponse
from .downloads import Download
from .upstream_body import CHUNK, RateGuard
from .integrity import Verifier
from .layout import Target

__all__ = [
    "CachedBody",
    "DownloadBody",
    "FileBody",
    "SizeOnlyBody",
    "UpstreamBody",
    "content_type_for",
    "relay",
    "send_chunk",
]

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
    immutable = True  # the bytes at this URL never change (False: a local file, whose name a delete frees)

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
    body: FileBody,
    *,
    limit: Optional[int],
    skip: int = 0,
    verifier: Optional[Verifier] = None,
    min_rate: int = 0,
) -> None:
    """Copy an upstream body to the client: *skip* bytes dropped first, then at most
    *limit* bytes (None: to the end). With a *verifier* (the whole file), the last byte
    is held back until the bytes match the index hash. Bytes sent are counted in
    *body*'s ``sent`` as they go, so a response cut short logs what it did send.

    :raises UpstreamError: fewer than *limit* bytes came (IntegrityError: bad hash;
        UpstreamTimeout: under *min_rate* bytes a second, see ``RateGuard``).
    """
    sent = 0
    held = b""
    guard = RateGuard(min_rate, response.url)
    while limit is None or sent + len(held) < limit:
        chunk = response.read(CHUNK)
        if not chunk:
            break
        guard.add(len(chunk))
        if skip:
            cut = min(skip, len(chunk))
            chunk, skip = chunk[cut:], skip - cut
        if limit is not None:
            chunk = chunk[: limit - sent - len(held)]
        if verifier is not None and chunk:
            verifier.update(chunk)
            chunk, held = held + chunk[:-1], chunk[-1:]
        if chunk:
            with guard.client_time():
                send_chunk(conn, chunk, 0, len(chunk), chunked)
            sent += len(chunk)
            body.sent += len(chunk)
    if limit is not None and sent + len(held) < limit:
        raise UpstreamError(f"upstream ended {limit - sent - len(held)} bytes early: {response.url}")
    if verifier is not None:
        verifier.check(f"upstream bytes do not match the index hash: {response.url}")
    if held:
        send_chunk(conn, held, 0, len(held), chunked)
        body.sent += len(held)
    if chunked:
        conn.sendall(b"0\r\n\r\n")


def send_chunk(conn: socket.socket, data_or_file, offset: int, count: int, chunked: bool) -> None:
    if chunked:
        conn.sendall(b"%x\r\n" % count)
    if isinstance(data_or_file, bytes):
        conn.sendall(data_or_file)
    else:
        _send_file_range(conn, data_or_file, offset, count)
    if chunked:
        conn.sendall(b"\r\n")


def _send_file_range(conn: socket.socket, file, offset: int, count: int) -> int:
    """Send *count* bytes of *file* from *offset*, and return how many went: with
    sendfile on a plain socket (zero copy), else (TLS) read with pread. Never through
    the file's own position: the handles the clients of one download hold share it
    (``os.dup``), and socket.sendfile's fallback for TLS seeks and reads there, so
    concurrent clients would send each other's bytes.

    :raises FileCutShort: the file ended first (never a body short of its length).
    """
    if isinstance(conn, ssl.SSLSocket):
        fd, sent = file.fileno(), 0
        while sent < count:
            data = os.pread(fd, min(count - sent, CHUNK), offset + sent)
            if not data:
                break
            conn.sendall(data)
            sent += len(data)
    else:
        sent = conn.sendfile(file, offset, count)
    if sent != count:
        raise FileCutShort(f"the file on disk ended {count - sent} bytes short of what was to be sent", sent)
    return sent



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
            try:
                self.sent = _send_file_range(conn, self._file, self._start, self.length)
            except FileCutShort as exc:
                self.sent = exc.sent
                raise

    def close(self) -> None:
        self._file.close()


class DownloadBody(FileBody):
    """A client's view of a :class:`Download`: bytes are sent as they are written
    (with sendfile from the temp file), the last byte only once the file is verified."""

    def __init__(self, download: Download, file, byte_range: Optional[ByteRange]) -> None:
        self._download = download
        self._file = file
        self._position = 0
        self._stop = download.length
        if download.length is not None:
            self._position, self._stop = self._ranged(byte_range, download.length)

    def _send_body(self, conn: socket.socket, chunked: bool) -> None:
        download = self._download
        while self._stop is None or self._position < self._stop:
            with download.cond:
                download.cond.wait_for(lambda: self._limit() > self._position or download.over)
                limit, error, disk_failed = self._limit(), download.error, download.disk_failed
            if limit > self._position:
                send_chunk(conn, self._file, self._position, limit - self._position, chunked)
                self.sent += limit - self._position
                self._position = limit
            elif error is not None:
                raise error
            elif disk_failed:
                self._resume_upstream(conn, chunked)
                return
            else:  # done, and everything sent
                break
        if chunked:
            conn.sendall(b"0\r\n\r\n")

    def _limit(self) -> int:
        """How far this client may read now: all that is written once the download is
        verified, all but the last byte before, so a bad file is never sent whole."""
        download = self._download
        if download.done:
            limit = download.written
        else:  # never the last byte: not of what is written, nor of the announced length
            limit = download.written - 1
            if download.length is not None:
                limit = min(limit, download.length - 1)
        return limit if self._stop is None else min(limit, self._stop)

    def _resume_upstream(self, conn: socket.socket, chunked: bool) -> None:
        """The cache's disk failed: fetch the rest of the file for this client alone,
        still checking the hash when this client gets the whole file."""
        download, target = self._download, self._download.target
        verifier = None
        if target.hash is not None and self.status == 200:
            verifier = Verifier(target.hash)
            for offset in range(0, self._position, CHUNK):  # what was sent, read back
                verifier.update(os.pread(self._file.fileno(), min(CHUNK, self._position - offset), offset))
        limit = None if self._stop is None else self._stop - self._position
        with download.upstream.open_file(target.url, byte_range=f"bytes={self._position}-") as response:
            relay(
                response,
                conn,
                chunked,
                self,
                limit=limit,
                skip=self._position if response.status == 200 else 0,
                verifier=verifier,
                min_rate=download.min_rate,
            )

    def close(self) -> None:
        if not self._file.closed:  # closing twice must not count the reader out twice
            self._download.detach(self._file)


class SizeOnlyBody(FileBody):
    """Headers alone, for a HEAD on a file the index gave the size of."""

    def __init__(self, size: int) -> None:
        self.length = size

    def _send_body(self, conn: socket.socket, chunked: bool) -> None:
        pass  # a HEAD: the headers say it all


class UpstreamBody(FileBody):
    """Bytes passed straight from an upstream response (not cached), hash-checked when
    it is the whole file: the last byte is held back until the hash matches."""

    def __init__(self, response: FileResponse, target: Target, whole_file: bool, min_rate: int = 0) -> None:
        self._response = response
        self._min_rate = min_rate
        self._target = target
        self._verify = whole_file and target.hash is not None
        self.status = response.status
        self.length = response.length
        self.content_range = response.headers.get("Content-Range")

    def _send_body(self, conn: socket.socket, chunked: bool) -> None:
        verifier = Verifier(self._target.hash) if self._verify else None
        relay(self._response, conn, chunked, self, limit=self.length, verifier=verifier, min_rate=self._min_rate)

    def close(self) -> None:
        self._response.close()
