"""Downloads: one upstream fetch per file into a temp file, verified as it arrives,
shared by every client that asks for the file meanwhile (each reads what is written),
in this process and in every other process on the same cache dir.

Across processes, the writer holds the file's lock file (``atomic.LockFile``) and
records in it its temp file's name and the length. A process that finds the lock held
follows that temp file instead of fetching: its clients get the bytes as they land,
the last one only once the writer has renamed the file to its final name (it verifies
before it renames). If the writer dies (its lock is freed with its record still in the
lock file), the follower's clients fetch the rest from upstream themselves, still
hash-checked, and a new download takes over in this process. A writer frozen with its
lock held (:mod:`.liveness`) is given up on the same way, without the take-over.

A file that will not be stored (over the cap, or no room beside the downloads in flight)
is still fetched once: it is spooled to its temp file for its clients and not stored at
the end, the temp file removed once the download has ended and its last reader is done.
Spooled files are beyond the cap, so only one download at a time on a cache dir, in
every process, may spool (it holds the dir's spool lock file); while one does, another
such file is passed through to each of its clients.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from typing import Optional

from ..core.byteranges import ByteRange
from ..core.errors import IntegrityError, ProxpiError, UpstreamError
from ..core.units import parse_decimal
from ..index.upstream import Upstream
from ..infra.atomic import (
    LockFile,
    is_temp_name,
    lock_path,
    remove_recorded_temp,
    same_file,
    temp_path,
    write_all,
)
from .file_store import FileStore
from .integrity import Verifier
from .liveness import STALL_AFTER, writer_mark
from .layout import Target
from .upstream_body import CHUNK, VerifiedChunks

__all__ = ["Download"]

logger = logging.getLogger(__name__)

# How often a follower looks at another process's download (its file's size, its lock):
# fast enough to stream, slow enough to cost nothing (no inotify on NFS).
FOLLOW_POLL = 0.02


class Download:
    """One upstream download into a temp file, shared by every client that asks for
    the file meanwhile, and handed to its :class:`FileStore` once verified. The writer
    thread publishes progress under ``cond``."""

    def __init__(
        self, store: FileStore, upstream: Upstream, target: Target, min_rate: int = 0, stall_after: float = STALL_AFTER
    ) -> None:
        self.store = store
        self.upstream = upstream
        self.target = target
        self.min_rate = min_rate  # bytes a second (RateGuard), for the download and its resumes
        # Seconds another process's download may stand still before it counts as frozen.
        self.stall_after = stall_after
        self.cond = threading.Condition()
        self.started = False  # upstream answered; length is known (or None)
        self.length: Optional[int] = None
        self.written = 0
        self.done = False  # complete and verified (stored, or deliberately not)
        self.error: Optional[ProxpiError] = None
        self.disk_failed = False  # the temp file could not be written: readers resume upstream
        self.temp = temp_path(os.path.dirname(target.path))
        self.fd: Optional[int] = None
        # Clients added that have not yet taken their own handle on the file: the writer
        # leaves the file open for them even if it finishes first.
        self.clients = 0
        self.readers = 0  # handles on the temp file that clients still hold
        self._writer_finished = False
        self.asked = False
        self.lock = LockFile(lock_path(target.path))
        self.take_over = False  # another process's writer died: start a new download
        self.reserved = False  # room is held for us under the cap (FileStore.reserve)
        # Held while the file is spooled, not stored: until the download has ended and
        # its last reader is done, since an unlinked file still open keeps its disk space.
        self._spool: Optional[LockFile] = None

    @property
    def over(self) -> bool:
        """Nothing more will be written: done, failed, or passing through."""
        return self.done or self.error is not None or self.disk_failed

    # ------------------------------------------------------------------ writer

    def run(self) -> None:
        try:
            self._run()
            if self.asked:
                self.store.count_upstream(self.target, None)
        except ProxpiError as exc:
            self.store.count_upstream(self.target, exc)
            self._fail(exc)
        except Exception as exc:  # a bug: still release every waiting client
            logger.exception("download of %s failed", self.target.url)
            self._fail(UpstreamError(f"download failed: {exc}"))
        finally:
            self.store.finished(self)

    def _run(self) -> None:
        try:
            # The lock file is the first in its folder: LockFile makes the folder again
            # if an eviction in another process removes it meanwhile.
            with contextlib.suppress(FileNotFoundError):
                os.makedirs(os.path.dirname(self.temp), exist_ok=True)
            if not self.lock.acquire(wait=False) and self._follow():
                return
        except OSError as exc:
            self._pass_through(exc)
            return
        try:
            if self.lock.stale:
                remove_recorded_temp(self.lock.path, self.lock.stale)
            if not self._adopt_stored():
                self._fetch()
        except BaseException:
            self.remove_temp()  # before the lock goes: the next holder finds no leftover
            raise
        finally:
            if self.reserved:
                with contextlib.suppress(OSError):
                    self.store.release(self.temp)
            self.lock.release()

    def _fetch(self) -> None:
        """Download into our temp file, verify, store (the lock is held)."""
        target = self.target
        try:
            self._open_temp()
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                self._pass_through(exc)
                return
            try:  # a disk other data filled: cached files make room, as they do under the cap
                self.store.make_room_beside(os.path.dirname(self.temp), target.size or CHUNK)
                self._open_temp()
            except OSError as exc:
                self._pass_through(exc)
                return
        if target.size is not None and not self._reserve(target.size):
            return
        self.asked = True  # from here on, the outcome is upstream's
        with self.upstream.open_file(target.url) as response:
            length = response.length
            if length is not None and target.size is not None and length != target.size:
                raise IntegrityError(f"{target.filename}: upstream sends {length} bytes, the index says {target.size}")
            if length is not None and target.size is None and not self._reserve(length):
                return
            length = length if length is not None else target.size
            self.lock.record(f"{os.path.basename(self.temp)} {length if length is not None else '-'}")
            self._publish(started=True, length=length)
            body = VerifiedChunks(response, target, self.min_rate)
            for chunk in body:
                if self.length is not None and self.written + len(chunk) > self.length:
                    raise IntegrityError(f"{target.filename}: upstream sends more than {self.length} bytes")
                if self._outgrows_cap(len(chunk)) and not self._spool_or_pass(self.written + len(chunk)):
                    return
                try:
                    write_all(self.fd, chunk, self.written)
                except OSError as exc:
                    self.remove_temp()
                    self._pass_through(exc)
                    return
                self._publish(written=self.written + len(chunk))
        if self.length is not None and self.written != self.length:
            raise IntegrityError(f"{target.filename}: upstream sent {self.written} of {self.length} bytes")
        body.check()
        if self._spool is None:
            self._store()
        self._publish(done=True, length=self.written)

    def _open_temp(self) -> None:
        """Say which temp file we write (in the lock file), and make it."""
        self.lock.record(os.path.basename(self.temp))
        self.fd = os.open(self.temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)

    def _store(self) -> None:
        """Hand the verified temp file to the store, or remove it if not taken."""
        target = self.target
        try:
            # On disk before it has its final name: a power cut cannot leave a short file
            # there, and on NFS other hosts read these bytes, not stale ones.
            os.fsync(self.fd)
        except OSError as exc:
            logger.warning("cannot cache %s (%s)", target.filename, exc.strerror)
            self.remove_temp()
        else:
            try:
                stored = self.store.store(target, self.temp, self.written)
            except OSError as exc:  # the ledger cannot be had (a process frozen holding it)
                logger.warning("cannot cache %s (%s)", target.filename, exc.strerror or exc)
                stored = False
            else:
                self.reserved = False  # store() took the reservation, or dropped it
            if not stored:
                self.remove_temp()

    def _reserve(self, size: int) -> bool:
        """Room for the file under the cap before a byte is written, counted by every
        process, or else the spool; False: neither, so its clients fetch it themselves."""
        try:
            self.reserved = self.store.reserve(self.target, self.temp, size)
        except OSError as exc:  # the ledger cannot be locked or written: the disk's trouble
            self.remove_temp()
            self._pass_through(exc)
            return False
        return self.reserved or self._spool_or_pass(size)

    def _outgrows_cap(self, count: int) -> bool:
        """Whether *count* more bytes take a download of unknown length, which holds
        no room, past the cap: it cannot be stored, and must not grow unaccounted."""
        return self.length is None and not self.reserved and self._spool is None and self.written + count > self.store.cap

    def _spool_or_pass(self, size: int) -> bool:
        """The file will not be stored: spool it for its clients if no other download
        spools now; else pass it through to each of them (False). A download with no
        client (``FileCache.ensure``: warm, prefetch) has nobody to spool for."""
        with self.cond:
            wanted = bool(self.clients or self.readers)
        if not wanted:
            logger.info("no room for %s (%d bytes) under the cache cap now; not fetched", self.target.filename, size)
            self.remove_temp()
            self._publish(disk_failed=True)
            return False
        slot = self.store.spool_slot()
        try:
            spooling = slot.acquire(wait=False)
        except OSError:  # the lock file cannot be made: as if another download spooled
            spooling = False
        if spooling:
            if slot.stale:  # a spooled file whose process died with it
                remove_recorded_temp(slot.path, slot.stale)
            # Named relative to the slot's folder, so that whoever finds the slot dead
            # (a sweep, the next spool) removes the file, however young.
            slot.record(os.path.relpath(self.temp, os.path.dirname(slot.path)))
            self._spool = slot
            logger.info("no room for %s (%d bytes) under the cache cap now; spooling it for its clients, not storing it",
                        self.target.filename, size)
            return True
        logger.info("no room for %s (%d bytes) under the cache cap now, and another file is spooled; passing it through",
                    self.target.filename, size)
        self.remove_temp()
        self._publish(disk_failed=True)
        return False

    # ------------------------------------------------------------------ other processes

    def _adopt_stored(self) -> bool:
        """Serve the file if another process stored it while we waited for the lock."""
        opened = self.store.open_cached(self.target)
        if opened is None:
            return False
        with opened.file:
            self.fd = os.dup(opened.file.fileno())
        self._publish(started=True, length=opened.size, written=opened.size, done=True)
        return True

    def _follow(self) -> bool:
        """Another process holds the lock: stream its temp file until it lets go.

        What we publish, we have read and hashed ourselves, and the last byte goes
        out only once our own hash matches: on NFS another host's writes may reach
        us late, so the writer's check alone does not cover what we read.

        Returns False when we then hold the lock with nothing followed (download or
        adopt as usual); True when this download is over: the writer stored the file we
        followed (done), or it went away without (our clients fetch the rest upstream;
        :attr:`take_over` says whether a new download should start here), or it stood
        still for :attr:`stall_after` seconds with the lock held (the same, no take-over).

        :raises IntegrityError: what we read does not match the index hash.
        """
        verifier = Verifier(self.target.hash)
        mark, moved = None, time.monotonic()
        while not self.lock.acquire(wait=False):
            if self.fd is None:
                self._open_followed()
            else:
                self._read_followed(verifier)
            seen = writer_mark(self.lock)
            if seen != mark:
                mark, moved = seen, time.monotonic()
            elif time.monotonic() - moved > self.stall_after:
                logger.warning("the download of %s in another process has given no sign of life for %.0f s (a frozen "
                               "process?); its clients here fetch it from upstream", self.target.filename, self.stall_after)
                self.store.stalled(self.target, mark)
                self._publish(disk_failed=True)
                return True
            time.sleep(FOLLOW_POLL)
        if self.fd is None:
            return False
        try:
            if same_file(self.fd, self.target.path):  # renamed: complete and verified there
                # Opening it anew makes an NFS client revalidate what it cached of the
                # file (close-to-open consistency); locally it costs next to nothing.
                os.close(os.open(self.target.path, os.O_RDONLY))
                self._read_followed(verifier)
                # The stored file's own size, too: the writer's record of the length is
                # read without its lock, so on NFS it may be torn (a file with no hash
                # would otherwise be taken as complete at a wrong length).
                size = os.fstat(self.fd).st_size
                if self.written != size or (self.length is not None and self.written != self.length):
                    raise IntegrityError(f"{self.target.filename}: read {self.written} of {size} bytes")
                if not verifier.matches():  # the writer checked them: a stale read (NFS), not another file
                    raise IntegrityError(f"{self.target.filename}: stored bytes do not match the index hash")
                adopted = self.store.open_cached(self.target)  # into our view of the cache
                if adopted is not None:
                    adopted.file.close()
                self._publish(done=True, length=self.written)
            elif self._followed_whole(verifier):
                # Not stored (over the cap), yet complete and verified by our own hash:
                # our clients have it all from the handle we kept.
                self._publish(done=True, length=self.written)
            else:
                # The writer failed (it cleaned up) or died (its record is still there).
                self.take_over = bool(self.lock.stale)
                if self.take_over:
                    remove_recorded_temp(self.lock.path, self.lock.stale)
                logger.warning("the download of %s in another process ended early", self.target.filename)
                self._publish(disk_failed=True)
        finally:
            self.lock.release()
        return True

    def _followed_whole(self, verifier: Verifier) -> bool:
        """Whether the temp file we follow, now let go of without being stored, holds
        the whole file: every byte of the announced length, and the index's hash (the
        only proof of the end when no length was announced)."""
        self._read_followed(verifier)
        if self.length is None and self.target.hash is None:
            return False
        return (self.length is None or self.written == self.length) and verifier.matches()

    def _read_followed(self, verifier: Verifier) -> None:
        """Hash what the writer added since we last looked, and let clients have it."""
        end = os.fstat(self.fd).st_size
        if self.length is not None:
            end = min(end, self.length)
        position = self.written
        while position < end:
            data = os.pread(self.fd, min(CHUNK, end - position), position)
            if not data:
                break
            verifier.update(data)
            position += len(data)
        if position > self.written:
            self._publish(written=position)

    def _open_followed(self) -> None:
        """Open the temp file the lock's holder writes, once upstream answered it."""
        name, _, length = self.lock.read_record().partition(" ")  # as _fetch records it
        if not length.strip() or not is_temp_name(name):
            return
        try:
            self.fd = os.open(os.path.join(os.path.dirname(self.target.path), name), os.O_RDONLY)
        except OSError:
            return  # renamed or removed meanwhile: the lock tells next
        self._publish(started=True, length=parse_decimal(length.strip()))

    def _pass_through(self, exc: OSError) -> None:
        """The cache dir cannot take the file: its clients get the rest from upstream."""
        logger.warning("cannot cache %s (%s); passing it through", self.target.filename, exc.strerror)
        self._publish(disk_failed=True)

    def _publish(self, **changes) -> None:
        with self.cond:
            for name, value in changes.items():
                setattr(self, name, value)
            self.cond.notify_all()

    def _fail(self, error: ProxpiError) -> None:
        logger.warning("download of %s failed: %s", self.target.filename, error.message)
        self.remove_temp()
        self._publish(error=error)

    def remove_temp(self) -> None:
        """Remove the temp file: nothing of it is stored (readers keep their handles)."""
        with contextlib.suppress(OSError):
            os.unlink(self.temp)

    def close_fd(self) -> None:
        """The writer is done with the file; it is closed once no added client waits."""
        with self.cond:
            self._writer_finished = True
            self._close_if_unused()

    def _close_if_unused(self) -> None:
        if not self._writer_finished or self.clients:
            return
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self._spool is not None and self.readers == 0:  # the spool's bytes leave the disk now
            self.remove_temp()
            self._spool.release()
            self._spool = None

    def add_client(self) -> None:
        """Count a client in (under the file cache's lock, as it finds the download).
        It must then call :meth:`attach` or :meth:`leave` once."""
        with self.cond:
            self.clients += 1

    def leave(self) -> None:
        with self.cond:
            self.clients -= 1
            self._close_if_unused()

    def attach(self):
        """Wait until upstream answered, then give an added client its own handle on the
        temp file (readable even after os.replace or unlink), to give back with
        :meth:`detach`; None if the cache dir could not take the file before upstream
        answered (the client is passed through).

        :raises ProxpiError: the download failed before it started.
        """
        with self.cond:
            try:
                self.cond.wait_for(lambda: self.started or self.over)
                if self.error is not None and not self.started:
                    raise self.error
                if self.fd is None or (self.disk_failed and not self.started):
                    return None
                file = os.fdopen(os.dup(self.fd), "rb")
                self.readers += 1
                return file
            finally:
                self.clients -= 1
                self._close_if_unused()

    def detach(self, file) -> None:
        """Close a handle :meth:`attach` gave: a spooled file goes with the last one."""
        file.close()
        with self.cond:
            self.readers -= 1
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
