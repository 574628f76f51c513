"""One client connection across its requests: the socket, the bytes read ahead of the
parser, the non-blocking reads and TLS handshake the selector does, the file-like
reader a request thread parses a head and body from, and the minimum rate of a body."""

from __future__ import annotations

import select
import socket
import ssl
import struct
import time
from typing import Optional

__all__ = ["Connection", "HEAD_MAX", "MinimumRate", "Writer"]

RECEIVE_SIZE = 65536
# A request head is at most this long (http.server's limit for one line); a longer one is
# answered 414 or 431 by the selector, never given a thread to trickle into.
HEAD_MAX = 65536


class Connection:
    """A client socket with its read-ahead buffer; the request parser reads it as a file
    (:meth:`readline`, :meth:`read`), starting with what the selector already buffered."""

    __slots__ = ("sock", "address", "tls", "handshaking", "buffer", "pos", "scanned", "since", "idle",
                 "kernel_timeouts", "keep", "gone", "closed", "poller", "client_timeout", "linger", "body_read",
                 "__weakref__")

    def __init__(self, sock: socket.socket, address, now: float) -> None:
        self.sock = sock
        self.address = address
        self.tls = isinstance(sock, ssl.SSLSocket)
        self.handshaking = self.tls  # the TLS handshake is still to be done
        # Read ahead: a bytearray while the selector appends to it, bytes (sliced once
        # per line) while a request thread parses it.
        self.buffer: "bytes | bytearray" = bytearray()
        self.pos = 0  # bytes before this are parsed
        self.scanned = 0  # bytes before this hold no head end
        self.since = now  # when the head began arriving, or when the connection went idle
        self.idle = False  # parked between requests, nothing of the next one read
        self.kernel_timeouts: Optional[bool] = None  # decided at the first hand-over
        self.keep = False  # set by the handler: the connection serves another request
        self.gone = False  # the client closed it between requests
        self.closed = False
        self.poller: Optional[select.poll] = None  # made by the first request thread to wait on it
        self.client_timeout = self.linger = 0.0  # set at the first hand-over (see blocking)
        self.body_read = 0  # bytes read() has returned, in all: what of a body was read

    def fileno(self) -> int:
        return self.sock.fileno()

    # ------------------------------------------------------------------ the selector's side

    def handshake(self) -> None:
        """Advance the TLS handshake without blocking. Raises ssl.SSLWantReadError or
        SSLWantWriteError while it waits for the client, OSError on failure."""
        self.sock.do_handshake()
        self.handshaking = False

    def receive(self) -> bool:
        """Read what has arrived without blocking; False when the client has closed."""
        while True:
            try:
                data = self.sock.recv(RECEIVE_SIZE)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return True
            if not data:
                return False
            if isinstance(self.buffer, bytes):
                self.buffer = bytearray(self.buffer)
            self.buffer += data
            # Over TLS, decrypted bytes may wait in the SSL object with the socket quiet.
            if not (self.tls and self.sock.pending()):
                return True

    def head_complete(self) -> bool:
        """A whole request head is buffered, or more than a head may be (see :meth:`too_long`)."""
        if _head_end(self.buffer, max(self.scanned - 2, self.pos), len(self.buffer)):
            return True  # *scanned* stays: the heads pipelined after this one are still to find
        self.scanned = len(self.buffer)
        return self.too_long() > 0

    def too_long(self) -> int:
        """0, or the status for a head past HEAD_MAX bytes without its end (RFC 9110
        15.5.15, RFC 6585 5): 414 if the request line alone is that long, else 431."""
        if len(self.buffer) - self.pos < HEAD_MAX or _head_end(self.buffer, self.pos, self.pos + HEAD_MAX):
            return 0  # a head within bounds, its body or the next requests after it
        start = self.pos + (self.buffer.startswith(b"\n", self.pos) or 2 * self.buffer.startswith(b"\r\n", self.pos))
        end = self.buffer.find(b"\n", start)
        return 414 if end < 0 or end - start >= HEAD_MAX - 2 else 431

    def started(self) -> bool:
        """Some of a request has arrived since the last one was answered."""
        return len(self.buffer) > self.pos

    def compact(self) -> None:
        """Drop the bytes already parsed, before the connection is parked."""
        self.buffer = self.buffer[self.pos :]
        self.pos = self.scanned = 0

    # ------------------------------------------------------------------ a request thread's side

    def blocking(self, client_timeout: float, linger: float) -> None:
        """Make the socket blocking for a request thread, writes timed out after
        *client_timeout*, reads too except the wait for a next request, which ends
        after *linger* (see :meth:`next_ready`). By the kernel over plain TCP
        (SO_RCVTIMEO, SO_SNDTIMEO, set once: socket.settimeout would poll() before every
        call, giving up the GIL once more a request), otherwise (TLS, whose blocking
        reads retry past a kernel timeout) by Python."""
        self.buffer = bytes(self.buffer)
        if self.kernel_timeouts is None:
            # Responses go out in one or few writes; never wait for Nagle's algorithm.
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.client_timeout, self.linger = client_timeout, linger
            self.kernel_timeouts = not self.tls and _set_kernel_timeouts(self.sock, linger, client_timeout)
            if self.kernel_timeouts:
                return
        if self.kernel_timeouts:
            self.sock.setblocking(True)
        else:
            self.sock.settimeout(client_timeout)

    def next_ready(self, linger: float) -> bool:
        """Another whole head is in, or arrives within *linger* seconds, so the thread
        may answer it at once; False to park the connection (``keep`` cleared if the
        client closed)."""
        if len(self.buffer) > self.pos and self.head_complete():  # pipelined
            return True
        if self.kernel_timeouts and linger:  # a blocking read, ended by SO_RCVTIMEO
            data = self._receive_now()
        elif self.tls and self.sock.pending():  # decrypted already
            data = self._receive_now()
        else:
            if self.poller is None:
                self.poller = select.poll()
                self.poller.register(self.sock.fileno(), select.POLLIN)
            if not self.poller.poll(linger * 1000):
                return False
            data = self._receive_now()
        if data is None:
            return False
        if not data:
            self.keep = False
            self.gone = True
            return False
        self._append(data)
        return self.head_complete()

    def _receive_now(self) -> Optional[bytes]:
        """What has arrived (b"" if the client closed), or None if nothing has. Over
        TLS a read waits for a whole record (bounded by the client timeout)."""
        try:
            return self.sock.recv(RECEIVE_SIZE)
        except (BlockingIOError, socket.timeout):
            return None
        except OSError:  # a reset, a TLS error
            return b""

    def readline(self, limit: int = -1) -> bytes:
        """A line with its LF, at most *limit* bytes; shorter when the client closes
        or times out (as a buffered socket file reads)."""
        buffer, pos = self.buffer, self.pos
        end = buffer.find(b"\n", pos) + 1
        if end and (limit < 0 or end - pos <= limit):  # the usual case: the line is in
            self.pos = end
            return buffer[pos:end]
        while True:
            buffer = self.buffer
            end = buffer.find(b"\n", self.pos)
            if end >= 0 and (limit < 0 or end - self.pos < limit):
                return self._take(end + 1 - self.pos)
            if 0 <= limit <= len(buffer) - self.pos:
                return self._take(limit)
            if not self._fill():
                return self._take(len(buffer) - self.pos)

    def read(self, size: int, within: Optional[float] = None) -> bytes:
        """*size* bytes, fewer if the client closes or times out first, or, given
        *within* seconds, once they have passed, however often bytes came."""
        until = None if within is None else time.monotonic() + within
        while len(self.buffer) - self.pos < size:
            wait = None if until is None else min(self.client_timeout, until - time.monotonic())
            if (wait is not None and wait <= 0) or not self._fill(wait):
                break
        data = self._take(min(size, len(self.buffer) - self.pos))
        self.body_read += len(data)
        return data

    def discard(self, size: int, within: float) -> int:
        """Read and drop up to *size* bytes, for at most *within* seconds, ending early
        when the client closes or is silent; how many were dropped."""
        until = time.monotonic() + within
        dropped = 0
        while dropped < size:
            wanted = min(RECEIVE_SIZE, size - dropped)
            count = len(self.read(wanted, until - time.monotonic()))
            dropped += count
            if count < wanted:  # closed, silent for the client timeout, or out of time
                break
        return dropped

    def _take(self, size: int) -> bytes:
        data = self.buffer[self.pos : self.pos + size]
        self.pos += size
        return data

    def _append(self, data: bytes) -> None:
        self.buffer = self.buffer[self.pos :] + data
        self.pos = self.scanned = 0

    def _fill(self, wait: Optional[float] = None) -> bool:
        """Read more of a request, waiting up to *wait* seconds (the client timeout)."""
        wait = self.client_timeout if wait is None else wait
        if self.kernel_timeouts:
            _set_timeout(self.sock, socket.SO_RCVTIMEO, wait)
        elif wait != self.client_timeout:
            self.sock.settimeout(wait)
        try:
            data = self.sock.recv(RECEIVE_SIZE)
        except (BlockingIOError, socket.timeout):  # the client timeout: the kernel's, or Python's
            return False
        finally:
            if self.kernel_timeouts:
                _set_timeout(self.sock, socket.SO_RCVTIMEO, self.linger)
            elif wait != self.client_timeout:
                self.sock.settimeout(self.client_timeout)
        if not data:
            return False
        self._append(data)
        return True

    def close(self) -> None:
        """Close the socket, saying goodbye as socketserver does (a shutdown first)."""
        if self.closed:
            return
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.sock.close()


class MinimumRate:
    """The minimum average rate of a body a route reads, which the client timeout alone
    does not give (every byte restarts it). The body starts *grace* seconds ahead; each
    byte read buys 1/*min_rate* seconds more, never more than *grace* ahead of the clock.
    A body *grace* behind the rate is too slow; a slow start or a stall shorter than
    *grace*, at a real sender's rate, is not. *clock*: monotonic seconds."""

    __slots__ = ("_min_rate", "_grace", "_clock", "_until", "started", "received")

    def __init__(self, min_rate: int, grace: float, clock=time.monotonic) -> None:
        self._min_rate = min_rate
        self._grace = grace
        self._clock = clock
        self.started = clock()
        self._until = self.started + grace  # past this, with nothing more read, too slow
        self.received = 0

    def time_left(self) -> float:
        """Seconds until the body is too slow unless more of it comes: the bound of a read."""
        return self._until - self._clock()

    def count(self, size: int) -> bool:
        """Count *size* bytes just read; False if the body fell behind before they came."""
        now = self._clock()
        self.received += size
        self._until += size / self._min_rate
        if now >= self._until:
            return False
        self._until = min(self._until, now + self._grace)  # a burst buys one grace, not hours
        return True

    def elapsed(self) -> float:
        return self._clock() - self.started


class Writer:
    """The handler's ``wfile``: each write goes out whole, unbuffered."""

    __slots__ = ("_sock",)

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def write(self, data: bytes) -> int:
        self._sock.sendall(data)
        return len(data)

    def flush(self) -> None:
        """Nothing is buffered."""


def _head_end(buffer, start: int, stop: int) -> bool:
    """Whether the empty line that ends a head (RFC 9112 2.2 allows a bare LF) lies
    within buffer[start:stop]."""
    return buffer.find(b"\n\r\n", start, stop) >= 0 or buffer.find(b"\n\n", start, stop) >= 0


def _set_kernel_timeouts(conn: socket.socket, receive: float, send: float) -> bool:
    """Make *conn* blocking, its reads timed out by the kernel after *receive* seconds
    without progress and its writes after *send*; False where the platform refuses the
    options. A timed-out read or write then raises BlockingIOError (EAGAIN)."""
    try:
        conn.settimeout(None)
        _set_timeout(conn, socket.SO_RCVTIMEO, receive)
        _set_timeout(conn, socket.SO_SNDTIMEO, send)
    except (OSError, AttributeError, struct.error):  # AttributeError: no SO_RCVTIMEO here
        return False
    return True


def _set_timeout(conn: socket.socket, option: int, seconds: float) -> None:
    whole = int(seconds)
    # struct timeval; at least 1 µs, since 0 means "never". Where timeval is not two C
    # longs (32-bit builds with a 64-bit time_t), the kernel refuses the size.
    timeval = struct.pack("ll", whole, max(int((seconds - whole) * 1_000_000), 0 if whole else 1))
    conn.setsockopt(socket.SOL_SOCKET, option, timeval)
