"""What processes sharing a cache dir agree on: temp-file naming, atomic writes, lock
files, the size ledger, and sweeping what dead writers left behind.

Every name the proxy writes beside stored files starts with a dot (``.tmp-``,
``.lock-``, ``.ledger``, ``.journal``, ``.users``); a stored file's name never does
(``names.check_filename``), so walks of the directory tell them apart by the first
character.

Locks are ``fcntl.flock`` locks: the kernel drops them when their holder dies (kill -9
included), so a dead writer never blocks the others. On NFSv4, Linux emulates flock
with POSIX byte-range locks on the whole file, whose owner is the process, not the
open file: two threads of one process would both get the lock there. So threads of
one process never contend for the same lock file: downloads are single-flight per
process (``file_cache``), and :class:`Ledger` has its own thread lock. Locally a flock
lock belongs to the open file, which fork shares: a lock file is opened per download,
and the ledger reopens its own in a forked child (a worker forked after the caches
were built keeps their view, not their locks). These locks stand for the directory and
the downloads themselves, so, unlike the caches' in-memory locks, they are held across
disk and network I/O.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import tempfile
import threading
import time
from typing import Iterator, NamedTuple, Optional

__all__ = [
    "LOCK_PREFIX",
    "STALE_TEMP",
    "TEMP_PREFIX",
    "JournalEntry",
    "Ledger",
    "LedgerHandle",
    "LedgerRecord",
    "LockFile",
    "is_private",
    "lock_path",
    "pid_alive",
    "same_file",
    "remove_temp_files",
    "temp_path",
    "write_atomically",
]

TEMP_PREFIX = ".tmp-"
LOCK_PREFIX = ".lock-"
LEDGER_NAME = ".ledger"
JOURNAL_NAME = ".journal"
USERS_NAME = ".users"
STALE_TEMP = 600.0  # seconds without a write after which another host's temp file is dead


def write_atomically(path: str, data: bytes) -> None:
    """Write *data* to *path* through a temp file and ``os.replace``, so that a reader
    (or a restart after kill -9) sees the old content or the new, never a part."""
    temp = temp_path(os.path.dirname(path))
    try:
        with open(temp, "wb") as file:
            file.write(data)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _host() -> str:
    return "".join(c for c in socket.gethostname() if c.isalnum() or c == ".") or "host"


def temp_path(directory: str) -> str:
    """A new temp file name in *directory* naming its owner: host, process, random."""
    return os.path.join(directory, f"{TEMP_PREFIX}{_host()}-{os.getpid()}-{os.urandom(4).hex()}")


def remove_temp_files(directory: str, at_start: bool = True) -> int:
    """Remove leftover temp files under *directory*; count them.

    Ours to judge are those of this host: left alone while their process lives (a
    second proxy on the same dir), removed once it is gone, or when it has our own
    process id (a previous run, e.g. PID 1 in a restarted container). Another host's
    (a shared volume) are removed only once untouched for STALE_TEMP seconds, since
    a download in progress writes to its file all the time. Once running
    (*at_start* false), only that age rule applies, to every owner.
    """
    removed = 0
    now = time.time()
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            if name.startswith(LOCK_PREFIX) and at_start:
                _remove_if_unlocked(path)
            if not name.startswith(TEMP_PREFIX):
                continue
            with contextlib.suppress(OSError):
                if (at_start and not _owner_alive(name)) or now - os.stat(path).st_mtime > STALE_TEMP:
                    os.unlink(path)
                    removed += 1
    return removed


def _owner_alive(temp_name: str) -> bool:
    """Whether the temp file's process may still be writing it (see remove_temp_files)."""
    host, _, pid_text = temp_name[len(TEMP_PREFIX) :].rpartition("-")[0].rpartition("-")
    if host != _host():
        return True  # another host's: judged by age
    pid = int(pid_text) if pid_text.isascii() and pid_text.isdigit() else -1
    if pid in (-1, os.getpid()):
        return False
    return pid_alive(pid)


def pid_alive(pid: int) -> bool:
    """Whether process *pid* of this host still runs (signal 0 checks, sends nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def is_private(name: str) -> bool:
    """Whether a name under the cache dir is the proxy's own bookkeeping (a temp file,
    a lock file, the ledger and its journal), never a stored file."""
    return name.startswith(".")


def lock_path(path: str) -> str:
    """The lock file that guards writing *path*, beside it."""
    directory, name = os.path.split(path)
    return os.path.join(directory, LOCK_PREFIX + name)


def _remove_if_unlocked(path: str) -> None:
    """Drop a lock file that its holder died with (nobody holds it now)."""
    lock = LockFile(path)
    if lock.acquire(wait=False):
        lock.release()


def same_file(fd: int, path: str) -> bool:
    """Whether the open *fd* is the file now at *path* (False if nothing is there)."""
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


class LockFile:
    """An exclusive lock on a small file that also records what its holder is doing
    (e.g. the temp file it writes), so that other processes can follow its work.

    The holder removes the file as it lets go. A file still there when the lock is
    taken, with a record in it, was left by a holder that died: :attr:`stale` holds
    that record.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: Optional[int] = None
        self.stale = ""

    def acquire(self, wait: bool) -> bool:
        """Take the lock (blocking if *wait*); False if another holds it."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
                except BlockingIOError:
                    return False
                # A holder removes the file before it lets go: a lock won on a file no
                # longer at the path guards nothing, so take the path's current one.
                if same_file(fd, self.path):
                    self._fd, fd = fd, None
                    self.stale = os.pread(self._fd, 4096, 0).decode("utf-8", "replace")
                    return True
            finally:
                if fd is not None:
                    os.close(fd)

    def record(self, text: str) -> None:
        """Say what the holder is doing (read by others with :func:`read_record`)."""
        assert self._fd is not None
        data = text.encode()
        os.pwrite(self._fd, data, 0)
        os.ftruncate(self._fd, len(data))

    def read_record(self) -> str:
        """The holder's record, read without the lock ('' if there is none)."""
        try:
            with open(self.path, "rb") as file:
                return file.read(4096).decode("utf-8", "replace")
        except OSError:
            return ""

    def release(self) -> None:
        """Remove the file, then let go (waiters retry on the path; see acquire)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None


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
    journal's epoch. ``.journal`` lists, in order, the files stored and evicted since the
    last snapshot (a rewrite that lists every file, least recently used first), so each
    process brings its own LRU view up to date by reading what others appended. Both
    change only under the exclusive lock on ``.ledger``, which is also the
    directory-wide lock that stores and evictions take.
    """

    _FORMAT = "proxpi-ledger 2 {} {} {} {}\n"

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, LEDGER_NAME)
        self.journal = os.path.join(directory, JOURNAL_NAME)
        # flock is per open file here (one fd shared by our threads) and per process
        # on NFS: either way our own threads must take turns by themselves.
        self._thread_lock = threading.Lock()
        self._users_fd = -1
        self._open()

    def _open(self) -> None:
        self._pid = os.getpid()
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            # A cache dir we cannot write (offline, from read-only media) stores nothing,
            # so nothing needs sharing: a private record will do.
            with tempfile.TemporaryFile() as private:
                self._fd = os.dup(private.fileno())

    def join(self) -> bool:
        """Count this process among the directory's users (a shared lock held until
        :meth:`close`); True if no other process uses it now, so the files may have
        changed unrecorded (a crash, a copy) and deserve a walk; False if the journal
        is kept up by live processes."""
        try:
            self._users_fd = os.open(os.path.join(os.path.dirname(self.path), USERS_NAME), os.O_RDWR | os.O_CREAT)
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
        parts = os.pread(self._fd, 200, 0).split()
        if len(parts) == 6 and parts[:2] == [b"proxpi-ledger", b"2"] and all(p.isdigit() for p in parts[2:]):
            return LedgerRecord(*(int(p) for p in parts[2:]))
        return LedgerRecord(0, 0, 0, 0)  # new, or torn by a crash: a snapshot rewrites it

    @contextlib.contextmanager
    def locked(self) -> Iterator["LedgerHandle"]:
        """Hold the directory-wide lock; the handle reads and rewrites the record."""
        with self._thread_lock:
            self._check_open()
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield LedgerHandle(self)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def read(self) -> LedgerRecord:
        """The record now (under a shared lock, so never half written)."""
        with self._thread_lock:
            self._check_open()
            fcntl.flock(self._fd, fcntl.LOCK_SH)
            try:
                return self._read()
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

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
        record = LedgerRecord(old.generation + 1, max(used, 0), max(count, 0), old.epoch + new_epoch)
        data = Ledger._FORMAT.format(*record).encode()
        os.pwrite(self._ledger._fd, data.ljust(80), 0)  # fixed width: no truncate, no torn tail
        self.record = record
        return record

    def changes(self, position: Optional[tuple]) -> tuple:
        """(entries, new position, whether they start from a snapshot) since
        *position*, a value this method returned before (None: from the start)."""
        epoch, offset = position if position is not None else (-1, 0)
        snapshot = epoch != self.record.epoch
        if snapshot:
            offset = 0
        try:
            with open(self._ledger.journal, "rb") as file:
                file.seek(offset)
                data = file.read()
        except FileNotFoundError:
            data = b""
        complete = data.rfind(b"\n") + 1  # a crash may have left half a line
        entries = [entry for entry in map(_parse_entry, data[:complete].splitlines()) if entry is not None]
        return entries, (self.record.epoch, offset + complete), snapshot

    def append(self, entries: list, position: Optional[tuple]) -> Optional[tuple]:
        """Add *entries* at the journal's end; returns the position after them
        (*position* must be where our last :meth:`changes` left us; None stays None:
        the next :meth:`changes` reads it all)."""
        data = b"".join(_format_entry(entry) for entry in entries)
        fd = os.open(self._ledger.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            _write_whole(fd, data)
        finally:
            os.close(fd)
        return None if position is None else (position[0], position[1] + len(data))

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


def _write_whole(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


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
