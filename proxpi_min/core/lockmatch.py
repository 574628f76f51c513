"""What lock files want, matched against a project's files on the indices, and the wheel-tag filters."""

from __future__ import annotations

from typing import Iterable, NamedTuple, Optional

from .lockfiles import Wanted
from .platforms import platform_fits
from .names import parse_wheel_name, version_from_filename
from .versions import same_version
from .simple import FileEntry
from .units import parse_decimal

__all__ = [
    "Failure",
    "Filters",
    "HASH_DIFFERS",
    "Match",
    "NOT_LISTED",
    "NOT_ON_INDEX",
    "NOT_STORED",
    "REFUSED",
    "UPSTREAM_ERROR",
    "match_files",
    "wheel_fits",
]

# The reasons a wanted file is not in the cache after `warm`, as its summary names them.
NOT_ON_INDEX = "not on any index"
HASH_DIFFERS = "hash differs"
UPSTREAM_ERROR = "upstream error"
REFUSED = "refused by policy"
NOT_STORED = "not stored"
NOT_LISTED = "not listed"

class Failure(NamedTuple):
    """A wanted file that is not in the cache, and why."""

    what: str  # the file name, or "project==version" and a hash for a requirements pin
    origin: str  # where the lock file asked for it
    reason: str  # one of the reasons above
    detail: str = ""


class Match(NamedTuple):
    """A file of the index that a lock file asks for."""

    entry: FileEntry
    origin: str  # where the lock file asked for it


class Filters(NamedTuple):
    """Which of the wanted files to fetch (the rest are skipped, not failed)."""

    wheels_only: bool = False
    platforms: tuple = ()  # the target machines' platform tags (see platform_fits); "any" always fits
    python_version: Optional[tuple] = None  # (3, 11)

    def keeps(self, filename: str) -> bool:
        if not filename.endswith(".whl"):
            return not self.wheels_only
        return wheel_fits(filename, self.platforms, self.python_version)


def wheel_fits(filename: str, platforms: Iterable[str], python_version: Optional[tuple]) -> bool:
    """Whether a wheel (PEP 427 name, PEP 425 compressed tags) runs on a machine of one
    of *platforms* (see :func:`platform_fits`) and on *python_version* (either empty:
    no condition)."""
    wheel = parse_wheel_name(filename)
    if wheel is None:
        return False
    platforms = tuple(platforms)
    if platforms and not any(platform_fits(tag, target) for tag in wheel.platforms for target in platforms):
        return False
    return python_version is None or _python_fits(wheel.pythons, wheel.abis, python_version)


def _python_fits(pythons: frozenset, abis: frozenset, python_version: tuple) -> bool:
    """Whether CPython *python_version* takes a wheel of these tags, as pip does
    (packaging.tags): ``cpXY``, ``pyX``, ``pyXY`` of its minor or an older one."""
    major, minor = python_version
    if pythons & {f"py{major}", f"cp{major}{minor}"}:
        return True
    for tag in pythons:
        if tag.startswith(f"py{major}"):
            built_for = parse_decimal(tag[len(f"py{major}"):])
        elif tag.startswith(f"cp{major}") and "abi3" in abis:  # PEP 384: runs on every later 3.Y
            built_for = parse_decimal(tag[len(f"cp{major}"):])
        else:
            continue
        if built_for is not None and built_for <= minor:
            return True
    return False


def _short(hashes: Iterable[tuple]) -> str:
    return ", ".join(f"{algorithm}:{digest[:16]}..." for algorithm, digest in hashes)


def _named_file(want: Wanted, by_name: dict) -> tuple[Optional[Match], Optional[Failure]]:
    """The file a lock names, if the index lists it with the same hash (every algorithm
    both give must agree)."""
    entry = by_name.get(want.filename)
    if entry is None:
        return None, Failure(want.filename, want.origin, NOT_ON_INDEX)
    listed = dict(entry.hashes)
    common = [(algorithm, digest) for algorithm, digest in want.hashes if algorithm in listed]
    if not common:
        detail = f"the index gives no {'/'.join(a for a, _ in want.hashes)} hash"
        return None, Failure(want.filename, want.origin, HASH_DIFFERS, detail)
    if any(listed[algorithm] != digest for algorithm, digest in common):
        detail = f"lock {_short(common)}, index {_short((a, listed[a]) for a, _ in common)}"
        return None, Failure(want.filename, want.origin, HASH_DIFFERS, detail)
    return Match(entry, want.origin), None


def _pinned_files(want: Wanted, files: list) -> tuple[list, list]:
    """The files of a requirements pin: of its version, those whose hash it lists (pip
    takes no other with its hashes), or every one when it lists none."""
    pin = f"{want.project}=={want.version}"
    found = [
        entry for entry in files
        if _version_is(version_from_filename(entry.filename, want.project), want.version)
    ]
    if not found:
        return [], [Failure(pin, want.origin, NOT_ON_INDEX)]
    if not want.hashes:
        return [Match(entry, want.origin) for entry in found], []
    matches, failures = [], []
    for algorithm, digest in want.hashes:
        hashed = [entry for entry in found if dict(entry.hashes).get(algorithm) == digest]
        matches += [Match(entry, want.origin) for entry in hashed]
        if hashed:
            continue
        what = f"{pin} {algorithm}:{digest[:16]}..."
        other = next((entry for entry in files if dict(entry.hashes).get(algorithm) == digest), None)
        if other is None:  # a file the index lacks (a mirror of wheels only), or a changed one
            failures.append(Failure(what, want.origin, NOT_ON_INDEX, f"no file of {pin} has this hash"))
        else:
            failures.append(Failure(what, want.origin, HASH_DIFFERS, f"the hash of {other.filename}"))
    return matches, failures


def _version_is(version: Optional[str], wanted: Optional[str]) -> bool:
    return version is not None and wanted is not None and same_version(wanted, version)


def match_files(wanted: Iterable[Wanted], files: Iterable[FileEntry]) -> tuple[list, list]:
    """([Match], [Failure]): the files of one project's merged page that the lock files
    ask for, each once."""
    files = list(files)
    by_name = {entry.filename: entry for entry in files}
    chosen: dict = {}
    failures = []
    for want in wanted:
        if want.filename is not None:
            match, failure = _named_file(want, by_name)
            matches, missed = ([match] if match else []), ([failure] if failure else [])
        else:
            matches, missed = _pinned_files(want, files)
        chosen.update((match.entry.filename, match) for match in matches)
        failures += missed
    return list(chosen.values()), failures
