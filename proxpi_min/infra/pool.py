"""A few daemon threads that run queued jobs, started as jobs come and gone when none waits."""

from __future__ import annotations

import collections
import logging
import threading
from typing import Callable, Optional

__all__ = ["WorkerPool"]

logger = logging.getLogger(__name__)


class WorkerPool:
    """Runs jobs on up to *size* threads named *name*, in the order given; at most
    *max_queued* wait for a thread. Each job handles its own errors: one that raises
    anyway is logged, and the thread goes on."""

    def __init__(self, size: int, max_queued: int, name: str) -> None:
        self._size = size
        self._max_queued = max_queued
        self._name = name
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._jobs: "collections.deque[Callable[[], None]]" = collections.deque()
        self._threads = 0
        self._busy = 0
        self._closed = False

    def submit(self, job: Callable[[], None]) -> bool:
        """Queue *job*; False if it was dropped (closed, the queue full, or no thread to
        run it could be started)."""
        with self._lock:
            if self._closed or len(self._jobs) >= self._max_queued:
                return False
            self._jobs.append(job)
            start = self._threads < self._size and self._threads < self._busy + len(self._jobs)
            if start:
                self._threads += 1
        if start:
            try:
                threading.Thread(target=self._work, name=self._name, daemon=True).start()
            except RuntimeError:  # the process may start no more threads
                with self._lock:
                    self._threads -= 1
                    self._idle.notify_all()
                    if self._threads == 0 and job in self._jobs:  # no thread would ever run it
                        self._jobs.remove(job)
                        return False
        return True

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._jobs:
                    self._threads -= 1
                    self._idle.notify_all()
                    return
                job = self._jobs.popleft()
                self._busy += 1
            try:
                job()
            except Exception:  # a job must never take a thread of the pool down
                logger.exception("%s: a job failed", self._name)
            finally:
                with self._lock:
                    self._busy -= 1

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait until no job waits or runs; False if *timeout* seconds passed first."""
        with self._lock:
            return self._idle.wait_for(lambda: self._threads == 0, timeout)

    def close(self, timeout: float) -> None:
        """Take no more jobs, drop those waiting, and give those running *timeout*
        seconds to end."""
        with self._lock:
            self._closed = True
            self._jobs.clear()
        self.wait(timeout)
