"""What lock files want, matched against a project's files on the indices, and the wheel-tag filters."""

from __future__ import annotations

import functools
import re
from typing import Iterable, NamedTuple, Optional

from .lockfiles import Wanted
from .names import parse_wheel_name, version_from_filename
from .versions import same_version
from .simple import FileEntry
from .units import parse_decimal

__all__ = [
    "Failure",
    "Filters",
    "HASH_DIFFERS",
    "Match",
    "NOT_ON_INDEX",
    "NOT_STORED",
    "REFUSED",
    "UPSTREAM_ERROR",
    "match_files",
    "platform_fits",
    "wheel_fits",
]

# The reasons a wanted file is not in the cache after `warm`, as its summary names them.
NOT_ON_INDEX = "not on any index"
HASH_DIFFERS = "hash differs"
UPSTREAM_ERROR = "upstream error"
REFUSED = "refused by policy"
NOT_STORED = "not stored"

# Tags read as core.wheelpick reads them (its reader is private to it), the target's too.
_PLATFORM = re.compile(r"(manylinux|musllinux|macosx)_([0-9]{1,9})_([0-9]{1,9})_(.+)\Z")  # PEP 600, PEP 656, macOS
_LEGACY = re.compile(r"(manylinux1|manylinux2010|manylinux2014)_(.+)\Z")
_LEGACY_GLIBC = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}  # PEP 513, 571, 599
# The macOS binary formats a CPU runs besides its own (packaging.tags._mac_binary_formats).
_MAC_FORMATS = {
    "arm64": frozenset({"universal2"}),
    "x86_64": frozenset({"intel", "fat64", "fat32", "universal2", "universal"}),
    "i386": frozenset({"intel", "fat32", "fat", "universal"}),
}


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


@functools.lru_cache(maxsize=1024)  # a lock repeats a few dozen platform tags
def _platform(tag: str) -> Optional[tuple]:
    """(family, architecture, version) of a Linux or macOS platform tag, else None."""
    match = _PLATFORM.match(tag)
    if match is not None:
        return match.group(1), match.group(4), (int(match.group(2)), int(match.group(3)))
    match = _LEGACY.match(tag)
    if match is not None:
        return "manylinux", match.group(2), _LEGACY_GLIBC[match.group(1)]
    if tag.startswith("linux_"):
        return "linux", tag[len("linux_"):], ()
    return None


def platform_fits(tag: str, target: str) -> bool:
    """Whether a wheel of platform *tag* runs on a machine whose own tag is *target*, as
    pip reads the tags (packaging.tags): a glibc no newer than the target's (PEP 600,
    the legacy manylinux1/2010/2014 read as 2.5/2.12/2.17), a musl of the same major
    and no newer minor (PEP 656), a macOS no newer, of the target's CPU or a universal
    format holding it; a plain ``linux_<arch>`` build on either libc; ``any``. Other
    tags (``win_amd64``) fit only themselves."""
    if tag in (target, "any"):
        return True
    wheel, machine = _platform(tag), _platform(target)
    if wheel is None or machine is None or machine[0] == "linux":
        return False
    family, arch, version = wheel
    if family == "linux":  # packaging.tags._linux_platforms: last, after the libc's own tags
        return machine[0] in ("manylinux", "musllinux") and arch == machine[1]
    if family != machine[0] or version > machine[2]:
        return False
    if family == "musllinux" and version[0] != machine[2][0]:
        return False
    return arch == machine[1] or (family == "macosx" and arch in _MAC_FORMATS.get(machine[1], ()))


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
    """The files of a requirements pin: those whose hash it lists, or every file of its
    version when it lists none."""
    pin = f"{want.project}=={want.version}"
    if not want.hashes:
        found = [
            entry for entry in files
            if _version_is(version_from_filename(entry.filename, want.project), want.version)
        ]
        return [Match(entry, want.origin) for entry in found], [] if found else [Failure(pin, want.origin, NOT_ON_INDEX)]
    matches, failures = [], []
    for algorithm, digest in want.hashes:
        found = [entry for entry in files if dict(entry.hashes).get(algorithm) == digest]
        if not found:
            what = f"{pin} {algorithm}:{digest[:16]}..."
            failures.append(Failure(what, want.origin, NOT_ON_INDEX, "no file has this hash"))
        matches += [Match(entry, want.origin) for entry in found]
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
