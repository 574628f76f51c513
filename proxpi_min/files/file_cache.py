"""The file cache: a directory of verified files, capped in size, least recently used
evicted first, fed by downloads that stream to every waiting client as they arrive.

Paths follow ``layout``. A file appears under its final name only complete and verified
(temp file, then ``os.replace``), so a crash never leaves a partial file that is later
served.

Recency is the file's mtime (touched on each hit), so LRU order survives restarts.
Processes may share a directory (workers, separate proxies, tools) and act as one
cache: one download per file across them (a lock file per download, see
``downloads``), and one cap. The total and a journal of stores and evictions are kept
in the ledger (``ledger.Ledger``), written by every store and eviction under its
lock. Each process keeps its own LRU view and, before it evicts, reads what the others
journaled since, so only the first process to start on the directory walks it. Hits
do not write the journal: a victim whose mtime shows a hit in another process is kept
and moved to the recent end instead.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import logging
import os
import threading
import time
from typing import Callable, Optional

from ..core.byteranges import ByteRange
from ..core.errors import NotFound, ProxpiError, RangeNotSatisfiable, UpstreamTimeout
from ..core.names import NormalizedName
from ..core.simple import FileEntry
from ..core.wheelmeta import is_zip_probe
from ..index.upstream import Upstream
from ..infra.atomic import STALE_TEMP, remove_temp_files
from ..infra.metrics import Metrics
from .bodies import CachedBody, DownloadBody, FileBody, SizeOnlyBody, UpstreamBody
from .downloads import Download, Opened
from .layout import Target, parse_stored, stored_files
from .ledger import JournalEntry, Ledger, LedgerHandle

__all__ = ["FileCache"]

logger = logging.getLogger(__name__)

# A hit moves a file's mtime (its recency) at most this often: a busy file is not
# worth a metadata write per request.
TOUCH_INTERVAL = 1.0
# The journal is rewritten as a snapshot past twice the size of one (about this many
# bytes a line), and never below this size: a small cache keeps a short history.
JOURNAL_LINE = 150
JOURNAL_MIN = 1 << 20
MAX_SIZES = 10_000  # sizes learned from upstream answers, for files listed without one


class FileCache:
    """Files under *root*, at most *cap* bytes in all (0: never store); the
    ``downloads.FileStore`` its downloads fill."""

    def __init__(
        self, root: str, cap: int, upstream: Upstream, offline: bool = False, metrics: Optional[Metrics] = None
    ) -> None:
        self.root = root
        self.metrics = metrics or Metrics()
        self.cap = cap
        self.upstream = upstream
        self._offline = offline
        self._lock = threading.Lock()
        # path -> [size, mtime as we last knew it], least recently used first
        self._files: "collections.OrderedDict[str, list]" = collections.OrderedDict()
        self._downloads: dict = {}
        self.generation = 0  # changes whenever a file is stored or evicted
        self._last_sweep = time.monotonic()
        self._sizes: dict = {}  # path -> size upstream gave (HEAD, Content-Range) for pages without sizes
        # Told of every file stored (files.metadata reads a wheel's METADATA then).
        self.on_stored: Optional[Callable[[Target], None]] = None
        os.makedirs(root, exist_ok=True)
        self._ledger = Ledger(root)
        self._position: Optional[tuple] = None  # how far into the journal our view is
        self._scan()

    def _scan(self) -> None:
        """Adopt the files already under root: from a walk when no other process uses
        the directory (healing any drift a crash left, rewriting the journal), else
        from the journal those processes keep; oldest access first. Under the
        directory-wide lock, so that no process stores or evicts meanwhile."""
        alone = self._ledger.register_user()
        if alone:  # else the first process swept them, and sweeps by age as it runs
            removed = remove_temp_files(self.root)
            if removed:
                logger.info("removed %d leftover temp files", removed)
        with self._ledger.locked() as ledger:
            if alone:
                self._walk(ledger)
            else:
                self._sync(ledger)
            used, count, victims = self._make_room(ledger, 0)
            self._record(ledger, [JournalEntry(self._relative(path)) for path in victims], used, count)
        self._log_evicted(victims)

    def _walk(self, ledger: LedgerHandle) -> None:
        found = []
        for path in stored_files(self.root):
            with contextlib.suppress(OSError):
                stat = os.stat(path)
                found.append((stat.st_mtime, path, stat.st_size))
        found.sort()
        with self._lock:
            for mtime, path, size in found:
                self._files[path] = [size, mtime]
        used, count = sum(f[2] for f in found), len(found)
        try:
            self._position = ledger.snapshot(self._entries(), used, count)
        except OSError as exc:
            logger.warning("cannot write the cache journal: %s", exc.strerror)
            self._record(ledger, [], used, count)

    def _relative(self, path: str) -> str:
        return path[len(self.root) + 1 :]

    def _entries(self) -> list:
        """Our view as journal entries, least recently used first."""
        with self._lock:
            return [JournalEntry(self._relative(path), size, mtime) for path, (size, mtime) in self._files.items()]

    def _sync(self, ledger: LedgerHandle) -> None:
        """Bring our view up to date with what other processes stored and evicted
        (under the ledger's lock): the journal's new lines, or its new snapshot."""
        try:
            entries, position, snapshot = ledger.changes(self._position)
        except OSError as exc:
            logger.warning("cannot read the cache journal: %s", exc.strerror)
            return
        with self._lock:
            if snapshot:
                self._files.clear()
            for entry in entries:
                path = os.path.join(self.root, entry.path)
                if entry.size < 0:
                    self._files.pop(path, None)
                else:
                    self._files[path] = [entry.size, entry.mtime]
                    self._files.move_to_end(path)
            if entries or snapshot:
                self.generation += 1
        self._position = position

    def _record(self, ledger: LedgerHandle, entries: list, used: int, count: int) -> None:
        """Journal *entries* and the new total (under the ledger's lock, synced). A full
        disk keeps the old record: the next process to start rewrites it."""
        try:
            if entries:
                self._position = ledger.append(entries, self._position)
            ledger.write(used, count)
        except OSError as exc:
            logger.warning("cannot update the cache size ledger: %s", exc.strerror)
            self._position = None  # read the journal whole next time

    # ------------------------------------------------------------------ stats

    def stats(self) -> tuple:
        """(bytes used, file count), by every process sharing the directory."""
        record = self._ledger.read()
        return record.used, record.count

    def downloads_in_progress(self) -> int:
        with self._lock:
            return len(self._downloads)

    def largest(self, count: int) -> list:
        """The *count* largest stored files as (project, file name, size), from the
        accounting in memory (no directory walk)."""
        with self._lock:
            found = heapq.nlargest(count, self._files.items(), key=lambda item: item[1][0])
        out = []
        for path, (size, _) in found:
            stored = parse_stored(os.path.relpath(path, self.root))
            out.append((stored.project, stored.filename, size))
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
        """A body for the file (or its ``.metadata``); :meth:`_body` picks one of five:

        1. cached: the stored file (:class:`CachedBody`, a hit).
        2. pass-through: a file over the cap, or one the cache dir cannot take, is sent
           from upstream as it comes, hash-checked (:class:`UpstreamBody`).
        3. HEAD: with no download in progress, the index's size answers
           (:class:`SizeOnlyBody`), else a HEAD asked upstream; it starts no download.
        4. join a download: a GET follows the one shared download of the file, the one
           in progress or a new one (:class:`DownloadBody`), sent as it is written.
        5. range from upstream: a Range whose first byte the download does not have yet
           (or whose request started it) is passed upstream at once while the download
           goes on in the background, so the next client finds the file cached. A range
           that only probes the zip's end (uv and pip read a wheel's directory there)
           starts no download: nobody may ever want the whole wheel.

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
        if not self._storable(target):  # 2
            return self._pass_through(target, head, byte_range)
        probe = byte_range is not None and is_zip_probe(byte_range, target.size or self._sizes.get(target.path))
        with self._lock:
            download, start = self._register(target, start=not head and not probe)
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
            file.close()
            raise

    def ensure(self, project: NormalizedName, entry: FileEntry, metadata: bool = False) -> bool:
        """Store the file (or its ``.metadata``) without a client: join the download of
        it in progress, or run one in this thread, and wait until it is stored (the
        ``warm`` command, prefetch).

        :returns: whether the file is in the cache now (False: it cannot be stored:
            over the cap, or the cache dir cannot take it).
        :raises ProxpiError: UpstreamError (IntegrityError: bad bytes) or, offline,
            NotFound.
        """
        target = Target(self.root, project, entry, metadata)
        if self.has(project, entry, metadata):
            return True
        if not self._storable(target):
            return False
        while True:
            with self._lock:
                download, start = self._register(target)
            if start:
                download.run()
            with download.cond:
                download.cond.wait_for(lambda: download.over)
                if download.error is not None:
                    raise download.error
            if not download.take_over:  # else another process's writer died: the next one
                return self.has(project, entry, metadata)

    def _storable(self, target: Target) -> bool:
        """Whether a file not in the cache may be downloaded into it (False: over the
        cap, so it passes through).

        :raises NotFound: offline, where nothing is fetched.
        """
        if self._offline:
            raise NotFound(f"{target.filename} is not in the offline cache")
        return self.cap > 0 and (target.size is None or target.size <= self.cap)

    @staticmethod
    def _cached_body(cached: Opened, byte_range: Optional[ByteRange]) -> FileBody:
        try:
            return CachedBody(cached.file, cached.size, byte_range)
        except BaseException:
            cached.file.close()
            raise

    def _pass_through(self, target: Target, head: bool, byte_range: Optional[ByteRange]) -> FileBody:
        header = byte_range.header() if byte_range else None
        try:
            response = self.upstream.open_file(target.url, "HEAD" if head else "GET", header)
        except ProxpiError as exc:
            self.count_upstream(target, exc)
            raise
        self.count_upstream(target, None)
        total = response.headers.get("Content-Range", "").rpartition("/")[2] if response.status == 206 else response.length
        if total is not None and str(total).isdigit() and (head or response.status == 206):
            with self._lock:
                if len(self._sizes) >= MAX_SIZES:
                    self._sizes.clear()
                self._sizes[target.path] = int(total)
        if response.status == 416:
            response.close()
            total = response.headers.get("Content-Range", "").rpartition("/")[2]
            raise RangeNotSatisfiable(f"{header} is outside {target.filename}", int(total) if total.isdigit() else 0)
        return UpstreamBody(response, target, whole_file=response.status == 200 and not head)

    def open_cached(self, target: Target) -> Optional[Opened]:
        """The stored file, opened for reading and marked recently used; None if it is
        not stored."""
        try:
            file = open(target.path, "rb")
        except OSError:
            with self._lock:
                # Evicted by another process, unless our own download is storing it.
                if target.path not in self._downloads and self._files.pop(target.path, None):
                    self.generation += 1
            return None
        stat = os.fstat(file.fileno())
        now = time.time()
        touch = now - stat.st_mtime > TOUCH_INTERVAL
        with self._lock:
            known = self._files.get(target.path)
            if known is not None:
                self._files.move_to_end(target.path)
                if touch:
                    known[1] = now
            else:  # stored by another process sharing the directory
                self._files[target.path] = [stat.st_size, now if touch else stat.st_mtime]
                self.generation += 1
        if touch:
            with contextlib.suppress(OSError):
                os.utime(file.fileno())  # recency that survives a restart, seen by every process
        return Opened(file, stat.st_size)

    # ------------------------------------------------------------------ storing

    def store(self, target: Target, temp: str, size: int) -> bool:
        """Move a verified download's temp file to its final name, if it fits under the
        cap; False if it was not moved (the download removes it)."""
        path = target.path
        if size > self.cap:
            return False
        # Under the directory-wide lock, so that downloads finishing together (here or
        # in other processes) cannot each find room for themselves and overrun the cap.
        stored = False
        with self._ledger.locked() as ledger:
            if os.path.exists(path):  # stored meanwhile by a writer that took no lock
                return False
            self._sync(ledger)
            used, count, victims = self._make_room(ledger, size)
            entries = [JournalEntry(self._relative(victim)) for victim in victims]
            # Counted before it appears: a crash in between over-counts (evicting a
            # little early) rather than over-fills; the next start corrects it.
            now = time.time()
            self._record(ledger, entries + [JournalEntry(self._relative(path), size, now)], used + size, count + 1)
            try:
                os.replace(temp, path)
            except OSError as exc:
                logger.warning("cannot store %s: %s", target.filename, exc.strerror)
                self._record(ledger, [JournalEntry(self._relative(path))], used, count)
            else:
                stored = True
                with self._lock:
                    self._files[path] = [size, now]
                    self.generation += 1
            self._compact(ledger)
        self._log_evicted(victims)
        self._sweep_temp_files()
        if stored and self.on_stored is not None:
            self.on_stored(target)
        return stored

    def _make_room(self, ledger: LedgerHandle, incoming: int) -> tuple:
        """Evict least recently used files (whoever stored them) until *incoming* more
        bytes fit; returns (used, count, evicted paths). Called under the ledger lock,
        with our view synced."""
        used, count = ledger.record.used, ledger.record.count
        victims = []
        while used + incoming > self.cap:
            with self._lock:
                if not self._files:
                    break
                path, (size, mtime) = self._files.popitem(last=False)
                self.generation += 1
            try:
                stat = os.stat(path)
            except FileNotFoundError:  # gone without the ledger knowing (e.g. removed by hand)
                used, count = used - size, count - 1
                victims.append(path)
                continue
            if stat.st_mtime > mtime + TOUCH_INTERVAL:  # a hit in another process
                with self._lock:
                    self._files.setdefault(path, [stat.st_size, stat.st_mtime])
                continue
            with contextlib.suppress(OSError):
                # Clients still sending this file keep their open handle: unlink is safe.
                os.unlink(path)
            used, count = used - size, count - 1
            victims.append(path)
        return used, count, victims

    def _compact(self, ledger: LedgerHandle) -> None:
        """Rewrite the journal as a snapshot of our (synced) view once it has grown to
        about twice the size of one, so that it stays proportional to the files."""
        if ledger.journal_size() <= max(JOURNAL_MIN, 2 * JOURNAL_LINE * ledger.record.count):
            return
        try:
            self._position = ledger.snapshot(self._entries(), ledger.record.used, ledger.record.count)
        except OSError as exc:
            logger.warning("cannot rewrite the cache journal: %s", exc.strerror)

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

    def _log_evicted(self, paths: list) -> None:
        if paths:
            self.metrics.evictions.inc(amount=len(paths))
        for path in paths:
            logger.info("evicted %s", path)

    def _register(self, target: Target, start: bool = True) -> tuple:
        """(the download of *target* in progress, or, if *start*, a new one registered
        (None otherwise); whether it is new): the single-flight check-and-insert. Our
        lock is held; the caller runs a new download once it has let go."""
        download = self._downloads.get(target.path)
        if download is None and start:
            download = self._downloads[target.path] = Download(self, self.upstream, target)
            return download, True
        return download, False

    @staticmethod
    def _run(download: Download) -> None:
        threading.Thread(target=download.run, name=f"download {download.target.filename}", daemon=True).start()

    def finished(self, download: Download) -> None:
        """Forget a download whose writer is done; start the next one if its file is
        still wanted (another process's writer died)."""
        with self._lock:
            self._downloads.pop(download.target.path, None)
        download.close_fd()
        if download.take_over:  # another process's writer died: the file is still wanted
            with self._lock:
                new, start = self._register(download.target)
            if start:
                self._run(new)

    def close(self) -> None:
        """Remove this process's temp files (downloads in progress are abandoned)."""
        with self._lock:
            downloads = list(self._downloads.values())
        for download in downloads:
            download.remove_temp()
        self._ledger.close()
