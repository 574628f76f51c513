"""Prefetch: the pages of the projects a served ``.metadata`` requires, fetched in the
background before the client asks for them (pip and uv ask next for exactly those).

One level per metadata served (the client's next metadata drives the next), on a pool
of *jobs* threads; a page is fetched through the catalog as a client's request would
be, so guard rails apply and a client asking meanwhile joins the one fetch.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Optional

from ..core.errors import Forbidden, NotFound, ProxpiError
from ..core.names import NormalizedName
from ..core.wheelmeta import requirements
from ..infra.metrics import Metrics
from .catalog import Catalog

__all__ = ["Prefetcher"]

logger = logging.getLogger(__name__)

MAX_QUEUED = 1000  # pages waiting for a thread; past this, prefetches are dropped
MAX_REMEMBERED = 10_000  # prefetched pages remembered until a client asks for them


class Prefetcher:
    """Fetches the pages a served metadata's ``Requires-Dist`` names, *jobs* at once."""

    def __init__(self, catalog: Catalog, jobs: int, metrics: Metrics) -> None:
        self._catalog = catalog
        self._jobs = jobs
        self._lock = threading.Lock()
        self._queue: "collections.deque[NormalizedName]" = collections.deque()
        self._queued: set = set()  # names queued or being fetched
        self._threads = 0
        self._idle = threading.Condition(self._lock)
        self._busy = 0
        self._fetched: "collections.OrderedDict[str, None]" = collections.OrderedDict()
        self._total = metrics.registry.counter(
            "proxpi_prefetch_total",
            "Prefetches of what a client will ask next, by kind and outcome.",
            ("kind", "outcome"),
        )
        self._used = metrics.registry.counter(
            "proxpi_prefetch_used_total", "Prefetched pages a client then asked for.", ("kind",)
        )
        self._used.inc("page", amount=0)
        catalog.page_requested = self.page_requested

    def metadata_served(self, project: NormalizedName, metadata: bytes) -> None:
        """Queue the pages of the projects *metadata* requires (an extra's left out)."""
        try:
            names = requirements(metadata)
        except (ValueError, UnicodeError):
            return
        start = 0
        with self._lock:
            for name in names:
                if name == project or name in self._queued:
                    continue
                if len(self._queue) >= MAX_QUEUED:
                    self._total.inc("page", "dropped")
                    continue
                self._queue.append(name)
                self._queued.add(name)
            while self._threads < self._jobs and self._threads < self._busy + len(self._queue):
                self._threads += 1
                start += 1
        for _ in range(start):
            threading.Thread(target=self._work, name="proxpi-prefetch", daemon=True).start()

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._threads -= 1
                    self._idle.notify_all()
                    return
                name = self._queue.popleft()
                self._busy += 1
            outcome = self._fetch(name)
            self._total.inc("page", outcome)
            with self._lock:
                self._busy -= 1
                self._queued.discard(name)
                if outcome == "fetched":
                    self._fetched[name] = None
                    while len(self._fetched) > MAX_REMEMBERED:
                        self._fetched.popitem(last=False)

    def _fetch(self, name: NormalizedName) -> str:
        try:
            return "fetched" if self._catalog.bring_in(name) else "fresh"
        except NotFound:
            return "not_found"
        except Forbidden:
            return "refused"
        except ProxpiError as exc:
            logger.warning("prefetch of %s failed: %s", name, exc.message)
            return "error"
        except Exception:  # a prefetch must never take a thread of the pool down
            logger.exception("prefetch of %s failed", name)
            return "error"

    def page_requested(self, name: NormalizedName) -> None:
        """A client asked for project *name*'s page: count it if we prefetched it."""
        if name in self._fetched:
            with self._lock:
                used = self._fetched.pop(name, False) is None
            if used:
                self._used.inc("page")

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait until nothing is queued or being fetched (tests, shutdown)."""
        with self._lock:
            return self._idle.wait_for(lambda: self._threads == 0, timeout)
