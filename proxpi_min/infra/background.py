"""Work a client need not wait for (saving a page, compressing a rendered one, storing a
wheel's metadata), run in order by one daemon thread after the answer has gone out."""

from __future__ import annotations

import collections
import logging
import os
import threading
import weakref
from typing import Callable, Optional

__all__ = ["Background"]

logger = logging.getLogger(__name__)

# Past this many jobs waiting, a new one runs in the caller's thread: a disk slower than
# the pages coming in slows the requests down rather than holding every page in memory.
MAX_PENDING = 256


class Background:
    """Jobs run one at a time, in the order given, by a daemon thread started at the
    first job (and again in a process forked after that, where the thread did not
    follow). A job that raises is logged and the next one runs.

    :meth:`flush` waits for every job given so far; :meth:`close` flushes and then runs
    later jobs at once, in the caller's thread (a request still finishing at shutdown).
    """

    def __init__(self, name: str = "proxpi-background", max_pending: int = MAX_PENDING) -> None:
        self._name = name
        self._max_pending = max_pending
        self._jobs: "collections.deque[Callable[[], None]]" = collections.deque()
        self._pending = 0  # given and not finished (queued or running)
        self._changed = threading.Condition()
        self._thread: Optional[threading.Thread] = None
        self._closed = False
        _instances.add(self)

    def submit(self, job: Callable[[], None]) -> None:
        """Run *job* later, after the jobs given before it."""
        with self._changed:
            inline = self._closed or self._pending >= self._max_pending
            if not inline:
                self._jobs.append(job)
                self._pending += 1
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                    self._thread.start()
                self._changed.notify_all()
        if inline:
            _run_one(job)

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait up to *timeout* seconds (None: no limit) for the jobs given so far;
        True if none is left."""
        with self._changed:
            return self._changed.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: Optional[float] = None) -> bool:
        """Flush (see :meth:`flush`); from now on jobs run when given."""
        done = self.flush(timeout)
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        return done

    @property
    def pending(self) -> int:
        with self._changed:
            return self._pending

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._jobs or self._closed)
                if not self._jobs:
                    return  # closed, nothing left
                job = self._jobs.popleft()
            try:
                _run_one(job)
            finally:
                with self._changed:
                    self._pending -= 1
                    self._changed.notify_all()


    def _forked(self) -> None:
        """In a forked child: the jobs queued before the fork are the parent's to run,
        its thread did not follow, and its lock may have been held at the fork."""
        self._changed = threading.Condition()
        self._jobs.clear()
        self._pending = 0
        self._thread = None


_instances: "weakref.WeakSet[Background]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for background in list(_instances):
        background._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _run_one(job: Callable[[], None]) -> None:
    try:
        job()
    except Exception:  # a bug in the job: say so and carry on with the next
        logger.exception("background job %r failed", job)
