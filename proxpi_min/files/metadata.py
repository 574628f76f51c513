"""Core metadata (PEP 658) for wheels whose index gives none: read (``wheel_reads``) from
the cached wheel or from upstream with a few range requests, stored beside the wheel,
advertised on pages.

The metadata is stored where an index's own ``.metadata`` would be (``layout``: under
the wheel's hash), so it is fetched once across processes and restarts. Once the whole
wheel is stored, its METADATA is compared with the stored copy (an ERROR if they differ:
the wheel's replaces it). A wheel that is no zip, or has no METADATA, is remembered:
its ``.metadata`` answers 502 and pages stop advertising one. Only bytes read whole
prove that: an answer cut short is the upstream's failure, and the next request asks
again; the requests waiting on a read that failed share its error.

What is remembered belongs to the wheel with the index's hash it was read from (the
folder it is stored under names it): an index that serves new bytes under an old file
name lists a new hash, whose metadata is unknown until read from the new wheel.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import itertools
import logging
import os
import socket
import threading
from typing import Callable, NamedTuple, Optional

from ..core.byteranges import ByteRange
from ..core.errors import HashMismatch, NotFound, UpstreamError
from ..core.names import NormalizedName
from ..core.simple import FileEntry, with_metadata
from ..core.wheelmeta import MAX_METADATA, BrokenWheel, names_itself
from ..infra.atomic import temp_path
from ..infra.background import Background
from ..infra.metrics import Metrics
from .bodies import FileBody
from .file_cache import FileCache
from .integrity import FileHash, best_hash
from .layout import METADATA_SUFFIX, Target, parse_stored
from .wheel_reads import WheelReader, read_wheel_metadata

__all__ = ["BytesBody", "WheelMetadata"]

logger = logging.getLogger(__name__)

# Wheels whose metadata hash (or breakage) is remembered for pages; past this the memory
# starts afresh (pages then say ``true`` until each is served again).
MAX_KNOWN = 200_000
# The last changes kept per project, for pages rendered anew file by file: more at once
# than this between two answers of a page, and it is rendered whole (each file found by
# a scan of the page: past a few dozen, a whole render costs less).
CHANGES_KEPT = 16
# Metadata read and not yet stored, held in memory at most: past it, one is stored before
# its answer (a disk or a lock slower than the reads).
MAX_UNSTORED_BYTES = 64 * 1024 * 1024
# From a host that ignores Range, a wheel read whole for its metadata: the client waits
# for all of it before a byte of the answer (pip's read timeout is 15 s; 8 MiB in that
# time is a link of 0.6 MB/s).
WHOLE_FOR_METADATA = 8 * 1024 * 1024


class BytesBody(FileBody):
    """A small body held in memory (metadata extracted just now)."""

    def __init__(self, data: bytes, byte_range: Optional[ByteRange]) -> None:
        start, stop = self._ranged(byte_range, len(data))
        self._data = data[start:stop]

    def send(self, conn: socket.socket, head: bytes, chunked: bool) -> None:
        conn.sendall(head + self._data)
        self.sent = len(self._data)


class _Flight:
    """One read of a wheel's metadata in progress; the requests waiting for it share its
    failure, which is not kept past it (the next request tries again)."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: Optional[BaseException] = None


class WheelMetadata:
    """The ``.metadata`` of wheels their index lists without one, for *files*' cache.

    *on_served* is told the metadata of every ``.metadata`` answered (the prefetcher
    reads its dependencies)."""

    def __init__(
        self,
        files: FileCache,
        enabled: bool = True,
        offline: bool = False,
        metrics: Optional[Metrics] = None,
        background: Optional[Background] = None,
    ) -> None:
        self.enabled = enabled
        self._offline = offline
        self._files = files
        self._metrics = metrics or files.metrics
        self._lock = threading.Lock()
        self._known: dict = {}  # _Wheel -> sha256 of its metadata, or a BrokenWheel
        # (project, file name) of the wheels in _known: most of a cold page's wheels are
        # in neither, and are told so without working out their _Wheel (~0.8 us each).
        self._named: set = set()
        self._generations: dict = {}  # project -> the number of the last change of what its page advertises
        self._changed: dict = {}  # project -> deque of (change number, wheel file name), the last CHANGES_KEPT
        self._changes = itertools.count(1)
        self._forgotten_before = 0  # changes numbered below this were forgotten all at once (MAX_KNOWN)
        self._flights: dict = {}  # metadata path -> its _Flight, the one read in progress
        # What was read is stored after the answer (None: before it): a store waits on
        # the directory-wide lock, which a cold resolution's reads would queue on.
        self._background = background
        self._unstored: dict = {}  # metadata path -> the bytes read, until stored
        self._unstored_bytes = 0
        self._reader = WheelReader(files, self._write)
        # Also store the METADATA of every wheel downloaded (``warm``: an offline proxy
        # serves them); else a downloaded wheel is only checked against a stored copy.
        self.save_downloaded = False
        # Told (project, wheel file name, metadata) of each metadata served.
        self.on_served: Optional[Callable[[NormalizedName, str, bytes], None]] = None
        self._counter = self._metrics.registry.counter(
            "proxpi_metadata_extracted_total",
            "Wheel metadata the proxy extracted itself, by how (wheel, ranges, download) or what went wrong.",
            ("outcome",),
        )
        files.on_stored = self.wheel_stored

    # ------------------------------------------------------------------ pages

    def generation(self, project: NormalizedName) -> tuple:
        """Changes whenever what :meth:`advertise` says for *project* changes."""
        return self._generations.get(project, 0), self._reader.hosts_ignoring_ranges

    def changed_since(self, project: NormalizedName, generation: tuple) -> Optional[frozenset]:
        """The names of the wheels of *project* whose advertised metadata may have changed
        since :meth:`generation` gave *generation*; None if that cannot be told (too many
        changes since, or a change that reaches every wheel)."""
        number, hosts_ignoring_ranges = generation
        with self._lock:
            if number < self._forgotten_before:
                return None
            changed = list(self._changed.get(project, ()))
        if len(changed) == CHANGES_KEPT and changed[0][0] > number:
            return None  # older changes may have been dropped
        # Read last: a host found ignoring Range while the names were gathered counts.
        if hosts_ignoring_ranges != self._reader.hosts_ignoring_ranges:
            return None
        return frozenset(filename for at, filename in changed if at > number)

    def advertise(self, project: NormalizedName, files: tuple, local: frozenset = frozenset()) -> tuple:
        """*files* with metadata advertised for every wheel without: its sha256 once
        known, else no hash (PEP 714 ``true``); none for a broken wheel, nor for the
        files named in *local* (the local index's: the proxy does not read those), nor,
        until it is known, for a wheel of a host that ignores Range that is larger than
        WHOLE_FOR_METADATA or of unknown size: its metadata would cost the whole wheel
        before the answer's first byte, past a client's read timeout on a slow link."""
        if not self.enabled:
            return files
        known, named = self._known, self._named
        ignoring = self._reader.hosts_ignoring_ranges > 0
        out = []
        for entry in files:
            if entry.metadata is None and entry.filename.endswith(".whl") and entry.filename not in local:
                found = known.get(_Wheel.listed(project, entry)) if (project, entry.filename) in named else None
                if found is None and ignoring and not _small(entry) and self._reader.ignores_ranges(entry.url):
                    pass  # the client reads the wheel itself, streamed as it comes
                elif found is None:
                    entry = with_metadata(entry, ())
                elif isinstance(found, str):
                    entry = with_metadata(entry, (("sha256", found),))
            out.append(entry)
        return tuple(out)

    def learn_stored_later(self) -> None:
        """:meth:`learn_stored` in a thread of its own (serving starts meanwhile)."""
        threading.Thread(target=self.learn_stored, name="proxpi-metadata-hashes", daemon=True).start()

    def learn_stored(self) -> None:
        """Learn the hash of every wheel's metadata stored in the cache dir (a restart, a
        copied cache dir), so that pages give it rather than ``true`` from the start:
        each of those small files is read once (found from the cache's view, which
        start-up has already built: no second walk of the disk)."""
        root = self._files.root
        for path in self._files.stored_paths():
            if len(self._known) >= MAX_KNOWN:
                return
            stored = parse_stored(os.path.relpath(path, root))
            if not stored.metadata or not stored.filename.endswith(".whl" + METADATA_SUFFIX):
                continue
            try:
                with open(path, "rb") as file:
                    data = file.read(MAX_METADATA + 1)
            except OSError:  # evicted meanwhile
                continue
            counted = self._files.stored_size(path)
            if counted is not None and counted != len(data):  # another process's copy since?
                self._files.catch_up()
                counted = self._files.stored_size(path)
            if (counted is not None and counted != len(data)) or not names_itself(data):
                # Cut short or emptied (a crash, a hand): its hash must not be advertised.
                logger.warning("%s is not a whole metadata file (%d bytes): removed", path, len(data))
                with contextlib.suppress(OSError):  # a read-only disk: left, and not learnt
                    self._files.remove(path)
                continue
            digest = hashlib.sha256(data).hexdigest()
            # Its folder names the hash of the wheel it was read from (None: "unverified").
            wheel = _Wheel(stored.project, stored.filename[: -len(METADATA_SUFFIX)], stored.hash)
            with self._lock:
                new = wheel not in self._known
            if new:  # what this process learnt itself since is newer
                self._learn(wheel, digest)

    def _learn(self, wheel: _Wheel, value) -> None:
        with self._lock:
            if self._known.get(wheel) != value:
                if len(self._known) >= MAX_KNOWN:
                    self._known, self._named, self._generations, self._changed = {}, set(), {}, {}
                    self._forgotten_before = next(self._changes)
                self._known[wheel] = value
                self._named.add((wheel.project, wheel.filename))
                # From one counter: after a fresh start, no project's number repeats one
                # its page was rendered with before (0 only where nothing is known).
                number = self._generations[wheel.project] = next(self._changes)
                changed = self._changed.get(wheel.project)
                if changed is None:
                    changed = self._changed[wheel.project] = collections.deque(maxlen=CHANGES_KEPT)
                changed.append((number, wheel.filename))

    # ------------------------------------------------------------------ serving

    def open(
        self, project: NormalizedName, entry: FileEntry, head: bool, byte_range: Optional[ByteRange], index: str = ""
    ) -> FileBody:
        """The ``.metadata`` of *entry*, a wheel its index lists without one.

        :raises NotFound: turned off, not a wheel, or offline without the wheel.
        :raises BrokenWheel: the wheel is no zip, or has no METADATA (502).
        :raises UpstreamError: upstream failed.
        """
        if not self.enabled or not entry.filename.endswith(".whl"):
            raise NotFound(f"the index has no metadata file for {entry.filename!r}")
        found = self._known.get(_Wheel.listed(project, entry))
        if isinstance(found, BrokenWheel):
            raise BrokenWheel(found.message)
        data, cached = self._metadata(project, entry, index)
        (self._metrics.hit if cached else self._metrics.miss)("file")
        if self.on_served is not None and not head:
            self.on_served(project, entry.filename, data)
        body = BytesBody(data, byte_range)
        body.source = "cache" if cached else "upstream"
        body.etag = f'"{hashlib.sha256(data).hexdigest()[:40]}"'
        return body

    def _metadata(self, project: NormalizedName, entry: FileEntry, index: str, guess: bool = False) -> tuple:
        """(the metadata bytes, whether they came from the cache dir): stored, from the
        cached wheel, or fetched (one flight per file in this process); on a *guess*,
        (None, False) where they would cost the whole wheel."""
        target = Target(self._files.root, project, entry, True, index)
        wheel = _Wheel.listed(project, entry)
        while True:
            data = self._stored(wheel, target)
            if data is not None:
                return data, True
            with self._lock:
                flight = self._flights.get(target.path)
                leader = flight is None
                if leader:
                    flight = self._flights[target.path] = _Flight()
            if not leader:
                flight.done.wait()
                if flight.error is not None:
                    raise flight.error
                continue  # it succeeded: stored (read above), or not (over the cap, a guess)
            try:
                return self._extract(project, entry, target, guess)
            except BaseException as exc:
                # Its waiters fail with it, rather than each asking the failing upstream in turn.
                flight.error = exc
                if isinstance(exc, BrokenWheel):
                    self._broken(wheel, exc)
                elif isinstance(exc, HashMismatch):
                    # Not the wheel its index lists: pages stop advertising its metadata,
                    # so clients fetch the wheel and tell the mismatch themselves.
                    self._broken(wheel, BrokenWheel(exc.message))
                raise
            finally:
                with self._lock:
                    del self._flights[target.path]
                flight.done.set()

    def _stored(self, wheel: _Wheel, target: Target) -> Optional[bytes]:
        with self._lock:
            data = self._unstored.get(target.path)
        if data is not None:
            return data
        opened = self._files.open_cached(target)
        if opened is None:
            return None
        with opened.file:
            data = opened.file.read()
        self._learn(wheel, hashlib.sha256(data).hexdigest())
        return data

    def _extract(self, project: NormalizedName, entry: FileEntry, target: Target, guess: bool) -> tuple:
        wheel = Target(self._files.root, project, entry, False, target.index)
        data = self._reader.from_cache(wheel)
        how = "wheel"
        if data is None:
            if self._offline:
                raise NotFound(f"{target.filename} is not in the offline cache")
            data, how = self._reader.from_ranges(wheel, entry.size), "ranges"
            if data is None:  # the upstream ignores Range: the whole wheel, stored
                if guess:
                    return None, False
                if self._files.ensure(project, entry, index=wheel.index):
                    data = self._reader.from_cache(wheel)
                    if data is None:
                        raise UpstreamError(f"{entry.filename} was evicted before its metadata was read")
                else:  # over the cap: read whole all the same, since pages advertise its metadata
                    data = self._reader.from_spool(wheel)
                how = "download"
        self._counter.inc(how)
        self._save(_Wheel.listed(project, entry), target.path, data, replace=False)
        return data, how == "wheel"

    # ------------------------------------------------------------------ storing

    def _save(self, wheel: _Wheel, path: str, data: bytes, replace: bool) -> None:
        """Store *data* as the wheel's metadata at *path* (through the file cache, so
        it is counted under the cap); *replace*: over a stored copy."""
        self._learn(wheel, hashlib.sha256(data).hexdigest())
        self._write_later(_Stored(path, wheel.filename + METADATA_SUFFIX), data, replace)

    def _write_later(self, stored, data: bytes, replace: bool = False) -> None:
        """:meth:`_write`, after the answer when there is a background to run it; until
        then, a metadata file is served from memory."""
        with self._lock:
            later = self._background is not None and self._unstored_bytes + len(data) <= MAX_UNSTORED_BYTES
            earlier = self._unstored.pop(stored.path, b"")  # an older copy waiting: this one wins
            self._unstored_bytes -= len(earlier)
            if later:
                self._unstored_bytes += len(data)
                self._unstored[stored.path] = data
        if not later:
            self._write(stored, data, replace)
            return
        self._background.submit(functools.partial(self._write_now, stored, data, replace))

    def _write_now(self, stored, data: bytes, replace: bool) -> None:
        try:
            self._write(stored, data, replace)
        finally:
            with self._lock:
                if self._unstored.get(stored.path) is data:
                    del self._unstored[stored.path]
                    self._unstored_bytes -= len(data)

    def _write(self, stored, data: bytes, replace: bool = False) -> None:
        """Write *data* at *stored*'s path (a ``Target`` or ``_Stored``) through a temp
        file: under the cap, through the file cache; *replace*: over a stored copy."""
        temp = temp_path(os.path.dirname(stored.path))
        try:
            os.makedirs(os.path.dirname(stored.path), exist_ok=True)
            with open(temp, "wb") as file:
                file.write(data)
                file.flush()
                # On disk before it has its final name, as a download's: a crash must not
                # leave an empty file there that later answers as the metadata or wheel.
                os.fsync(file.fileno())
            if replace:  # the old copy's room given back, the new one's taken
                self._files.remove(stored.path)
            if self._files.store(stored, temp, len(data)):
                return
        except OSError as exc:
            logger.warning("cannot store %s: %s", stored.filename, exc.strerror)
        if os.path.exists(temp):
            os.unlink(temp)

    def _broken(self, wheel: _Wheel, exc: BrokenWheel) -> None:
        logger.warning("no metadata for %s: %s", wheel.filename, exc.message)
        self._counter.inc("broken")
        self._learn(wheel, exc)

    def upstream_served(self, project: NormalizedName, target_path: str) -> None:
        """An index's own ``.metadata``, stored at *target_path*, was served."""
        if self.on_served is not None:
            try:
                with open(target_path, "rb") as file:
                    data = file.read(MAX_METADATA)
            except OSError:
                return
            self.on_served(project, os.path.basename(target_path)[: -len(METADATA_SUFFIX)], data)

    def prefetch(self, project: NormalizedName, entry: FileEntry, index: str = "") -> bool:
        """Have the metadata of *entry* stored before a client asks (the index's own, or
        read from the wheel); False if it was stored already, cannot be had, or would
        cost the whole wheel (its index ignores ``Range``).

        :raises ProxpiError: upstream failed, or the wheel is broken.
        """
        if self._files.has(project, entry, True):
            return False
        if entry.metadata is not None:
            return self._files.ensure(project, entry, metadata=True, index=index)
        if not self.enabled or not entry.filename.endswith(".whl"):
            return False
        if self._reader.ignores_ranges(entry.url):
            return False  # its metadata would cost the whole wheel: not on a guess
        data, stored = self._metadata(project, entry, index, guess=True)
        return data is not None and not stored  # not stored meanwhile (a client's fetch)

    def wheel_stored(self, target: Target) -> None:
        """A whole file was stored: for a wheel listed without metadata, check its
        METADATA against the copy served before (or save it, see ``save_downloaded``);
        for an index's own metadata file, tell ``on_served``."""
        project = target.path.split(os.sep)[-3]
        if target.filename.endswith(METADATA_SUFFIX) and isinstance(target, Target):
            self.upstream_served(project, target.path)
        if not self.enabled or not target.filename.endswith(".whl") or target.upstream_metadata:
            return
        wheel = _Wheel(project, target.filename, target.hash)
        try:
            with open(target.path, "rb") as file:
                data = read_wheel_metadata(file, target.filename)
        except BrokenWheel as exc:
            self._broken(wheel, exc)
            return
        except OSError:
            return
        path = target.path + METADATA_SUFFIX
        with self._lock:
            served = self._unstored.get(path)
        try:
            if served is None:
                with open(path, "rb") as file:
                    served = file.read()
        except OSError:
            if self.save_downloaded:
                self._save(wheel, path, data, replace=False)
            else:  # pages may give its hash already
                self._learn(wheel, hashlib.sha256(data).hexdigest())
            return
        if served != data:
            old, new = hashlib.sha256(served).hexdigest(), hashlib.sha256(data).hexdigest()
            logger.error(
                "the metadata served for %s (sha256 %s) differs from its wheel's METADATA (sha256 %s): replaced",
                target.filename, old, new,
            )
            self._counter.inc("mismatch")
            self._save(wheel, path, data, replace=True)


def _small(entry: FileEntry) -> bool:
    return entry.size is not None and entry.size <= WHOLE_FOR_METADATA


class _Wheel(NamedTuple):
    """The wheel a metadata was read from: its name and the index's hash of it (None
    where the index gives none). PEP 658 ties a metadata file to one distribution
    file, and an index may serve new bytes under an old name (PyPI never does)."""

    project: str
    filename: str
    hash: Optional[FileHash]

    @classmethod
    def listed(cls, project: str, entry: FileEntry) -> _Wheel:
        """The wheel *entry* lists now (``layout.Target`` names its folder by this hash)."""
        return cls(project, entry.filename, best_hash(entry.hashes))


class _Stored:
    """The little of a ``Target`` that ``FileCache.store`` reads."""

    def __init__(self, path: str, filename: str) -> None:
        self.path = path
        self.filename = filename
