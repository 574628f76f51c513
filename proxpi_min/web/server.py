"""The socket server: the listening socket, the connection cap (503 past it, over TLS
too), a thread per request being answered (idle connections and heads still arriving
belong to :mod:`.connections`), and the drain at shutdown. Each request goes to
:class:`.routes.ProxyHandler`, which answers from the application object."""

from __future__ import annotations

import contextlib
import http.server
import logging
import queue
import selectors
import socket
import socketserver
import sys
import threading
import time
from typing import Callable, Optional

from ..core.settings import Settings
from ..infra.tls import server_context
from .connection import Connection
from .connections import CLOSE_REASONS, ConnectionLayer, Limits
from .http1 import CLIENT_GONE, InFlight, address_text, overloaded_response
from .probes import probe_answer
from .routes import App, ProxyHandler

__all__ = ["Server", "listening_socket"]

logger = logging.getLogger(__name__)

# While connections are refused at the cap, one WARNING a minute says so.
REFUSAL_WARNING_INTERVAL = 60.0
# Past the cap over TLS, the 503 needs a handshake first: one thread does those, each
# given this long, and closes at once the connections beyond this many waiting.
TLS_REFUSAL_SECONDS = 1.0
TLS_REFUSALS_WAITING = 64
# A request thread waits this long for the connection's next request before parking it
# with the selector: a client's next request on a busy keep-alive connection comes
# sooner, and is answered without a hand-over.
LINGER_SECONDS = 0.25


class _TlsRefusals:
    """Answers 503 to TLS connections past the cap, from one thread of its own: the
    accepting thread must not wait for a handshake, and past the cap no thread per
    connection is started. A slow client holds this thread TLS_REFUSAL_SECONDS at most;
    beyond TLS_REFUSALS_WAITING waiting, a connection is closed without an answer."""

    def __init__(self, answer: Callable[[], bytes], close: Callable[[socket.socket], None]) -> None:
        self._answer = answer  # made at each refusal: it carries the Date
        self._close = close
        self._waiting: "queue.Queue[Optional[socket.socket]]" = queue.Queue(TLS_REFUSALS_WAITING)
        self._thread = threading.Thread(target=self._run, name="tls-refusals", daemon=True)
        self._thread.start()

    def offer(self, request: socket.socket) -> bool:
        """Queue *request* for its 503; False if too many wait (the caller closes it)."""
        try:
            self._waiting.put_nowait(request)
        except queue.Full:
            return False
        return True

    def _run(self) -> None:
        while (request := self._waiting.get()) is not None:
            try:
                request.settimeout(TLS_REFUSAL_SECONDS)
                request.do_handshake()
                request.sendall(self._answer())
            except OSError:  # ssl.SSLError, a reset, the timeout: nothing more to say
                pass
            except Exception:  # a bug: logged, and the next client still gets its 503
                logger.exception("answering a connection past the cap")
            finally:
                self._close(request)

    def close(self) -> None:
        """Close the connections still waiting, then stop the thread."""
        with contextlib.suppress(queue.Empty):
            while True:
                request = self._waiting.get_nowait()
                if request is not None:
                    self._close(request)
        self._waiting.put(None)  # room now: the queue was just emptied
        self._thread.join(TLS_REFUSAL_SECONDS + 1)


class Server(http.server.ThreadingHTTPServer):
    """Answers HTTP from *app* (see :class:`.routes.App`) on the settings' address, or
    on *listener*, a listening socket that worker processes share (see
    :func:`listening_socket`); closing the server closes the app."""

    daemon_threads = True
    allow_reuse_address = True
    linger_seconds = LINGER_SECONDS
    # Connections the kernel holds while none is accepted yet (Linux caps it at
    # net.core.somaxconn): a fleet's jobs starting together must not have their SYNs
    # dropped and retried a second later (RFC 6298's initial retransmission timeout).
    request_queue_size = 1024

    def __init__(self, app: App, settings: Settings, listener: Optional[socket.socket] = None) -> None:
        # What the handlers read (see routes.ProxyHandler); set before binding: a failed
        # bind calls server_close, which reads them.
        self.app = app
        self.in_flight = InFlight()
        self.client_timeout = settings.client_timeout
        self._max_connections = settings.max_connections
        self._refused = 0
        self._refused_warned = -float("inf")
        self._tls_refusals: Optional[_TlsRefusals] = None
        # shutdown() wakes serve_forever() through this pair rather than at its next poll.
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_write.setblocking(False)
        self._stop_asked = False
        self._stopped = threading.Event()
        self._stopped.set()
        closings = app.metrics.connections_closed
        for reason in CLOSE_REASONS:  # shown as 0 from the start
            closings.inc(reason, amount=0)
        # A head is also held to the client timeout, the longest a client may be silent.
        header_timeout = min(settings.header_timeout, settings.client_timeout)
        limits = Limits(settings.max_connections, settings.threads, header_timeout, settings.client_timeout)
        self.connections = ConnectionLayer(limits, self._start_thread, closings.inc, probe_answer)
        app.metrics.connection_gauges(self.connections.counts)
        if listener is None:
            super().__init__((settings.host, settings.port), ProxyHandler)
        else:
            super().__init__(listener.getsockname()[:2], ProxyHandler, bind_and_activate=False)
            self.socket.close()
            self.socket = listener
            self.server_address = listener.getsockname()
        self.address_text = address_text(self.server_address)
        if settings.tls_cert and settings.tls_key:
            # Accepted connections are wrapped without a handshake; the selector does it
            # without blocking, so a slow or broken client holds up no thread.
            self.socket = server_context(settings.tls_cert, settings.tls_key).wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )
            self._tls_refusals = _TlsRefusals(overloaded_response, self.shutdown_request)

    # ------------------------------------------------------------------ connections

    def process_request(self, request: socket.socket, client_address) -> None:
        """A new connection goes to the selector, which hands it to a request thread once
        its head is in; past the cap (every connection busy), 503 at once."""
        if not self.connections.admit():
            return self._refuse(request)
        request.setblocking(False)
        self.connections.add(Connection(request, client_address, time.monotonic()))

    def _start_thread(self, connection: Connection) -> None:
        socketserver.ThreadingMixIn.process_request(self, connection, connection.address)

    def process_request_thread(self, request: Connection, client_address) -> None:
        """Answer a connection's requests, then those waiting for a thread, if any."""
        connection: Optional[Connection] = request
        while connection is not None:
            try:
                self.finish_request(connection, connection.address)
            except Exception:
                connection.keep = False
                self.handle_error(connection.sock, connection.address)
            connection = self.connections.done(connection)

    def linger(self) -> float:
        """A request thread waits for the next request only while no other waits."""
        return 0.0 if self.connections.waiting() else self.linger_seconds

    def _refuse(self, request: socket.socket) -> None:
        """Answer 503 and close. Runs in the accepting thread only (so the counters
        need no lock) and never waits on this client: the answer fits in the socket's
        send buffer, and one that cannot take even that is simply closed. Over TLS the
        answer goes out from another thread, after a handshake (see _TlsRefusals)."""
        if self._tls_refusals is None:
            with contextlib.suppress(OSError):
                request.setblocking(False)
                request.send(overloaded_response())
            self.shutdown_request(request)
            how = "get 503"
        else:
            if not self._tls_refusals.offer(request):
                self.shutdown_request(request)
            how = f"get 503 after a TLS handshake, one at a time (closed at once past {TLS_REFUSALS_WAITING} waiting)"
        self.app.metrics.connections_closed.inc("refused")
        now = time.monotonic()
        self._refused += 1
        if now - self._refused_warned >= REFUSAL_WARNING_INTERVAL:
            logger.warning(
                "%d connections open, the cap (--max-connections): new ones %s "
                "(%d refused since the last such warning)",
                self._max_connections,
                how,
                self._refused,
            )
            self._refused_warned = now
            self._refused = 0

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Accept connections until :meth:`shutdown`, which ends the loop at once (the
        loop of socketserver notices it only at its next poll)."""
        self._stopped.clear()
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self, selectors.EVENT_READ)
                selector.register(self._wake_read, selectors.EVENT_READ)
                while not self._stop_asked:
                    ready = [key.fileobj for key, _ in selector.select(poll_interval)]
                    if self._stop_asked:
                        break
                    if self._wake_read in ready:  # left by a shutdown before this serve
                        self._wake_read.recv(64)
                    if self in ready:
                        self._handle_request_noblock()
                    self.service_actions()
        finally:
            self._stop_asked = False
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop accepting, and close the idle connections at once (see :meth:`drain`);
        returns once :meth:`serve_forever` has returned."""
        self.connections.drain()
        self._stop_asked = True
        # BlockingIOError: a wake already waits, one is enough; OSError: the server is
        # closed already (a second stop signal while it drains).
        with contextlib.suppress(OSError):
            self._wake_write.send(b"\0")
        self._stopped.wait()

    def stop_listening(self) -> None:
        """Close the listening socket (this process's hold on it): a connection tried from
        now on is refused, not queued until the drain ends and then reset."""
        self.socket.close()

    def drain(self, timeout: float) -> bool:
        """Close the idle connections, and wait up to *timeout* seconds for responses in
        flight; True if none is left. Answers from now on close their connection."""
        self.connections.drain()
        return self.in_flight.drain(timeout)

    def handle_error(self, request, client_address) -> None:
        """A client that resets its connection is routine; anything else is a bug."""
        error = sys.exc_info()[1]
        if isinstance(error, CLIENT_GONE):
            logger.debug("connection from %s ended: %s", client_address[0], error)
        else:
            logger.exception("error on the connection from %s", client_address[0])

    def server_close(self) -> None:
        """Close the socket, the idle connections, those waiting for a TLS 503, then the app."""
        super().server_close()
        self._wake_read.close()
        self._wake_write.close()
        self.connections.close()
        if self._tls_refusals is not None:
            self._tls_refusals.close()
        self.app.close()


def listening_socket(settings: Settings) -> socket.socket:
    """A socket bound and listening as a Server's own, to be shared by worker
    processes. Non-blocking: every worker wakes for a new connection and only one
    accepts it; the others must go back to waiting, not block in accept()."""
    listener = socket.socket(Server.address_family, Server.socket_type)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((settings.host, settings.port))
        listener.listen(Server.request_queue_size)
        listener.setblocking(False)
    except BaseException:
        listener.close()
        raise
    return listener
