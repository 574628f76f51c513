"""Download ahead: once a client starts downloading the wheels it resolved, the proxy
fetches the rest of them in the background.

pip resolves first, reading the ``.metadata`` of each wheel it picks, and only then
downloads the wheels, one after the other. A client's first whole download after such
metadata reads says its resolution is over: the other wheels whose metadata it read are
fetched at once, a few at a time, so that its next downloads are hits or join a download
under way. A client that only resolves (``pip install --dry-run``, ``uv pip compile``)
downloads nothing, so the proxy fetches no whole wheel for it.
"""

from __future__ import annotations

import collections
import functools
import logging
import threading
import time
from typing import Callable, NamedTuple, Optional

from ..core.errors import ProxpiError
from ..core.names import NormalizedName
from ..core.simple import FileEntry
from ..infra.metrics import Metrics
from ..infra.pool import WorkerPool
from .file_cache import FileCache

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
        # (project, filename) of the files queued ahead -> whether their fetch began: a
        # client asking for one counts as a use once it has, even while it is still being
        # fetched (the client joins that download); not while it waits in the queue.
        self._ahead: "collections.OrderedDict[tuple, bool]" = collections.OrderedDict()
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
            if self._ahead.pop(key, False):
                self._metrics.prefetch_used.inc("file")
            if not filename.endswith(".whl") or client not in self._resolutions:
                return
            resolution = self._resolutions.pop(client)
            if self._closed or now - resolution.last > SESSION_SECONDS:
                return
            for wheel in resolution.wheels.values():
                if (wheel.project, wheel.entry.filename) == key:
                    continue
                if self._pool.submit(functools.partial(self._fetch, wheel)):
                    self._ahead[(wheel.project, wheel.entry.filename)] = False  # queued
                else:
                    dropped += 1
            while len(self._ahead) > MAX_REMEMBERED:
                self._ahead.popitem(last=False)
        if dropped:
            self._metrics.prefetched.inc("file", "dropped", amount=dropped)

    def _fetch(self, wheel: _Wheel) -> None:
        key = (wheel.project, wheel.entry.filename)
        with self._lock:
            if key in self._ahead:  # else its client asked while it was queued, and fetches it
                self._ahead[key] = True
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
        if outcome != "fetched":  # not ours to count: stored before, or not at all
            with self._lock:
                self._ahead.pop(key, None)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait until nothing is queued or being fetched (tests, shutdown)."""
        return self._pool.wait(timeout)

    def close(self, timeout: float) -> None:
        """Queue nothing more, drop what waits, and give the downloads under way
        *timeout* seconds to end."""
        with self._lock:
            self._closed = True
        self._pool.close(timeout)
