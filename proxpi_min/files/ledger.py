"""The file cache's ledger: the total size and count of a cache dir's stored files, and a
journal of stores and evictions, shared by every process on the directory.

Its files sit among the stored ones, named with a leading dot (``.ledger``,
``.journal``, ``.users``) as ``infra.atomic`` requires of bookkeeping.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import tempfile
import threading
import time
from typing import Iterator, NamedTuple, Optional

from ..core.units import parse_decimal
from ..infra.atomic import same_file, write_all, write_atomically
from .layout import stored_files

__all__ = ["LEDGER_NAME", "JournalEntry", "Ledger", "LedgerHandle", "LedgerRecord", "scan"]

logger = logging.getLogger(__name__)

LEDGER_NAME = ".ledger"
JOURNAL_NAME = ".journal"
USERS_NAME = ".users"
LOCK_POLL = 0.01  # seconds between two tries of a lock taken with patience
TORN_END = b" torn torn\n"  # what ends a torn journal line (see LedgerHandle.append)


class LedgerRecord(NamedTuple):
    generation: int  # changes with every store or eviction, by any process
    used: int  # bytes of stored files
    count: int
    epoch: int = 0  # changes whenever the journal is rewritten from scratch


class JournalEntry(NamedTuple):
    """A file stored (``size``, ``mtime``) or, with size -1, evicted; ``path`` is
    relative to the cache root."""

    path: str
    size: int = -1
    mtime: float = 0.0


class Ledger:
    """What processes on one directory know of its stored files, without walking it.

    ``.ledger`` holds one fixed-width line: generation, bytes used, file count and the
    journal's epoch; then the reservations of the downloads in progress (their temp
    file, relative to the directory, and the bytes it will take), one line each.
    ``.journal`` lists, in order, the files stored and evicted since the last snapshot
    (a rewrite that lists every file, least recently used first), so each process
    brings its own LRU view up to date by reading what others appended. Both change
    only under the exclusive lock on ``.ledger``, which is also the directory-wide lock
    that stores and evictions take. A journal record is whole or absent.
    """

    _FORMAT = "proxpi-ledger 2 {} {} {} {}\n"
    _WIDTH = 80  # of the record line; the reservations follow

    def __init__(self, directory: str, read_only: bool = False) -> None:
        self.path = os.path.join(directory, LEDGER_NAME)
        self.journal = os.path.join(directory, JOURNAL_NAME)
        # flock is per open file here (one fd shared by our threads) and per process
        # on NFS: either way our own threads must take turns by themselves.
        self._thread_lock = threading.Lock()
        self._users_fd = -1
        self._warned_malformed = False  # a malformed journal line is reported once
        self._read_only = read_only  # only read (``verify`` of a copy on read-only media)
        self._last = LedgerRecord(0, 0, 0, 0)  # the record as last read, by any of our threads
        self._held_elsewhere = False  # a patient wait for the lock ran out, and it was not had since
        self._open()

    def _open(self) -> None:
        self._pid = os.getpid()
        self._private = False
        if self._read_only:
            self._fd = os.open(self.path, os.O_RDONLY)  # flock needs no write access
            return
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            # A cache dir we cannot write (offline, from read-only media) stores nothing,
            # so nothing needs sharing: a private record will do.
            with tempfile.TemporaryFile() as private:
                self._fd = os.dup(private.fileno())
            self._private = True

    def in_place(self) -> bool:
        """Whether our ledger is still the file at its path (False: the directory was
        deleted or replaced under us); True where it cannot be told now (another of our
        threads holds or waits on the ledger, the path cannot be looked at): asked again later."""
        if not self._thread_lock.acquire(blocking=False):
            return True
        try:
            return self._private or self._fd < 0 or same_file(self._fd, self.path)
        except OSError:  # cannot be looked at now (unreadable, a disk error): asked again later
            return True
        finally:
            self._thread_lock.release()

    def reopen(self) -> None:
        """Open the ledger at its path again (after :meth:`in_place` said False), and
        count this process among the new directory's users."""
        with self._thread_lock:
            self._close_fds()
            self._open()
        self.register_user()

    def register_user(self) -> bool:
        """Count this process among the directory's users (a shared lock held until
        :meth:`close`); True if no other process uses it now, so the files may have
        changed unrecorded (a crash, a copy) and deserve a walk; False if the journal
        is kept up by live processes."""
        try:
            self._users_fd = os.open(os.path.join(os.path.dirname(self.path), USERS_NAME), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return True  # a directory we cannot write: alone as far as we can tell
        try:
            fcntl.flock(self._users_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            alone = True
        except BlockingIOError:
            alone = False
        # Another process starting just now may find neither lock and walk too: harmless.
        fcntl.flock(self._users_fd, fcntl.LOCK_SH)
        return alone

    def _read(self) -> LedgerRecord:
        parts = os.pread(self._fd, self._WIDTH, 0).split()
        if len(parts) == 6 and parts[:2] == [b"proxpi-ledger", b"2"] and all(p.isdigit() for p in parts[2:]):
            self._last = LedgerRecord(*(int(p) for p in parts[2:]))
        else:
            self._last = LedgerRecord(0, 0, 0, 0)  # new, or torn by a crash: a snapshot rewrites it
        return self._last

    @contextlib.contextmanager
    def locked(self, patience: Optional[float] = None) -> Iterator["LedgerHandle"]:
        """Hold the directory-wide lock; the handle reads and rewrites the record.

        :raises TimeoutError: with *patience*, the lock was not had within that many
            seconds (another process holds it: frozen, or stuck on its disk).
        """
        # Shared when only reading: it keeps writers out all the same, and an exclusive
        # lock needs a file open for writing on NFS (flock(2)).
        with self._taken(fcntl.LOCK_SH if self._read_only else fcntl.LOCK_EX, patience):
            yield LedgerHandle(self)

    def read(self, patience: Optional[float] = None) -> LedgerRecord:
        """The record now (under a shared lock, so never half written); with *patience*,
        the last one read if the lock cannot be had within that many seconds."""
        try:
            with self._taken(fcntl.LOCK_SH, patience):
                return self._read()
        except TimeoutError:
            return self._last

    @contextlib.contextmanager
    def _taken(self, mode: int, patience: Optional[float]) -> Iterator[None]:
        """Our threads' lock, then the flock *mode* on the ledger (see :meth:`locked`).
        Once a patient wait has run out, later ones try once, without waiting, until
        the lock is had again: each would run out the same way."""
        if patience is not None and self._held_elsewhere:
            patience = 0.0
        deadline = None if patience is None else time.monotonic() + patience
        if not self._thread_lock.acquire(timeout=-1 if patience is None else patience):
            raise TimeoutError(errno.ETIMEDOUT, f"{self.path} is held by another thread")
        try:
            self._check_open()
            while True:
                try:
                    fcntl.flock(self._fd, mode if deadline is None else mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        self._held_elsewhere = True
                        raise TimeoutError(errno.ETIMEDOUT, f"{self.path} is held by another process") from None
                    time.sleep(LOCK_POLL)
            self._held_elsewhere = False
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def _check_open(self) -> None:
        if self._fd < 0:  # closed: never write through a number the OS may reuse
            raise OSError(f"{self.path} is closed")
        if self._pid != os.getpid():
            # Forked (a worker): the inherited descriptor shares the parent's open file,
            # and with it any flock lock taken on it. Our own keeps the processes apart.
            os.close(self._fd)
            self._open()

    def close(self) -> None:
        with self._thread_lock:
            self._close_fds()

    def _close_fds(self) -> None:
        for fd in (self._fd, self._users_fd):
            if fd >= 0:
                os.close(fd)
        self._fd = self._users_fd = -1


class LedgerHandle:
    """The ledger while its lock is held (from :meth:`Ledger.locked`)."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self.record = ledger._read()

    def write(self, used: int, count: int, new_epoch: bool = False) -> LedgerRecord:
        """Record a new total; returns the record with its new generation."""
        old = self.record
        # A new epoch is the time in ns, never below the last: one after a record lost
        # (read as 0) must still differ from every epoch a process has read before.
        epoch = max(old.epoch + 1, time.time_ns()) if new_epoch else old.epoch
        record = LedgerRecord(old.generation + 1, max(used, 0), max(count, 0), epoch)
        data = Ledger._FORMAT.format(*record).encode()
        os.pwrite(self._ledger._fd, data.ljust(Ledger._WIDTH), 0)  # fixed width: no truncate, no torn tail
        self.record = self._ledger._last = record
        return record

    def reservations(self) -> dict:
        """Temp file (relative path) -> the bytes its download reserved."""
        fd = self._ledger._fd
        data = os.pread(fd, max(os.fstat(fd).st_size - Ledger._WIDTH, 0), Ledger._WIDTH)
        found = {}
        for line in data.decode("utf-8", "replace").splitlines():
            name, _, size_text = line.rpartition(" ")
            size = parse_decimal(size_text)
            if name and size is not None:
                found[name] = size
        return found

    def reserve(self, reservations: dict) -> None:
        """Rewrite the reservations as *reservations* (relative path -> bytes).

        :raises OSError: it could not be written (the old ones stay, or none).
        """
        fd = self._ledger._fd
        data = "".join(f"{name} {size}\n" for name, size in reservations.items()).encode()
        try:
            if data:
                write_all(fd, data, Ledger._WIDTH)
            os.ftruncate(fd, Ledger._WIDTH + len(data))
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, Ledger._WIDTH)  # none rather than half of one
            raise

    def changes(self, position: Optional[tuple]) -> tuple:
        """(entries, new position, whether they start from a snapshot) since
        *position*, a value this method returned before (None: from the start)."""
        epoch, offset = position if position is not None else (-1, 0)
        snapshot = epoch != self.record.epoch
        if snapshot:
            offset = 0
        try:
            with open(self._ledger.journal, "rb") as file:
                if os.fstat(file.fileno()).st_size < offset:  # removed or cut by hand: read it all
                    offset = 0
                file.seek(offset)
                data = file.read()
        except FileNotFoundError:
            data, offset = b"", 0
        complete = data.rfind(b"\n") + 1  # a crash may have left half a line
        lines = [line for line in data[:complete].splitlines() if line]
        entries = [entry for entry in map(_parse_entry, lines) if entry is not None]
        if len(entries) < len(lines) and not self._ledger._warned_malformed:
            self._ledger._warned_malformed = True
            logger.warning("skipping %d malformed lines of %s", len(lines) - len(entries), self._ledger.journal)
        return entries, (self.record.epoch, offset + complete), snapshot

    def recorded_sizes(self) -> dict:
        """Path -> the size the journal last recorded for each file it holds.

        :raises OSError: the journal cannot be read.
        """
        sizes: dict = {}
        for entry in self.changes(None)[0]:
            if entry.size < 0:
                sizes.pop(entry.path, None)
            else:
                sizes[entry.path] = entry.size
        return sizes

    def append(self, entries: list, position: Optional[tuple]) -> Optional[tuple]:
        """Add *entries* at the journal's end, all of them or none (one write; on a
        failure the journal is cut back to where it was); returns the position after
        them (*position* must be where our last :meth:`changes` left us; None stays
        None: the next :meth:`changes` reads it all).

        :raises OSError: the write failed (ENOSPC, EIO...): nothing was added.
        """
        data = b"".join(_format_entry(entry) for entry in entries)
        fd = os.open(self._ledger.journal, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                # A torn tail (a crash, a cut copy) is ended with two more fields, which no
                # record has: it stays a line of its own, skipped, and is never taken for
                # a whole record (a path cut short would look like one).
                data = TORN_END + data
            try:
                # One write: a record is whole or absent, never glued to a torn one.
                if os.write(fd, data) != len(data):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)
        if position is None or position[1] != size:
            return position  # behind (or on a torn tail): the next read catches up
        return position[0], size + len(data)

    def journal_size(self) -> int:
        with contextlib.suppress(OSError):
            return os.path.getsize(self._ledger.journal)
        return 0

    def snapshot(self, entries: list, used: int, count: int) -> tuple:
        """Rewrite the journal as *entries* (every stored file, least recently used
        first) under a new epoch; returns the position after them."""
        data = b"".join(_format_entry(entry) for entry in entries)
        write_atomically(self._ledger.journal, data)
        record = self.write(used, count, new_epoch=True)
        return record.epoch, len(data)


def scan(root: str) -> list:
    """Every file stored under *root*, as the journal lists it (paths relative to
    *root*), least recently used first: the disk's own account."""
    found = []
    for path in stored_files(root):
        with contextlib.suppress(OSError):
            stat = os.stat(path)
            found.append((stat.st_mtime, path[len(root) + 1 :], stat.st_size))
    found.sort()
    return [JournalEntry(relative, size, mtime) for mtime, relative, size in found]


def _format_entry(entry: JournalEntry) -> bytes:
    if entry.size < 0:
        return f"- {entry.path}\n".encode()
    return f"+ {entry.size} {entry.mtime:.3f} {entry.path}\n".encode()


def _parse_entry(line: bytes) -> Optional[JournalEntry]:
    """A journal line, or None if it is not one (a torn or foreign line is skipped)."""
    parts = line.decode("utf-8", "replace").split(" ")
    try:
        if parts[0] == "+" and len(parts) == 4:
            entry = JournalEntry(parts[3], int(parts[1]), float(parts[2]))
        elif parts[0] == "-" and len(parts) == 2:
            entry = JournalEntry(parts[1])
        else:
            return None
    except ValueError:
        return None
    # Paths come from validated names; one that climbs out of the root is not ours.
    if entry.path.startswith("/") or ".." in entry.path.split("/") or entry.size < -1:
        return None
    return entry
