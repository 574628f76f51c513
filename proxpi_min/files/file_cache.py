"""The file cache: a directory of verified files, capped in size, least recently used
evicted first, fed by downloads that stream to every waiting client as they arrive.

Paths follow ``layout``. A file appears under its final name only complete and verified
(temp file, then ``os.replace``), so a crash never leaves a partial file that is later
served.

Processes may share a directory (workers, separate proxies, tools) and act as one
cache: one download per file across them (a lock file per download, see
``downloads``), and one cap, kept by ``accounting`` through the ledger they share.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
import weakref
from typing import Callable, Optional

from ..core.byteranges import ByteRange, content_range_size
from ..core.errors import NotFound, ProxpiError, RangeNotSatisfiable, UpstreamTimeout
from ..core.names import NormalizedName
from ..core.simple import FileEntry
from ..core.wheelmeta import is_zip_probe
from ..index.upstream import Upstream
from ..infra.atomic import LOCK_PREFIX, STALE_TEMP, LockFile, lock_path, remove_recorded_temp, same_file
from ..infra.metrics import Metrics
from .bodies import CachedBody, DownloadBody, FileBody, SizeOnlyBody, UpstreamBody
from . import liveness
from .downloads import Download
from .file_store import Opened
from .accounting import TOUCH_INTERVAL, Accounting
from .layout import Target, remove_empty_folders
from .liveness import Heartbeat, Stalls

__all__ = ["FileCache"]

logger = logging.getLogger(__name__)

MAX_SIZES = 10_000  # sizes learned from upstream answers, for files listed without one
OFFLINE_CATCH_UP = 2.0  # seconds between two reads of what other processes stored, offline


class FileCache:
    """Files under *root*, at most *cap* bytes in all (0: never store); the
    ``downloads.FileStore`` its downloads fill."""

    def __init__(
        self,
        root: str,
        cap: int,
        upstream: Upstream,
        offline: bool = False,
        metrics: Optional[Metrics] = None,
        min_rate: int = 0,
        stall_after: Optional[float] = None,
    ) -> None:
        self.root = root
        self.min_rate = min_rate  # bytes a second a transfer from upstream must average
        # Seconds another process's download may give no sign of life (liveness.STALL_AFTER).
        self.stall_after = liveness.STALL_AFTER if stall_after is None else stall_after
        self.metrics = metrics or Metrics()
        self.cap = cap
        self.upstream = upstream
        self._offline = offline
        self._lock = threading.Lock()  # guards _downloads and _last_sweep
        self._downloads: dict = {}
        self._last_sweep = time.monotonic()
        self._next_catch_up = 0.0
        self._sizes: dict = {}  # path -> size upstream gave (HEAD, Content-Range) for pages without sizes
        self._stalls = Stalls()  # other processes' downloads taken for frozen
        self._heartbeat = Heartbeat(self._held_locks)
        self._spools: "weakref.WeakSet[LockFile]" = weakref.WeakSet()  # spool locks handed to downloads
        # Told of every file stored (files.metadata reads a wheel's METADATA then).
        self.on_stored: Optional[Callable[[Target], None]] = None
        os.makedirs(root, exist_ok=True)
        # Swept beside this process's first downloads: its own locks are never judged.
        self._accounting = Accounting(root, cap, self.metrics, self._may_hold, evicts=not offline)

    @property
    def generation(self) -> int:
        """Changes whenever a file is stored or evicted (by any process we heard of).
        Offline, this process stores nothing that would make it hear: what others
        (``warm``) did is read every OFFLINE_CATCH_UP seconds."""
        if self._offline:
            now = time.monotonic()
            if now >= self._next_catch_up:
                self._next_catch_up = now + OFFLINE_CATCH_UP
                self._accounting.catch_up()
        return self._accounting.generation

    # ------------------------------------------------------------------ stats

    def stats(self) -> tuple:
        """(bytes used, file count), by every process sharing the directory."""
        return self._accounting.stats()

    def downloads_in_progress(self) -> int:
        with self._lock:
            return len(self._downloads)

    def largest(self, count: int) -> list:
        """The *count* largest stored files as (project, file name, size)."""
        return self._accounting.largest(count)

    def stored_paths(self) -> list:
        """The path of every stored file (files and metadata), as the cache knows them."""
        return self._accounting.paths()

    def stored_size(self, path: str) -> Optional[int]:
        """The size the file at *path* was counted with (None: not counted)."""
        return self._accounting.size_of(path)

    def catch_up(self) -> None:
        """Bring the view of stored files up to what other processes stored since."""
        self._accounting.catch_up()

    def count_upstream(self, target: Target, error: Optional[ProxpiError]) -> None:
        """Count one upstream file request's outcome (None: it answered)."""
        outcome = "ok" if error is None else "timeout" if isinstance(error, UpstreamTimeout) else "error"
        self.metrics.upstream.inc(target.index, "file", outcome)

    def has(self, project: NormalizedName, entry: FileEntry, metadata: bool = False) -> bool:
        """Whether the file (or its .metadata) is stored (offline pages list only these)."""
        try:
            path = Target(self.root, project, entry, metadata).path
        except ProxpiError:
            return False
        return self._accounting.knows(path) or os.path.isfile(path)

    # ------------------------------------------------------------------ serving

    def open(
        self,
        project: NormalizedName,
        entry: FileEntry,
        *,
        metadata: bool = False,
        head: bool = False,
        byte_range: Optional[ByteRange] = None,
        index: str = "",
    ) -> FileBody:
        """A body for the file (or its ``.metadata``); :meth:`_body` picks one of five:

        1. cached: the stored file (:class:`CachedBody`, a hit).
        2. pass-through: with no cache (a cap of 0), for a file the cache dir cannot
           take (nor spool, see ``downloads``), or whose download in another process
           stands still, the file is sent from upstream as it comes, hash-checked
           (:class:`UpstreamBody`).
        3. HEAD: with no download in progress, the index's size answers
           (:class:`SizeOnlyBody`), else a HEAD asked upstream; it starts no download.
        4. join a download: a GET follows the one shared download of the file, the one
           in progress or a new one (:class:`DownloadBody`), sent as it is written; a
           file over the cap is downloaded so too, spooled and not stored.
        5. range from upstream: a Range whose first byte the download does not have yet
           (or whose request started it) is passed upstream at once while the download
           goes on in the background, so the next client finds the file cached. A range
           that only probes the zip's end (uv and pip read a wheel's directory there),
           or one of a file over the cap, starts no download: nobody may ever want the
           whole wheel, or it would not be cached.

        *index* (the listing index's URL) labels the upstream requests in the metrics.

        :raises ProxpiError: NotFound, RangeNotSatisfiable, UpstreamError...
        """
        target = Target(self.root, project, entry, metadata, index)
        body = self._body(target, head, byte_range)
        body.etag = target.etag
        return body

    def _body(self, target: Target, head: bool, byte_range: Optional[ByteRange]) -> FileBody:
        """The one of :meth:`open`'s five outcomes that fits (numbered as there)."""
        cached = self.open_cached(target)
        if cached is not None:  # 1
            self.metrics.hit("file")
            return self._cached_body(cached, byte_range)
        self.metrics.miss("file")
        if not self._fetchable(target) or self._writer_stalled(target):  # 2
            return self._pass_through(target, head, byte_range)
        # A range starts a download only of a file that may be stored, and not for a
        # probe of the zip's end.
        starts = not head and (byte_range is None or (
            self._storable(target) and not is_zip_probe(byte_range, target.size or self._sizes.get(target.path))))
        with self._lock:
            download, start = self._register(target, start=starts)
            if download is not None:
                download.add_client()
        if start:
            self._run(download)
        if download is None and not head:  # 5, a probe of the zip's end
            return self._pass_through(target, False, byte_range)
        if download is None:  # 3
            return SizeOnlyBody(target.size) if target.size is not None else self._pass_through(target, True, None)
        # 5: the client whose range started the download is answered from upstream at once
        # (the download may not have its bytes yet); later ones use it where it has them.
        if byte_range is not None and (start or not download.has_start_of(byte_range)):
            download.leave()
            return self._pass_through(target, head, byte_range)
        file = download.attach()
        if file is None:  # 2: the cache dir cannot take the file
            return self._pass_through(target, head, byte_range)
        try:  # 4
            return DownloadBody(download, file, byte_range)
        except BaseException:
            download.detach(file)
            raise

    def ensure(self, project: NormalizedName, entry: FileEntry, metadata: bool = False, index: str = "") -> bool:
        """Store the file (or its ``.metadata``) without a client: join the download of
        it in progress, or run one in this thread, and wait until it is stored (the
        ``warm`` command, prefetch); *index* labels its upstream requests.

        :returns: whether the file is in the cache now (False: it cannot be stored:
            over the cap, the cache dir cannot take it, or another process's download
            of it gives no sign of life).
        :raises ProxpiError: UpstreamError (IntegrityError: bad bytes) or, offline,
            NotFound.
        """
        target = Target(self.root, project, entry, metadata, index)
        if self.has(project, entry, metadata):
            return True
        if not self._storable(target) or self._writer_stalled(target):
            return False
        while True:
            with self._lock:
                download, start = self._register(target)
            if start:
                self._heartbeat.start()
                download.run()
            with download.cond:
                download.cond.wait_for(lambda: download.over)
                if download.error is not None:
                    raise download.error
            if not download.take_over:  # else another process's writer died: the next one
                return self.has(project, entry, metadata)

    def _fetchable(self, target: Target) -> bool:
        """Whether a file not in the cache may be downloaded through the cache dir
        (False: no cache, so it passes through).

        :raises NotFound: offline, where nothing is fetched.
        """
        if self._offline:
            raise NotFound(f"{target.filename} is not in the offline cache")
        return self.cap > 0

    def _storable(self, target: Target) -> bool:
        """Whether a file not in the cache may be stored in it, as far as the index's
        size tells (False: over the cap).

        :raises NotFound: offline, where nothing is fetched.
        """
        return self._fetchable(target) and (target.size is None or target.size <= self.cap)

    def stalled(self, target: Target, mark: tuple) -> None:
        """Remember a download in another process taken for frozen (``downloads.FileStore``)."""
        self._stalls.remember(target.path, mark)

    def _writer_stalled(self, target: Target) -> bool:
        """Whether the download of *target* in another process is still taken for frozen:
        then each client is passed through rather than made to wait on it again."""
        return self._stalls.still(target.path, LockFile(lock_path(target.path)))

    @staticmethod
    def _cached_body(cached: Opened, byte_range: Optional[ByteRange]) -> FileBody:
        try:
            return CachedBody(cached.file, cached.size, byte_range)
        except BaseException:
            cached.file.close()
            raise

    def _pass_through(
        self, target: Target, head: bool, byte_range: Optional[ByteRange], whole_for_range: bool = True
    ) -> FileBody:
        header = byte_range.header() if byte_range else None
        try:
            response = self.upstream.open_file(target.url, "HEAD" if head else "GET", header)
        except ProxpiError as exc:
            self.count_upstream(target, exc)
            raise
        self.count_upstream(target, None)
        if header is not None and response.status == 200 and not head and whole_for_range:
            # The upstream ignores Range: a 200 would be a whole file where our HEAD said
            # Accept-Ranges (pip's lazy wheels write it at the range's offset). The file
            # is downloaded through the cache, and the range answered from it.
            known_length = response.length is not None or target.size is not None
            if known_length and self._fetchable(target) and self._storable(target):
                response.close()
                body = self._range_of_download(target, byte_range)
                return body if body is not None else self._pass_through(target, head, byte_range, False)
        ranged = response.status in (206, 416)
        size = content_range_size(response.headers.get("Content-Range")) if ranged else response.length
        if size is not None and (head or response.status == 206):
            with self._lock:
                if len(self._sizes) >= MAX_SIZES:
                    self._sizes.clear()
                self._sizes[target.path] = size
        if response.status == 416:
            response.close()
            raise RangeNotSatisfiable(f"{header} is outside {target.filename}", 0 if size is None else size)
        return UpstreamBody(response, target, whole_file=response.status == 200 and not head, min_rate=self.min_rate)

    def _range_of_download(self, target: Target, byte_range: ByteRange) -> Optional[FileBody]:
        """*byte_range* answered from the file's download (started or joined), once its
        length is known; None if it cannot be (the cache dir refused the file, or the
        upstream gave no length)."""
        with self._lock:
            download, start = self._register(target)
            download.add_client()
        if start:
            self._run(download)
        file = download.attach()
        if file is None:
            return None
        try:
            if download.length is None:
                download.detach(file)
                return None
            return DownloadBody(download, file, byte_range)
        except BaseException:
            download.detach(file)
            raise

    def open_cached(self, target: Target) -> Optional[Opened]:
        """The stored file, opened for reading and marked recently used; None if it is
        not stored."""
        try:
            file = open(target.path, "rb")
        except OSError:
            with self._lock:
                downloading = target.path in self._downloads
            if not downloading:  # evicted by another process (else our download stores it)
                self._accounting.missed(target.path)
            return None
        stat = os.fstat(file.fileno())
        expected = self._size_expected(target, stat.st_size)
        if expected is not None:  # cut short or changed by hand: fetched again
            with file:
                if not same_file(file.fileno(), target.path):  # another process put a new copy there
                    return None
            logger.warning("%s is %d bytes on disk, not %s: removed", target.path, stat.st_size, expected)
            try:
                self.remove(target.path)
            except OSError as exc:  # a read-only disk: not served all the same
                logger.warning("cannot remove %s: %s", target.path, exc.strerror)
            return None
        now = time.time()
        touch = now - stat.st_mtime > TOUCH_INTERVAL
        self._accounting.hit(target.path, stat.st_size, now if touch else stat.st_mtime, touch)
        if touch:
            with contextlib.suppress(OSError):
                os.utime(file.fileno())  # recency that survives a restart, seen by every process
        return Opened(file, stat.st_size)

    def _size_expected(self, target: Target, size: int) -> Optional[str]:
        """What a stored file of *size* bytes should have had instead, if it was damaged;
        None if *size* may be right."""
        if target.size is not None:
            return None if size == target.size else f"the index's {target.size}"
        if target.hash is None:  # a file without a hash may be replaced upstream and stored anew
            return None
        # What has a hash never changes: a size other than the one stored is damage,
        # once our view has caught up with what other processes stored since.
        stored = self.stored_size(target.path)
        if stored is not None and stored != size:
            self.catch_up()
            stored = self.stored_size(target.path)
        if stored is not None and stored != size:
            return f"the {stored} stored"
        if size == 0 and hashlib.new(target.hash.algorithm).hexdigest() != target.hash.digest:
            return "the bytes its hash names"  # a crash before the write-back leaves 0 bytes
        return None

    # ------------------------------------------------------------------ storing

    def store(self, target: Target, temp: str, size: int) -> bool:
        """Move a verified download's temp file to its final name, if it fits under the
        cap; False if it was not moved (the download removes it)."""
        stored = self._accounting.store(target, temp, size)
        self._sweep_temp_files()
        if stored and self.on_stored is not None:
            self.on_stored(target)
        return stored

    def remove(self, path: str) -> None:
        """Remove the stored file at *path* (a wrong one, or one about to be replaced),
        and the room it took under the cap."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        remove_empty_folders(self.root, path)
        self._accounting.forget(path)

    def reserve(self, target: Target, temp: str, size: int) -> bool:
        """Room under the cap for a download before it starts (``downloads.FileStore``)."""
        return self._accounting.reserve(target, temp, size)

    def release(self, temp: str) -> None:
        self._accounting.release(temp)

    def make_room_beside(self, path: str, size: int) -> None:
        """Free disk space for *size* bytes written at *path*, outside the cache, by
        evicting cached files (they can be fetched again)."""
        self._accounting.make_room_beside(path, size)

    def spool_slot(self) -> LockFile:
        """The cache dir's one spool lock (``downloads.FileStore``)."""
        slot = LockFile(lock_path(os.path.join(self.root, "spool")))
        self._spools.add(slot)
        return slot

    def _sweep_temp_files(self) -> None:
        """Now and then, drop what dead writers left (temp and lock files, and the
        folders that empties) while we run: a process that dies beside ours (another
        host's proxy, replaced) is swept by no start of ours."""
        now = time.monotonic()
        with self._lock:
            due = now - self._last_sweep > STALE_TEMP
            if due:
                self._last_sweep = now
        if due:
            self._accounting.sweep(at_start=False)

    def _may_hold(self, lock: str) -> bool:
        """Whether this process may hold the lock file at *lock*: that of a download it
        runs or follows, or a spool lock it took (on NFS, its own lock would not keep
        its own sweep out)."""
        folder, name = os.path.split(lock)
        with self._lock:
            if os.path.join(folder, name[len(LOCK_PREFIX) :]) in self._downloads:
                return True
        return any(slot.held and slot.path == lock for slot in list(self._spools))

    def _register(self, target: Target, start: bool = True) -> tuple:
        """(the download of *target* in progress, or, if *start*, a new one registered
        (None otherwise); whether it is new): the single-flight check-and-insert. Our
        lock is held; the caller runs a new download once it has let go."""
        download = self._downloads.get(target.path)
        if download is None and start:
            download = self._downloads[target.path] = Download(
                self, self.upstream, target, self.min_rate, self.stall_after
            )
            return download, True
        return download, False

    def _run(self, download: Download) -> None:
        self._heartbeat.start()
        threading.Thread(target=download.run, name=f"download {download.target.filename}", daemon=True).start()

    def _held_locks(self) -> Optional[list]:
        """The lock files of the downloads this process writes (for its heartbeat); None
        when it has no download in progress."""
        with self._lock:
            if not self._downloads:
                return None
            return [download.lock for download in self._downloads.values() if download.lock.held]

    def finished(self, download: Download) -> None:
        """Forget a download whose writer is done; start the next one if its file is
        still wanted (another process's writer died)."""
        with self._lock:
            self._downloads.pop(download.target.path, None)
        download.close_fd()
        if download.error is not None:  # bad bytes, an upstream failure: its folders go too
            remove_empty_folders(self.root, download.target.path)
        if download.take_over:  # another process's writer died: the file is still wanted
            with self._lock:
                new, start = self._register(download.target)
            if start:
                self._run(new)

    def close(self) -> None:
        """Abandon the downloads in progress: their temp files, their room under the cap,
        their lock files and the folders that leaves empty go (another process may then
        fetch the file at once), and so does a file spooled for clients and its lock."""
        self._accounting.stop()  # no download reserves room or stores from now on
        self._heartbeat.stop()
        with self._lock:
            downloads = list(self._downloads.values())
        for download in downloads:
            download.remove_temp()
            with contextlib.suppress(OSError):
                self.release(download.temp)
            if download.lock.held:  # ours, not another process's whose writing we follow
                download.lock.abandon()
                remove_empty_folders(self.root, download.target.path)
        for slot in list(self._spools):
            remove_recorded_temp(slot.path, slot.abandon())  # a file spooled for clients the stop cuts off
        self._accounting.close()
