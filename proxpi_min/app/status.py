"""The whole proxy's numbers and status document: the gauges read from the caches at
each scrape, this process's numbers (shared with sibling workers), and the sum over
workers behind ``/metrics`` and the home page."""

from __future__ import annotations

import time
from typing import List, NamedTuple, Optional, Sequence

from .. import __version__
from ..core.settings import Settings
from ..core.units import human_size
from ..infra.aggregate import Numbers, combine
from ..infra.metrics import TOP, Metrics, Summary, total
from ..infra.snapshots import Snapshots
from .proxy import Proxy

__all__ = ["FileCacheStatus", "LargeFile", "ProxyStatus", "Status"]


class LargeFile(NamedTuple):
    project: str
    filename: str
    size: int


class FileCacheStatus(NamedTuple):
    directory: str
    used_bytes: int
    limit_bytes: int
    files: int
    downloads_in_progress: int
    largest: List[LargeFile]


class Status(NamedTuple):
    """What the home page shows (``GET /``, as HTML or JSON)."""

    version: str
    now: float  # Unix time
    offline: bool
    upstream_route: str
    policies: Sequence[str]  # the guard rails in force, one line each
    summary: Summary  # of the whole proxy
    file_cache: FileCacheStatus
    indexes: list  # IndexCache.health of each index, merged over workers
    index_url: str  # the URL to give pip, as the client reached the proxy
    local_index: Optional[str] = None  # the local index's mode and size, one line (None: no local index)
    prefetch: Optional[dict] = None  # {"fetched", "used"}: pages and metadata fetched ahead, and asked for

    def as_json(self) -> dict:
        """The JSON document (``Accept: application/json``), which the page renders too."""
        largest = [item._asdict() for item in self.file_cache.largest]
        return {
            "version": self.version,
            "now": self.now,
            "offline": self.offline,
            "upstream_route": self.upstream_route,
            "policies": self.policies,
            **self.summary._asdict(),
            "file_cache": {**self.file_cache._asdict(), "largest": largest},
            "indexes": self.indexes,
            "index_url": self.index_url,
            "local_index": self.local_index,
            "prefetch": self.prefetch,
        }


class ProxyStatus:
    """The numbers of one process's proxy, or with *run_dir* (``--workers``) of every
    worker's, this one's shared there (see :mod:`..infra.snapshots`)."""

    def __init__(
        self,
        settings: Settings,
        proxy: Proxy,
        metrics: Metrics,
        cache_dir: str,
        upstream_route: str,
        run_dir: Optional[str] = None,
    ) -> None:
        self._settings = settings
        self._proxy = proxy
        self._metrics = metrics
        self._cache_dir = cache_dir
        self._upstream_route = upstream_route
        self._register_gauges()
        self.snapshots: Optional[Snapshots] = None
        if run_dir is not None:
            self.snapshots = Snapshots(run_dir, lambda: self._own()._asdict())
            self.snapshots.start()

    def _register_gauges(self) -> None:
        """Numbers the file cache and the policy keep anyway, read at each scrape (no
        directory walk)."""
        add, files = self._metrics.registry.collector, self._proxy.files
        # The cache dir's numbers are its own, the same whichever worker reads them: not
        # summed over workers (shared). The others are this process's, summed.
        for name, help_text, value in (
            ("proxpi_file_cache_size_bytes", "Bytes stored in the cache dir.", lambda: files.stats()[0]),
            ("proxpi_file_cache_limit_bytes", "The cache dir's cap in bytes.", lambda: files.cap),
            ("proxpi_file_cache_files", "Files stored in the cache dir.", lambda: files.stats()[1]),
        ):
            add(name, "gauge", help_text, lambda value=value: [({}, value())], shared=True)
        # The local index's uploads, read from its folder: shared like the cache dir's.
        local_stats = self._proxy.local.stats if self._proxy.local is not None else lambda: (0, 0)
        for name, help_text, position in (
            ("proxpi_local_files", "Uploaded files in the local index (never evicted).", 0),
            ("proxpi_local_size_bytes", "Bytes of the uploaded files (not in the cache's cap).", 1),
        ):
            add(name, "gauge", help_text, lambda position=position: [({}, local_stats()[position])], shared=True)
        policy_counts = self._proxy.indexes.policy_counts
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

    def _own(self) -> Numbers:
        """This process's numbers."""
        return Numbers(self._metrics.snapshot(), [cache.health() for cache in self._proxy.indexes.caches])

    def numbers(self) -> Numbers:
        """The whole proxy's numbers: this process's, or with workers, summed over every
        worker's (others' at most a second behind)."""
        if self.snapshots is None:
            return self._own()
        return combine(self.snapshots.gather())

    def metrics_text(self) -> bytes:
        """``GET /metrics``: the Prometheus text of the whole proxy."""
        return self._metrics.exposition(self.numbers().metrics)

    def status(self, index_url: str) -> Status:
        """What the home page shows; *index_url* is the URL to give pip."""
        metrics, health = self.numbers()
        files = self._proxy.files
        used, count = files.stats()
        file_cache = FileCacheStatus(
            directory=self._cache_dir,
            used_bytes=used,
            limit_bytes=files.cap,
            files=count,
            downloads_in_progress=int(total(metrics, "proxpi_downloads_in_progress")),
            largest=[LargeFile(*item) for item in files.largest(TOP)],
        )
        return Status(
            version=__version__,
            now=time.time(),
            offline=self._settings.offline,
            upstream_route=self._upstream_route,
            policies=self._proxy.policy.describe(),
            summary=self._metrics.summary(metrics),
            file_cache=file_cache,
            indexes=health,
            index_url=index_url,
            local_index=self._local_line(),
            prefetch=_prefetch(metrics) if self._proxy.prefetch is not None else None,
        )

    def _local_line(self) -> Optional[str]:
        local = self._proxy.local
        if local is None or not local.active:  # a server watching for another's uploads
            return None
        files, size = local.stats()
        mode = (
            "merged with the upstreams' files (PROXPI_LOCAL_MERGE)" if self._settings.local_merge
            else "a local project is served from it alone, no upstream asked"
        )
        uploads = "uploads on" if self._settings.upload_token or self._settings.upload_tokens_file else "uploads off"
        folder = f"; also serving {local.folders.dirs[0]}" if local.folders.dirs else ""
        return f"{mode}; {uploads}; {files} uploaded files, {human_size(size)}{folder}"

    def close(self) -> None:
        """Stop sharing this worker's numbers, after writing the last of them."""
        if self.snapshots is not None:
            self.snapshots.close()


def _prefetch(snapshot: dict) -> dict:
    """Pages and metadata prefetched from upstream, and those a client then asked for."""
    values = snapshot["families"].get("proxpi_prefetch_total", {}).get("values", [])
    fetched = sum(value for labels, value in values if labels[-1] == "fetched")
    return {"fetched": int(fetched), "used": int(total(snapshot, "proxpi_prefetch_used_total"))}
