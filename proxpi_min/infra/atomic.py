"""Files that processes sharing a directory write safely: temp-file names, atomic
writes, lock files, and sweeping what dead writers left behind.

Every name the proxy writes beside stored files starts with a dot (``.tmp-``,
``.lock-``, and the file cache's ledger files); a stored file's name never does
(``names.check_filename``), so walks of the directory tell them apart by the first
character.

Locks are ``fcntl.flock`` locks: the kernel drops them when their holder dies (kill -9
included), so a dead writer never blocks the others. On NFSv4, Linux emulates flock
with POSIX byte-range locks on the whole file, whose owner is the process, not the
open file: two threads of one process would both get the lock there. So threads of
one process never contend for the same lock file: downloads are single-flight per
process (``files.file_cache``), and the ledger (``files.ledger``) has its own thread
lock. Locally a flock lock belongs to the open file, which fork shares: a lock file is
opened per download, and the ledger reopens its own in a forked child (a worker forked
after the caches were built keeps their view, not their locks). These locks stand for
the directory and the downloads themselves, so, unlike the caches' in-memory locks,
they are held across disk and network I/O.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import time
from typing import Callable, Optional

from ..core.units import parse_decimal

__all__ = [
    "LOCK_PREFIX",
    "STALE_TEMP",
    "TEMP_PREFIX",
    "LockFile",
    "is_private",
    "is_temp_name",
    "lock_path",
    "pid_alive",
    "record_temp",
    "remove_recorded_temp",
    "same_file",
    "remove_temp_files",
    "temp_in_use",
    "temp_path",
    "write_all",
    "write_atomically",
]

TEMP_PREFIX = ".tmp-"
LOCK_PREFIX = ".lock-"
STALE_TEMP = 600.0  # seconds without a write after which another host's temp file is dead
# Seconds a folder found empty is left: a writer may have just made it and not yet put
# its first file in (one emptied by the sweep itself goes at once, see remove_temp_files).
FOLDER_GRACE = 10.0


def write_all(fd: int, data: bytes, offset: Optional[int] = None) -> None:
    """Write all of *data* to *fd*: at *offset* (pwrite), or at the file's position (None);
    a full disk may take part of it without an error, and then nothing.

    :raises OSError: ENOSPC when the disk takes no byte more.
    """
    view = memoryview(data)
    while view:
        written = os.write(fd, view) if offset is None else os.pwrite(fd, view, offset)
        if written == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]
        if offset is not None:
            offset += written


def write_atomically(path: str, data: bytes, durable: bool = False) -> None:
    """Write *data* to *path* through a temp file and ``os.replace``, so that a reader
    (or a restart after kill -9) sees the old content or the new, never a part;
    *durable*: also after a crash of the machine (the bytes are on disk before the
    name is, else a crash may leave the name on an empty file)."""
    temp = temp_path(os.path.dirname(path))
    try:
        with open(temp, "wb") as file:
            file.write(data)
            if durable:
                file.flush()
                os.fsync(file.fileno())
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


def remove_temp_files(
    directory: str,
    at_start: bool = True,
    mine: Optional[Callable[[str], bool]] = None,
    folders: bool = False,
    stop: Optional[Callable[[], bool]] = None,
) -> int:
    """Remove what dead writers left under *directory*; count the temp files removed.

    A lock file that can be taken has no living holder: it goes, and so does the temp
    file its record names, however young (the kernel, or the NFS server, frees a dead
    holder's lock). A temp file that a held lock names is never removed, however old.
    Other temp files (a spooled download's, an atomic write's) are judged by their
    name at start (*at_start*, with no other process on the directory): left alone
    while their process lives, removed once it is gone, or when it has our own
    process id (a previous run, e.g. PID 1 in a restarted container); another host's
    (a shared volume) only once untouched for STALE_TEMP seconds. Once running, or
    beside other processes, only that age rule applies to them, whoever wrote them.

    *mine* tells the lock files this process may hold itself (its downloads in
    progress): they are not opened at all. With *folders*, a folder left empty goes
    too: at once if the sweep emptied it (a writer locks its file first, and
    ``LockFile`` makes its folder again), else once older than FOLDER_GRACE. *stop*, asked
    before each folder, ends the sweep early.
    """
    removed = 0
    now = time.time()
    emptied: set = set()  # folders this sweep removed
    for root, subfolders, names in os.walk(directory, topdown=False):
        if stop is not None and stop():  # the process is stopping: the rest next time
            break
        gone = _sweep_folder(root, names, at_start, mine, now)
        removed += sum(1 for name in gone if name.startswith(TEMP_PREFIX))
        if not folders or root == directory:
            continue
        if len(gone) < len(names) or any(os.path.join(root, name) not in emptied for name in subfolders):
            continue
        if gone or subfolders or _older(root, now - FOLDER_GRACE):
            with contextlib.suppress(OSError):  # a writer got in meanwhile
                os.rmdir(root)
                emptied.add(root)
    return removed


def _sweep_folder(folder: str, names: list, at_start: bool, mine: Optional[Callable[[str], bool]], now: float) -> set:
    """The sweep of one folder's own files (see remove_temp_files); the names removed."""
    gone, live, dead = set(), set(), set()
    for name in names:  # the locks first: they tell which temp files are whose
        path = os.path.join(folder, name)
        if not name.startswith(LOCK_PREFIX) or (mine is not None and mine(path)):
            continue
        held, record = _judge_lock(path)
        temp = record_temp(record)
        (live if held else dead).add(temp)
        if not held:
            gone.add(name)
            if "/" in temp:  # the spool's lock names a file in a folder below
                remove_recorded_temp(path, record)
    for name in names:
        if not name.startswith(TEMP_PREFIX) or name in live:
            continue
        path = os.path.join(folder, name)
        with contextlib.suppress(OSError):
            if (name in dead or (at_start and not _owner_alive(name))
                    or now - os.stat(path).st_mtime > STALE_TEMP):
                os.unlink(path)
                gone.add(name)
    return gone


def is_temp_name(name: str) -> bool:
    """A temp file's name as a lock file records it (one name, no path)."""
    return name.startswith(TEMP_PREFIX) and "/" not in name and name not in (".", "..")


def record_temp(record: str) -> str:
    """The temp file a lock file's record names: the record is that name, then what its
    holder adds after a space (a download's length, see ``files.downloads``)."""
    return record.partition(" ")[0]


def remove_recorded_temp(lock: str, record: str) -> None:
    """Remove the temp file a dead holder's *record* names, relative to its lock file's
    folder: beside it for a download's lock, in a file's folder below for the spool's.
    A record that names no temp file there is left alone; folders below the lock's that
    the removal empties go too (a writer makes its folder again, see LockFile)."""
    parts = record_temp(record).split("/")
    if not is_temp_name(parts[-1]) or any(part in ("", ".", "..") for part in parts):
        return
    path = os.path.join(os.path.dirname(lock), *parts)
    with contextlib.suppress(OSError):
        os.unlink(path)
    with contextlib.suppress(OSError):  # not empty: nor is any folder above it
        for _ in parts[:-1]:
            path = os.path.dirname(path)
            os.rmdir(path)


def _judge_lock(path: str) -> tuple:
    """(whether the lock file at *path* has a living holder, its record); one without
    is removed. A file gone meanwhile had a holder that let go: held, as far as we know."""
    try:
        fd = os.open(path, os.O_RDWR)  # never O_CREAT: a lock file let go of is not made again
    except OSError:
        return True, ""
    try:
        record = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held (or no locks here: taken for held)
            return True, record
        if not same_file(fd, path):  # its holder let go as we opened it
            return True, ""
        record = os.pread(fd, 4096, 0).decode("utf-8", "replace")  # final: nobody writes it now
        os.unlink(path)  # while locked: a waiter that gets this file retries on the path
        return False, record
    except OSError:
        return True, ""
    finally:
        os.close(fd)


def _older(path: str, before: float) -> bool:
    """Whether *path* last changed before the time *before* (False if it is gone)."""
    try:
        return os.stat(path).st_mtime < before
    except OSError:
        return False


def _owner(temp_name: str) -> tuple:
    """(host, process id or -1) that a temp file's name gives."""
    host, _, pid_text = temp_name[len(TEMP_PREFIX) :].rpartition("-")[0].rpartition("-")
    pid = parse_decimal(pid_text)
    return host, -1 if pid is None else pid


def _owner_alive(temp_name: str) -> bool:
    """Whether the temp file's process may still be writing it (see remove_temp_files)."""
    host, pid = _owner(temp_name)
    if host != _host():
        return True  # another host's: judged by age
    if pid in (-1, os.getpid()):
        return False
    return pid_alive(pid)


def temp_in_use(path: str) -> bool:
    """Whether a temp file is still being written: it exists and its process lives
    (this host's, us included) or, another host's, it changed within STALE_TEMP."""
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return False
    host, pid = _owner(os.path.basename(path))
    if host == _host() and pid != -1:
        return pid == os.getpid() or pid_alive(pid)
    return time.time() - mtime <= STALE_TEMP


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


def same_file(fd: int, path: str) -> bool:
    """Whether the open *fd* is the file now at *path* (False if nothing is there, a
    file standing where one of its folders was included).

    :raises OSError: *path* cannot be looked at (a folder made unreadable, a disk error).
    """
    try:
        here, there = os.fstat(fd), os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
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
            fd = self._open()
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

    def _open(self) -> int:
        """The lock file, made if need be; its folder too, if that went since the
        writer made it (an eviction removed the last file in it)."""
        for _ in range(3):  # removed again between the two calls: once more
            try:
                return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:
                with contextlib.suppress(FileNotFoundError):  # a parent removed as it was made
                    os.makedirs(os.path.dirname(self.path), exist_ok=True)
        return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def abandon(self) -> str:
        """At a stop: remove the lock file if it is still ours, without letting go (the
        process's end does, as its threads may still write under it); our record, or ''
        where the file at the path is not ours."""
        if self._fd is None or not same_file(self._fd, self.path):
            return ""
        with contextlib.suppress(OSError):
            record = os.pread(self._fd, 4096, 0).decode("utf-8", "replace")
            os.unlink(self.path)
            return record
        return ""

    def touch(self) -> None:
        """Give the lock file a new mtime, as its holder's sign of life (by path: the
        descriptor may be let go of meanwhile, and its number reused)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def held_by_another(self) -> bool:
        """Whether another holder has the lock now, asked without taking it: a shared
        lock tried and let go at once (a taker racing it retries, see acquire's callers)."""
        if self._fd is not None:
            return False
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:  # held (or no locks here, e.g. ENOLCK on NFS: taken for held)
            return True
        finally:
            os.close(fd)  # which lets go of the shared lock
        return False

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
        """Remove the file, then let go (waiters retry on the path; see acquire). A file
        at the path that is not ours (ours was removed, another holder made a new one)
        stays."""
        if self._fd is None:
            return
        if same_file(self._fd, self.path):
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        os.close(self._fd)
        self._fd = None
