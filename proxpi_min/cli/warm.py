"""The ``warm`` command: fetch the files lock files name into a cache dir, through the indices."""

from __future__ import annotations

import collections
import os
import threading
import time
from typing import Callable, Optional, TextIO

from ..core.errors import (
    AnswerCut,
    Forbidden,
    HashMismatch,
    IntegrityError,
    NotFound,
    ProxpiError,
    UpstreamError,
    UpstreamStatus,
    UpstreamUnreachable,
)
from ..core.units import human_size
from ..core.lockfiles import LockFileError, ParsedLock, load
from ..core.lockmatch import (
    HASH_DIFFERS,
    NOT_LISTED,
    NOT_ON_INDEX,
    NOT_STORED,
    REFUSED,
    UPSTREAM_ERROR,
    Failure,
    Filters,
    match_files,
)
from ..core.names import NormalizedName
from ..core.settings import Settings
from ..core.simple import FileEntry, ProjectPage
from ..app.proxy import build_proxy
from ..infra.metrics import total
from ..files.layout import Target
from ..index.page_store import PageStore
from .progress import DEFAULT_JOBS, Progress, capture_logs

__all__ = ["INTERRUPTED", "Refusal", "run_warm"]

INTERRUPTED = 130  # 128 + SIGINT: the status a shell gives a command Ctrl-C stopped
RETRY_DELAYS = (1.0, 3.0)  # seconds before each retry of an upstream failure that may pass

# The policy seam: (project, entry) -> why the proxy would refuse to serve the file, or
# None. By default the server's guard rails (Catalog.refusal) answer.
Refusal = Callable[[NormalizedName, FileEntry], Optional[str]]


def _read_file(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def _read_locks(paths: list, err: TextIO) -> dict:
    """project -> [Wanted] of the lock files at *paths*; what each skips is a warning.

    :raises LockFileError: a file is unusable, or gives nothing to fetch.
    """
    wanted: dict = {}
    for path in paths:
        lock = load(path, _read_file)
        for note in lock.notes:
            err.write(f"warning: {note}\n")
        if not lock.wanted:
            raise LockFileError(f"{path}: nothing to fetch: {_why_nothing(lock)}")
        for want in lock.wanted:
            wanted.setdefault(want.project, []).append(want)
    return wanted


def _why_nothing(lock: ParsedLock) -> str:
    if lock.notes:
        return "everything in it was skipped (see the warnings above)"
    if lock.format == "requirements":
        return "no requirement in it"
    return f"no {'[[packages]]' if lock.format == 'pylock' else '[[package]]'} tables in it"


def _run_each(work: Callable, items: list, jobs: int) -> None:
    """``work(item)`` for every item, *jobs* at a time, in daemon threads. Ctrl-C
    (KeyboardInterrupt in this thread) starts no more and returns at once: the items
    under way end with the process (ThreadPoolExecutor would wait for them, at exit too).

    :raises KeyboardInterrupt: once the rest is called off.
    """
    pending = collections.deque(items)
    stop = threading.Event()
    errors: list = []

    def worker() -> None:
        while not stop.is_set():
            try:
                item = pending.popleft()
            except IndexError:
                return
            try:
                work(item)
            except Exception as exc:  # a bug: raised in the caller, as pool.map would
                errors.append(exc)
                stop.set()

    threads = [threading.Thread(target=worker, name="proxpi-warm", daemon=True) for _ in range(min(jobs, len(items)))]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except KeyboardInterrupt:
        stop.set()
        raise
    if errors:
        raise errors[0]


def _retrying(call: Callable):
    """*call*(), asked again after RETRY_DELAYS where the upstream failed in a way that
    may pass: no answer, a cut transfer, or a status that says so (RFC 9110 15.6: 502,
    503, 504; RFC 6585: 429). A warm run before going offline must not fail on one busy
    moment of the index."""
    for delay in RETRY_DELAYS:
        try:
            return call()
        except UpstreamError as exc:
            if not _may_pass(exc):
                raise
            time.sleep(delay)
    return call()


def _may_pass(error: UpstreamError) -> bool:
    if isinstance(error, UpstreamStatus):
        return error.upstream_status in (429, 502, 503, 504)
    return isinstance(error, (UpstreamUnreachable, AnswerCut)) or (
        isinstance(error, IntegrityError) and not isinstance(error, HashMismatch)
    )


def _fetch_pages(indexes, projects: list, jobs: int) -> dict:
    """project -> merged ProjectPage or the ProxpiError that stopped it (pages are saved
    by the index caches, so the offline proxy lists these projects).

    :raises KeyboardInterrupt: Ctrl-C.
    """
    pages: dict = {}

    def page(project: NormalizedName) -> None:
        try:
            pages[project] = _retrying(lambda: indexes.project_page(project))
        except ProxpiError as exc:
            pages[project] = exc

    _run_each(page, projects, jobs)
    return pages


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
        unusable input (named on *err* in one line), INTERRUPTED after Ctrl-C (what was
        done summed up; the downloads under way are left, never a partial file).
    """
    try:
        return _warm(settings, paths, jobs, filters, refusal, out, err, tty)
    except KeyboardInterrupt:  # Ctrl-C outside the pages and downloads: a start, an end
        err.write("proxpi-min warm: interrupted\n")
        return INTERRUPTED


def _warm(
    settings: Settings, paths: list, jobs: int, filters: Filters, refusal: Optional[Refusal],
    out: TextIO, err: TextIO, tty: bool,
) -> int:
    """:func:`run_warm`, Ctrl-C outside the pages and downloads left to it."""
    if not settings.cache_dir:
        err.write("proxpi-min warm: error: --cache-dir (or PROXPI_CACHE_DIR) is required\n")
        return 2
    if settings.offline:
        err.write("proxpi-min warm: error: PROXPI_OFFLINE is set: warm fetches from the indices\n")
        return 2
    try:
        wanted = _read_locks(paths, err)
    except LockFileError as exc:
        err.write(f"proxpi-min warm: error: {exc}\n")
        return 2
    try:
        os.makedirs(settings.cache_dir, exist_ok=True)
        # The server's own caches, built the same way: files and pages land where it looks.
        caches = build_proxy(settings, os.path.abspath(settings.cache_dir))
        caches.metadata.save_downloaded = True  # an offline proxy serves the metadata of what warm fetched
    except OSError as exc:
        err.write(f"proxpi-min warm: error: cache dir {settings.cache_dir!r}: {exc.strerror or exc}\n")
        return 2
    started = time.monotonic()
    try:
        try:
            pages = _fetch_pages(caches.indexes, list(wanted), jobs)
        except KeyboardInterrupt:
            out.write(f"warm: interrupted while reading the pages of {len(wanted)} projects: no file fetched\n")
            return INTERRUPTED
        # The server's guard rails unless the caller gives its own.
        targets, failures, skipped, unfit = _select(
            wanted, pages, filters, refusal or caches.indexes.refusal, caches.policy.not_found_note
        )
        # Files of the local index (uploads, --local-dir) are there already: not fetched.
        held = caches.local.exists if caches.local is not None else (lambda project, filename: False)
        local = [target for target in targets if held(target[0], target[1].filename)]
        to_fetch = [target for target in targets if target not in local]
        fetched, cached, more_failures, interrupted = _fetch_files(caches.files, to_fetch, jobs, err, tty)
        cached += [entry.filename for _, entry, _ in local]
        evicted = int(total(caches.files.metrics.snapshot(), "proxpi_file_cache_evictions_total"))
    finally:
        caches.indexes.close()  # saves the pages still to be saved
        caches.files.close()  # removes the temp files of the downloads left under way
        caches.upstream.close()
    # An offline proxy lists only the files of a saved page: a page that could not be
    # saved (a read-only index/ folder, a full disk) leaves its files unservable.
    # (The local index's files are listed by it, not by a saved page.)
    unsaved = set() if interrupted else _unsaved(settings, {project for project, _, _ in to_fetch})
    failed = {failure.what for failure in more_failures}
    unlisted_failures = [
        Failure(entry.filename, origin, NOT_LISTED, "its page could not be saved: an offline proxy would not list it")
        for project, entry, origin in to_fetch if project in unsaved and entry.filename not in failed
    ]
    unlisted_names = {failure.what for failure in unlisted_failures}
    fetched = [item for item in fetched if item[0] not in unlisted_names]  # failed, not fetched
    cached = [name for name in cached if name not in unlisted_names]
    if evicted:  # a later run can evict what an earlier one stored: said, as within one run
        err.write(f"warning: {_files(evicted)} evicted for room in this run (the cache size cap is "
                  f"{human_size(settings.cache_size)}): an offline proxy no longer has them\n")
    for what, origin in unfit:
        err.write(f"warning: {what}: no file of it fits the filters; skipped [{origin}]\n")
    wanted_count = len(targets) + len(failures) + skipped
    failures += more_failures + unlisted_failures
    elapsed = time.monotonic() - started
    fetched_bytes = sum(size for _, size in fetched)
    not_done = len(targets) - len(fetched) - len(cached) - len(more_failures) - len(unlisted_failures)
    out.write(
        f"warm: {_files(wanted_count)} wanted: {len(fetched)} fetched"
        f" ({human_size(fetched_bytes)} in {elapsed:.1f} s), {len(cached)} already cached,"
        f" {len(failures)} failed" + (f", {skipped} skipped by filters" if skipped else "")
        + (f", {not_done} not done (interrupted)" if interrupted else "") + "\n"
    )
    for failure in failures:
        detail = f" ({failure.detail})" if failure.detail else ""
        out.write(f"failed: {failure.what}: {failure.reason}{detail} [{failure.origin}]\n")
    return INTERRUPTED if interrupted else 1 if failures else 0


def _files(count: int) -> str:
    return f"{count} file" if count == 1 else f"{count} files"


def _select(
    wanted: dict, pages: dict, filters: Filters, refusal: Optional[Refusal], pinned: Optional[Callable] = None
) -> tuple:
    """(targets [(project, entry, origin)], failures, skipped count, unfit) from the
    fetched pages; *unfit*: ("project==version", origin) of each wanted version the
    filters left without a file (a package for other machines, or filters that fit no
    machine: a mistyped --platform).
    *pinned* is ``Policy.not_found_note``: a file missing from the one index a pin
    leaves is named with the pin (a lock made against PyPI may list PyPI's file of an
    internal name: dependency confusion, which warm must not hide as a plain miss)."""
    targets, failures, skipped, unfit = [], [], 0, []
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
        if filters != Filters():  # said once per version: a lock lists a file per platform
            versions: dict = {}
            for want in wants:
                versions.setdefault(want.version, []).append(want)
            for version, group in versions.items():
                own = match_files(group, page.files)[0]
                if own and not any(filters.keeps(match.entry.filename) for match in own):
                    unfit.append((f"{project}=={version}" if version else project, group[0].origin))
    return targets, failures, skipped, unfit


def _unsaved(settings: Settings, projects: set) -> set:
    """The *projects* no index has a saved page of in the cache dir."""
    stores = [PageStore(os.path.abspath(settings.cache_dir), index.url) for index in settings.indexes]
    return {project for project in projects if all(store.stamp(project) is None for store in stores)}


def _fetch_files(files, targets: list, jobs: int, err: TextIO, tty: bool) -> tuple:
    """(fetched [(name, size)], cached [name], failures, interrupted): each target
    stored through the file cache, *jobs* at a time, until Ctrl-C (*interrupted*: the
    files done by then)."""
    sizes = [entry.size for _, entry, _ in targets]
    total_bytes = 0 if None in sizes else sum(sizes)
    progress = Progress(err, "warm", len(targets), total_bytes, tty)
    fetched, cached, failures = [], [], []
    undo = capture_logs(progress)

    def one(target: tuple) -> None:
        project, entry, origin = target
        if files.has(project, entry):
            cached.append(entry.filename)
            progress.advance(_stored_size(files, project, entry), False)
            return
        try:
            stored = _retrying(lambda: files.ensure(project, entry))
        except HashMismatch as exc:
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
        _run_each(one, targets, jobs)
    except KeyboardInterrupt:
        # Copies: the downloads left under way may still add to the lists.
        return list(fetched), list(cached), list(failures), True
    finally:
        undo()
        progress.finish()
    # A cap too small for the set evicts files warmed earlier in the run.
    done = {name for name, _ in fetched} | set(cached)
    for project, entry, origin in targets:
        if entry.filename in done and not files.has(project, entry):
            failures.append(Failure(entry.filename, origin, NOT_STORED, "evicted: the cache size cap is too small for the set"))
    return fetched, cached, failures, False


def _stored_size(files, project: NormalizedName, entry: FileEntry) -> int:
    try:
        return os.path.getsize(Target(files.root, project, entry, False).path)
    except OSError:
        return entry.size or 0
