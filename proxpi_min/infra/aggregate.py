"""The whole proxy's numbers from those of its worker processes: metrics summed, the
health of each index merged (see :mod:`.snapshots` for how workers share them)."""

from __future__ import annotations

import collections
from typing import Iterable, List, NamedTuple, Sequence

from .metrics import MINUTES, SNAPSHOT_PROJECTS, by_minute

__all__ = ["Numbers", "combine", "merge", "merged_health"]


class Numbers(NamedTuple):
    """One process's numbers, or the whole proxy's; ``_asdict()`` is what a worker
    shares (JSON-ready)."""

    metrics: dict  # a Metrics.snapshot
    indexes: list  # IndexCache.health of each index, in the settings' order


def combine(workers: Sequence[dict]) -> Numbers:
    """The whole proxy's numbers from every worker's (:meth:`.Snapshots.gather`: this
    process's first, each a :class:`Numbers` as a dict with ``"live"``)."""
    metrics = merge([{**worker["metrics"], "live": worker["live"]} for worker in workers])
    health = []
    for own in workers[0]["indexes"]:
        reports = [
            (index, worker["live"]) for worker in workers for index in worker["indexes"] if index["url"] == own["url"]
        ]
        health.append(merged_health(reports))
    return Numbers(metrics, health)


def merge(snapshots: Iterable[dict]) -> dict:
    """One snapshot of the numbers of several, one at least (:meth:`.Metrics.snapshot`,
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
            merged = families.setdefault(name, {"kind": family["kind"], "values": {}})
            if family["kind"] != "gauge" or snapshot["live"]:
                _add_values(merged, family["values"])
    counted = by_minute(minutes)
    newest = max(counted, default=0)
    return {
        "started": min(started),
        "live": live,
        # Samples and ties in a stable order, whichever worker merges.
        "families": {
            name: {"kind": family["kind"], "values": [list(item) for item in sorted(family["values"].items(), key=lambda item: str(item[0]))]}
            for name, family in families.items()
        },
        # Minutes more than an hour older than the latest are off every chart.
        "minutes": [[minute, *counts] for minute, counts in counted.items() if minute > newest - MINUTES],
        "projects": sorted(projects.items(), key=lambda item: (-item[1], item[0]))[:SNAPSHOT_PROJECTS],
    }


def _add_values(merged: dict, values: List[list]) -> None:
    """Add a family's ``[key, value]`` samples into *merged* (its kind and values by key)."""
    sums = merged["values"]
    for key, value in values:
        key = _key(key)
        old = sums.get(key)
        if old is None:
            sums[key] = value
        elif merged["kind"] == "histogram":
            sums[key] = [[a + b for a, b in zip(old[0], value[0])], old[1] + value[1]]
        else:
            sums[key] = old + value


def _key(key: list) -> tuple:
    """A snapshot's label key (lists from JSON) as a dict key."""
    return tuple(tuple(part) if isinstance(part, list) else part for part in key)


def merged_health(reports: list) -> dict:
    """One index's :meth:`.IndexCache.health` over worker processes, from ``(health,
    live)`` pairs, a live one first: the latest success and the latest failure of any;
    pages stale or in back-off as the live worker with the most (each keeps its own)."""
    live = [health for health, alive in reports if alive]
    failure = max(
        (health for health, _ in reports if health["last_failure"] is not None),
        key=lambda health: health["last_failure"],
        default=None,
    )
    retries = [health["next_retry_seconds"] for health in live if health["next_retry_seconds"] is not None]
    return {
        **reports[0][0],
        "last_success": max((h["last_success"] for h, _ in reports if h["last_success"] is not None), default=None),
        "last_failure": failure and failure["last_failure"],
        "last_failure_reason": failure and failure["last_failure_reason"],
        "stale_pages": max(health["stale_pages"] for health in live),
        "backoff_pages": max(health["backoff_pages"] for health in live),
        "next_retry_seconds": min(retries, default=None),
    }
