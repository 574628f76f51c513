"""The connection layer: one selector thread owns every connection that is idle or still
sending its request head (TLS handshake included), holds them to their deadlines and to
the cap on open connections, and hands one to a request thread once a whole head is in;
request threads are capped, complete requests past the cap wait in arrival order."""

from __future__ import annotations

import collections
import contextlib
import logging
import selectors
import socket
import ssl
import threading
import time
from typing import Callable, Deque, NamedTuple, Optional, Tuple

from .connection import Connection
from .http1 import closing_response, overloaded_response

__all__ = ["CLOSE_REASONS", "ConnectionLayer", "Counts", "Limits"]

logger = logging.getLogger(__name__)

# Why connections close, as proxpi_connections_closed_total labels them.
CLOSE_REASONS = (
    "answered",  # after a response: Connection: close, HTTP/1.0, an error, a client gone mid-request
    "client-closed",  # the client closed while idle or sending a head
    "header-timeout",  # the head (or the TLS handshake) took longer than --header-timeout
    "too-long",  # a head past 64 KiB: 414 or 431
    "idle-timeout",  # idle between requests longer than --client-timeout
    "evicted",  # the oldest idle one, to make room under --max-connections
    "queue-timeout",  # a complete request waited --header-timeout for a thread: 503
    "tls-failed",  # a failed TLS handshake, or a TLS client on a plain-HTTP port
    "shutdown",  # the server stopped or drains
    "refused",  # past --max-connections with none idle: 503 at once
)


# A TLS record of the handshake type, any TLS version (RFC 8446 5.1): a ClientHello.
_TLS_HANDSHAKE = b"\x16\x03"


class Limits(NamedTuple):
    """The layer's caps and deadlines (from the settings)."""

    max_connections: int  # open connections
    threads: int  # requests answered at once
    header_timeout: float  # seconds for a whole head, and for a complete request to wait
    idle_timeout: float  # seconds idle between requests


class Counts(NamedTuple):
    """Connections by what they are doing, for the gauges."""

    open: int
    idle: int  # parked between requests
    active: int  # being answered, or waiting for a thread


class ConnectionLayer:
    """Owns connections while nothing is being answered on them. *start* runs a request
    thread for a connection whose head is in (the server's ThreadingMixIn); each such
    thread calls :meth:`done` after its requests. *closed* counts a closing by reason.
    *probe* gives the whole answer to what a connection sent, when that is one head that
    needs no thread (a liveness probe), and whether it closes the connection, or None:
    it is answered here when every thread is busy, rather than left to wait."""

    def __init__(
        self,
        limits: Limits,
        start: Callable[[Connection], None],
        closed: Callable[[str], None],
        probe: Callable[[bytes], Optional[tuple]] = lambda head: None,
    ) -> None:
        self._limits = limits
        self._start = start
        self._closed = closed
        self._probe = probe
        self._lock = threading.Lock()
        # Shared under the lock.
        self._open = 0
        self._idle_count = 0
        self._active = 0  # request threads running
        self._waiting: Deque[Tuple[float, Connection]] = collections.deque()  # (deadline, connection)
        self._incoming: list = []  # connections for the selector: new, or back from a thread
        self._evictions = 0  # idle connections to close to make room
        self._draining = False
        self._stopped = False
        self._woken = False
        # The selector thread's own: connections by arrival, so the oldest expire first.
        self._heads: "collections.OrderedDict[Connection, None]" = collections.OrderedDict()
        self._idle: "collections.OrderedDict[Connection, None]" = collections.OrderedDict()
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._wake_write.setblocking(False)
        self._selector.register(self._wake_read, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._run, name="connections", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ other threads

    def admit(self) -> bool:
        """Count a new connection in, closing the oldest idle one if at the cap; False
        when every open connection is busy (the caller refuses it)."""
        with self._lock:
            if self._open >= self._limits.max_connections:
                if self._idle_count - self._evictions <= 0:
                    return False
                self._evictions += 1
            self._open += 1
            return True

    def add(self, connection: Connection) -> None:
        """Hand a connection admitted (or back from a request thread, ``idle`` unless
        part of its next request is in) to the selector."""
        with self._lock:
            self._incoming.append(connection)
            self._wake()

    def done(self, connection: Connection) -> Optional[Connection]:
        """After a request thread's answers: park *connection* (if kept) or close it;
        returns the next connection waiting for a thread, for this one to serve."""
        if connection.keep and not self._draining:
            try:
                connection.compact()
                connection.sock.setblocking(False)
                connection.idle = not connection.started()
            except OSError:
                connection.keep = False
        if connection.keep and not self._draining:
            self.add(connection)
        else:
            self._close(connection, "client-closed" if connection.gone else "answered")
        with self._lock:
            if self._waiting:
                return self._waiting.popleft()[1]
            self._active -= 1
            return None

    def waiting(self) -> bool:
        """Complete requests wait for a thread."""
        return bool(self._waiting)

    def counts(self) -> Counts:
        with self._lock:
            return Counts(self._open, self._idle_count, self._open - self._idle_count - len(self._heads))

    def drain(self) -> None:
        """Close the idle connections and those still sending a head; close each
        answered one from now on."""
        with self._lock:
            self._draining = True
            self._wake()

    def close(self) -> None:
        """Stop the selector thread and close every connection not being answered."""
        with self._lock:
            self._draining = self._stopped = True
            self._wake()
        self._thread.join(5)
        with self._lock:
            waiting, self._waiting = list(self._waiting), collections.deque()
        for _, connection in waiting:
            self._close(connection, "shutdown")
        self._selector.close()
        self._wake_read.close()
        self._wake_write.close()

    def _wake(self) -> None:
        """Wake the selector (called under the lock), once until it looks."""
        if not self._woken:
            self._woken = True
            with contextlib.suppress(OSError):  # full: it is awake anyway; closed: stopped
                self._wake_write.send(b"x")

    def _close(self, connection: Connection, reason: str) -> None:
        """Close a connection not in the selector and count it."""
        logger.debug("closing the connection from %s: %s", connection.address[0], reason)
        with self._lock:
            self._open -= 1
        self._closed(reason)  # counted before the client can see the close
        connection.close()

    # ------------------------------------------------------------------ the selector thread

    def _run(self) -> None:
        while True:
            try:
                events = self._selector.select(self._timeout())
                now = time.monotonic()
                for key, mask in events:
                    if key.data is None:
                        with contextlib.suppress(OSError):
                            self._wake_read.recv(4096)
                    else:
                        self._ready(key.data, mask, now)
                if not self._commands(now):
                    return
                self._expire(now)
            except Exception:  # a bug: logged, and the other connections still served
                logger.exception("error in the connection selector")
                time.sleep(0.1)

    def _timeout(self) -> Optional[float]:
        deadlines = []
        if self._heads:
            deadlines.append(next(iter(self._heads)).since + self._limits.header_timeout)
        if self._idle:
            deadlines.append(next(iter(self._idle)).since + self._limits.idle_timeout)
        with self._lock:
            if self._waiting:
                deadlines.append(self._waiting[0][0])
        return max(min(deadlines) - time.monotonic(), 0.0) if deadlines else None

    def _commands(self, now: float) -> bool:
        """Take in the connections handed over and do the evictions; False once stopped."""
        with self._lock:
            self._woken = False
            incoming, self._incoming = self._incoming, []
            draining, stopped = self._draining, self._stopped
        for connection in incoming:
            if draining:
                self._close(connection, "shutdown")
                continue
            connection.since = now  # new ones are sending a head; parked ones say (see done)
            self._track(connection)
            try:
                self._selector.register(connection.sock, selectors.EVENT_READ, connection)
            except (OSError, ValueError):  # closed meanwhile
                self._drop(connection, "client-closed")
                continue
            if connection.started() and connection.head_complete():  # a pipelined head, partly read
                self._hand_over(connection, now)
        while self._evictions and self._idle:
            oldest = next(iter(self._idle))
            with self._lock:
                self._evictions -= 1
            self._drop(oldest, "evicted")
        if draining:
            for connection in [*self._heads, *self._idle]:
                self._drop(connection, "shutdown")
        return not stopped

    def _track(self, connection: Connection) -> None:
        if connection.idle:
            self._idle[connection] = None
            with self._lock:
                self._idle_count += 1
        else:
            self._heads[connection] = None

    def _untrack(self, connection: Connection) -> None:
        if connection.idle:
            del self._idle[connection]
            with self._lock:
                self._idle_count -= 1
                if self._evictions > self._idle_count:  # none left to evict
                    self._evictions = self._idle_count
        else:
            del self._heads[connection]

    def _drop(self, connection: Connection, reason: str) -> None:
        """Close a connection the selector owns."""
        self._untrack(connection)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(connection.sock)
        self._close(connection, reason)

    def _ready(self, connection: Connection, mask: int, now: float) -> None:
        """The socket can be read (or written, mid-handshake): advance the connection."""
        if connection.handshaking:
            try:
                connection.handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError) as wait:
                wanted = selectors.EVENT_WRITE if isinstance(wait, ssl.SSLWantWriteError) else selectors.EVENT_READ
                self._selector.modify(connection.sock, wanted, connection)
                return
            except OSError as exc:  # not TLS, a certificate refused, a reset
                logger.debug("TLS handshake with %s failed: %s", connection.address[0], exc)
                return self._drop(connection, "tls-failed")
            if mask & selectors.EVENT_WRITE:
                self._selector.modify(connection.sock, selectors.EVENT_READ, connection)
        try:
            alive = connection.receive()
        except OSError:  # a reset, a TLS error
            alive = False
        if not alive:
            return self._drop(connection, "client-closed")
        if not connection.tls and connection.buffer.startswith(_TLS_HANDSHAKE, connection.pos):
            # An https:// URL for a plain-HTTP port: no answer it could read, and none
            # to wait --header-timeout for.
            logger.debug("TLS handshake from %s on a plain-HTTP port: closed", connection.address[0])
            return self._drop(connection, "tls-failed")
        if connection.idle and connection.started():  # the next request begins: its head deadline runs
            self._untrack(connection)
            connection.idle = False
            connection.since = now
            self._track(connection)
        if connection.head_complete():
            self._hand_over(connection, now)

    def _hand_over(self, connection: Connection, now: float) -> None:
        """A whole head is in: to a request thread, or to wait for one; a head too
        long for one is answered here."""
        status = connection.too_long()
        if status:
            _send_now(connection, closing_response(status, "the request head is too long"))
            return self._drop(connection, "too-long")
        with self._lock:
            busy = self._active >= self._limits.threads
        probed = self._probe(bytes(connection.buffer[connection.pos :])) if busy else None
        if probed is not None:  # a load balancer's probe must not wait out a stuck upstream
            answer, close = probed
            try:
                whole = connection.sock.send(answer) == len(answer)
            except OSError:  # ssl.SSLWantWriteError too
                whole = False
            if close or not whole:
                return self._drop(connection, "answered")
            self._untrack(connection)
            connection.buffer, connection.pos, connection.scanned = bytearray(), 0, 0
            connection.idle, connection.since = True, now
            self._track(connection)
            return
        self._untrack(connection)
        self._selector.unregister(connection.sock)
        with self._lock:
            start = self._active < self._limits.threads
            if start:
                self._active += 1
            else:
                self._waiting.append((now + self._limits.header_timeout, connection))
        if start:
            try:
                self._start(connection)
            except RuntimeError:  # no thread could be started
                logger.exception("cannot start a request thread")
                with self._lock:
                    self._active -= 1
                self._close(connection, "answered")

    def _expire(self, now: float) -> None:
        """Close what is past its deadline: heads, idle connections, waiting requests."""
        header_timeout, idle_timeout = self._limits.header_timeout, self._limits.idle_timeout
        while self._heads and next(iter(self._heads)).since + header_timeout <= now:
            connection = next(iter(self._heads))
            if connection.started() and not connection.handshaking:  # some of a request came
                _send_now(connection, closing_response(408, "the request head took too long"))
            self._drop(connection, "header-timeout")
        while self._idle and next(iter(self._idle)).since + idle_timeout <= now:
            self._drop(next(iter(self._idle)), "idle-timeout")
        while True:
            with self._lock:
                if not (self._waiting and self._waiting[0][0] <= now):
                    break
                connection = self._waiting.popleft()[1]
            _send_now(connection, overloaded_response("every request thread is busy; retry in a second"))
            self._close(connection, "queue-timeout")


def _send_now(connection: Connection, answer: bytes) -> None:
    """Send a short closing answer if the socket takes it at once (it is non-blocking)."""
    with contextlib.suppress(OSError):  # ssl.SSLWantWriteError too: then nothing is said
        connection.sock.send(answer)
