"""Reads one upstream page within its size cap and its deadline, keeping no memory
past a refusal, whatever the upstream announces or sends."""

from __future__ import annotations

import contextlib
import mmap
import socket
import threading
import zlib
from typing import Iterator, Optional

from ..core.errors import AnswerCut, AnswerTooSlow, BadUpstreamPage, UpstreamError

__all__ = ["Deadline", "read_page_body"]

PAGE_READ_SIZE = 1024 * 1024


class Deadline:
    """Cuts the socket of one page fetch once *seconds* have passed: the read
    timeout bounds each read, so an upstream sending a byte now and then would
    otherwise hold the fetch (and every client waiting on it) for ever."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._sock: Optional[socket.socket] = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        """Cut *sock* (an upstream connection's socket, plain or TLS) when the time is
        up, at once if it is up already. Watched from the moment it is made, a socket
        is cut even while http.client still reads a proxy's CONNECT answer on it. A TLS
        socket is watched before its handshake: wrapping detaches the plain one."""
        with self._lock:
            self._sock = sock
            expired = self.expired
        if expired:
            _cut(sock)

    @contextlib.contextmanager
    def enforced(self, what: str, where: str) -> Iterator[None]:
        """Within the block, an UpstreamError once the deadline has passed (the cut
        connection's, or a cut that passed for an end: checked as the block ends) is an
        AnswerTooSlow (an UpstreamTimeout): *what* took over the deadline, at *where*."""
        try:
            yield
            if self.expired:
                raise UpstreamError("cut at the deadline")
        except UpstreamError:
            if self.expired:
                # from None: the cut's own error says less, and its frames hold the reads.
                raise AnswerTooSlow(f"{what} took over {self.seconds:g} s: {where}") from None
            raise

    def cancel(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._sock = None

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sock = self._sock
        if sock is not None:
            _cut(sock)


def _cut(sock: socket.socket) -> None:
    """Shut *sock* down under the reading thread, whose read then ends at once.
    As a plain socket: an SSLSocket's own shutdown would drop its TLS state first."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Gunzip:
    """Inflates a gzip body, which may hold several members one after another (RFC 1952
    2.2); bytes after the last one that start no member are ignored."""

    def __init__(self) -> None:
        self._member = zlib.decompressobj(16 + zlib.MAX_WBITS)

    @property
    def ended(self) -> bool:
        """The last member began has ended."""
        return self._member.eof

    def inflate(self, data: bytes, limit: int) -> bytes:
        """What *data* inflates to, at most *limit* bytes (so that a small bomb cannot
        blow up in memory)."""
        out = self._member.decompress(data, limit)
        # After a member's end, what arrives gathers in its unused_data.
        while self._member.eof and self._member.unused_data[:2] == b"\x1f\x8b" and len(out) < limit:
            rest = self._member.unused_data
            self._member = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out += self._member.decompress(rest, limit - len(out))
        return out


def read_page_body(response, shown_url: str, cap: int) -> bytes:
    """The body of *response* (an http.client response), gunzipped if it says gzip.

    The body grows in one anonymous memory map of *cap* + 1 bytes, of which only what
    arrives is ever touched, and which is unmapped whatever happens: a refused page
    gives its memory back to the system at once, not to a heap that keeps it.

    :raises BadUpstreamPage: the body, announced or sent, compressed or not, is
        over *cap* bytes.
    :raises UpstreamError: the body ended before its announced length or gzip end.
    """
    announced = response.length
    if announced is not None and announced > cap:
        raise BadUpstreamPage(f"upstream page of {announced} bytes is over the {cap}-byte cap: {shown_url}")
    gzipped = (response.headers.get("Content-Encoding") or "").lower() == "gzip"
    decompressor = _Gunzip() if gzipped else None
    buffer = mmap.mmap(-1, cap + 1)
    try:
        received = 0
        while True:
            piece: Optional[bytes] = response.read1(PAGE_READ_SIZE)
            if not piece:
                break
            received += len(piece)
            if decompressor is not None:
                piece = decompressor.inflate(piece, cap + 1 - buffer.tell())
            if received > cap or buffer.tell() + len(piece) > cap:
                raise BadUpstreamPage(f"upstream page over {cap} bytes: {shown_url}")
            buffer.write(piece)
        if response.length or (decompressor is not None and received and not decompressor.ended):
            raise AnswerCut(f"upstream page cut short: {shown_url}")
        if response.length == 0:
            response.read()  # read1 leaves a fully read response open: finish it
        return buffer[: buffer.tell()]
    finally:
        buffer.close()
