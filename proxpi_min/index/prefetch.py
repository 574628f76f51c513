"""Prefetch: the pages of the projects a served ``.metadata`` requires, fetched in the
background before the client asks for them (pip and uv ask next for exactly those), and
optionally the metadata of the wheel the client will then pick.

One level per metadata served (the client's next metadata drives the next), on a pool
of *jobs* threads; a page is fetched through the catalog as a client's request would
be, so guard rails apply and a client asking meanwhile joins the one fetch.
"""

from __future__ import annotations

import collections
import functools
import logging
import threading
from typing import Optional, Protocol

from ..core.errors import Forbidden, NotFound, ProxpiError
from ..core.names import NormalizedName
from ..core.simple import FileEntry
from ..core.wheelmeta import BrokenWheel, requirements
from ..core.wheelpick import Tags, pick_wheel, wheel_tags
from ..infra.metrics import Metrics
from ..infra.pool import WorkerPool
from .catalog import LOCAL_ORIGIN, Catalog

__all__ = ["MetadataSource", "Prefetcher"]

logger = logging.getLogger(__name__)

MAX_QUEUED = 1000  # pages waiting for a thread; past this, prefetches are dropped
MAX_REMEMBERED = 10_000  # prefetched pages and metadata remembered until a client asks


class MetadataSource(Protocol):
    """Where prefetched metadata comes from (``files.metadata.WheelMetadata``)."""

    def prefetch(self, project: NormalizedName, entry: FileEntry, index: str = "") -> bool:
        """Store *entry*'s metadata; False if it was already stored or cannot be had."""


class Prefetcher:
    """Fetches the pages a served metadata's ``Requires-Dist`` names, *jobs* at once;
    with a *metadata* source, also the metadata of the wheel each page's client will
    likely pick (tags like the wheel whose metadata was served)."""

    def __init__(
        self, catalog: Catalog, jobs: int, metrics: Metrics, metadata: Optional[MetadataSource] = None
    ) -> None:
        self._catalog = catalog
        self._metadata = metadata
        self._lock = threading.Lock()
        self._pool = WorkerPool(jobs, MAX_QUEUED, "proxpi-prefetch")
        self._queued: set = set()  # names queued or being fetched
        self._closed = False  # shutting down: nothing more is queued
        self._like: Optional[Tags] = None  # the last platform wheel a client asked about
        self._fetching: set = set()  # (project, wheel) whose metadata we are storing
        self._fetched: "collections.OrderedDict[tuple, None]" = collections.OrderedDict()  # (kind, ...)
        self._total = metrics.prefetched
        self._used = metrics.prefetch_used
        for kind in ("page", "metadata") if metadata is not None else ("page",):
            self._used.inc(kind, amount=0)
        catalog.page_requested = self.page_requested

    def metadata_served(self, project: NormalizedName, filename: str, metadata: bytes) -> None:
        """A client got the metadata of wheel *filename*: queue the pages of the
        projects it requires (an extra's left out)."""
        with self._lock:
            if self._closed or (project, filename) in self._fetching:
                return  # shutting down, or our own prefetch being stored (the client drives the next level)
        self._count_used(("metadata", project, filename))
        try:
            names = requirements(metadata)
        except (ValueError, UnicodeError):
            return
        like = wheel_tags(filename)
        with self._lock:
            if like is not None and not like.pure:
                self._like = like
            like = self._like if like is None or like.pure else like
            for name in names:
                if name == project or name in self._queued:
                    continue
                if self._pool.submit(functools.partial(self._prefetch, name, like)):
                    self._queued.add(name)
                else:
                    self._total.inc("page", "dropped")

    def _prefetch(self, name: NormalizedName, like: Optional[Tags]) -> None:
        try:
            page = self._page(name)
            if page is not None and self._metadata is not None:
                self._wheel_metadata(name, page, like)
        finally:
            with self._lock:
                self._queued.discard(name)

    def _page(self, name: NormalizedName):
        """The page, brought into memory (counted); None if there is none to use."""
        outcome, page = "error", None
        try:
            fetched, page = self._catalog.bring_in(name)
            outcome = "fetched" if fetched else "fresh"
        except NotFound:
            outcome = "not_found"
        except Forbidden:
            outcome = "refused"
        except ProxpiError as exc:
            logger.warning("prefetch of the page of %s failed: %s", name, exc.message)
        except Exception:  # a prefetch must never take a thread of the pool down
            logger.exception("prefetch of the page of %s failed", name)
        self._total.inc("page", outcome)
        if outcome == "fetched":
            self._remember(("page", name))
        return page

    def _wheel_metadata(self, name: NormalizedName, page, like: Optional[Tags]) -> None:
        entry = pick_wheel(page.files, like)
        if entry is None:
            return
        key = (name, entry.filename)
        with self._lock:
            self._fetching.add(key)
        outcome = "error"
        try:
            location = self._catalog.locate_file(name, entry.filename)
            if location.index == LOCAL_ORIGIN:  # the local index's own wheel: nothing to fetch
                outcome = "fresh"
            else:
                outcome = "fetched" if self._metadata.prefetch(name, location.entry, location.index) else "fresh"
        except BrokenWheel:
            outcome = "broken"
        except (NotFound, Forbidden):
            outcome = "not_found"
        except ProxpiError as exc:
            logger.warning("prefetch of the metadata of %s failed: %s", entry.filename, exc.message)
        except Exception:  # a prefetch must never take a thread of the pool down
            logger.exception("prefetch of the metadata of %s failed", entry.filename)
        finally:
            with self._lock:
                self._fetching.discard(key)
        self._total.inc("metadata", outcome)
        if outcome == "fetched":
            self._remember(("metadata", *key))

    def _remember(self, key: tuple) -> None:
        with self._lock:
            self._fetched[key] = None
            while len(self._fetched) > MAX_REMEMBERED:
                self._fetched.popitem(last=False)

    def _count_used(self, key: tuple) -> None:
        if key in self._fetched:
            with self._lock:
                used = self._fetched.pop(key, False) is None
            if used:
                self._used.inc(key[0])

    def page_requested(self, name: NormalizedName) -> None:
        """A client asked for project *name*'s page: count it if we prefetched it."""
        self._count_used(("page", name))

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait until nothing is queued or being fetched (tests, shutdown)."""
        return self._pool.wait(timeout)

    def close(self, timeout: float) -> None:
        """Queue nothing more, drop what waits, and give the fetches under way *timeout*
        seconds to end, so that none writes to caches being closed."""
        with self._lock:
            self._closed = True
        self._pool.close(timeout)
