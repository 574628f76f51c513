"""The ``verify`` command: re-hash a cache dir's files, load its saved pages, hold the
size ledger and its journal to the files on disk, find the files no saved page lists
and what killed writers left."""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import os
from typing import Iterable, NamedTuple, Optional, TextIO

from ..core.distnames import is_dist_filename
from ..core.errors import ProxpiError
from ..core.units import human_size
from ..core.wheelmeta import MAX_METADATA, names_itself
from ..core.simple import ProjectPage
from ..files.upstream_body import CHUNK
from ..files.integrity import FileHash, Verifier
from ..files.layout import (
    METADATA_SUFFIX,
    Target,
    files_root,
    index_root,
    local_root,
    parse_stored,
    remove_empty_folders,
    stored_files,
)
from ..files.ledger import LEDGER_NAME, Ledger, scan
from ..files.local import LocalIndex
from ..index.page_store import LIST_KEY, PageStore
from ..infra.atomic import LOCK_PREFIX, TEMP_PREFIX, remove_temp_files, temp_in_use
from .progress import DEFAULT_JOBS, Progress

__all__ = ["run_verify"]

NAMED_UNLISTED = 3  # file names given of a project's files no saved page lists; the rest counted

class _Checked(NamedTuple):
    path: str
    size: int
    problem: Optional[str]  # None: good
    unchecked: bool = False  # no hash to check it against
    gone: bool = False  # removed since the listing (evicted by a proxy on the dir): not bad


class _Pages(NamedTuple):
    """What the saved pages of a cache dir gave."""

    count: int
    projects: list  # [ProjectPage]: the project pages that load
    bad: list  # [(path, problem)]: the pages that do not
    gone: int  # deleted since the listing (a proxy on the dir learnt upstream has no such page)


def _load_pages(cache_dir: str) -> _Pages:
    count, projects, bad, gone = 0, [], [], 0
    for _, store in PageStore.saved_indexes(cache_dir):
        for name in sorted(os.listdir(store.directory)):
            if not name.endswith(".json"):
                continue
            count += 1
            try:
                saved = store.read(name[:-5])
            except FileNotFoundError:
                gone += 1
                continue
            except (OSError, ValueError) as exc:
                bad.append((os.path.join(store.directory, name), f"saved page does not load: {exc}"))
                continue
            if name[:-5] != LIST_KEY and isinstance(saved.value, ProjectPage):
                projects.append(saved.value)
    return _Pages(count, projects, bad, gone)


def _expected_metadata(cache_dir: str, pages: Iterable[ProjectPage]) -> dict:
    """Stored path -> (algorithm, digest) of each .metadata file a saved page gives a
    hash for (PEP 658/714): a metadata file is stored under its wheel's hash, so its own
    hash comes from the page."""
    root = files_root(cache_dir)
    expected = {}
    for page in pages:
        for entry in page.files:
            if entry.metadata:
                with contextlib.suppress(ProxpiError):
                    target = Target(root, page.name, entry, True)
                    if target.hash is not None:
                        expected[target.path] = target.hash
    return expected


def _local_files(cache_dir: str) -> dict:
    """Path -> FileHash of every uploaded file of the local index and its metadata file,
    as its info records them."""
    root = local_root(cache_dir)
    if not os.path.isdir(root):
        return {}
    local, expected = LocalIndex(root), {}
    for project in local.projects():
        found = local.page(project)
        for entry in found.page.files if found is not None else ():
            path = os.path.join(root, project, entry.filename)
            expected[path] = FileHash(*entry.hashes[0])
            if entry.metadata:
                expected[path + METADATA_SUFFIX] = FileHash(*entry.metadata[0])
    return expected


def _check_file(path: str, rel: str, expected_metadata: dict) -> _Checked:
    stored = parse_stored(rel)
    # Uploaded files and metadata files: the hash recorded apart; others: their path's.
    want = expected_metadata.get(path, None if stored.metadata else stored.hash)
    size = 0
    try:
        size = os.path.getsize(path)
        if want is None and stored.metadata:  # read from a wheel here: no hash recorded
            with open(path, "rb") as file:
                if not names_itself(file.read(MAX_METADATA + 1)):
                    return _Checked(path, size, "a metadata file without Name and Version: emptied or cut short")
        if want is None:
            return _Checked(path, size, None, unchecked=True)
        verifier = Verifier(want)
        with open(path, "rb") as file:
            for chunk in iter(lambda: file.read(CHUNK), b""):
                verifier.update(chunk)
    except FileNotFoundError:
        return _Checked(path, size, None, gone=True)
    except OSError as exc:
        return _Checked(path, size, f"cannot read: {exc.strerror}")
    if not verifier.matches():
        return _Checked(path, size, f"{want.algorithm} differs from the hash it is stored under")
    return _Checked(path, size, None)


def _check_files(found: list, expected_metadata: dict, jobs: int, err: TextIO, tty: bool) -> tuple[list, int]:
    """([_Checked], total bytes): each stored file hashed, *jobs* at a time."""
    total_bytes = 0
    for path, _ in found:
        with contextlib.suppress(OSError):
            total_bytes += os.path.getsize(path)
    progress = Progress(err, "verify", len(found), total_bytes, tty)

    def one(item: tuple) -> _Checked:
        checked = _check_file(item[0], item[1], expected_metadata)
        progress.advance(checked.size, not checked.unchecked)
        return checked

    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        results = list(pool.map(one, found))
    progress.finish()
    return results, total_bytes


def _check_ledger(files_dir: str, rewrite: bool) -> list:
    """[(path, problem)]: where the ledger's total or the journal's list of files
    differs from the files on disk; with *rewrite*, both are rewritten from the disk.
    Under the ledger's lock, so a proxy on the dir stores and evicts nothing meanwhile.
    A dir no proxy has served yet has no ledger: the first one to start counts it."""
    if not os.path.isfile(os.path.join(files_dir, LEDGER_NAME)):
        return []
    ledger = Ledger(files_dir, read_only=not rewrite)
    try:
        with ledger.locked() as handle:
            on_disk = scan(files_dir)
            used, count = sum(entry.size for entry in on_disk), len(on_disk)
            journaled: dict = {}
            for entry in handle.changes(None)[0]:  # replayed from its last snapshot
                if entry.size < 0:
                    journaled.pop(entry.path, None)
                else:
                    journaled[entry.path] = entry.size
            bad = []
            record = handle.record
            if (record.used, record.count) != (used, count):
                bad.append((ledger.path, f"records {record.count} files ({human_size(record.used)}), "
                                         f"the disk holds {count} ({human_size(used)})"))
            disk = {entry.path: entry.size for entry in on_disk}
            if journaled != disk:
                unlisted = sum(1 for path in disk if path not in journaled)
                gone = sum(1 for path in journaled if path not in disk)
                resized = sum(1 for path in disk if path in journaled and journaled[path] != disk[path])
                bad.append((ledger.journal, f"{unlisted} files on disk missing, {gone} listed but gone, "
                                            f"{resized} of another size"))
            if rewrite:
                handle.snapshot(on_disk, used, count)
            return bad
    finally:
        ledger.close()


def _accounting(files_dir: str, rewrite: bool, out: TextIO) -> list:
    """The ledger checked (and, with *rewrite*, rewritten), each problem written to *out*."""
    if not os.path.isdir(files_dir):
        return []
    try:
        problems = _check_ledger(files_dir, rewrite)
    except OSError as exc:
        problems = [(files_dir, f"cannot {'rewrite' if rewrite else 'check'} the ledger: {exc.strerror}")]
    else:
        if rewrite:
            out.write(f"rewrote the ledger and journal of {files_dir} from the disk\n")
            return []
    for path, problem in problems:
        out.write(f"bad: {path}: {problem}\n")
    return problems


def _unlisted(files_dir: str, results: list, pages: Iterable[ProjectPage]) -> dict:
    """Project folder -> the names of its good stored files that no saved page lists: an
    offline proxy lists only the files a saved page names (online, the page is fetched
    again). Metadata files go with their wheel; files put by hand elsewhere are left out."""
    stored = {
        checked.path for checked in results
        if checked.problem is None and not checked.gone and not checked.path.endswith(METADATA_SUFFIX)
        and checked.path.startswith(files_dir + os.sep) and os.path.relpath(checked.path, files_dir).count(os.sep) == 2
    }
    for page in pages:
        for entry in page.files:
            with contextlib.suppress(ProxpiError):
                stored.discard(Target(files_dir, page.name, entry, False).path)
    unlisted: dict = {}
    for path in sorted(stored):
        folder = os.path.join(files_dir, os.path.relpath(path, files_dir).split(os.sep)[0])
        unlisted.setdefault(folder, []).append(os.path.basename(path))
    return unlisted


def _leftovers(cache_dir: str) -> list:
    """The temp and lock files (``infra.atomic``) under *cache_dir* that no living
    writer holds: what a killed one left."""
    found = []
    for root in (files_root(cache_dir), index_root(cache_dir), local_root(cache_dir)):
        for folder, _, names in os.walk(root):
            for name in names:
                path = os.path.join(folder, name)
                if (name.startswith(LOCK_PREFIX) and not _lock_held(path)) or (
                    name.startswith(TEMP_PREFIX) and not temp_in_use(path)
                ):
                    found.append(path)
    return found


def _lock_held(path: str) -> bool:
    """Whether a writer holds the lock file at *path* (or it went meanwhile). A shared
    lock is refused only then; taken, it is let go at once and the file left in place."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def _sweep_leftovers(cache_dir: str, files_dir: str) -> bool:
    """Remove what killed writers left, as a proxy's start does when alone on the dir;
    False (nothing removed) when a proxy or ``warm`` uses it: its own sweep will."""
    # Every process on the dir counts itself in the ledger's users; no ledger: none ever did.
    ledger = Ledger(files_dir) if os.path.isfile(os.path.join(files_dir, LEDGER_NAME)) else None
    try:
        if ledger is not None and not ledger.register_user():
            return False
        remove_temp_files(files_dir, folders=True)
        remove_temp_files(index_root(cache_dir))
        remove_temp_files(local_root(cache_dir))
        if ledger is not None:  # and the room their downloads had reserved
            with contextlib.suppress(OSError), ledger.locked() as handle:
                reservations = handle.reservations()
                live = {name: size for name, size in reservations.items()
                        if temp_in_use(os.path.join(files_dir, name))}
                if live != reservations:
                    handle.reserve(live)
        return True
    finally:
        if ledger is not None:
            ledger.close()


def _is_cache_dir(cache_dir: str) -> bool:
    """Whether *cache_dir* is a proxy's: it has saved pages or a ledger, or else (a copy
    without its bookkeeping) a files/ folder without distributions of its own, which
    another tree (an index's files/) holds."""
    files_dir = files_root(cache_dir)
    if os.path.isdir(index_root(cache_dir)) or os.path.isfile(os.path.join(files_dir, LEDGER_NAME)):
        return True
    try:
        with os.scandir(files_dir) as entries:
            return not any(entry.is_file() and is_dist_filename(entry.name) for entry in entries)
    except OSError:
        return False


def run_verify(
    cache_dir: str, *, repair: bool = False, offline: bool = False, jobs: int = DEFAULT_JOBS, out: TextIO, err: TextIO,
    tty: bool = False,
) -> int:
    """Re-hash every stored file and load every saved page of *cache_dir*.

    A file is checked against the hash in its path; a ``.metadata`` file against the
    hash a saved page gives for it; an uploaded file (the local index) against the hash
    recorded at its upload; the ledger's total and the journal's files against the disk.
    A file or page gone between the listing and its check (a proxy serving from the dir
    evicted it) is not bad: it is counted apart. A good file that no saved page lists
    is named by project: an offline proxy cannot serve it (*offline*: the dir is to be
    served so, and such a file fails the check; online the page is fetched again, and
    pruned pages leave such files). Temp and lock files a killed writer left are counted.
    With *repair*, bad files and pages are deleted (the next request fetches them
    again), but never an uploaded file, which nothing could fetch; the ledger and
    journal are rewritten from the disk; what killed writers left is removed unless a
    proxy uses the dir. Files no saved page lists stay: their bytes are good.

    :returns: 0 all good, 1 anything bad or (*offline*) not listed (each named once, on
        *out*), 2 not a cache dir.
    """
    files_dir = files_root(cache_dir)
    if not _is_cache_dir(cache_dir):
        err.write(f"proxpi-min verify: error: {cache_dir} is not a proxpi cache dir (no files/ or index/ in it, "
                  "or files/ holds files of its own)\n")
        return 2
    pages = _load_pages(cache_dir)
    expected_metadata = _expected_metadata(cache_dir, pages.projects)
    found = [(path, os.path.relpath(path, files_dir)) for path in stored_files(files_dir)]
    local = _local_files(cache_dir)
    expected_metadata.update(local)
    found += [(path, path) for path in sorted(local)]
    results, total_bytes = _check_files(found, expected_metadata, jobs, err, tty)
    bad = pages.bad + [(checked.path, checked.problem) for checked in results if checked.problem is not None]
    unchecked = sum(1 for checked in results if checked.unchecked)
    gone = pages.gone + sum(1 for checked in results if checked.gone)
    unlisted = _unlisted(files_dir, results, pages.projects)
    leftovers = _leftovers(cache_dir)
    accounting = _accounting(files_dir, False, out)
    removed = 0
    for path, problem in bad:
        out.write(f"bad: {path}: {problem}\n")
        if repair and path not in local:
            try:
                os.unlink(path)
                removed += 1
            except FileNotFoundError:  # evicted since its check: out of the cache all the same
                removed += 1
            except OSError as exc:
                out.write(f"cannot remove {path}: {exc.strerror}\n")
                continue
            if path.startswith(files_dir + os.sep):
                remove_empty_folders(files_dir, path)
    for folder, names in unlisted.items():
        more = f" and {len(names) - NAMED_UNLISTED} more" if len(names) > NAMED_UNLISTED else ""
        out.write(f"not listed: {folder}: no saved page lists {', '.join(names[:NAMED_UNLISTED])}{more}\n")
    bad += accounting
    if repair and (removed or accounting):  # the files removed above leave the ledger too
        bad += _accounting(files_dir, True, out)
    left = f"{len(leftovers)} temp and lock files a killed writer left"
    if repair and leftovers:
        swept = _sweep_leftovers(cache_dir, files_dir)
        left += f", {sum(1 for path in leftovers if not os.path.lexists(path))} removed" if swept else (
            ", kept: a proxy uses the dir and sweeps them")
    not_listed = sum(len(names) for names in unlisted.values())
    out.write(
        f"verify: {len(results)} files ({human_size(total_bytes)}), {pages.count} saved pages: {len(bad)} bad"
        + (f", {removed} removed" if repair else "")
        + (f", {not_listed} on no saved page (an offline proxy cannot serve them)" if not_listed else "")
        + (f", {unchecked} without a hash to check" if unchecked else "")
        + (f", {gone} gone before their check" if gone else "")
        + (f", {left}" if leftovers else "")
        + "\n"
    )
    return 1 if bad or (offline and unlisted) else 0
