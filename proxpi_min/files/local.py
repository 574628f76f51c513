"""The local index: packages uploaded to ``<cache dir>/local/<project>/`` and those of
read-only ``--local-dir`` folders, as project pages and file bodies.

Per uploaded file, beside it: ``<file>.metadata`` (a wheel's METADATA, PEP 658) and
``.info-<file>`` (JSON: sha256, size, PEP 700 upload time, requires-python, PEP 592
yank). Every write is atomic and the file itself comes last, by ``os.link`` (which
never replaces), under the project's lock file: processes sharing the dir see a file
whole or not at all, and of two uploads of one file the second gets a 409, unless its
bytes are the same (a re-run publish job, a 200 as on PyPI). Pages are read from the
directory on each request (a stat per file), so every worker, and every proxy on the
cache dir, sees an upload, yank or delete at once. Nothing here is evicted or counted in
the cache's cap.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import threading
import time
import urllib.parse
import urllib.request
from typing import Callable, Dict, Iterator, NamedTuple, Optional, Tuple

from ..core.byteranges import ByteRange
from ..core.distnames import is_dist_filename, parse_dist_filename
from ..core.errors import Conflict, NotFound
from ..core.names import NormalizedName
from ..core.simple import FileEntry, ProjectPage
from ..core.versions import version_key
from ..infra.atomic import LOCK_PREFIX, TEMP_PREFIX, LockFile, is_private, lock_path, write_atomically
from .bodies import CachedBody, FileBody
from .layout import METADATA_SUFFIX
from .wheel_folders import WATCH_SECONDS, WheelFolders, listing, mtime, settled, upload_time

__all__ = ["LOCAL_ORIGIN", "LocalIndex", "LocalPage", "Upload"]

LOCAL_ORIGIN = "local"  # the "index" a local file comes from, for the catalog and metrics
_INFO_PREFIX = ".info-"
# In a project's folder once its last file is deleted: the name stays the local index's
# (its page empty), so that the upstream's project of that name is not served instead.
_RESERVED = ".reserved"
_generations = itertools.count(1)


class Upload(NamedTuple):
    """A checked upload, ready to be stored."""

    project: NormalizedName
    filename: str
    temp: str  # its bytes, in a temp file under the local root (linked, never copied)
    sha256: str
    size: int
    metadata: Optional[bytes]  # a wheel's METADATA
    requires_python: Optional[str]


class LocalPage(NamedTuple):
    """A local project's page, and a number that changes whenever it does."""

    generation: int
    page: ProjectPage


class _Found(NamedTuple):
    path: str
    info: dict


class LocalIndex:
    """Uploads under *root* (None: none) and the files of *dirs* (read-only); a *watch*ed
    root is not made here but looked for until another proxy on the cache dir makes it
    (at most once a WATCH_SECONDS of *clock*), then read for good."""

    def __init__(
        self,
        root: Optional[str],
        dirs: Tuple[str, ...] = (),
        watch: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = root
        self.folders = WheelFolders(dirs, clock)
        self._found = root is not None and not watch  # the root exists (once seen, for good)
        self._clock = clock
        self._next_look = 0.0
        self._lock = threading.Lock()  # the memo dicts below
        self._folder_stats: Dict[str, tuple] = {}  # upload folder -> (mtime, files, bytes)
        # One writer thread per process: on NFS, flock is per process (infra.atomic).
        self._writing = threading.Lock()
        self._pages: Dict[str, tuple] = {}  # project -> (key, LocalPage)
        if self._found:
            os.makedirs(root, exist_ok=True)

    @property
    def active(self) -> bool:
        """Whether there is a local index to serve now (pages then change at once)."""
        return self._uploads_root() is not None or bool(self.folders.dirs)

    def _uploads_root(self) -> Optional[str]:
        """The root of the uploads, once it exists (a race of two looks costs a stat)."""
        if not self._found and self.root is not None:
            now = self._clock()
            if now >= self._next_look:
                self._next_look = now + WATCH_SECONDS
                self._found = os.path.isdir(self.root)
        return self.root if self._found else None

    # ------------------------------------------------------------------ reading

    def _uploaded(self, project: str) -> Iterator[tuple]:
        """(file name, path, stat) of each uploaded file of *project*, and its sidecars'."""
        root = self._uploads_root()
        if root is None:
            return
        folder = os.path.join(root, project)
        try:
            entries = os.scandir(folder)
        except (FileNotFoundError, NotADirectoryError):
            return
        with entries:
            for entry in entries:
                if entry.name.startswith((TEMP_PREFIX, LOCK_PREFIX)):
                    continue
                try:
                    found = entry.stat()
                except FileNotFoundError:  # deleted since the listing: the others stand
                    continue
                yield entry.name, entry.path, found

    def projects(self) -> list:
        """Every local project name (a project whose files were all deleted is gone)."""
        names = set()
        root = self._uploads_root()
        if root is not None:
            with contextlib.suppress(OSError):
                for entry in os.scandir(root):
                    if entry.is_dir() and not is_private(entry.name):
                        if any(is_dist_filename(name) for name, _, _ in self._uploaded(entry.name)):
                            names.add(entry.name)
        names.update(self.folders.projects())
        return sorted(names)

    def page(self, project: NormalizedName) -> Optional[LocalPage]:
        """The local page of *project*, or None when it has no local file."""
        uploaded = sorted(self._uploaded(project))
        listed = self.folders.files(project)
        key = tuple((name, st.st_ino, st.st_size, st.st_mtime_ns) for name, _, st in uploaded + listed)
        with self._lock:
            cached = self._pages.get(project)
        if cached is not None and cached[0] == key:
            return cached[1]
        files: Dict[str, FileEntry] = {}
        for name, path, _ in uploaded:
            if is_dist_filename(name):
                info = self._info(project, name)
                if info is not None:
                    files[name] = _entry(name, path, info)
        for name, path, st in listed:
            if name not in files:
                files[name] = _entry(name, path, self.folders.info(path, st))
        if not files:  # the marker read in the same listing: no moment without either
            return self._reserved(project) if any(name == _RESERVED for name, _, _ in uploaded) else None
        versions = tuple(dict.fromkeys(parse_dist_filename(name).version for name in files))
        result = LocalPage(next(_generations), ProjectPage(project, tuple(files.values()), versions, True))
        with self._lock:
            self._pages[project] = (key, result)
        return result

    def _reserved(self, project: NormalizedName) -> LocalPage:
        """The empty page of a project whose files were all deleted."""
        with self._lock:
            cached = self._pages.get(project)
        if cached is not None and cached[0] == _RESERVED:
            return cached[1]
        result = LocalPage(next(_generations), ProjectPage(project, (), (), True))
        with self._lock:
            self._pages[project] = (_RESERVED, result)
        return result

    def _info(self, project: str, filename: str) -> Optional[dict]:
        assert self.root is not None
        try:
            with open(os.path.join(self.root, project, _INFO_PREFIX + filename), "rb") as file:
                return json.load(file)
        except (OSError, ValueError):
            return None  # written before the file, so only a file put there by hand lacks one

    def _find(self, project: NormalizedName, filename: str) -> Optional[_Found]:
        root = self._uploads_root()
        if root is not None:
            path = os.path.join(root, project, filename)
            info = self._info(project, filename)
            if info is not None and os.path.isfile(path):
                return _Found(path, info)
        for name, path, st in self.folders.files(project):
            if name == filename:
                return _Found(path, self.folders.info(path, st))
        return None

    def open(self, project: NormalizedName, filename: str, metadata: bool, byte_range: Optional[ByteRange]) -> FileBody:
        """The body of a local file, or of its metadata file.

        :raises NotFound: no such local file.
        """
        found = self._find(project, filename)
        if found is None or (metadata and not found.info.get("metadata-sha256")):
            raise NotFound(f"{filename!r} is not a local file of project {project!r}")
        path = found.path + (METADATA_SUFFIX if metadata else "")
        digest = found.info.get("metadata-sha256" if metadata else "sha256")
        try:
            file = open(path, "rb")
        except FileNotFoundError:  # deleted meanwhile, or by hand
            raise NotFound(f"{filename!r} is not a local file of project {project!r}") from None
        try:
            body = CachedBody(file, os.fstat(file.fileno()).st_size, byte_range)
        except BaseException:
            file.close()
            raise
        body.etag = f'"{digest[:40]}"' if digest else None
        body.immutable = False
        return body

    def stats(self) -> Tuple[int, int]:
        """(files, bytes) of the uploaded files, for every scrape of /metrics: a project's
        folder is listed again only once its mtime changed (an upload or a delete), so a
        scrape costs one stat a project."""
        root = self._uploads_root()
        if root is None:
            return 0, 0
        with self._lock:
            known = self._folder_stats
        current = {}
        for entry in listing(root):
            if is_private(entry.name) or not entry.is_dir():
                continue
            changed = mtime(entry.path)
            counted = known.get(entry.name)
            if counted is None or counted[0] != changed:
                sizes = [st.st_size for name, _, st in self._uploaded(entry.name) if is_dist_filename(name)]
                counted = (changed if settled(changed) else None, len(sizes), sum(sizes))
            current[entry.name] = counted
        with self._lock:
            self._folder_stats = current
        return sum(counted[1] for counted in current.values()), sum(counted[2] for counted in current.values())

    # ------------------------------------------------------------------ writing

    def exists(self, project: NormalizedName, filename: str) -> bool:
        return self._find(project, filename) is not None

    def store(self, upload: Upload) -> bool:
        """Store *upload* (its temp file is linked, then removed by the caller); False,
        nothing written, when the same file (name and sha256) is stored already.

        :raises Conflict: the project has a file of that name with other bytes (or put
            there by hand), one whose name differs only in spelling, or (an sdist) the
            release's sdist.
        """
        assert self.root is not None
        folder = os.path.join(self.root, upload.project)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, upload.filename)
        info = {
            "sha256": upload.sha256,
            "size": upload.size,
            "upload-time": upload_time(time.time()),
            "requires-python": upload.requires_python,
            "yanked": None,
        }
        self._find(upload.project, upload.filename)  # a --local-dir file's hash: not under the lock
        with self._project_lock(folder):
            taken = self._taken_by(upload.project, upload.filename)
            if taken == upload.filename:
                stored = self._find(upload.project, upload.filename)  # a --local-dir file's info: {}
                if stored is not None and stored.info.get("sha256") == upload.sha256:
                    return False
                raise Conflict(_exists(upload.filename))
            if taken is not None:
                raise Conflict(_clash(upload.filename, taken))
            info_path = os.path.join(folder, _INFO_PREFIX + upload.filename)
            try:
                if upload.metadata is not None:
                    write_atomically(path + METADATA_SUFFIX, upload.metadata, durable=True)
                    info["metadata-sha256"] = hashlib.sha256(upload.metadata).hexdigest()
                # Durable: the only copy of a private package, and its hash with it.
                write_atomically(info_path, json.dumps(info).encode(), durable=True)
                os.link(upload.temp, path)  # never replaces: the name is taken at most once
            except BaseException as exc:
                _remove(path + METADATA_SUFFIX, info_path)  # a full disk must not keep half an upload
                if isinstance(exc, FileExistsError):  # put there by hand meanwhile
                    raise Conflict(_exists(upload.filename)) from None
                raise
            _remove(os.path.join(folder, _RESERVED))
        return True

    def _taken_by(self, project: NormalizedName, filename: str) -> Optional[str]:
        """The local file of *project* that *filename* would be: itself (uploaded, by
        hand, or in a --local-dir folder), one spelled otherwise, or the release's sdist."""
        assert self.root is not None
        names = [entry.name for entry in listing(os.path.join(self.root, project))]
        names += [name for name, _ in self.folders.projects().get(project, ())]
        if filename in names:
            return filename
        wanted = _one_per_release(filename)
        return next((name for name in names if is_dist_filename(name) and _one_per_release(name) == wanted), None)

    def yank(self, project: NormalizedName, filename: str, reason: Optional[str]) -> None:
        """Mark an uploaded file yanked with *reason* (PEP 592), or not (None).

        :raises NotFound: no such uploaded file.
        """
        folder = self._uploaded_folder(project, filename)
        with self._project_lock(folder):
            info = self._info(project, filename)
            if info is None:
                raise NotFound(f"{filename!r} is not an uploaded file of project {project!r}")
            info["yanked"] = reason
            info_path = os.path.join(folder, _INFO_PREFIX + filename)
            write_atomically(info_path, json.dumps(info).encode(), durable=True)

    def delete(self, project: NormalizedName, filename: str) -> None:
        """Remove an uploaded file: the file first (gone from pages), then its sidecars.

        :raises NotFound: no such uploaded file.
        """
        folder = self._uploaded_folder(project, filename)
        with self._project_lock(folder):
            if [entry.name for entry in listing(folder) if is_dist_filename(entry.name)] == [filename]:
                # The last one: the name held before the file goes (a failure keeps the file).
                write_atomically(os.path.join(folder, _RESERVED), b"", durable=True)
            try:
                os.unlink(os.path.join(folder, filename))
            except FileNotFoundError:
                raise NotFound(f"{filename!r} is not an uploaded file of project {project!r}") from None
            _remove(*(os.path.join(folder, sidecar) for sidecar in (filename + METADATA_SUFFIX, _INFO_PREFIX + filename)))

    def release(self, project: NormalizedName) -> None:
        """Give up the name of a project whose files were all deleted: the upstreams'
        project of that name is served from then on.

        :raises NotFound: no such project here with all its files deleted.
        :raises Conflict: it still has files.
        """
        folder = os.path.join(self.root, project) if self.root is not None else ""
        if not folder or not os.path.isdir(folder):
            raise NotFound(f"{project!r} is not a local project")
        with self._project_lock(folder):
            if any(is_dist_filename(entry.name) for entry in listing(folder)):
                raise Conflict(f"{project!r} still has files: delete each of them first")
            try:
                os.unlink(os.path.join(folder, _RESERVED))
            except FileNotFoundError:
                raise NotFound(f"{project!r} is not a local project whose files were all deleted") from None

    def remove_orphans(self) -> int:
        """Remove the metadata and info files of uploads that are not there (a kill
        between their writes and the file's), each project under its lock; how many."""
        removed = 0
        for entry in listing(self.root) if self.root is not None else ():
            if is_private(entry.name) or not entry.is_dir():
                continue
            with self._project_lock(entry.path):
                names = {item.name for item in listing(entry.path)}
                for name in names:
                    owner = name[len(_INFO_PREFIX):] if name.startswith(_INFO_PREFIX) else name[: -len(METADATA_SUFFIX)]
                    if (name.startswith(_INFO_PREFIX) or name.endswith(METADATA_SUFFIX)) and owner not in names:
                        removed += _remove(os.path.join(entry.path, name))
        return removed

    def _uploaded_folder(self, project: NormalizedName, filename: str) -> str:
        # Distributions only: their sidecars (.metadata, info) go with them, never alone.
        path = os.path.join(self.root, project, filename) if self.root is not None else ""
        if not (path and is_dist_filename(filename) and os.path.isfile(path)):
            raise NotFound(f"{filename!r} is not an uploaded file of project {project!r}")
        return os.path.join(self.root, project)

    @contextlib.contextmanager
    def _project_lock(self, folder: str) -> Iterator[None]:
        """One writer of a project's folder at a time, across threads and processes."""
        lock = LockFile(lock_path(os.path.join(folder, "project")))
        with self._writing:
            lock.acquire(wait=True)
            try:
                yield
            finally:
                lock.release()


def _remove(*paths: str) -> int:
    """Remove those of *paths* that exist and can be (what cannot is left to the sweep
    at the next start); how many were."""
    removed = 0
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)
            removed += 1
    return removed


def _exists(filename: str) -> str:
    return f"File already exists: {filename!r} (a file name is never reused; upload a new version)"


def _one_per_release(filename: str) -> tuple:
    """What a release holds once, as PyPI compares it: the project (PEP 503) and version
    (PEP 440) normalized, then a wheel's build and compatibility tags in lower case, or
    its one sdist (.tar.gz or .zip)."""
    dist = parse_dist_filename(filename)
    rest = filename[:-4].lower().split("-")[2:] if dist.wheel else ["sdist"]
    return dist.project, version_key(dist.version), tuple(rest)


def _clash(filename: str, stored: str) -> str:
    if not parse_dist_filename(filename).wheel:
        return f"Only one sdist may be uploaded per release: {stored!r} is stored, {filename!r} refused"
    return f"File already exists: {filename!r} is {stored!r} spelled otherwise (names compare normalized, as on PyPI)"


def _entry(filename: str, path: str, info: dict) -> FileEntry:
    metadata = info.get("metadata-sha256")
    return FileEntry(
        filename,
        urllib.parse.urljoin("file:", urllib.request.pathname2url(path)),
        (("sha256", info["sha256"]),),
        info.get("requires-python") or None,
        info.get("yanked"),
        (("sha256", metadata),) if metadata else None,
        info.get("size"),
        info.get("upload-time"),
    )
