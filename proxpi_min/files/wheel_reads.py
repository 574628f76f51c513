"""A wheel's METADATA read from wherever the bytes are: the cached wheel, the upstream by
range requests (the zip's end, then the member), or a whole download spooled to a temp
file; for ``metadata``, which decides which to use and stores what it read.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import tempfile
import threading
import urllib.parse
import zipfile
import zlib
from typing import Callable, Optional

from ..core.byteranges import parse_content_range, parse_range
from ..core.errors import ProxpiError, UpstreamError
from ..core.units import human_size
from ..core.wheelmeta import (
    HEAD_READ,
    MAX_METADATA,
    TAIL_READ,
    BrokenWheel,
    metadata_from_ranges,
    metadata_name,
    tail_read,
)
from ..core.wheelpick import wheel_tags
from ..index.page_read import Deadline
from ..infra.atomic import write_all
from ..index.upstream import FileResponse
from .file_cache import FileCache
from .integrity import Verifier
from .layout import Target
from .upstream_body import VerifiedChunks

__all__ = ["WheelReader", "read_wheel_metadata"]

logger = logging.getLogger(__name__)

# A wheel read whole for its METADATA where the cache dir cannot spool it (a full disk)
# is held in memory up to this size; a larger one is a 502.
MEMORY_SPOOL = 32 * 1024 * 1024


class _SpoolRefused(Exception):
    """The disk refused a spooled wheel's bytes (*reason*, its strerror)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class WheelReader:
    """Reads wheels' METADATA for *files*' cache; *keep* stores a small wheel that a
    range read brought whole (``Target``, its bytes)."""

    def __init__(self, files: FileCache, keep: Callable[[Target, bytes], None]) -> None:
        self._files = files
        self._keep = keep
        self._no_ranges: set = set()  # hosts that answered a Range with the whole file

    def ignores_ranges(self, url: str) -> bool:
        """Whether the host of *url* answered a range request with the whole file."""
        return urllib.parse.urlsplit(url).netloc in self._no_ranges

    @property
    def hosts_ignoring_ranges(self) -> int:
        """How many hosts answered a range request with the whole file (only grows)."""
        return len(self._no_ranges)

    def from_spool(self, wheel: Target) -> bytes:
        """The METADATA of a wheel the cache does not take, downloaded into an unnamed
        temp file beside it (or, where the disk cannot take that either, into memory
        up to MEMORY_SPOOL bytes), checked against the index's hash, and dropped.

        :raises UpstreamError: it cannot be fetched or held (IntegrityError: bad hash).
        """
        try:
            # Unbuffered: a full disk fails the write that fills it, not a later flush.
            with tempfile.TemporaryFile(dir=self._files.root, buffering=0) as spool:
                return self._spooled(wheel, spool, None)
        except _SpoolRefused as exc:
            refusal = exc.reason
        except OSError as exc:  # the temp file cannot be made or closed
            refusal = exc.strerror or str(exc)
        logger.warning("%s read in memory for its metadata: the cache dir cannot spool it (%s)", wheel.filename, refusal)
        return self._spooled(wheel, io.BytesIO(), MEMORY_SPOOL, refusal)

    def _spooled(self, wheel: Target, spool, limit: Optional[int], refusal: str = "") -> bytes:
        """The METADATA of *wheel* downloaded whole into *spool*, at most *limit* bytes.

        :raises _SpoolRefused: the spool cannot be written or read back.
        """
        # An unbuffered file's single write may take part of a chunk: write_all goes on.
        write = spool.write if isinstance(spool, io.BytesIO) else functools.partial(write_all, spool.fileno())
        response = self._open_counted(wheel)
        body = VerifiedChunks(response, wheel, self._files.min_rate)
        with response:
            for chunk in body:
                if limit is not None and spool.tell() + len(chunk) > limit:
                    raise UpstreamError(
                        f"{wheel.filename} cannot be read for its metadata: the cache dir cannot spool it ({refusal})"
                        f" and it is over {human_size(limit)}"
                    )
                try:
                    write(chunk)
                except OSError as exc:
                    raise _SpoolRefused(exc.strerror or str(exc)) from None
        body.check()
        try:
            spool.seek(0)
            return read_wheel_metadata(spool, wheel.filename)
        except OSError as exc:
            raise _SpoolRefused(exc.strerror or str(exc)) from None

    def from_cache(self, wheel: Target) -> Optional[bytes]:
        opened = self._files.open_cached(wheel)
        if opened is None:
            return None
        with opened.file:
            return read_wheel_metadata(opened.file, wheel.filename)

    def from_ranges(self, wheel: Target, size: Optional[int]) -> Optional[bytes]:
        """The METADATA member read with range requests (the zip's end, then the
        directory or the member if the end did not hold them); None if the upstream
        ignores Range (remembered for its host). The start of a wheel larger than that
        read is read at the same time, its METADATA often being there; of size unknown
        (an HTML page), a platform wheel's only (auditwheel and maturin put it there; most
        pure wheels are small)."""
        host = urllib.parse.urlsplit(wheel.url).netloc
        if host in self._no_ranges:
            return None
        tail = tail_read(size)
        tags = wheel_tags(wheel.filename)
        head = None
        if (size > tail) if size is not None else (tags is not None and not tags.pure):
            # Waited for only if used: unused, it ends on its own, its connection pooled.
            head = _RangeRead(self, wheel, f"bytes=0-{HEAD_READ - 1}")
        data = metadata_from_ranges(
            functools.partial(self._range, wheel),
            wheel.filename,
            tail,
            None if head is None else head.result,
            functools.partial(self._keep_whole, wheel),
        )
        if data is None:
            self._no_ranges.add(host)
        return data

    def _keep_whole(self, wheel: Target, data: bytes) -> None:
        """A range that held the whole wheel (a small one): stored as its download would
        be, if it has the index's hash, so that installing it asks upstream nothing."""
        if wheel.hash is None or os.path.exists(wheel.path):
            return
        verifier = Verifier(wheel.hash)
        verifier.update(data)
        if not verifier.matches():
            logger.warning("%s from upstream does not match the index's %s", wheel.filename, wheel.hash.algorithm)
            return
        self._keep(wheel, data)

    def _range(self, wheel: Target, header: str) -> Optional[tuple]:
        """(bytes, offset of the first, file size) of a range of the wheel; None if
        upstream sent the whole file instead (206 expected). The whole exchange has the
        upstream's deadline: a client waits on it.

        :raises UpstreamTimeout: past the deadline.
        """
        deadline = self._files.upstream.deadline()
        try:
            with deadline.enforced("upstream", f"{header} of {wheel.filename}"):
                response = self._open_counted(wheel, header, deadline)
                with response:
                    where = parse_content_range(response.headers.get("Content-Range"))
                    if response.status != 206 or where is None:
                        return None
                    asked = parse_range(header)
                    most = asked.last - asked.first + 1 if asked.first is not None else asked.last
                    chunks, got = [], 0
                    while chunk := response.read(TAIL_READ):
                        got += len(chunk)
                        if got > most:  # never more in memory than was asked for
                            raise UpstreamError(f"upstream sent more than {header} of {wheel.filename}")
                        chunks.append(chunk)
        finally:
            deadline.cancel()
        return b"".join(chunks), *where

    def _open_counted(
        self, wheel: Target, header: Optional[str] = None, deadline: Optional[Deadline] = None
    ) -> FileResponse:
        """A GET of the wheel (*header*: a Range; *deadline*: the caller's, see
        ``Upstream.open_file``), counted as one upstream request by how it was answered.

        :raises ProxpiError: upstream failed (counted).
        """
        try:
            response = self._files.upstream.open_file(wheel.url, "GET", header, deadline)
        except ProxpiError as exc:
            self._files.count_upstream(wheel, exc)
            raise
        self._files.count_upstream(wheel, None)
        return response


class _RangeRead:
    """One range of a wheel read in a thread of its own, beside the reads that need
    its answer first; its failure only means the range is not there to use."""

    def __init__(self, owner: WheelReader, wheel: Target, header: str) -> None:
        self._got: Optional[tuple] = None
        self._thread = threading.Thread(target=self._read, args=(owner, wheel, header), daemon=True)
        self._thread.start()

    def _read(self, owner: WheelReader, wheel: Target, header: str) -> None:
        try:
            self._got = owner._range(wheel, header)
        except ProxpiError:
            pass

    def result(self) -> Optional[tuple]:
        """(bytes, offset of the first, file size), or None if it failed."""
        self._thread.join()
        return self._got


def read_wheel_metadata(file, filename: str) -> bytes:
    """The METADATA member of the wheel open in *file*.

    :raises BrokenWheel: no zip, no METADATA, or a member that does not read back.
    """
    try:
        with zipfile.ZipFile(file) as wheel:
            name = metadata_name(wheel.namelist(), filename)
            if wheel.getinfo(name).file_size > MAX_METADATA:
                raise BrokenWheel(f"{filename} has a METADATA larger than {human_size(MAX_METADATA)}")
            return wheel.read(name)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, NotImplementedError, RuntimeError, EOFError, ValueError) as exc:
        raise BrokenWheel(f"{filename} is not a readable zip file ({exc})") from None

