"""The file cache: a directory of verified files, capped in size, least recently used
evicted first, fed by downloads that stream to every waiting client as they arrive.

Layout: ``<root>/<project>/<algorithm>-<digest>/<filename>`` (``unverified`` when the
index gives no hash), plus ``<filename>.metadata`` beside it for PEP 658 metadata.
Every part comes from validated names and the index's own data, never from raw request
text. A file appears under its final name only complete and verified (temp file, then
``os.replace``), so a crash never leaves a partial file that is later served.

Recency is the file's mtime (touched on each hit), so LRU order survives restarts. Two
processes may share a directory: each keeps its own view and adopts or forgets files
the other stored or evicted.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import logging
import os
import threading
import time
from typing import Optional

from .bodies import CachedBody, FileBody, SizeOnlyBody, UpstreamBody
from .byteranges import ByteRange
from .downloads import Download, DownloadBody, Target
from .errors import NotFound, ProxpiError, RangeNotSatisfiable, UpstreamTimeout
from .metrics import Metrics
from .names import NormalizedName
from .shared_dir import STALE_TEMP, TEMP_PREFIX, remove_temp_files
from .simple import FileEntry
from .upstream import Upstream

__all__ = ["FileCache"]

logger = logging.getLogger(__name__)

# A hit moves a file's mtime (its recency) at most this often: a busy file is not
# worth a metadata write per request.
TOUCH_INTERVAL = 1.0


class FileCache:
    """Files under *root*, at most *cap* bytes in all (0: never store)."""

    def __init__(
        self, root: str, cap: int, upstream: Upstream, offline: bool = False, metrics: Optional[Metrics] = None
    ) -> None:
        self.root = root
        self.metrics = metrics or Metrics()
        self.cap = cap
        self.upstream = upstream
        self._offline = offline
        self._lock = threading.Lock()
        self._files: "collections.OrderedDict[str, int]" = collections.OrderedDict()  # path -> size, LRU first
        self._used = 0
        self._downloads: dict = {}
        self.generation = 0  # changes whenever a file is stored or evicted
        self._last_sweep = time.monotonic()
        os.makedirs(root, exist_ok=True)
        self._scan()

    def _scan(self) -> None:
        """Adopt the files already under root, oldest access first; drop dead temp files."""
        removed = remove_temp_files(self.root)
        if removed:
            logger.info("removed %d leftover temp files", removed)
        found = []
        for directory, _, names in os.walk(self.root):
            for name in names:
                if name.startswith(TEMP_PREFIX):
                    continue
                path = os.path.join(directory, name)
                with contextlib.suppress(OSError):
                    stat = os.stat(path)
                    found.append((stat.st_mtime, path, stat.st_size))
        for _, path, size in sorted(found):
            self._files[path] = size
            self._used += size
        self._unlink(self._evict(0))

    # ------------------------------------------------------------------ stats

    def stats(self) -> tuple:
        """(bytes used, file count)."""
        with self._lock:
            return self._used, len(self._files)

    def downloads_in_progress(self) -> int:
        with self._lock:
            return len(self._downloads)

    def largest(self, count: int) -> list:
        """The *count* largest stored files as (project, file name, size), from the
        accounting in memory (no directory walk)."""
        with self._lock:
            found = heapq.nlargest(count, self._files.items(), key=lambda item: item[1])
        out = []
        for path, size in found:
            parts = os.path.relpath(path, self.root).split(os.sep)
            out.append((parts[0], parts[-1], size))
        return out

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
        with self._lock:
            if path in self._files:
                return True
        return os.path.isfile(path)

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
        """A body for the file (or its ``.metadata``), from the cache when it is there.

        Otherwise a GET joins or starts the one shared download. A Range request is
        answered from that download when its bytes are already in, else passed
        upstream at once (uv reads a wheel's zip directory, at its end, this way), and
        the download starts in the background so the next client finds the file
        cached. A HEAD is answered from the index's size when it gave one, else asked
        upstream; it starts no download.

        *index* (the listing index's URL) labels the upstream requests in the metrics.

        :raises ProxpiError: NotFound, RangeNotSatisfiable, UpstreamError...
        """
        target = Target(self.root, project, entry, metadata, index)
        body = self._body(target, head, byte_range)
        body.etag = target.etag
        return body

    def _body(self, target: Target, head: bool, byte_range: Optional[ByteRange]) -> FileBody:
        cached = self._open_cached(target)
        if cached is not None:
            self.metrics.hit("file")
            return self._cached_body(*cached, byte_range)
        self.metrics.miss("file")
        if self._offline:
            raise NotFound(f"{target.filename} is not in the offline cache")
        if self.cap <= 0 or (target.size is not None and target.size > self.cap):
            return self._pass_through(target, head, byte_range)
        with self._lock:
            download = self._downloads.get(target.path)
            start = download is None and not head
            if start:
                download = self._downloads[target.path] = Download(self, target)
            if download is not None:
                download.join()
        if start:
            threading.Thread(target=download.run, name=f"download {target.filename}", daemon=True).start()
        if download is None:  # a HEAD
            return SizeOnlyBody(target.size) if target.size is not None else self._pass_through(target, True, None)
        # The client whose range started the download is answered from upstream at once
        # (the download may not have its bytes yet); later ones use it where it has them.
        if byte_range is not None and (start or not download.has_start_of(byte_range)):
            download.leave()
            return self._pass_through(target, head, byte_range)
        file = download.attach()
        if file is None:  # the cache dir cannot take the file
            return self._pass_through(target, head, byte_range)
        try:
            return DownloadBody(download, file, byte_range)
        except BaseException:
            file.close()
            raise

    @staticmethod
    def _cached_body(file, size: int, byte_range: Optional[ByteRange]) -> FileBody:
        try:
            return CachedBody(file, size, byte_range)
        except BaseException:
            file.close()
            raise

    def _pass_through(self, target: Target, head: bool, byte_range: Optional[ByteRange]) -> FileBody:
        header = byte_range.header() if byte_range else None
        try:
            response = self.upstream.open_file(target.url, "HEAD" if head else "GET", header)
        except ProxpiError as exc:
            self.count_upstream(target, exc)
            raise
        self.count_upstream(target, None)
        if response.status == 416:
            response.close()
            total = response.headers.get("Content-Range", "").rpartition("/")[2]
            raise RangeNotSatisfiable(f"{header} is outside {target.filename}", int(total) if total.isdigit() else 0)
        return UpstreamBody(response, target, whole_file=response.status == 200 and not head)

    def _open_cached(self, target: Target):
        """(file opened for reading, size) of the stored file, marked recently used;
        or None."""
        try:
            file = open(target.path, "rb")
        except OSError:
            with self._lock:
                # Evicted by another process, unless our own download is storing it.
                if target.path not in self._downloads:
                    size = self._files.pop(target.path, None)
                    if size is not None:
                        self._used -= size
                        self.generation += 1
            return None
        stat = os.fstat(file.fileno())
        with self._lock:
            if target.path in self._files:
                self._files.move_to_end(target.path)
            else:  # stored by another process sharing the directory
                self._files[target.path] = stat.st_size
                self._used += stat.st_size
                self.generation += 1
        if time.time() - stat.st_mtime > TOUCH_INTERVAL:
            with contextlib.suppress(OSError):
                os.utime(file.fileno())  # recency that survives a restart
        return file, stat.st_size

    # ------------------------------------------------------------------ storing

    def _store(self, download: Download) -> None:
        """Move a verified download to its final name, if it fits under the cap."""
        size, path = download.written, download.target.path
        if size > self.cap:
            download._remove_temp()
            return
        with self._lock:
            # Evict and count the new file in one step, so that downloads finishing
            # together cannot each find room for themselves and overrun the cap.
            self._used -= self._files.pop(path, 0)
            victims = self._evict_locked(size)
            self._files[path] = size
            self._used += size
        self._unlink(victims)
        self._sweep_temp_files()
        try:
            os.replace(download.temp, path)
        except OSError as exc:
            logger.warning("cannot store %s: %s", download.target.filename, exc.strerror)
            download._remove_temp()
            with self._lock:
                if self._files.pop(path, None) is not None:
                    self._used -= size

    def _sweep_temp_files(self) -> None:
        """Now and then, drop temp files nobody writes any more: those another host's
        proxy left (e.g. a replaced container) are not ours to judge at start."""
        now = time.monotonic()
        with self._lock:
            due = now - self._last_sweep > STALE_TEMP
            if due:
                self._last_sweep = now
        if due:
            remove_temp_files(self.root, at_start=False)

    def _evict(self, incoming: int) -> list:
        with self._lock:
            return self._evict_locked(incoming)

    def _evict_locked(self, incoming: int) -> list:
        """Drop least recently used files until *incoming* more bytes fit; returns the
        paths to unlink (done outside the lock). Called with the lock held."""
        victims = []
        while self._files and self._used + incoming > self.cap:
            path, size = self._files.popitem(last=False)
            self._used -= size
            victims.append(path)
        self.generation += 1
        if victims:
            self.metrics.evictions.inc(amount=len(victims))
        return victims

    def _unlink(self, paths: list) -> None:
        for path in paths:
            # Clients still sending this file keep their open handle: unlink is safe.
            with contextlib.suppress(OSError):
                os.unlink(path)
            logger.info("evicted %s", path)

    def _finished(self, download: Download) -> None:
        with self._lock:
            self._downloads.pop(download.target.path, None)
        download.close_fd()

    def close(self) -> None:
        """Remove this process's temp files (downloads in progress are abandoned)."""
        with self._lock:
            downloads = list(self._downloads.values())
        for download in downloads:
            download._remove_temp()
