"""Download ahead: once a client starts downloading the wheels it resolved, the proxy
fetches the rest of them in the background.

pip resolves first, reading the ``.metadata`` of each wheel it picks, and only then
downloads the wheels, one after the other. A client's first whole download after such
metadata reads says its resolution is over: the other wheels whose metadata it read are
fetched at once, a few at a time, so that its next downloads are hits or join a download
under way. A client that only resolves (``pip install --dry-run``, ``uv pip compile``)
downloads nothing, so the proxy fetches no whole wheel for it. The wheels ahead of their
client take at most a share of the cache's cap; the rest wait for the client to ask for
those first.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import threading
import time
from typing import Callable, NamedTuple, Optional

from ..core.errors import ProxpiError
from ..core.names import NormalizedName
from ..core.simple import FileEntry
from ..infra.metrics import Metrics
from ..infra.pool import WorkerPool
from .file_cache import FileCache
from .layout import Target

__all__ = ["DownloadAhead"]

logger = logging.getLogger(__name__)

# A client's metadata reads further apart than this belong to separate resolutions.
SESSION_SECONDS = 300.0
# Clients whose resolution is remembered (the oldest dropped first), and wheels per
# resolution (a large one has a few hundred): some 200 bytes each, 100 MB at most.
MAX_CLIENTS = 256
MAX_WHEELS = 2000
MAX_QUEUED = 10_000  # wheels waiting for a thread; past this, the rest are dropped
MAX_REMEMBERED = 10_000  # files queued ahead, remembered until a client asks for them
# Fetching ahead must never fetch a file twice: the files ahead of their clients (queued,
# being fetched, or stored and not asked for in SESSION_SECONDS) take at most this share of
# the cap, so no download evicts them first; a file of unknown size is fetched alone,
# counted as large as the largest ahead.
AHEAD_SHARE = 0.5


class _Wheel(NamedTuple):
    project: NormalizedName
    entry: FileEntry
    index: str  # the listing index's URL, for the upstream metrics


class _Resolution:
    """The wheels one client read the metadata of, the latest per project (a resolver
    that backtracks reads older versions first, and keeps the last one it read)."""

    __slots__ = ("wheels", "last")

    def __init__(self, now: float) -> None:
        self.wheels: dict = {}  # project -> _Wheel
        self.last = now


class _Ahead:
    """A file queued ahead of its client."""

    __slots__ = ("began", "fetching", "size", "since")

    def __init__(self, size: Optional[int], now: float) -> None:
        self.began = False  # its fetch began: a client asking for it now counts as a use
        self.fetching = True  # queued or being fetched
        self.size = size  # the index's, the stored one once fetched; None: unknown
        self.since = now  # when it was queued, then stored


class DownloadAhead:
    """Fetches into *files* the wheels a client resolved, *jobs* at once, from its first
    whole download on; *clock* is monotonic seconds."""

    def __init__(
        self, files: FileCache, jobs: int, metrics: Metrics, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._files = files
        self._metrics = metrics
        self._clock = clock
        self._lock = threading.Lock()
        self._pool = WorkerPool(jobs, MAX_QUEUED, "proxpi-download-ahead")
        self._resolutions: "collections.OrderedDict[str, _Resolution]" = collections.OrderedDict()
        self._closed = False
        # (project, filename) of the files queued ahead -> their _Ahead: a client asking
        # for one counts as a use once its fetch began, even while it is still being
        # fetched (the client joins that download); not while it waits in the queue.
        self._ahead: "collections.OrderedDict[tuple, _Ahead]" = collections.OrderedDict()
        # (project, filename) -> (_Wheel, when its resolution ended): wheels to fetch
        # ahead once those ahead of them leave room under the cap's share.
        self._waiting: "collections.OrderedDict[tuple, tuple]" = collections.OrderedDict()
        metrics.prefetch_used.inc("file", amount=0)

    def metadata_read(self, client: str, project: NormalizedName, entry: FileEntry, index: str) -> None:
        """*client* read the metadata of wheel *entry*: remember it as the one it picked
        for *project*."""
        now = self._clock()
        with self._lock:
            resolution = self._resolutions.pop(client, None)
            if resolution is None or now - resolution.last > SESSION_SECONDS:
                resolution = _Resolution(now)
            resolution.last = now
            if project in resolution.wheels or len(resolution.wheels) < MAX_WHEELS:
                resolution.wheels.pop(project, None)
                resolution.wheels[project] = _Wheel(project, entry, index)
            self._resolutions[client] = resolution
            while len(self._resolutions) > MAX_CLIENTS:
                self._resolutions.popitem(last=False)

    def file_requested(self, client: str, project: NormalizedName, filename: str) -> None:
        """*client* asked for the whole file *filename*: if it is a wheel and the client
        had resolved others, fetch those not stored yet. (An sdist is no sign: pip
        downloads one in the middle of resolving, to build its metadata.)"""
        key = (project, filename)
        now = self._clock()
        dropped = 0
        with self._lock:
            ahead = self._ahead.pop(key, None)
            if ahead is not None and ahead.began:
                self._metrics.prefetch_used.inc("file")
            self._waiting.pop(key, None)  # the client fetches it itself
            resolution = self._resolutions.pop(client, None) if filename.endswith(".whl") else None
            if resolution is not None and not self._closed and now - resolution.last <= SESSION_SECONDS:
                for wheel in resolution.wheels.values():
                    wheel_key = (wheel.project, wheel.entry.filename)
                    if wheel_key != key and wheel_key not in self._ahead:
                        self._waiting[wheel_key] = (wheel, now)
                while len(self._waiting) > MAX_QUEUED:
                    self._waiting.popitem(last=False)
                    dropped += 1
            dropped += self._queue_within_share(now)
        if dropped:
            self._metrics.prefetched.inc("file", "dropped", amount=dropped)

    def _fetch(self, wheel: _Wheel) -> None:
        key = (wheel.project, wheel.entry.filename)
        with self._lock:
            ahead = self._ahead.get(key)
            if ahead is not None:  # else its client asked while it was queued, and fetches it
                ahead.began = True
        outcome = "error"
        try:
            if self._files.has(wheel.project, wheel.entry):
                outcome = "fresh"
            elif self._files.ensure(wheel.project, wheel.entry, index=wheel.index):
                outcome = "fetched"
            else:
                outcome = "not_stored"  # over the cap, or the cache dir cannot take it
        except ProxpiError as exc:
            logger.warning("download ahead of %s failed: %s", wheel.entry.filename, exc.message)
        except Exception:  # counted as an error like the others, then logged whole
            logger.exception("download ahead of %s failed", wheel.entry.filename)
        self._metrics.prefetched.inc("file", outcome)
        size = self._stored_size(wheel) if outcome == "fetched" else None
        with self._lock:
            ahead = self._ahead.get(key)
            if ahead is not None and size is None:  # not ours to count: stored before, or not at all
                del self._ahead[key]
            elif ahead is not None:
                ahead.fetching, ahead.size, ahead.since = False, size, self._clock()
            dropped = self._queue_within_share(self._clock())
        if dropped:
            self._metrics.prefetched.inc("file", "dropped", amount=dropped)

    def _stored_size(self, wheel: _Wheel) -> Optional[int]:
        """The size of a wheel just fetched ahead (None: evicted already)."""
        try:
            return os.path.getsize(Target(self._files.root, wheel.project, wheel.entry, False).path)
        except (OSError, ProxpiError):
            return None

    def _queue_within_share(self, now: float) -> int:
        """Queue the waiting wheels that fit in the cap's share (AHEAD_SHARE) left, in
        the order they came; forget those that never will (larger than the share) or whose
        client went on (SESSION_SECONDS ago). Our lock is held. Returns how many the pool dropped."""
        if not self._waiting:  # most file requests: no scan of the files ahead under our lock
            return 0
        share = self._files.cap * AHEAD_SHARE
        ahead_bytes, largest, fetching, unknown_fetching = 0, 0, False, False
        for ahead in self._ahead.values():
            if ahead.fetching:
                fetching = True
                unknown_fetching = unknown_fetching or ahead.size is None
            elif now - ahead.since > SESSION_SECONDS:
                continue  # its client went on: it is a cached file like any other
            ahead_bytes += ahead.size or 0
            largest = max(largest, ahead.size or 0)
        dropped = 0
        for key, (wheel, since) in list(self._waiting.items()):
            size = wheel.entry.size
            if self._closed or now - since > SESSION_SECONDS or (size is not None and size > share):
                del self._waiting[key]
                continue
            fits = (not fetching and ahead_bytes + largest <= share) if size is None else (
                not unknown_fetching and ahead_bytes + size <= share)
            if not fits:
                continue
            del self._waiting[key]
            if not self._pool.submit(functools.partial(self._fetch, wheel)):
                dropped += 1
                continue
            self._ahead[key] = _Ahead(size, now)
            ahead_bytes += size or 0
            largest = max(largest, size or 0)
            fetching, unknown_fetching = True, unknown_fetching or size is None
        while len(self._ahead) > MAX_REMEMBERED:
            self._ahead.popitem(last=False)
        return dropped

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait until nothing is queued or being fetched (tests, shutdown)."""
        return self._pool.wait(timeout)

    def close(self, timeout: float) -> None:
        """Queue nothing more, drop what waits, and give the downloads under way
        *timeout* seconds to end."""
        with self._lock:
            self._closed = True
            self._waiting.clear()
        self._pool.close(timeout)
