"""The proxy's own metrics (README, "Monitoring") and what the dashboard shows besides:
requests and hits per minute, the most requested projects, the since-start summary."""

from __future__ import annotations

import collections
import threading
import time
from typing import Callable, Iterable, NamedTuple, Optional

from .prometheus import Registry

__all__ = ["DURATION_BUCKETS", "MAX_PROJECTS", "MINUTES", "SNAPSHOT_PROJECTS", "TOP", "Metrics", "Summary", "by_minute", "total"]

# Request durations in seconds: a cached page takes well under a millisecond, a cold
# download of a large wheel a minute or more.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
MINUTES = 60  # the dashboard's chart: the last hour, a point a minute
# Projects whose request counts are kept for the "most requested" table. Past this the
# least requested half is forgotten, so that made-up names cannot fill memory.
MAX_PROJECTS = 10_000
TOP = 10
# Projects a snapshot keeps (see Metrics.snapshot): the merged top TOP of several workers
# is read from each one's top SNAPSHOT_PROJECTS, exact unless a project is popular across
# workers without being near the top of any.
SNAPSHOT_PROJECTS = 10 * TOP

# A snapshot (Metrics.snapshot) is plain JSON: "started" (Unix time), "live", "families"
# (Registry.state), "minutes" ([minute, requests, hits] lists) and "projects" ([name,
# count] pairs, most requested first).


class Summary(NamedTuple):
    """The since-start numbers of the dashboard (JSON-ready values)."""

    started: float  # Unix time
    uptime_seconds: float
    requests: int
    cache: dict  # by kind ("page", "file"): {"hits", "misses", "ratio"}, ratio None before any
    bytes_sent: dict  # by source ("cache", "upstream"): bytes
    per_minute: list  # {"minute" (Unix time), "requests", "hits"}: the last hour, oldest first
    top_projects: list  # {"project", "requests"}: the TOP most requested, most first


class _MinuteRing:
    """Requests and hits per minute over the last MINUTES minutes: a slot per minute,
    reused once its minute is an hour old. Guarded by the lock of :class:`Metrics`."""

    def __init__(self) -> None:
        self._slots = [[-1, 0, 0] for _ in range(MINUTES)]  # [minute, requests, hits]

    def add(self, now: float, requests: int, hits: int) -> None:
        minute = int(now // 60)
        slot = self._slots[minute % MINUTES]
        if slot[0] != minute:
            slot[:] = [minute, 0, 0]
        slot[1] += requests
        slot[2] += hits

    def counts(self) -> list:
        """[minute, requests, hits] of each slot in use (minute: Unix time // 60)."""
        return [list(slot) for slot in self._slots if slot[0] >= 0]


def by_minute(minutes: Iterable) -> dict:
    """{minute: (requests, hits)} from [minute, requests, hits] counts, summed by minute."""
    out: dict = {}
    for minute, requests, hits in minutes:
        old = out.get(minute, (0, 0))
        out[minute] = (old[0] + requests, old[1] + hits)
    return out


def total(snapshot: dict, name: str) -> float:
    """The sum of a family's values in *snapshot*, over every label (0 if absent)."""
    return sum(value for _, value in snapshot["families"].get(name, {}).get("values", []))


class Metrics:
    """The proxy's metrics (README, "Monitoring") on one :class:`Registry`, with what
    the dashboard shows besides: a per-minute ring and the most requested projects.

    Created with the proxy's caches (app.proxy) and handed to them and to the routes.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.started = clock()
        self.registry = registry = Registry()
        # Guards the ring and the project counts; the registry has its own.
        self._lock = threading.Lock()
        self.requests = registry.counter(
            "proxpi_requests_total", "Requests answered, by route, method and status.", ("route", "method", "status")
        )
        self.duration = registry.histogram(
            "proxpi_request_duration_seconds",
            "Time from request to the last byte sent, by route.",
            ("route",),
            DURATION_BUCKETS,
        )
        self.hits_total = registry.counter(
            "proxpi_cache_hits_total", "Pages served from memory and files sent from the cache dir.", ("kind",)
        )
        self.misses_total = registry.counter(
            "proxpi_cache_misses_total", "Pages and files that needed upstream.", ("kind",)
        )
        self.upstream = registry.counter(
            "proxpi_upstream_requests_total",
            "Requests to upstream indices, by index URL, kind and outcome.",
            ("index", "kind", "outcome"),
        )
        self.stale = registry.counter(
            "proxpi_stale_responses_total", "Pages served from a stale copy because the index failed.", ("index",)
        )
        self.bytes_sent = registry.counter(
            "proxpi_bytes_sent_total", "Response body bytes sent to clients, by where they came from.", ("source",)
        )
        self.evictions = registry.counter(
            "proxpi_file_cache_evictions_total", "Files evicted from the cache dir to stay under the cap."
        )
        self.connections_closed = registry.counter(
            "proxpi_connections_closed_total", "Client connections closed, by reason.", ("reason",)
        )
        self.prefetched = registry.counter(
            "proxpi_prefetch_total",
            "Prefetches of what a client will ask next, by kind (page, metadata, file) and outcome.",
            ("kind", "outcome"),
        )
        self.prefetch_used = registry.counter(
            "proxpi_prefetch_used_total", "Prefetched pages, metadata and files a client then asked for.", ("kind",)
        )
        for kind in ("page", "file"):  # shown as 0 from the start, not only once they happen
            self.hits_total.inc(kind, amount=0)
            self.misses_total.inc(kind, amount=0)
        for source in ("cache", "upstream"):
            self.bytes_sent.inc(source, amount=0)
        self._ring = _MinuteRing()
        self._projects: "collections.Counter[str]" = collections.Counter()

    def connection_gauges(self, counts: Callable[[], tuple]) -> None:
        """Gauges of the server's connections; *counts* gives (open, idle, active)."""
        for index, state, text in (
            (0, "open", "Client connections open."),
            (1, "idle", "Client connections idle between requests (no thread)."),
            (2, "active", "Client connections being answered or waiting for a thread."),
        ):
            self.registry.collector(
                f"proxpi_connections_{state}", "gauge", text, lambda index=index: [({}, counts()[index])]
            )

    # ------------------------------------------------------------------ recording

    def request(self, route: str, method: str, status: int, seconds: float, sent: int, source: Optional[str]) -> None:
        """One answered request; *source* ("cache", "upstream" or None) says where its
        body bytes came from."""
        now = self._clock()
        self.requests.inc(route, method, str(int(status)))  # an HTTPStatus's str() is its name before 3.11
        self.duration.observe(seconds, route)
        if source is not None and sent:
            self.bytes_sent.inc(source, amount=sent)
        with self._lock:
            self._ring.add(now, 1, 0)

    def hit(self, kind: str) -> None:
        """A page or file (*kind*) answered from the cache: counted, and in the ring."""
        now = self._clock()
        self.hits_total.inc(kind)
        with self._lock:
            self._ring.add(now, 0, 1)

    def miss(self, kind: str) -> None:
        """A page or file (*kind*) that needed upstream."""
        self.misses_total.inc(kind)

    def project_requested(self, name: str) -> None:
        with self._lock:
            self._projects[name] += 1
            if len(self._projects) > MAX_PROJECTS:
                self._projects = collections.Counter(dict(self._projects.most_common(MAX_PROJECTS // 2)))

    # ------------------------------------------------------------------ reading

    def snapshot(self) -> dict:
        """This process's numbers, JSON-ready: what a worker shares with the others
        (see :func:`.aggregate.merge`) and what :meth:`exposition` and :meth:`summary` read."""
        families = self.registry.state()
        with self._lock:
            minutes = self._ring.counts()
            projects = self._projects.most_common(SNAPSHOT_PROJECTS)
        return {"started": self.started, "live": True, "families": families, "minutes": minutes, "projects": projects}

    def exposition(self, snapshot: Optional[dict] = None) -> bytes:
        """The text format of *snapshot* (by default, this process's numbers)."""
        return self.registry.exposition(None if snapshot is None else snapshot["families"])

    def summary(self, snapshot: Optional[dict] = None) -> Summary:
        """The since-start numbers of the dashboard, of *snapshot* (by default, this
        process's numbers)."""
        if snapshot is None:
            snapshot = self.snapshot()
        now = self._clock()
        families = snapshot["families"]

        def by_label(name: str) -> dict:
            return {tuple(key): value for key, value in families.get(name, {}).get("values", [])}

        hits, misses, sent = (by_label(name) for name in (self.hits_total.name, self.misses_total.name, self.bytes_sent.name))
        kinds = {}
        for kind in ("page", "file"):
            hit, miss = int(hits.get((kind,), 0)), int(misses.get((kind,), 0))
            kinds[kind] = {"hits": hit, "misses": miss, "ratio": hit / (hit + miss) if hit + miss else None}
        counted = by_minute(snapshot["minutes"])
        current = int(now // 60)
        per_minute = []
        for minute in range(current - MINUTES + 1, current + 1):  # the last hour, oldest first
            counts = counted.get(minute, (0, 0))
            per_minute.append({"minute": minute * 60, "requests": counts[0], "hits": counts[1]})
        return Summary(
            started=snapshot["started"],
            uptime_seconds=max(now - snapshot["started"], 0.0),
            requests=int(total(snapshot, self.requests.name)),
            cache=kinds,
            bytes_sent={source: int(sent.get((source,), 0)) for source in ("cache", "upstream")},
            per_minute=per_minute,
            top_projects=[{"project": name, "requests": count} for name, count in snapshot["projects"][:TOP]],
        )
