"""Saved pages kept within a budget: across every index's store under ``<cache
dir>/index/``, the least recently fetched dropped first.

A saved page serves an outage, an offline proxy and a restart; one is written per page
fetched, so a proxy that runs for weeks would otherwise keep every project its clients
ever asked for. What this process saves is counted as it goes; what other processes on
the directory save is seen at the next scan (at the first save, then every
RESCAN_SECONDS), so together they stay near the budget.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import Callable, Optional

__all__ = ["MIN_BUDGET", "PAGES_SHARE", "SavedPagesBudget", "pages_budget"]

logger = logging.getLogger(__name__)

PAGES_SHARE = 0.1  # of the cache size: what saved pages may take beside the files
MIN_BUDGET = 64 << 20  # also where files are not stored (a cache size of 0)
RESCAN_SECONDS = 600.0
_PRUNED_TO = 0.9  # of the budget: each pruning makes room for a while, not one page
_SUFFIX = ".json"  # a saved page's; the store's other file (its index's URL) stays


def pages_budget(cache_size: int) -> int:
    """The bytes saved pages may take on a cache dir of *cache_size* for files."""
    return max(int(cache_size * PAGES_SHARE), MIN_BUDGET)


class SavedPagesBudget:
    """Keeps the saved pages under *root* (``<cache dir>/index``) within *budget* bytes;
    *clock* is monotonic seconds (when to scan again)."""

    def __init__(self, root: str, budget: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.root = root
        self.budget = budget
        self._clock = clock
        self._lock = threading.Lock()
        self._pages: dict = {}  # path -> (mtime, size)
        self._total = 0
        self._scanned_at: Optional[float] = None

    def saved(self, path: str, size: int) -> None:
        """The page at *path* was just written (*size* bytes), or fetched again
        unchanged and touched: the most recent now. Prunes if the budget is passed."""
        now = self._clock()
        if self._scanned_at is None or now - self._scanned_at > RESCAN_SECONDS:
            self._scan(now)
        with self._lock:
            self._total += size - self._pages.pop(path, (0.0, 0))[1]
            self._pages[path] = (time.time(), size)
            over = self._total > self.budget
        if over:
            self._prune()

    def deleted(self, path: str) -> None:
        with self._lock:
            self._total -= self._pages.pop(path, (0.0, 0))[1]

    def _scan(self, now: float) -> None:
        """Take every store's pages as they are on disk (other processes' too)."""
        found: dict = {}
        with contextlib.suppress(OSError):
            for store in os.scandir(self.root):
                with contextlib.suppress(OSError):
                    if not store.is_dir(follow_symlinks=False):
                        continue
                    for entry in os.scandir(store.path):
                        if entry.name.endswith(_SUFFIX) and entry.is_file(follow_symlinks=False):
                            with contextlib.suppress(OSError):  # removed meanwhile
                                stat = entry.stat(follow_symlinks=False)
                                found[entry.path] = (stat.st_mtime, stat.st_size)
        with self._lock:
            self._pages = found
            self._total = sum(size for _, size in found.values())
            self._scanned_at = now

    def _prune(self) -> None:
        """Remove the least recently fetched pages until within _PRUNED_TO of the budget;
        one saved or touched again since it was counted (by another process) stays, and
        the next oldest go in its place."""
        for _ in range(3):  # a page kept is counted anew; more rounds only if others save meanwhile
            if not self._prune_once():
                return

    def _prune_once(self) -> bool:
        """One round of :meth:`_prune`; whether a page it chose was kept."""
        with self._lock:
            victims = []
            goal = self.budget * _PRUNED_TO
            for path, (mtime, size) in sorted(self._pages.items(), key=lambda item: item[1][0]):
                if self._total <= goal:
                    break
                victims.append((path, mtime))
                self._total -= size
                del self._pages[path]
        removed = kept = 0
        for path, mtime in victims:
            try:
                stat = os.stat(path)
                if stat.st_mtime > mtime:
                    with self._lock:  # newer than we knew: counted again, as it is now
                        self._total += stat.st_size - self._pages.pop(path, (0.0, 0))[1]
                        self._pages[path] = (stat.st_mtime, stat.st_size)
                    kept += 1
                    continue
                os.unlink(path)
                removed += 1
            except OSError:  # another process pruned it first
                pass
        if removed:
            logger.info("removed %d saved pages, least recently fetched, to keep them within %d bytes",
                        removed, self.budget)
        return kept > 0
