"""The ``warm`` and ``verify`` commands: fill a cache dir from lock files, check a copied one."""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import logging
import os
import threading
import time
from typing import Callable, Iterable, NamedTuple, Optional, TextIO

from ..core.settings import Settings
from ..core.home import human_size
from ..files.downloads import Target
from ..core.errors import Forbidden, IntegrityError, NotFound, ProxpiError
from ..core.lockfiles import LockFileError, Wanted, load
from ..core.names import NormalizedName, version_from_filename
from ..index.page_store import LIST_KEY, PageStore
from ..app.proxy import build_proxy
from ..infra.shared_dir import is_private
from ..core.simple import FileEntry, ProjectPage

__all__ = [
    "Failure",
    "Filters",
    "Progress",
    "Refusal",
    "match_files",
    "run_verify",
    "run_warm",
    "wheel_fits",
]

logger = logging.getLogger(__name__)

DEFAULT_JOBS = 4
HASH_CHUNK = 1024 * 1024
REDRAW_INTERVAL = 0.1  # seconds between redraws of the terminal progress line

# The reasons a wanted file is not in the cache after `warm`, as the summary names them.
NOT_ON_INDEX = "not on any index"
HASH_DIFFERS = "hash differs"
UPSTREAM_ERROR = "upstream error"
REFUSED = "refused by policy"
NOT_STORED = "not stored"

# The policy seam: (project, entry) -> why the proxy would refuse to serve the file, or
# None. By default the server's guard rails (Indexes.refusal) answer.
Refusal = Callable[[NormalizedName, FileEntry], Optional[str]]


class Failure(NamedTuple):
    what: str  # the file name, or "project==version" and a hash for a requirements pin
    origin: str  # where the lock file asked for it
    reason: str  # one of the reasons above
    detail: str = ""


class Filters(NamedTuple):
    """Which of the wanted files to fetch (the rest are skipped, not failed)."""

    wheels_only: bool = False
    platforms: tuple = ()  # wheel platform tags; "any" always fits
    python_version: Optional[tuple] = None  # (3, 11)

    def keeps(self, filename: str) -> bool:
        if not filename.endswith(".whl"):
            return not self.wheels_only
        return wheel_fits(filename, self.platforms, self.python_version)


def wheel_fits(filename: str, platforms: Iterable[str], python_version: Optional[tuple]) -> bool:
    """Whether a wheel (PEP 427 name, PEP 425 compressed tags) fits one of *platforms*
    and *python_version* (either empty: no condition)."""
    parts = filename[:-4].split("-")
    if len(parts) < 5:
        return False
    pythons, abis, plats = (set(part.split(".")) for part in parts[-3:])
    platforms = set(platforms)
    if platforms and "any" not in plats and not plats & platforms:
        return False
    if python_version is None:
        return True
    major, minor = python_version
    if pythons & {f"py{major}", f"py{major}{minor}", f"cp{major}{minor}"}:
        return True
    # PEP 384: an abi3 wheel built for cp3X runs on every CPython 3.Y with Y >= X.
    if "abi3" in abis:
        for tag in pythons:
            if tag.startswith(f"cp{major}") and tag[3:].isdigit() and int(tag[3:]) <= minor:
                return True
    return False


def _short(hashes: tuple) -> str:
    return ", ".join(f"{algorithm}:{digest[:16]}..." for algorithm, digest in hashes)


def _same_version(a: Optional[str], b: Optional[str]) -> bool:
    # Close enough for pins: case, a leading "v" and "_" for "-" in wheel names aside.
    def key(version: Optional[str]) -> str:
        return (version or "").lower().lstrip("v").replace("_", "-")

    return key(a) == key(b)


def match_files(wanted: Iterable[Wanted], files: Iterable[FileEntry]) -> tuple:
    """([(entry, origin)], failures): the files of one project's merged page that the lock files
    ask for. A file named by the lock must be listed with the same hash (every
    algorithm both give must agree); a requirements pin takes the files whose hash it
    lists, or every file of its version when it lists none."""
    files = list(files)
    by_name = {entry.filename: entry for entry in files}
    chosen: dict = {}
    failures = []
    for want in wanted:
        if want.filename is not None:
            entry = by_name.get(want.filename)
            if entry is None:
                failures.append(Failure(want.filename, want.origin, NOT_ON_INDEX))
                continue
            listed = dict(entry.hashes)
            common = [(algorithm, digest) for algorithm, digest in want.hashes if algorithm in listed]
            if not common:
                failures.append(
                    Failure(want.filename, want.origin, HASH_DIFFERS, f"the index gives no {'/'.join(a for a, _ in want.hashes)} hash")
                )
            elif any(listed[algorithm] != digest for algorithm, digest in common):
                failures.append(
                    Failure(
                        want.filename,
                        want.origin,
                        HASH_DIFFERS,
                        f"lock {_short(common)}, index {_short(tuple((a, listed[a]) for a, _ in common))}",
                    )
                )
            else:
                chosen[entry.filename] = (entry, want.origin)
            continue
        pin = f"{want.project}=={want.version}"
        if not want.hashes:
            found = [entry for entry in files if _same_version(version_from_filename(entry.filename, want.project), want.version)]
            if not found:
                failures.append(Failure(pin, want.origin, NOT_ON_INDEX))
            chosen.update((entry.filename, (entry, want.origin)) for entry in found)
            continue
        for algorithm, digest in want.hashes:
            found = [entry for entry in files if dict(entry.hashes).get(algorithm) == digest]
            if not found:
                failures.append(Failure(f"{pin} {algorithm}:{digest[:16]}...", want.origin, NOT_ON_INDEX, "no file has this hash"))
            chosen.update((entry.filename, (entry, want.origin)) for entry in found)
    return list(chosen.values()), failures


class Progress:
    """Progress on *stream*: one line redrawn in place on a terminal, else a plain line
    per file. Thread-safe. A *total_bytes* of 0 means unknown (an index without sizes):
    the percentage then counts files."""

    def __init__(
        self, stream: TextIO, verb: str, total: int, total_bytes: int, tty: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._verb = verb
        self._total = total
        self._total_bytes = total_bytes
        self._tty = tty
        self._clock = clock
        self._started = clock()
        self._drawn = float("-inf")
        self._lock = threading.Lock()
        self.done = 0
        self.done_bytes = 0
        self.moved_bytes = 0  # fetched (or hashed) now, for the rate

    def line(self) -> str:
        elapsed = max(self._clock() - self._started, 1e-6)
        if self._total_bytes:
            percent = 100.0 * self.done_bytes / self._total_bytes
        else:
            percent = 100.0 * self.done / self._total if self._total else 100.0
        of = f" of {human_size(self._total_bytes)}" if self._total_bytes else ""
        return (
            f"{self._verb}: {self.done}/{self._total} files, {human_size(self.done_bytes)}{of},"
            f" {human_size(self.moved_bytes / elapsed)}/s, {percent:.0f}%"
        )

    def advance(self, size: int, moved: bool, message: Optional[str] = None) -> None:
        """One more file done (*moved*: its bytes were fetched or hashed now)."""
        with self._lock:
            self.done += 1
            self.done_bytes += size
            if moved:
                self.moved_bytes += size
            now = self._clock()
            if self._tty:
                if message:
                    self._stream.write(f"\r\x1b[K{message}\n")
                if message or self.done == self._total or now - self._drawn >= REDRAW_INTERVAL:
                    self._drawn = now
                    self._stream.write(f"\r\x1b[K{self.line()}")
            elif message:
                self._stream.write(f"{message}\n")
            self._stream.flush()

    def note(self, message: str) -> None:
        """A line of its own (a warning), above the progress line on a terminal."""
        with self._lock:
            if self._tty:
                self._stream.write(f"\r\x1b[K{message}\n{self.line()}")
            else:
                self._stream.write(f"{message}\n")
            self._stream.flush()

    def finish(self) -> None:
        with self._lock:
            if self._tty:
                self._stream.write(f"\r\x1b[K{self.line()}\n")
                self._stream.flush()


class _ProgressLog(logging.Handler):
    """Log records (upstream trouble at WARNING) as lines above the progress line."""

    def __init__(self, progress: Progress) -> None:
        super().__init__(logging.WARNING)
        self._progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        self._progress.note(f"warning: {record.getMessage()}")


def _capture_logs(progress: Progress):
    """Send proxpi_min's warnings through *progress*; returns the undo function."""
    root = logging.getLogger("proxpi_min")
    handler = _ProgressLog(progress)
    old_level, old_propagate = root.level, root.propagate
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    root.propagate = False

    def undo() -> None:
        root.removeHandler(handler)
        root.setLevel(old_level)
        root.propagate = old_propagate

    return undo


# ---------------------------------------------------------------------- warm


def _fetch_pages(indexes, projects: list, jobs: int) -> dict:
    """project -> merged ProjectPage or the ProxpiError that stopped it (pages are saved
    by the index caches, so the offline proxy lists these projects)."""

    def page(project: NormalizedName):
        try:
            return project, indexes.project_page(project)
        except ProxpiError as exc:
            return project, exc

    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        return dict(pool.map(page, projects))


def run_warm(
    settings: Settings,
    paths: list,
    *,
    jobs: int = DEFAULT_JOBS,
    filters: Filters = Filters(),
    refusal: Optional[Refusal] = None,
    out: TextIO,
    err: TextIO,
    tty: bool = False,
) -> int:
    """Fetch every file the lock files at *paths* name into ``settings.cache_dir``.

    :returns: 0 when every wanted file is in the cache, 1 when any failed, 2 for
        unusable input (named on *err* in one line).
    """
    if not settings.cache_dir:
        err.write("proxpi-min warm: error: --cache-dir (or PROXPI_CACHE_DIR) is required\n")
        return 2
    if settings.offline:
        err.write("proxpi-min warm: error: --offline: warm fetches from the indices\n")
        return 2
    wanted: dict = {}
    for path in paths:
        try:
            lock = load(path)
        except LockFileError as exc:
            err.write(f"proxpi-min warm: error: {exc}\n")
            return 2
        for note in lock.notes:
            err.write(f"warning: {note}\n")
        for want in lock.wanted:
            wanted.setdefault(want.project, []).append(want)
    try:
        os.makedirs(settings.cache_dir, exist_ok=True)
        # The server's own caches, built the same way: files and pages land where it looks.
        caches = build_proxy(settings, os.path.abspath(settings.cache_dir))
    except OSError as exc:
        err.write(f"proxpi-min warm: error: cache dir {settings.cache_dir!r}: {exc.strerror or exc}\n")
        return 2
    started = time.monotonic()
    try:
        pages = _fetch_pages(caches.indexes, list(wanted), jobs)
        # The server's guard rails unless the caller gives its own.
        targets, failures, skipped = _select(
            wanted, pages, filters, refusal or caches.indexes.refusal, caches.policy.not_found_note
        )
        fetched, cached, more_failures = _fetch_files(caches.files, targets, jobs, err, tty)
    finally:
        caches.indexes.close()
        caches.files.close()
        caches.upstream.close()
    failures += more_failures
    elapsed = time.monotonic() - started
    fetched_bytes = sum(size for _, size in fetched)
    out.write(
        f"warm: {len(targets) + len(failures) - len(more_failures) + skipped} files wanted: {len(fetched)} fetched"
        f" ({human_size(fetched_bytes)} in {elapsed:.1f} s), {len(cached)} already cached,"
        f" {len(failures)} failed" + (f", {skipped} skipped by filters" if skipped else "") + "\n"
    )
    for failure in failures:
        detail = f" ({failure.detail})" if failure.detail else ""
        out.write(f"failed: {failure.what}: {failure.reason}{detail} [{failure.origin}]\n")
    return 1 if failures else 0


def _select(
    wanted: dict, pages: dict, filters: Filters, refusal: Optional[Refusal], pinned: Optional[Callable] = None
) -> tuple:
    """(targets [(project, entry, origin)], failures, skipped count) from the fetched pages.
    *pinned* is ``Policy.not_found_note``: a file missing from the one index a pin
    leaves is named with the pin (a lock made against PyPI may list PyPI's file of an
    internal name: dependency confusion, which warm must not hide as a plain miss)."""
    targets, failures, skipped = [], [], 0
    for project, wants in wanted.items():
        page = pages[project]
        note = pinned(project, ())[1] if pinned is not None else ""
        if isinstance(page, ProxpiError):
            reason = NOT_ON_INDEX if isinstance(page, NotFound) else REFUSED if isinstance(page, Forbidden) else UPSTREAM_ERROR
            detail = "" if isinstance(page, NotFound) and not note else page.message
            for want in wants:
                what = want.filename or f"{want.project}=={want.version}"
                failures.append(Failure(what, want.origin, reason, detail))
            continue
        assert isinstance(page, ProjectPage)
        entries, missed = match_files(wants, page.files)
        if note:
            missed = [
                f._replace(detail=f"not{note}" + (f"; {f.detail}" if f.detail else "")) if f.reason == NOT_ON_INDEX else f
                for f in missed
            ]
        failures += missed
        for entry, origin in entries:
            if not filters.keeps(entry.filename):
                skipped += 1
                continue
            why = refusal(project, entry) if refusal is not None else None
            if why is not None:
                failures.append(Failure(entry.filename, origin, REFUSED, why))
                continue
            targets.append((project, entry, origin))
    return targets, failures, skipped


def _fetch_files(files, targets: list, jobs: int, err: TextIO, tty: bool) -> tuple:
    """(fetched [(name, size)], cached [name], failures): each target stored through the
    file cache, *jobs* at a time."""
    sizes = [entry.size for _, entry, _ in targets]
    total_bytes = 0 if None in sizes else sum(sizes)
    progress = Progress(err, "warm", len(targets), total_bytes, tty)
    fetched, cached, failures = [], [], []
    undo = _capture_logs(progress)

    def one(target: tuple) -> None:
        project, entry, origin = target
        if files.has(project, entry):
            cached.append(entry.filename)
            progress.advance(_stored_size(files, project, entry), False)
            return
        try:
            stored = files.ensure(project, entry)
        except IntegrityError as exc:
            failure = Failure(entry.filename, origin, HASH_DIFFERS, exc.message)
        except ProxpiError as exc:
            failure = Failure(entry.filename, origin, UPSTREAM_ERROR, exc.message)
        else:
            if stored:
                size = _stored_size(files, project, entry)
                fetched.append((entry.filename, size))
                progress.advance(size, True, None if tty else f"fetched {entry.filename} ({human_size(size)})")
                return
            failure = Failure(entry.filename, origin, NOT_STORED, "over the cache size cap, or the cache dir cannot be written")
        failures.append(failure)
        progress.advance(entry.size or 0, False, f"failed {entry.filename}: {failure.reason}")

    try:
        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            list(pool.map(one, targets))
    finally:
        undo()
        progress.finish()
    # A cap too small for the set evicts files warmed earlier in the run.
    done = {name for name, _ in fetched} | set(cached)
    for project, entry, origin in targets:
        if entry.filename in done and not files.has(project, entry):
            failures.append(Failure(entry.filename, origin, NOT_STORED, "evicted: the cache size cap is too small for the set"))
    return fetched, cached, failures


def _stored_size(files, project: NormalizedName, entry: FileEntry) -> int:
    try:
        return os.path.getsize(Target(files.root, project, entry, False).path)
    except OSError:
        return entry.size or 0


# ---------------------------------------------------------------------- verify


class _Checked(NamedTuple):
    path: str
    size: int
    problem: Optional[str]  # None: good
    unchecked: bool = False  # no hash to check it against


def _expected_metadata(cache_dir: str, pages: list) -> dict:
    """Stored path -> (algorithm, digest) of each .metadata file a saved page gives a
    hash for (PEP 658/714): a metadata file is stored under its wheel's hash, so its own
    hash comes from the page."""
    root = os.path.join(cache_dir, "files")
    expected = {}
    for page in pages:
        for entry in page.files:
            if entry.metadata:
                with contextlib.suppress(ProxpiError):
                    target = Target(root, page.name, entry, True)
                    if target.hash is not None:
                        expected[target.path] = target.hash
    return expected


def _check_file(path: str, rel: str, expected_metadata: dict) -> _Checked:
    parts = rel.split(os.sep)
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        return _Checked(path, 0, f"cannot read: {exc.strerror}")
    if len(parts) != 3:
        return _Checked(path, size, None, unchecked=True)  # not the cache's layout: left alone
    folder, filename = parts[1], parts[2]
    if filename.endswith(".metadata"):
        want = expected_metadata.get(path)
    elif folder == "unverified":
        want = None
    else:
        algorithm, _, digest = folder.partition("-")
        if algorithm not in hashlib.algorithms_guaranteed or not digest:
            return _Checked(path, size, None, unchecked=True)
        want = (algorithm, digest)
    if want is None:
        return _Checked(path, size, None, unchecked=True)
    hasher = hashlib.new(want[0])
    try:
        with open(path, "rb") as file:
            for chunk in iter(lambda: file.read(HASH_CHUNK), b""):
                hasher.update(chunk)
    except OSError as exc:
        return _Checked(path, size, f"cannot read: {exc.strerror}")
    if hasher.hexdigest() != want[1]:
        return _Checked(path, size, f"{want[0]} differs from the hash it is stored under")
    return _Checked(path, size, None)


def run_verify(cache_dir: str, *, repair: bool = False, jobs: int = DEFAULT_JOBS, out: TextIO, err: TextIO, tty: bool = False) -> int:
    """Re-hash every stored file and load every saved page of *cache_dir*.

    A file is checked against the hash in its path; a ``.metadata`` file against the
    hash a saved page gives for it. With *repair*, bad files and pages are deleted (the
    next request fetches them again).

    :returns: 0 all good, 1 anything bad (each named on *out*), 2 not a cache dir.
    """
    files_root = os.path.join(cache_dir, "files")
    if not os.path.isdir(files_root) and not os.path.isdir(os.path.join(cache_dir, "index")):
        err.write(f"proxpi-min verify: error: {cache_dir} is not a proxpi cache dir (no files/ or index/ in it)\n")
        return 2
    bad = []  # (path, problem)
    pages = []
    page_count = 0
    for _, store in PageStore.saved_indexes(cache_dir):
        for name in sorted(os.listdir(store.directory)):
            if not name.endswith(".json"):
                continue
            page_count += 1
            try:
                saved = store.read(name[:-5])
            except (OSError, ValueError) as exc:
                bad.append((os.path.join(store.directory, name), f"saved page does not load: {exc}"))
                continue
            if name[:-5] != LIST_KEY and isinstance(saved.value, ProjectPage):
                pages.append(saved.value)
    expected_metadata = _expected_metadata(cache_dir, pages)
    found = []
    for directory, _, names in os.walk(files_root):
        for name in sorted(names):
            if not is_private(name):  # bookkeeping: temp and lock files, the ledger
                path = os.path.join(directory, name)
                found.append((path, os.path.relpath(path, files_root)))
    total_bytes = 0
    for path, _ in found:
        with contextlib.suppress(OSError):
            total_bytes += os.path.getsize(path)
    progress = Progress(err, "verify", len(found), total_bytes, tty)

    def one(item: tuple) -> _Checked:
        checked = _check_file(item[0], item[1], expected_metadata)
        message = None if checked.problem is None else f"bad {checked.path}: {checked.problem}"
        progress.advance(checked.size, not checked.unchecked, message)
        return checked

    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        results = list(pool.map(one, found))
    progress.finish()
    bad += [(checked.path, checked.problem) for checked in results if checked.problem is not None]
    unchecked = sum(1 for checked in results if checked.unchecked)
    removed = 0
    for path, problem in bad:
        out.write(f"bad: {path}: {problem}\n")
        if repair:
            try:
                os.unlink(path)
                removed += 1
            except OSError as exc:
                out.write(f"cannot remove {path}: {exc.strerror}\n")
    out.write(
        f"verify: {len(results)} files ({human_size(total_bytes)}), {page_count} saved pages: {len(bad)} bad"
        + (f", {removed} removed" if repair else "")
        + (f", {unchecked} without a hash to check" if unchecked else "")
        + "\n"
    )
    return 1 if bad else 0
