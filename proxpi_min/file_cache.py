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
import errno
import hashlib
import logging
import mimetypes
import os
import socket
import threading
import time
from typing import Optional

from .byteranges import ByteRange
from .errors import IntegrityError, NotFound, ProxpiError, RangeNotSatisfiable, UpstreamError
from .names import NormalizedName, check_filename
from .page_store import STALE_TEMP, TEMP_PREFIX, remove_temp_files, temp_path
from .simple import FileEntry, Hashes
from .upstream import FileResponse, Upstream

__all__ = ["FileBody", "FileCache", "content_type_for"]

logger = logging.getLogger(__name__)

CHUNK = 1024 * 1024  # bytes per upstream read and per sendfile call while streaming
# A hit moves a file's mtime (its recency) at most this often: a busy file is not
# worth a metadata write per request.
TOUCH_INTERVAL = 1.0
ONE_WRITE = 64 * 1024  # cached bodies up to this size go out with their headers
_PREFERRED_HASHES = ("sha256", "sha512", "sha384", "blake2b", "sha3_256", "sha224", "sha1", "md5")
_ENCODED_TYPES = {"gzip": "application/gzip", "bzip2": "application/x-bzip2", "xz": "application/x-xz"}


def content_type_for(filename: str, binary: bool) -> str:
    """The Content-Type of a distribution file; never with a Content-Encoding, since
    clients must get the exact bytes the index hashed."""
    if binary:
        return "application/octet-stream"
    if filename.endswith(".metadata"):
        return "text/plain; charset=utf-8"
    if filename.endswith(".whl"):
        return "application/zip"
    kind, encoding = mimetypes.guess_type(filename)
    if encoding:
        return _ENCODED_TYPES.get(encoding, "application/octet-stream")
    return kind or "application/octet-stream"


def _best_hash(hashes: Hashes) -> Optional[tuple]:
    found = dict(hashes)
    for name in _PREFERRED_HASHES:
        if name in found:
            return name, found[name]
    return None


class _Target:
    """What to fetch and where it lives: a distribution file or its metadata file."""

    def __init__(self, root: str, project: NormalizedName, entry: FileEntry, metadata: bool) -> None:
        check_filename(entry.filename)
        dist_hash = _best_hash(entry.hashes)
        folder = f"{dist_hash[0]}-{dist_hash[1]}" if dist_hash else "unverified"
        self.filename = entry.filename + (".metadata" if metadata else "")
        self.path = os.path.join(root, project, folder, self.filename)
        self.url = entry.url + (".metadata" if metadata else "")
        self.hash = _best_hash(entry.metadata or ()) if metadata else dist_hash
        self.size = None if metadata else entry.size
        # Files never change (PyPI refuses a reused file name), so their hash is a
        # strong validator; without one, there is no ETag.
        self.etag = f'"{self.hash[1][:40]}"' if self.hash else None


class FileBody:
    """What the handler sends for a file: status, headers and the body.

    ``length`` None means unknown (the handler sends it chunked). :meth:`send` writes
    the body to the socket and raises if it cannot be sent whole; :meth:`close`
    releases what the body holds and must always be called.
    """

    status = 200
    etag: Optional[str] = None
    length: Optional[int] = None
    content_range: Optional[str] = None
    sent = 0  # body bytes sent so far (for the request log)

    def send(self, conn: socket.socket, head: bytes, chunked: bool) -> None:
        """Send *head* (status line and headers), then the body."""
        conn.sendall(head)
        self._send_body(conn, chunked)

    def _send_body(self, conn: socket.socket, chunked: bool) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def _ranged(self, byte_range: Optional[ByteRange], total: int) -> tuple:
        """Set status and lengths for *byte_range* (None: the whole file) of a file of
        *total* bytes; returns its (start, stop) offsets.

        A range is answered 206 even when it spans the whole file: uv takes a 200 as
        "this index has no range support" and then downloads whole wheels.
        """
        start, stop = byte_range.resolve(total) if byte_range else (0, total)
        self.length = stop - start
        if byte_range is not None:
            self.status = 206
            self.content_range = f"bytes {start}-{stop - 1}/{total}"
        return start, stop


def _relay(
    response: FileResponse,
    conn: socket.socket,
    chunked: bool,
    *,
    limit: Optional[int],
    skip: int = 0,
    hasher=None,
    expected: Optional[tuple] = None,
) -> int:
    """Copy an upstream body to the client: *skip* bytes dropped first, then at most
    *limit* bytes (None: to the end). With a *hasher* (the whole file), the last byte
    is held back until the digest matches *expected*.

    :returns: the bytes sent.
    :raises UpstreamError: fewer than *limit* bytes came (IntegrityError: bad hash).
    """
    sent = 0
    held = b""
    while limit is None or sent + len(held) < limit:
        chunk = response.read(CHUNK)
        if not chunk:
            break
        if skip:
            cut = min(skip, len(chunk))
            chunk, skip = chunk[cut:], skip - cut
        if limit is not None:
            chunk = chunk[: limit - sent - len(held)]
        if hasher is not None and chunk:
            hasher.update(chunk)
            chunk, held = held + chunk[:-1], chunk[-1:]
        if chunk:
            _send_chunk(conn, chunk, 0, len(chunk), chunked)
            sent += len(chunk)
    if limit is not None and sent + len(held) < limit:
        raise UpstreamError(f"upstream ended {limit - sent - len(held)} bytes early: {response.url}")
    if hasher is not None and hasher.hexdigest() != expected[1]:
        raise IntegrityError(f"upstream bytes do not match the index hash: {response.url}")
    if held:
        _send_chunk(conn, held, 0, len(held), chunked)
        sent += len(held)
    if chunked:
        conn.sendall(b"0\r\n\r\n")
    return sent


def _send_chunk(conn: socket.socket, data_or_file, offset: int, count: int, chunked: bool) -> None:
    if chunked:
        conn.sendall(b"%x\r\n" % count)
    if isinstance(data_or_file, bytes):
        conn.sendall(data_or_file)
    else:
        conn.sendfile(data_or_file, offset, count)
    if chunked:
        conn.sendall(b"\r\n")


class _CachedBody(FileBody):
    """A complete file from the cache, sent with ``socket.sendfile`` (zero copy)."""

    def __init__(self, file, size: int, byte_range: Optional[ByteRange]) -> None:
        self._file = file
        self._start = self._ranged(byte_range, size)[0]

    def send(self, conn: socket.socket, head: bytes, chunked: bool) -> None:
        if self.length is not None and self.length <= ONE_WRITE:
            # Headers and a small body in one write: one packet, no sendfile set-up.
            conn.sendall(head + os.pread(self._file.fileno(), self.length, self._start))
            self.sent = self.length
        else:
            super().send(conn, head, chunked)

    def _send_body(self, conn: socket.socket, chunked: bool) -> None:
        if self.length:
            self.sent = conn.sendfile(self._file, self._start, self.length)

    def close(self) -> None:
        self._file.close()


class _SizeOnlyBody(FileBody):
    """Headers alone, for a HEAD on a file the index gave the size of."""

    def __init__(self, size: int) -> None:
        self.length = size


class _UpstreamBody(FileBody):
    """Bytes passed straight from an upstream response (not cached), hash-checked when
    it is the whole file: the last byte is held back until the hash matches."""

    def __init__(self, response: FileResponse, target: _Target, whole_file: bool) -> None:
        self._response = response
        self._target = target
        self._verify = whole_file and target.hash is not None
        self.status = response.status
        self.length = response.length
        self.content_range = response.headers.get("Content-Range")

    def _send_body(self, conn: socket.socket, chunked: bool) -> None:
        hasher = hashlib.new(self._target.hash[0]) if self._verify else None
        self.sent = _relay(
            self._response, conn, chunked, limit=self.length, hasher=hasher, expected=self._target.hash
        )

    def close(self) -> None:
        self._response.close()


class _Download:
    """One upstream download into a temp file, shared by every client that asks for
    the file meanwhile. The writer thread publishes progress under ``cond``."""

    def __init__(self, cache: "FileCache", target: _Target) -> None:
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

    @property
    def over(self) -> bool:
        """Nothing more will be written: done, failed, or passing through."""
        return self.done or self.error is not None or self.disk_failed

    # ------------------------------------------------------------------ writer

    def run(self) -> None:
        try:
            self._run()
        except ProxpiError as exc:
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
            self.fd = os.open(self.temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            logger.warning("cannot cache %s (%s); passing it through", target.filename, exc.strerror)
            self._publish(disk_failed=True)
            return
        with self.cache.upstream.open_file(target.url) as response:
            length = response.length
            if length is not None and target.size is not None and length != target.size:
                raise IntegrityError(f"{target.filename}: upstream sends {length} bytes, the index says {target.size}")
            self._publish(started=True, length=length if length is not None else target.size)
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
        self.cache._store(self)
        self._publish(done=True, length=self.written)

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



def _write_all(fd: int, data: bytes, offset: int) -> None:
    """pwrite all of *data*: a full disk may take part of it without an error."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view, offset = view[written:], offset + written


class _DownloadBody(FileBody):
    """A client's view of a :class:`_Download`: bytes are sent as they are written
    (with sendfile from the temp file), the last byte only once the file is verified."""

    def __init__(self, download: _Download, file, byte_range: Optional[ByteRange]) -> None:
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
                _send_chunk(conn, self._file, self._position, limit - self._position, chunked)
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
            self.sent += _relay(
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


class FileCache:
    """Files under *root*, at most *cap* bytes in all (0: never store)."""

    def __init__(self, root: str, cap: int, upstream: Upstream, offline: bool = False) -> None:
        self.root = root
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

    def has(self, project: NormalizedName, entry: FileEntry, metadata: bool = False) -> bool:
        """Whether the file (or its .metadata) is stored (offline pages list only these)."""
        try:
            path = _Target(self.root, project, entry, metadata).path
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
    ) -> FileBody:
        """A body for the file (or its ``.metadata``), from the cache when it is there.

        Otherwise a GET joins or starts the one shared download. A Range request is
        answered from that download when its bytes are already in, else passed
        upstream at once (uv reads a wheel's zip directory, at its end, this way), and
        the download starts in the background so the next client finds the file
        cached. A HEAD is answered from the index's size when it gave one, else asked
        upstream; it starts no download.

        :raises ProxpiError: NotFound, RangeNotSatisfiable, UpstreamError...
        """
        target = _Target(self.root, project, entry, metadata)
        body = self._body(target, head, byte_range)
        body.etag = target.etag
        return body

    def _body(self, target: _Target, head: bool, byte_range: Optional[ByteRange]) -> FileBody:
        cached = self._open_cached(target)
        if cached is not None:
            return self._cached_body(*cached, byte_range)
        if self._offline:
            raise NotFound(f"{target.filename} is not in the offline cache")
        if self.cap <= 0 or (target.size is not None and target.size > self.cap):
            return self._pass_through(target, head, byte_range)
        with self._lock:
            download = self._downloads.get(target.path)
            start = download is None and not head
            if start:
                download = self._downloads[target.path] = _Download(self, target)
            if download is not None:
                download.join()
        if start:
            threading.Thread(target=download.run, name=f"download {target.filename}", daemon=True).start()
        if download is None:  # a HEAD
            return _SizeOnlyBody(target.size) if target.size is not None else self._pass_through(target, True, None)
        # The client whose range started the download is answered from upstream at once
        # (the download may not have its bytes yet); later ones use it where it has them.
        if byte_range is not None and (start or not download.has_start_of(byte_range)):
            download.leave()
            return self._pass_through(target, head, byte_range)
        file = download.attach()
        if file is None:  # the cache dir cannot take the file
            return self._pass_through(target, head, byte_range)
        try:
            return _DownloadBody(download, file, byte_range)
        except BaseException:
            file.close()
            raise

    @staticmethod
    def _cached_body(file, size: int, byte_range: Optional[ByteRange]) -> FileBody:
        try:
            return _CachedBody(file, size, byte_range)
        except BaseException:
            file.close()
            raise

    def _pass_through(self, target: _Target, head: bool, byte_range: Optional[ByteRange]) -> FileBody:
        header = byte_range.header() if byte_range else None
        response = self.upstream.open_file(target.url, "HEAD" if head else "GET", header)
        if response.status == 416:
            response.close()
            total = response.headers.get("Content-Range", "").rpartition("/")[2]
            raise RangeNotSatisfiable(f"{header} is outside {target.filename}", int(total) if total.isdigit() else 0)
        return _UpstreamBody(response, target, whole_file=response.status == 200 and not head)

    def _open_cached(self, target: _Target):
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

    def _store(self, download: _Download) -> None:
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
        return victims

    def _unlink(self, paths: list) -> None:
        for path in paths:
            # Clients still sending this file keep their open handle: unlink is safe.
            with contextlib.suppress(OSError):
                os.unlink(path)
            logger.info("evicted %s", path)

    def _finished(self, download: _Download) -> None:
        with self._lock:
            self._downloads.pop(download.target.path, None)
        download.close_fd()

    def close(self) -> None:
        """Remove this process's temp files (downloads in progress are abandoned)."""
        with self._lock:
            downloads = list(self._downloads.values())
        for download in downloads:
            download._remove_temp()
