"""Counters, gauges and histograms with labels, in Prometheus text format, and the dashboard's numbers."""

from __future__ import annotations

import bisect
import collections
import math
import threading
import time
from typing import Callable, Iterable, Optional

__all__ = ["CONTENT_TYPE", "Counter", "Gauge", "Histogram", "Metrics", "Registry", "merge", "total"]

# The text exposition format, version 0.0.4 (Prometheus "Exposition formats").
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
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

Collect = Callable[[], Iterable[tuple]]  # yields (labels: mapping, value) pairs

# A snapshot (Metrics.snapshot) is plain JSON: lists for tuples. Its "families" map each
# name to {"kind": ..., "values": [[key, value], ...]}; a key is the label values (a
# collected family's: [name, value] pairs), a histogram's value [bucket counts, sum].


def _escape_label(value: str) -> str:
    # 0.0.4: in label values, backslash, double quote and line feed are escaped.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    # 0.0.4: in HELP lines, only backslash and line feed are escaped.
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    """A sample value as Go's ParseFloat reads it: integers plainly, +Inf/-Inf/NaN."""
    if value != value:
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def _labels(names: tuple, values: tuple, extra: str = "") -> str:
    pairs = [f'{name}="{_escape_label(str(value))}"' for name, value in zip(names, values)]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


class _Family:
    """One metric name: its type, help text, label names and values by label tuple."""

    kind = ""
    shared = False  # see Registry.collector

    def __init__(self, lock: threading.Lock, name: str, help_text: str, labels: tuple) -> None:
        self._lock = lock
        self.name = name
        self.help = help_text
        self.labels = tuple(labels)
        self._values: dict = {} if self.labels else {(): 0.0}

    def _check(self, key: tuple) -> None:
        if len(key) != len(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}, got {key!r}")

    def _state(self) -> list:
        """The values as a snapshot holds them; the lock is held."""
        return [[list(key), value] for key, value in self._values.items()]

    def _lines(self, values: list) -> Iterable[str]:
        """Sample lines of *values*, as :meth:`_state` gives them."""
        for key, value in values:
            yield f"{self.name}{_labels(self.labels, key)} {_number(value)}\n"

    def _bump(self, key: tuple, amount: float) -> None:
        """Add *amount*; the lock is held."""
        if key in self._values:
            self._values[key] += amount
        else:
            self._check(key)
            self._values[key] = float(amount)

    def value(self, *labels: str) -> float:
        """The current value for *labels* (0 if never set)."""
        with self._lock:
            return self._values.get(tuple(labels), 0.0)

    def values(self) -> dict:
        """A copy of every value, keyed by label tuple."""
        with self._lock:
            return dict(self._values)


class Counter(_Family):
    """A value that only goes up (restarts reset it; Prometheus' rate() copes)."""

    kind = "counter"

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        with self._lock:
            self._bump(labels, amount)


class Gauge(_Family):
    """A value that goes up and down."""

    kind = "gauge"

    def set(self, value: float, *labels: str) -> None:
        self._check(labels)
        with self._lock:
            self._values[labels] = float(value)

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        with self._lock:
            self._bump(labels, amount)

    def dec(self, *labels: str, amount: float = 1.0) -> None:
        self.inc(*labels, amount=-amount)


class Histogram(_Family):
    """Observations counted in buckets (each bucket "le" its upper bound), with sum and count."""

    kind = "histogram"

    def __init__(self, lock: threading.Lock, name: str, help_text: str, labels: tuple, buckets: tuple) -> None:
        super().__init__(lock, name, help_text, labels)
        if "le" in self.labels:
            raise ValueError("a histogram cannot have a label named le")
        self.buckets = tuple(sorted(float(bound) for bound in buckets if not math.isinf(bound)))
        self._values = {}

    def observe(self, value: float, *labels: str) -> None:
        # Bucket i holds observations in (bound[i-1], bound[i]]; the last one, +Inf,
        # those above every bound. Stored per bucket, summed up when written out.
        with self._lock:
            self._observe(value, labels)

    def _observe(self, value: float, key: tuple) -> None:
        """Count *value*; the lock is held."""
        state = self._values.get(key)
        if state is None:
            self._check(key)
            state = self._values[key] = [[0] * (len(self.buckets) + 1), 0.0]
        state[0][bisect.bisect_left(self.buckets, value)] += 1
        state[1] += value

    def _state(self) -> list:
        return [[list(key), [list(counts), total]] for key, (counts, total) in self._values.items()]

    def _lines(self, values: list) -> Iterable[str]:
        bounds = [repr(bound) for bound in self.buckets] + ["+Inf"]
        for key, (counts, total) in values:
            running = 0
            for bound, count in zip(bounds, counts):
                running += count
                le = f'le="{bound}"'
                yield f"{self.name}_bucket{_labels(self.labels, key, le)} {running}\n"
            yield f"{self.name}_sum{_labels(self.labels, key)} {_number(total)}\n"
            yield f"{self.name}_count{_labels(self.labels, key)} {running}\n"

    def count(self, *labels: str) -> int:
        with self._lock:
            state = self._values.get(labels)
            return sum(state[0]) if state else 0


class _Collected:
    """A family whose samples a callback gives at scrape time (sizes other objects own)."""

    def __init__(self, name: str, kind: str, help_text: str, collect: Collect, shared: bool) -> None:
        self.name, self.kind, self.help, self._collect = name, kind, help_text, collect
        self.shared = shared

    def _state(self) -> list:
        return [[[[name, value] for name, value in dict(labels).items()], value] for labels, value in self._collect()]

    def _lines(self, values: list) -> Iterable[str]:
        for pairs, value in values:
            names, label_values = zip(*pairs) if pairs else ((), ())
            yield f"{self.name}{_labels(names, label_values)} {_number(value)}\n"


class Registry:
    """Metric families by name, written out in registration order.

    Thread-safe: one lock, held only while a value is updated or copied.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._families: dict = {}

    def _add(self, family):
        if family.name in self._families:
            raise ValueError(f"metric {family.name} registered twice")
        self._families[family.name] = family
        return family

    def counter(self, name: str, help_text: str, labels: tuple = ()) -> Counter:
        return self._add(Counter(self._lock, name, help_text, labels))

    def gauge(self, name: str, help_text: str, labels: tuple = ()) -> Gauge:
        return self._add(Gauge(self._lock, name, help_text, labels))

    def histogram(self, name: str, help_text: str, labels: tuple = (), buckets: tuple = DURATION_BUCKETS) -> Histogram:
        return self._add(Histogram(self._lock, name, help_text, labels, buckets))

    def collector(self, name: str, kind: str, help_text: str, collect: Collect, shared: bool = False) -> None:
        """Register a family whose samples *collect* yields at each scrape, as
        ``(labels mapping, value)`` pairs: for numbers another object keeps anyway
        (cache sizes, policy counts). *collect* runs without our lock.

        *shared*: a number every worker process reads alike (the cache dir's size),
        always read here and never summed across workers (see :meth:`state`)."""
        if kind not in ("counter", "gauge"):
            raise ValueError(f"a collected family is a counter or a gauge, not {kind!r}")
        self._add(_Collected(name, kind, help_text, collect, shared))

    def state(self) -> dict:
        """This process's values of every family but the shared ones, JSON-ready (the
        "families" of a snapshot), to be summed with other workers' (:func:`merge`)."""
        out = {}
        for family in list(self._families.values()):
            if isinstance(family, _Collected):
                if not family.shared:
                    out[family.name] = {"kind": family.kind, "values": family._state()}
                continue
            with self._lock:
                out[family.name] = {"kind": family.kind, "values": family._state()}
        return out

    def exposition(self, state: Optional[dict] = None) -> bytes:
        """Every family in the text format 0.0.4: HELP, TYPE, then the samples: this
        process's, or those of *state* (as :meth:`state` gives it, e.g. merged over
        worker processes). Shared families are read here either way."""
        if state is None:
            state = self.state()
        lines = []
        for family in list(self._families.values()):
            lines.append(f"# HELP {family.name} {_escape_help(family.help)}\n")
            lines.append(f"# TYPE {family.name} {family.kind}\n")
            if family.shared:
                lines.extend(family._lines(family._state()))
            else:
                lines.extend(family._lines(state.get(family.name, {}).get("values", [])))
        return "".join(lines).encode("utf-8")


class _MinuteRing:
    """Requests and hits per minute over the last MINUTES minutes: a slot per minute,
    reused once its minute is an hour old. Guarded by the registry's lock."""

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


def _by_minute(minutes: Iterable) -> dict:
    """{minute: (requests, hits)} from [minute, requests, hits] counts, summed by minute."""
    out: dict = {}
    for minute, requests, hits in minutes:
        old = out.get(minute, (0, 0))
        out[minute] = (old[0] + requests, old[1] + hits)
    return out


def _key(key: list) -> tuple:
    """A snapshot's label key (lists from JSON) as a dict key."""
    return tuple(tuple(part) if isinstance(part, list) else part for part in key)


def merge(snapshots: Iterable[dict]) -> dict:
    """One snapshot of the numbers of several, one at least (:meth:`Metrics.snapshot`,
    "live" saying whether its process still runs): counters and histograms summed over
    all of them, those of workers gone too (their counts stay part of the proxy's, so
    they never go backwards); gauges (things in progress) over the live ones only; the
    ring summed minute by minute, project counts by name."""
    families: dict = {}
    minutes: list = []
    projects: "collections.Counter[str]" = collections.Counter()
    started, live = [], False
    for snapshot in snapshots:
        started.append(snapshot["started"])
        live = live or snapshot["live"]
        minutes.extend(snapshot["minutes"])
        projects.update(dict(snapshot["projects"]))
        for name, family in snapshot["families"].items():
            kind = family["kind"]
            merged = families.setdefault(name, {"kind": kind, "values": {}})["values"]
            if kind == "gauge" and not snapshot["live"]:
                continue
            for key, value in family["values"]:
                key = _key(key)
                old = merged.get(key)
                if old is None:
                    merged[key] = value
                elif kind == "histogram":
                    merged[key] = [[a + b for a, b in zip(old[0], value[0])], old[1] + value[1]]
                else:
                    merged[key] = old + value
    by_minute = _by_minute(minutes)
    newest = max(by_minute, default=0)
    return {
        "started": min(started),
        "live": live,
        # Samples and ties in a stable order, whichever worker merges.
        "families": {
            name: {"kind": family["kind"], "values": [list(item) for item in sorted(family["values"].items(), key=lambda item: str(item[0]))]}
            for name, family in families.items()
        },
        # Minutes more than an hour older than the latest are off every chart.
        "minutes": [[minute, *counts] for minute, counts in by_minute.items() if minute > newest - MINUTES],
        "projects": sorted(projects.items(), key=lambda item: (-item[1], item[0]))[:SNAPSHOT_PROJECTS],
    }


def total(snapshot: dict, name: str) -> float:
    """The sum of a family's values in *snapshot*, over every label (0 if absent)."""
    return sum(value for _, value in snapshot["families"].get(name, {}).get("values", []))


class Metrics:
    """The proxy's metrics (README, "Monitoring") on one :class:`Registry`, with what
    the dashboard shows besides: a per-minute ring and the most requested projects.

    Created by the server and handed to the handler and the caches.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.started = clock()
        self.registry = registry = Registry()
        self._lock = registry._lock
        self.requests = registry.counter(
            "proxpi_requests_total", "Requests answered, by route, method and status.", ("route", "method", "status")
        )
        self.duration = registry.histogram(
            "proxpi_request_duration_seconds", "Time from request to the last byte sent, by route.", ("route",)
        )
        self.hits = registry.counter(
            "proxpi_cache_hits_total", "Pages served from memory and files sent from the cache dir.", ("kind",)
        )
        self.misses = registry.counter(
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
        for kind in ("page", "file"):  # shown as 0 from the start, not only once they happen
            self.hits.inc(kind, amount=0)
            self.misses.inc(kind, amount=0)
        for source in ("cache", "upstream"):
            self.bytes_sent.inc(source, amount=0)
        self._ring = _MinuteRing()
        self._projects: "collections.Counter[str]" = collections.Counter()

    # ------------------------------------------------------------------ recording

    def request(self, route: str, method: str, status: int, seconds: float, sent: int, source: Optional[str]) -> None:
        """One answered request; *source* ("cache", "upstream" or None) says where its
        body bytes came from. Counted under one hold of the lock: this runs per request."""
        now = self._clock()
        with self._lock:
            self.requests._bump((route, method, str(status)), 1)
            self.duration._observe(seconds, (route,))
            if source is not None and sent:
                self.bytes_sent._bump((source,), sent)
            self._ring.add(now, 1, 0)

    def hit(self, kind: str) -> None:
        now = self._clock()
        with self._lock:
            self.hits._bump((kind,), 1)
            self._ring.add(now, 0, 1)

    def miss(self, kind: str) -> None:
        self.misses.inc(kind)

    def project_requested(self, name: str) -> None:
        with self._lock:
            self._projects[name] += 1
            if len(self._projects) > MAX_PROJECTS:
                self._projects = collections.Counter(dict(self._projects.most_common(MAX_PROJECTS // 2)))

    # ------------------------------------------------------------------ reading

    def snapshot(self) -> dict:
        """This process's numbers, JSON-ready: what a worker shares with the others
        (see :func:`merge`) and what :meth:`exposition` and :meth:`summary` read."""
        families = self.registry.state()
        with self._lock:
            minutes = self._ring.counts()
            projects = self._projects.most_common(SNAPSHOT_PROJECTS)
        return {"started": self.started, "live": True, "families": families, "minutes": minutes, "projects": projects}

    def exposition(self, snapshot: Optional[dict] = None) -> bytes:
        """The text format of *snapshot* (by default, this process's numbers)."""
        return self.registry.exposition(None if snapshot is None else snapshot["families"])

    def summary(self, snapshot: Optional[dict] = None) -> dict:
        """The since-start numbers of the dashboard, JSON-ready, of *snapshot* (by
        default, this process's numbers)."""
        if snapshot is None:
            snapshot = self.snapshot()
        now = self._clock()
        families = snapshot["families"]

        def by_label(name: str) -> dict:
            return {tuple(key): value for key, value in families.get(name, {}).get("values", [])}

        hits, misses, sent = (by_label(name) for name in (self.hits.name, self.misses.name, self.bytes_sent.name))
        kinds = {}
        for kind in ("page", "file"):
            hit, miss = int(hits.get((kind,), 0)), int(misses.get((kind,), 0))
            kinds[kind] = {"hits": hit, "misses": miss, "ratio": hit / (hit + miss) if hit + miss else None}
        by_minute = _by_minute(snapshot["minutes"])
        current = int(now // 60)
        per_minute = []
        for minute in range(current - MINUTES + 1, current + 1):  # the last hour, oldest first
            counts = by_minute.get(minute, (0, 0))
            per_minute.append({"minute": minute * 60, "requests": counts[0], "hits": counts[1]})
        return {
            "started": snapshot["started"],
            "uptime_seconds": max(now - snapshot["started"], 0.0),
            "requests": int(total(snapshot, self.requests.name)),
            "cache": kinds,
            "bytes_sent": {source: int(sent.get((source,), 0)) for source in ("cache", "upstream")},
            "per_minute": per_minute,
            "top_projects": [{"project": name, "requests": count} for name, count in snapshot["projects"][:TOP]],
        }
