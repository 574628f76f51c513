"""The server: builds the caches from the settings, accepts connections (one thread
each, handled by :class:`.handler.ProxyHandler`) and drains responses at shutdown."""

from __future__ import annotations

import http.server
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading

from .config import IndexSettings, Settings
from .file_cache import FileCache
from .handler import ProxyHandler
from .index_cache import IndexCache, Indexes
from .page_store import PageStore
from .policy import Policy
from .shared_dir import remove_temp_files
from .upstream import Upstream

__all__ = ["ProxyServer"]

logger = logging.getLogger(__name__)


class ProxyServer(http.server.ThreadingHTTPServer):
    """The proxy: settings, caches and upstream connections hang off this object."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, settings: Settings) -> None:
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
        # Guard rails over every index the proxy asks (offline: the saved ones too).
        self.policy = Policy.from_settings(settings, [index.url for index, _ in stores])
        self.indexes = Indexes(
            [IndexCache(index, self.upstream, store, settings.offline) for index, store in stores],
            settings.page_memory,
            offline=settings.offline,
            is_cached=self.files.has,
            cache_generation=lambda: self.files.generation,
            policy=self.policy,
        )
        # Clients may reuse a page as long as we would ourselves (capped at PyPI's 600 s).
        self.page_cache_control = f"max-age={int(min(min(i.ttl for i in settings.indexes), 600))}, public"
        self.stopping = False
        self._in_flight = 0
        self._in_flight_changed = threading.Condition()
        super().__init__((settings.host, settings.port), ProxyHandler)

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
