"""Downloads: one upstream fetch per file into a temp file, verified as it arrives,
shared by every client that asks for the file meanwhile (each reads what is written),
in this process and in every other process on the same cache dir.

Across processes, the writer holds the file's lock file (``shared_dir.LockFile``) and
records in it its temp file's name and the length. A process that finds the lock held
follows that temp file instead of fetching: its clients get the bytes as they land,
the last one only once the writer has renamed the file to its final name (it verifies
before it renames). If the writer dies (its lock is freed with its record still in the
lock file), the follower's clients fetch the rest from upstream themselves, still
hash-checked, and a new download takes over in this process.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Optional

from .bodies import CHUNK, FileBody, relay, send_chunk
from ..core.byteranges import ByteRange
from ..core.errors import IntegrityError, ProxpiError, UpstreamError
from ..core.names import NormalizedName, check_filename
from ..infra.shared_dir import TEMP_PREFIX, LockFile, lock_path, same_file, temp_path
from ..core.simple import FileEntry, best_hash

if TYPE_CHECKING:  # the cache that owns a download; it imports this module
    from .file_cache import FileCache

__all__ = ["Download", "DownloadBody", "Target"]

logger = logging.getLogger(__name__)

# How often a follower looks at another process's download (its file's size, its lock):
# fast enough to stream, slow enough to cost nothing (no inotify on NFS).
FOLLOW_POLL = 0.02

class Target:
    """What to fetch and where it lives: a distribution file or its metadata file."""

    def __init__(self, root: str, project: NormalizedName, entry: FileEntry, metadata: bool, index: str = "") -> None:
        check_filename(entry.filename)
        self.index = index  # the listing index's URL without credentials, for metrics
        dist_hash = best_hash(entry.hashes)
        folder = f"{dist_hash[0]}-{dist_hash[1]}" if dist_hash else "unverified"
        self.filename = entry.filename + (".metadata" if metadata else "")
        self.path = os.path.join(root, project, folder, self.filename)
        self.url = entry.url + (".metadata" if metadata else "")
        self.hash = best_hash(entry.metadata or ()) if metadata else dist_hash
        self.size = None if metadata else entry.size
        # Files never change (PyPI refuses a reused file name), so their hash is a
        # strong validator; without one, there is no ETag.
        self.etag = f'"{self.hash[1][:40]}"' if self.hash else None


class Download:
    """One upstream download into a temp file, shared by every client that asks for
    the file meanwhile. The writer thread publishes progress under ``cond``."""

    def __init__(self, cache: "FileCache", target: Target) -> None:
        self.cache = cache
        self.target = target
        self.cond = threading.Condition()
        self.started = False  # upstream answered; length is known (or None)
        self.length: Optional[int] = None
        self.written = 0
        self.done = False  # complete and verified (stored, or deliberately not)
        self.error: Optional[ProxpiError] = None
        self.disk_failed = False  # the temp file could not be written: readers resume upstream
        self.temp = temp_path(os.path.dirname(target.path))
        self.fd: Optional[int] = None
        # Clients that joined and have not yet taken their own handle on the file: the
        # writer leaves the file open for them even if it finishes first.
        self.joined = 0
        self._writer_finished = False
        self.asked = False
        self.lock = LockFile(lock_path(target.path))
        self.take_over = False  # another process's writer died: start a new download

    @property
    def over(self) -> bool:
        """Nothing more will be written: done, failed, or passing through."""
        return self.done or self.error is not None or self.disk_failed

    # ------------------------------------------------------------------ writer

    def run(self) -> None:
        try:
            self._run()
            if self.asked:
                self.cache.count_upstream(self.target, None)
        except ProxpiError as exc:
            self.cache.count_upstream(self.target, exc)
            self._fail(exc)
        except Exception as exc:  # a bug: still release every waiting client
            logger.exception("download of %s failed", self.target.url)
            self._fail(UpstreamError(f"download failed: {exc}"))
        finally:
            self.cache._finished(self)

    def _run(self) -> None:
        target = self.target
        try:
            os.makedirs(os.path.dirname(self.temp), exist_ok=True)
            if not self.lock.acquire(wait=False) and self._follow():
                return
        except OSError as exc:
            logger.warning("cannot cache %s (%s); passing it through", target.filename, exc.strerror)
            self._publish(disk_failed=True)
            return
        try:
            if self.lock.stale:
                self._remove_dead_temp(self.lock.stale)
            if not self._adopt_stored():
                self._fetch()
        except BaseException:
            self._remove_temp()  # before the lock goes: the next holder finds no leftover
            raise
        finally:
            self.lock.release()

    def _fetch(self) -> None:
        """Download into our temp file, verify, store (the lock is held)."""
        target = self.target
        try:
            self.lock.record(os.path.basename(self.temp))
            self.fd = os.open(self.temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            logger.warning("cannot cache %s (%s); passing it through", target.filename, exc.strerror)
            self._publish(disk_failed=True)
            return
        self.asked = True  # from here on, the outcome is upstream's
        with self.cache.upstream.open_file(target.url) as response:
            length = response.length
            if length is not None and target.size is not None and length != target.size:
                raise IntegrityError(f"{target.filename}: upstream sends {length} bytes, the index says {target.size}")
            length = length if length is not None else target.size
            self.lock.record(f"{os.path.basename(self.temp)} {length if length is not None else '-'}")
            self._publish(started=True, length=length)
            hasher = hashlib.new(target.hash[0]) if target.hash else None
            while True:
                chunk = response.read(CHUNK)
                if not chunk:
                    break
                if self.length is not None and self.written + len(chunk) > self.length:
                    raise IntegrityError(f"{target.filename}: upstream sends more than {self.length} bytes")
                if hasher is not None:
                    hasher.update(chunk)
                try:
                    _write_all(self.fd, chunk, self.written)
                except OSError as exc:
                    logger.warning("cannot cache %s (%s); passing it through", target.filename, exc.strerror)
                    self._remove_temp()
                    self._publish(disk_failed=True)
                    return
                self._publish(written=self.written + len(chunk))
        if self.length is not None and self.written != self.length:
            raise IntegrityError(f"{target.filename}: upstream sent {self.written} of {self.length} bytes")
        if hasher is not None and hasher.hexdigest() != target.hash[1]:
            raise IntegrityError(f"{target.filename}: downloaded bytes do not match the index hash")
        try:
            # On disk before it has its final name: a power cut cannot leave a short file
            # there, and on NFS other hosts read these bytes, not stale ones.
            os.fsync(self.fd)
        except OSError as exc:
            logger.warning("cannot cache %s (%s)", target.filename, exc.strerror)
            self._remove_temp()
        else:
            self.cache._store(self)
        self._publish(done=True, length=self.written)

    # ------------------------------------------------------------------ other processes

    def _adopt_stored(self) -> bool:
        """Serve the file if another process stored it while we waited for the lock."""
        opened = self.cache._open_cached(self.target)
        if opened is None:
            return False
        file, size = opened
        with file:
            self.fd = os.dup(file.fileno())
        self._publish(started=True, length=size, written=size, done=True)
        return True

    def _follow(self) -> bool:
        """Another process holds the lock: stream its temp file until it lets go.

        What we publish, we have read and hashed ourselves, and the last byte goes
        out only once our own hash matches: on NFS another host's writes may reach
        us late, so the writer's check alone does not cover what we read.

        Returns False when we then hold the lock with nothing followed (download or
        adopt as usual); True when this download is over: the writer stored the file we
        followed (done), or it went away without (our clients fetch the rest upstream;
        :attr:`take_over` says whether a new download should start here).

        :raises IntegrityError: what we read does not match the index hash.
        """
        hasher = hashlib.new(self.target.hash[0]) if self.target.hash else None
        while not self.lock.acquire(wait=False):
            if self.fd is None:
                self._open_followed()
            else:
                self._read_followed(hasher)
            time.sleep(FOLLOW_POLL)
        if self.fd is None:
            return False
        try:
            if same_file(self.fd, self.target.path):  # renamed: complete and verified there
                # Opening it anew makes an NFS client revalidate what it cached of the
                # file (close-to-open consistency); locally it costs next to nothing.
                os.close(os.open(self.target.path, os.O_RDONLY))
                self._read_followed(hasher)
                # The stored file's own size, too: the writer's record of the length is
                # read without its lock, so on NFS it may be torn (a file with no hash
                # would otherwise be taken as complete at a wrong length).
                size = os.fstat(self.fd).st_size
                if self.written != size or (self.length is not None and self.written != self.length):
                    raise IntegrityError(f"{self.target.filename}: read {self.written} of {size} bytes")
                if hasher is not None and hasher.hexdigest() != self.target.hash[1]:
                    raise IntegrityError(f"{self.target.filename}: stored bytes do not match the index hash")
                self.cache._open_cached(self.target)  # adopt it into our view
                self._publish(done=True, length=self.written)
            else:
                # The writer failed (it cleaned up) or died (its record is still there).
                self.take_over = bool(self.lock.stale)
                if self.take_over:
                    self._remove_dead_temp(self.lock.stale)
                logger.warning("the download of %s in another process ended early", self.target.filename)
                self._publish(disk_failed=True)
        finally:
            self.lock.release()
        return True

    def _read_followed(self, hasher) -> None:
        """Hash what the writer added since we last looked, and let clients have it."""
        end = os.fstat(self.fd).st_size
        if self.length is not None:
            end = min(end, self.length)
        position = self.written
        while position < end:
            data = os.pread(self.fd, min(CHUNK, end - position), position)
            if not data:
                break
            if hasher is not None:
                hasher.update(data)
            position += len(data)
        if position > self.written:
            self._publish(written=position)

    def _open_followed(self) -> None:
        """Open the temp file the lock's holder writes, once upstream answered it."""
        name, _, length = self.lock.read_record().partition(" ")
        if not length.strip() or not _is_temp_name(name):
            return
        try:
            self.fd = os.open(os.path.join(os.path.dirname(self.target.path), name), os.O_RDONLY)
        except OSError:
            return  # renamed or removed meanwhile: the lock tells next
        length = length.strip()
        self._publish(started=True, length=int(length) if length.isdigit() else None)

    def _remove_dead_temp(self, record: str) -> None:
        """Remove the temp file a dead lock holder was writing (ours to judge now)."""
        name = record.partition(" ")[0]
        if _is_temp_name(name):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(os.path.dirname(self.target.path), name))

    def _publish(self, **changes) -> None:
        with self.cond:
            for name, value in changes.items():
                setattr(self, name, value)
            self.cond.notify_all()

    def _fail(self, error: ProxpiError) -> None:
        logger.warning("download of %s failed: %s", self.target.filename, error.message)
        self._remove_temp()
        self._publish(error=error)

    def _remove_temp(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.temp)

    def close_fd(self) -> None:
        """The writer is done with the file; it is closed once no joined client waits."""
        with self.cond:
            self._writer_finished = True
            self._close_if_unused()

    def _close_if_unused(self) -> None:
        if self._writer_finished and self.joined == 0 and self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def join(self) -> None:
        """Count a client in (under the file cache's lock, as it finds the download).
        It must then call :meth:`attach` or :meth:`leave` once."""
        with self.cond:
            self.joined += 1

    def leave(self) -> None:
        with self.cond:
            self.joined -= 1
            self._close_if_unused()

    def attach(self):
        """Wait until upstream answered, then give a joined client its own handle on the
        temp file (readable even after os.replace or unlink), or None if the file could
        not be created.

        :raises ProxpiError: the download failed before it started.
        """
        with self.cond:
            try:
                self.cond.wait_for(lambda: self.started or self.over)
                if self.error is not None and not self.started:
                    raise self.error
                return None if self.fd is None else os.fdopen(os.dup(self.fd), "rb")
            finally:
                self.joined -= 1
                self._close_if_unused()

    # ------------------------------------------------------------------ readers

    def has_start_of(self, byte_range: ByteRange) -> bool:
        """Whether the first byte of *byte_range* is already written."""
        with self.cond:
            if not self.started or self.length is None or self.disk_failed:
                return False
            try:
                return byte_range.resolve(self.length)[0] < self.written
            except ProxpiError:
                return True  # unsatisfiable: answered 416 from the download's length



def _is_temp_name(name: str) -> bool:
    """A temp file's name as a lock file records it (one name, no path)."""
    return name.startswith(TEMP_PREFIX) and "/" not in name and name not in (".", "..")


def _write_all(fd: int, data: bytes, offset: int) -> None:
    """pwrite all of *data*: a full disk may take part of it without an error."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view, offset = view[written:], offset + written


class DownloadBody(FileBody):
    """A client's view of a :class:`Download`: bytes are sent as they are written
    (with sendfile from the temp file), the last byte only once the file is verified."""

    def __init__(self, download: Download, file, byte_range: Optional[ByteRange]) -> None:
        self._download = download
        self._file = file
        self._position = 0
        self._stop = download.length
        if download.length is not None:
            self._position, self._stop = self._ranged(byte_range, download.length)

    def _send_body(self, conn: socket.socket, chunked: bool) -> None:
        download = self._download
        while self._stop is None or self._position < self._stop:
            with download.cond:
                download.cond.wait_for(lambda: self._limit() > self._position or download.over)
                limit, error, disk_failed = self._limit(), download.error, download.disk_failed
            if limit > self._position:
                send_chunk(conn, self._file, self._position, limit - self._position, chunked)
                self.sent += limit - self._position
                self._position = limit
            elif error is not None:
                raise error
            elif disk_failed:
                self._resume_upstream(conn, chunked)
                return
            else:  # done, and everything sent
                break
        if chunked:
            conn.sendall(b"0\r\n\r\n")

    def _limit(self) -> int:
        """How far this client may read now: all that is written once the download is
        verified, all but the last byte before, so a bad file is never sent whole."""
        download = self._download
        if download.done:
            limit = download.written
        else:  # never the last byte: not of what is written, nor of the announced length
            limit = download.written - 1
            if download.length is not None:
                limit = min(limit, download.length - 1)
        return limit if self._stop is None else min(limit, self._stop)

    def _resume_upstream(self, conn: socket.socket, chunked: bool) -> None:
        """The cache's disk failed: fetch the rest of the file for this client alone,
        still checking the hash when this client gets the whole file."""
        download, target = self._download, self._download.target
        hasher = None
        if target.hash is not None and self.status == 200:
            hasher = hashlib.new(target.hash[0])
            for offset in range(0, self._position, CHUNK):  # what was sent, read back
                hasher.update(os.pread(self._file.fileno(), min(CHUNK, self._position - offset), offset))
        limit = None if self._stop is None else self._stop - self._position
        with download.cache.upstream.open_file(target.url, byte_range=f"bytes={self._position}-") as response:
            self.sent += relay(
                response,
                conn,
                chunked,
                limit=limit,
                skip=self._position if response.status == 200 else 0,
                hasher=hasher,
                expected=target.hash,
            )

    def close(self) -> None:
        self._file.close()
