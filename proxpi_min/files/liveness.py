"""Whether a download in another process on the cache dir is alive.

Each process touches the lock files of the downloads it writes every HEARTBEAT seconds,
whatever those downloads wait on (the upstream, the ledger, the disk). A follower that
sees a lock file, its record and the temp file it names all stand still for STALL_AFTER
seconds, the lock held, takes the writer for frozen (SIGSTOP, a paused container): its
clients fetch the file themselves, and the file cache passes the file through while the
writer stays so (:class:`Stalls`).
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Callable, Optional

from ..infra.atomic import LockFile, is_temp_name

__all__ = ["HEARTBEAT", "STALL_AFTER", "Heartbeat", "Stalls", "writer_mark"]

# How often (seconds) a process touches the lock files of the downloads it writes, and
# how long another may see one stand still before it takes the writer for frozen: many
# beats, since a beat may wait on a busy disk or a starved thread.
HEARTBEAT = 1.0
STALL_AFTER = 10.0
MAX_STALLS = 10_000  # writers remembered as frozen; past it, all are looked at afresh


def writer_mark(lock: LockFile) -> tuple:
    """What a download in another process shows of being alive: its lock file's record
    and last change (its process's heartbeat), and the size of the temp file it names
    (None where there is no such file). Opened anew each time, so that an NFS client
    asks the server rather than its attribute cache (close-to-open consistency)."""
    try:
        fd = os.open(lock.path, os.O_RDONLY)
    except OSError:
        return "", None, None
    try:
        touched = os.fstat(fd).st_mtime_ns
        record = os.pread(fd, 4096, 0).decode("utf-8", "replace")
    except OSError:
        return "", None, None
    finally:
        os.close(fd)
    name = record.partition(" ")[0]
    size = None
    if is_temp_name(name):
        with contextlib.suppress(OSError):
            size = os.stat(os.path.join(os.path.dirname(lock.path), name)).st_size
    return record, touched, size


class Heartbeat:
    """A thread that touches the lock files *held()* gives every HEARTBEAT seconds, and
    ends when it gives None (no download in progress); :meth:`start` again then."""

    def __init__(self, held: Callable[[], Optional[list]]) -> None:
        self._held = held
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._stopped = threading.Event()

    def start(self) -> None:
        """Have the thread run (call it once a download is registered: the thread cannot
        then end before it has seen it)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():  # not after a fork: it stayed behind
                return
            self._thread = threading.Thread(target=self._run, name="proxpi-download-heartbeat", daemon=True)
            thread = self._thread
        thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        while not self._stopped.wait(HEARTBEAT):
            with self._lock:
                held = self._held()
                if held is None:
                    self._thread = None
                    return
            for lock in held:
                lock.touch()


class Stalls:
    """Downloads in other processes taken for frozen, by their file's path, each with the
    :func:`writer_mark` it stood still at."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._marks: dict = {}

    def remember(self, path: str, mark: tuple) -> None:
        with self._lock:
            if len(self._marks) >= MAX_STALLS:
                self._marks.clear()
            self._marks[path] = mark

    def still(self, path: str, lock: LockFile) -> bool:
        """Whether the download of the file at *path* (its *lock*) still stands where it
        stood still: its lock held, its marks as they were. Forgotten as soon as it
        moves, ends or dies."""
        with self._lock:
            mark = self._marks.get(path)
        if mark is None:
            return False
        if lock.held_by_another() and writer_mark(lock) == mark:
            return True
        with self._lock:
            self._marks.pop(path, None)
        return False
