"""The server: builds the caches from the settings, accepts connections (one thread
each, handled by :class:`.routes.ProxyHandler`, over TLS when configured) and drains
responses at shutdown."""

from __future__ import annotations

import contextlib
import http.server
import logging
import os
import queue
import shutil
import socket
import ssl
import sys
import tempfile
import threading
import time
from typing import Callable, NamedTuple, Optional

from .. import __version__
from ..infra.background import Background
from ..core.settings import IndexSettings, Settings
from ..files.file_cache import FileCache
from ..core.errors import Overloaded
from .routes import CLIENT_GONE, ProxyHandler, refusal
from ..index.index_cache import IndexCache, merged_health
from ..index.catalog import Indexes
from ..infra.metrics import TOP, Metrics, merge, total
from ..index.page_store import PageStore
from ..core.policy import Policy
from ..infra.shared_dir import remove_temp_files
from ..infra.snapshots import Snapshots
from ..infra.tls import describe_trust, server_context
from ..index.upstream import Upstream

__all__ = ["Caches", "ProxyServer", "address_text", "listening_socket", "open_caches", "upstream_route"]

logger = logging.getLogger(__name__)

# While connections are refused at the cap, one WARNING a minute says so.
REFUSAL_WARNING_INTERVAL = 60.0
# Past the cap over TLS, the 503 needs a handshake first: one thread does those, each
# given this long, and closes at once the connections beyond this many waiting.
TLS_REFUSAL_SECONDS = 1.0
TLS_REFUSALS_WAITING = 64


def address_text(address: tuple) -> str:
    """A socket address as ``host:port`` (an IPv6 host in brackets, RFC 3986 3.2.2)."""
    host, port = address[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def upstream_route(settings: Settings) -> str:
    """How upstreams are reached, for the start-up line and the home page."""
    return f"{describe_trust(settings.ca_bundle, settings.verify_ssl)}; {settings.upstream_proxy.describe()}"


class Caches(NamedTuple):
    upstream: Upstream
    files: FileCache
    indexes: Indexes
    policy: Policy


def open_caches(settings: Settings, cache_dir: str, metrics: Optional[Metrics] = None) -> Caches:
    """The upstream connections and the caches on *cache_dir*, as *settings* say: the
    server's, and the ``warm`` command's (so both store files and pages alike)."""
    metrics = metrics or Metrics()
    remove_temp_files(os.path.join(cache_dir, "index"))
    upstream = Upstream(
        settings.connect_timeout,
        settings.read_timeout,
        settings.verify_ssl,
        [index.url for index in settings.indexes],
        ca_bundle=settings.ca_bundle,
        proxies=settings.upstream_proxy,
    )
    files = FileCache(os.path.join(cache_dir, "files"), settings.cache_size, upstream, settings.offline, metrics)
    stores = [(index, PageStore(cache_dir, index.url)) for index in settings.indexes]
    if settings.offline:
        # A copied cache dir is served whatever index URLs filled it: pages saved for
        # other indices come after the configured ones.
        known = {store.directory for _, store in stores}
        stores += [
            (IndexSettings(url, 0.0), store)
            for url, store in PageStore.saved_indexes(cache_dir)
            if store.directory not in known
        ]
    # Guard rails over every index the proxy asks (offline: the saved ones too).
    policy = Policy.from_settings(settings, [index.url for index, _ in stores])
    # Pages are saved and compressed after their answer (Indexes.close finishes them).
    background = Background()
    indexes = Indexes(
        [
            IndexCache(index, upstream, store, settings.offline, metrics=metrics, background=background)
            for index, store in stores
        ],
        settings.page_memory,
        offline=settings.offline,
        is_cached=files.has,
        cache_generation=lambda: files.generation,
        metrics=metrics,
        policy=policy,
        background=background,
    )
    return Caches(upstream, files, indexes, policy)


def _overloaded() -> bytes:
    """The whole 503 a connection past the cap gets."""
    return refusal(Overloaded("too many connections; retry in a second"))


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


class ProxyServer(http.server.ThreadingHTTPServer):
    """The proxy: settings, caches and upstream connections hang off this object."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self, settings: Settings, listener: Optional[socket.socket] = None, run_dir: Optional[str] = None
    ) -> None:
        """Bind to the settings' address, or serve *listener*, a listening socket that
        worker processes share (see :func:`listening_socket`); a worker's numbers go to
        *run_dir*, where its siblings' are (see :mod:`.snapshots`)."""
        self.settings = settings
        self._temp_dir = None if settings.cache_dir else tempfile.mkdtemp(prefix="proxpi-")
        self.cache_dir = os.path.abspath(settings.cache_dir or self._temp_dir)
        os.makedirs(self.cache_dir, exist_ok=True)
        self.metrics = Metrics()
        self.upstream, self.files, self.indexes, self.policy = open_caches(settings, self.cache_dir, self.metrics)
        self._register_gauges()
        # Clients may reuse a page as long as we would ourselves (capped at PyPI's 600 s).
        self.page_cache_control = f"max-age={int(min(min(i.ttl for i in settings.indexes), 600))}, public"
        self.stopping = False
        self._in_flight = 0
        # Counted per request under the plain lock (cheaper to take than the
        # condition, a Python object); drain() waits on the condition built on it.
        self._in_flight_lock = threading.Lock()
        self._in_flight_changed = threading.Condition(self._in_flight_lock)
        self._connections = 0
        self._connections_lock = threading.Lock()
        self._refused = 0
        self._refused_warned = -float("inf")
        self._tls_refusals: Optional[_TlsRefusals] = None
        # Set before binding: a failed bind calls server_close, which reads it.
        self.snapshots: Optional[Snapshots] = None
        if listener is None:
            super().__init__((settings.host, settings.port), ProxyHandler)
        else:
            super().__init__(listener.getsockname()[:2], ProxyHandler, bind_and_activate=False)
            self.socket.close()
            self.socket = listener
            self.server_address = listener.getsockname()
        self.address_text = address_text(self.server_address)
        self.upstream_route = upstream_route(settings)
        if settings.tls_cert and settings.tls_key:
            # Accepted connections are wrapped without a handshake; finish_request does
            # it in the connection's own thread, so a slow or broken client never holds
            # up the accept loop.
            self.socket = server_context(settings.tls_cert, settings.tls_key).wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )
            self._tls_refusals = _TlsRefusals(_overloaded, self.shutdown_request)
        if run_dir is not None:
            self.snapshots = Snapshots(run_dir, self._snapshot)
            self.snapshots.start()

    def _register_gauges(self) -> None:
        """Numbers the file cache and the policy keep anyway, read at each scrape (no
        directory walk)."""
        add, files = self.metrics.registry.collector, self.files
        # The cache dir's numbers are its own, the same whichever worker reads them: not
        # summed over workers (shared). The others are this process's, summed.
        for name, help_text, value in (
            ("proxpi_file_cache_size_bytes", "Bytes stored in the cache dir.", lambda: files.stats()[0]),
            ("proxpi_file_cache_limit_bytes", "The cache dir's cap in bytes.", lambda: files.cap),
            ("proxpi_file_cache_files", "Files stored in the cache dir.", lambda: files.stats()[1]),
        ):
            add(name, "gauge", help_text, lambda value=value: [({}, value())], shared=True)
        policy_counts = self.policy.counts
        add(
            "proxpi_policy_hidden_files_total",
            "counter",
            "Files a policy left out of pages, counted each time a page is built, by policy.",
            lambda: [({"policy": name}, n) for (what, name), n in sorted(policy_counts().items()) if what == "hidden"],
        )
        add(
            "proxpi_policy_refused_total",
            "counter",
            "Page and file requests a policy refused, by policy.",
            lambda: [({"policy": name}, n) for (what, name), n in sorted(policy_counts().items()) if what == "refused"],
        )
        add(
            "proxpi_downloads_in_progress",
            "gauge",
            "Upstream downloads into the cache dir now running.",
            lambda: [({}, files.downloads_in_progress())],
        )

    def _snapshot(self) -> dict:
        """This process's numbers, as a worker shares them (JSON-ready)."""
        return {"metrics": self.metrics.snapshot(), "indexes": [cache.health() for cache in self.indexes.caches]}

    def _numbers(self) -> tuple:
        """(metrics snapshot, index health list) of the whole proxy: this process's, or
        with workers, merged over every worker's (others' at most a second behind)."""
        if self.snapshots is None:
            own = self._snapshot()
            return own["metrics"], own["indexes"]
        workers = self.snapshots.gather()
        metrics = merge([{**worker["metrics"], "live": worker["live"]} for worker in workers])
        health = []
        for own in workers[0]["indexes"]:
            reports = [
                (index, worker["live"]) for worker in workers for index in worker["indexes"] if index["url"] == own["url"]
            ]
            health.append(merged_health(reports))
        return metrics, health

    def metrics_text(self) -> bytes:
        """``GET /metrics``: the Prometheus text of the whole proxy."""
        return self.metrics.exposition(self._numbers()[0])

    def status(self) -> dict:
        """What the home page shows, as a JSON-ready dict (``GET /`` with JSON)."""
        metrics, health = self._numbers()
        used, count = self.files.stats()
        return {
            "version": __version__,
            "now": time.time(),
            "offline": self.settings.offline,
            "upstream_route": self.upstream_route,
            "policies": self.policy.describe(),
            **self.metrics.summary(metrics),
            "file_cache": {
                "directory": self.cache_dir,
                "used_bytes": used,
                "limit_bytes": self.files.cap,
                "files": count,
                "downloads_in_progress": int(total(metrics, "proxpi_downloads_in_progress")),
                "largest": [
                    {"project": project, "filename": name, "size": size}
                    for project, name, size in self.files.largest(TOP)
                ],
            },
            "indexes": health,
        }

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
        send buffer, and one that cannot take even that is simply closed. Over TLS the
        answer goes out from another thread, after a handshake (see _TlsRefusals)."""
        if self._tls_refusals is None:
            with contextlib.suppress(OSError):
                request.setblocking(False)
                request.send(_overloaded())
            self.shutdown_request(request)
            how = "get 503"
        else:
            if not self._tls_refusals.offer(request):
                self.shutdown_request(request)
            how = f"get 503 after a TLS handshake, one at a time (closed at once past {TLS_REFUSALS_WAITING} waiting)"
        now = time.monotonic()
        self._refused += 1
        if now - self._refused_warned >= REFUSAL_WARNING_INTERVAL:
            logger.warning(
                "%d connections open, the cap (--max-connections): new ones %s "
                "(%d refused since the last such warning)",
                self.settings.max_connections,
                how,
                self._refused,
            )
            self._refused_warned = now
            self._refused = 0

    def request_started(self) -> None:
        with self._in_flight_lock:
            self._in_flight += 1

    def request_finished(self) -> None:
        with self._in_flight_lock:
            self._in_flight -= 1
            if self.stopping:  # only drain() waits
                self._in_flight_changed.notify_all()

    def drain(self, timeout: float) -> bool:
        """Wait up to *timeout* seconds for responses in flight; True if none is left."""
        self.stopping = True
        with self._in_flight_changed:
            return self._in_flight_changed.wait_for(lambda: self._in_flight == 0, timeout)

    def finish_request(self, request, client_address) -> None:
        """Handle one connection: over TLS, the handshake first, bounded by the client
        timeout. A failed one (a plain-HTTP request, a client that distrusts our
        certificate, a port scanner) concerns only that client."""
        if isinstance(request, ssl.SSLSocket):
            request.settimeout(self.settings.client_timeout)
            try:
                request.do_handshake()
            except OSError as exc:  # ssl.SSLError, a reset, or the timeout
                logger.debug("TLS handshake with %s failed: %s", client_address[0], exc)
                return
        super().finish_request(request, client_address)

    def handle_error(self, request, client_address) -> None:
        """A client that resets its connection is routine; anything else is a bug."""
        error = sys.exc_info()[1]
        if isinstance(error, CLIENT_GONE):
            logger.debug("connection from %s ended: %s", client_address[0], error)
        else:
            logger.exception("error on the connection from %s", client_address[0])

    def server_close(self) -> None:
        """Close the socket, upstream connections and temp files (and a temp cache dir)."""
        super().server_close()
        if self._tls_refusals is not None:
            self._tls_refusals.close()
        self.indexes.close()
        if self.snapshots is not None:
            self.snapshots.close()
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
