"""The server: builds the caches from the settings, accepts connections (one thread
each, handled by :class:`.handler.ProxyHandler`) and drains responses at shutdown."""

from __future__ import annotations

import contextlib
import http.server
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from typing import Optional

from .config import IndexSettings, Settings
from .file_cache import FileCache
from .errors import Overloaded
from .handler import ProxyHandler, refusal
from .index_cache import IndexCache, Indexes
from .page_store import PageStore
from .shared_dir import remove_temp_files
from .upstream import Upstream

__all__ = ["ProxyServer", "listening_socket"]

logger = logging.getLogger(__name__)

# While connections are refused at the cap, one WARNING a minute says so.
REFUSAL_WARNING_INTERVAL = 60.0


class ProxyServer(http.server.ThreadingHTTPServer):
    """The proxy: settings, caches and upstream connections hang off this object."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, settings: Settings, listener: Optional[socket.socket] = None) -> None:
        """Bind to the settings' address, or serve *listener*, a listening socket that
        worker processes share (see :func:`listening_socket`)."""
        self.settings = settings
        self._temp_dir = None if settings.cache_dir else tempfile.mkdtemp(prefix="proxpi-")
        self.cache_dir = os.path.abspath(settings.cache_dir or self._temp_dir)
        os.makedirs(self.cache_dir, exist_ok=True)
        remove_temp_files(os.path.join(self.cache_dir, "index"))
        self.upstream = Upstream(
            settings.connect_timeout,
            settings.read_timeout,
            settings.verify_ssl,
            [index.url for index in settings.indexes],
        )
        self.files = FileCache(
            os.path.join(self.cache_dir, "files"), settings.cache_size, self.upstream, settings.offline
        )
        stores = [(index, PageStore(self.cache_dir, index.url)) for index in settings.indexes]
        if settings.offline:
            # A copied cache dir is served whatever index URLs filled it: pages saved for
            # other indices come after the configured ones.
            known = {store.directory for _, store in stores}
            stores += [
                (IndexSettings(url, 0.0), store)
                for url, store in PageStore.saved_indexes(self.cache_dir)
                if store.directory not in known
            ]
        self.indexes = Indexes(
            [IndexCache(index, self.upstream, store, settings.offline) for index, store in stores],
            settings.page_memory,
            offline=settings.offline,
            is_cached=self.files.has,
            cache_generation=lambda: self.files.generation,
        )
        # Clients may reuse a page as long as we would ourselves (capped at PyPI's 600 s).
        self.page_cache_control = f"max-age={int(min(min(i.ttl for i in settings.indexes), 600))}, public"
        self.stopping = False
        self._in_flight = 0
        self._in_flight_changed = threading.Condition()
        self._connections = 0
        self._connections_lock = threading.Lock()
        self._refused = 0
        self._refused_warned = -float("inf")
        if listener is None:
            super().__init__((settings.host, settings.port), ProxyHandler)
        else:
            super().__init__(listener.getsockname()[:2], ProxyHandler, bind_and_activate=False)
            self.socket.close()
            self.socket = listener
            self.server_address = listener.getsockname()

    # ------------------------------------------------------------------ connections

    def process_request(self, request: socket.socket, client_address) -> None:
        """A thread per connection, up to the cap; past it, 503 at once and no thread."""
        with self._connections_lock:
            full = self._connections >= self.settings.max_connections
            if not full:
                self._connections += 1
        if full:
            return self._refuse(request)
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started (e.g. none left): not counted
            with self._connections_lock:
                self._connections -= 1
            raise

    def process_request_thread(self, request: socket.socket, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections -= 1

    def _refuse(self, request: socket.socket) -> None:
        """Answer 503 and close. Runs in the accepting thread only (so the counters
        need no lock) and never waits on this client: the answer fits in the socket's
        send buffer, and one that cannot take even that is simply closed."""
        with contextlib.suppress(OSError):
            request.setblocking(False)
            request.send(refusal(Overloaded("too many connections; retry in a second")))
        self.shutdown_request(request)
        now = time.monotonic()
        self._refused += 1
        if now - self._refused_warned >= REFUSAL_WARNING_INTERVAL:
            logger.warning(
                "%d connections open, the cap (--max-connections): new ones get 503 "
                "(%d refused since the last such warning)",
                self.settings.max_connections,
                self._refused,
            )
            self._refused_warned = now
            self._refused = 0

    def request_started(self) -> None:
        with self._in_flight_changed:
            self._in_flight += 1

    def request_finished(self) -> None:
        with self._in_flight_changed:
            self._in_flight -= 1
            if self.stopping:  # only drain() waits
                self._in_flight_changed.notify_all()

    def drain(self, timeout: float) -> bool:
        """Wait up to *timeout* seconds for responses in flight; True if none is left."""
        self.stopping = True
        with self._in_flight_changed:
            return self._in_flight_changed.wait_for(lambda: self._in_flight == 0, timeout)

    def handle_error(self, request, client_address) -> None:
        """A client that resets its connection is routine; anything else is a bug."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, socket.timeout)):
            logger.debug("connection from %s ended: %s", client_address[0], error)
        else:
            logger.exception("error on the connection from %s", client_address[0])

    def server_close(self) -> None:
        """Close the socket, upstream connections and temp files (and a temp cache dir)."""
        super().server_close()
        self.files.close()
        self.upstream.close()
        if self._temp_dir:
            shutil.rmtree(self._temp_dir, ignore_errors=True)


def listening_socket(settings: Settings) -> socket.socket:
    """A socket bound and listening as ProxyServer's own, to be shared by worker
    processes. Non-blocking: every worker wakes for a new connection and only one
    accepts it; the others must go back to waiting, not block in accept()."""
    listener = socket.socket(ProxyServer.address_family, ProxyServer.socket_type)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((settings.host, settings.port))
        listener.listen(ProxyServer.request_queue_size)
        listener.setblocking(False)
    except BaseException:
        listener.close()
        raise
    return listener
