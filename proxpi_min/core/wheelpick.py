"""The wheel a client will most likely pick next from a project's files, guessed from the
wheels it asked about (PEP 425 tags, PEP 440 versions in their common forms) and from
when the versions it picked were released (PEP 700 upload times); pure.

A client installing from a lock file (or a ``--exclude-newer`` resolution) picks, for
most projects, the newest release made before the lock: each pick says the lock was made
after its version's release and before the next one's. Where most picks agree is the
lock's time, and the newest release before it the likely next pick.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Iterable, NamedTuple, Optional

from .platforms import platform_parts
from .simple import FileEntry
from .specifiers import python_satisfies
from .versions import final_key

__all__ = [
    "LockTime", "Releases", "Tags", "client_python", "client_tags", "joined", "lock_time", "pick_time",
    "pick_wheels", "releases", "wheel_tags",
]

_PURE = frozenset({"none"}), frozenset({"any"})
_SHARED_ABIS = frozenset({"abi3", "none"})  # not one interpreter's own ABI
_SDIST_SUFFIXES = (".tar.gz", ".zip")  # PEP 625
_SECOND = 19  # "YYYY-MM-DDTHH:MM:SS": PEP 700 times are UTC, compared as text to the second


class Tags(NamedTuple):
    """A wheel's compressed tag sets (PEP 425), each expanded."""

    python: frozenset
    abi: frozenset
    platform: frozenset

    @property
    def pure(self) -> bool:
        return (self.abi, self.platform) == _PURE


class LockTime(NamedTuple):
    """When a client's pins were chosen: at or after *after*, and before *before* (None:
    no end known), both PEP 700 times to the second."""

    after: str
    before: Optional[str]


class Releases(NamedTuple):
    """A project's final versions with a file not yanked, read once from its page."""

    times: dict  # version key -> time of its first upload, or None where no file says
    wheels: dict  # version key -> [(Tags, build number, FileEntry)] of its wheels not yanked
    newest_first: tuple  # the keys of *wheels*


@functools.lru_cache(maxsize=4096)  # a page repeats a few dozen tag sets thousands of times
def _tags(python: str, abi: str, platform: str) -> Tags:
    return Tags(frozenset(python.split(".")), frozenset(abi.split(".")), frozenset(platform.split(".")))


def _parse(filename: str) -> Optional[tuple]:
    """(version key, Tags or None for an sdist, build number) of a final version's
    wheel or sdist named *filename* (PEP 427, PEP 625), else None."""
    if filename.endswith(".whl"):
        parts = filename[:-4].split("-")
        if len(parts) not in (5, 6):  # name-version(-build)-python-abi-platform
            return None
        version = final_key(parts[1])
        build = re.match(r"[0-9]{0,9}", parts[2]).group(0) if len(parts) == 6 else ""  # its leading digits
        number = int(build or 0)
        return None if version is None else (version, _tags(parts[-3], parts[-2], parts[-1]), number)
    for suffix in _SDIST_SUFFIXES:
        if filename.endswith(suffix):
            version = final_key(filename[: -len(suffix)].rpartition("-")[2])
            return None if version is None else (version, None, 0)
    return None


def wheel_tags(filename: str) -> Optional[Tags]:
    """The tag sets of a wheel file name, or None if it is no wheel name."""
    if not filename.endswith(".whl"):
        return None
    parts = filename[:-4].split("-")
    return _tags(parts[-3], parts[-2], parts[-1]) if len(parts) in (5, 6) else None


def releases(files: Iterable[FileEntry]) -> Releases:
    """The final versions of *files*, in one pass."""
    first: dict = {}
    wheels: dict = {}
    listed: set = set()
    for entry in files:
        parsed = _parse(entry.filename)
        if parsed is None:
            continue
        version, tags, build = parsed
        if entry.yanked is None:
            listed.add(version)
            if tags is not None:
                wheels.setdefault(version, []).append((tags, build, entry))
        if entry.upload_time:
            time = entry.upload_time[:_SECOND]
            if version not in first or time < first[version]:
                first[version] = time
    times = {version: first.get(version) for version in listed}
    return Releases(times, wheels, tuple(sorted(wheels, reverse=True)))


def pick_time(released: Releases, filename: str) -> Optional[LockTime]:
    """What a client picking *filename* says of when its pins were chosen: after that
    version's release, before the next final one's (*released*: its project's). None
    where the page gives no upload times, or the pick is no final version."""
    parsed = _parse(filename)
    after = released.times.get(parsed[0]) if parsed is not None else None
    if after is None:
        return None
    # A higher version out before this one (a newer series) says the client keeps below
    # it (a pin to an older series): only the versions between say when it locked.
    higher = [(key, time) for key, time in released.times.items() if key > parsed[0] and time is not None]
    ceiling = min((key for key, time in higher if time <= after), default=None)
    later = [time for key, time in higher if time > after and (ceiling is None or key < ceiling)]
    return LockTime(after, min(later) if later else None)


def lock_time(picks: Iterable[LockTime]) -> Optional[LockTime]:
    """The span most *picks* agree on (the latest such, on a tie); None without picks. A
    pin held back or moved ahead of the rest disagrees, and is outvoted."""
    picks = list(picks)
    best: Optional[tuple] = None
    for candidate in picks:
        time = candidate.after
        agreeing = [pick for pick in picks if pick.after <= time and (pick.before is None or time < pick.before)]
        key = (len(agreeing), time)
        if best is None or key > best[0]:
            ends = [pick.before for pick in agreeing if pick.before is not None]
            best = (key, LockTime(time, min(ends) if ends else None))
    return None if best is None else best[1]


@functools.lru_cache(maxsize=4096)
def _platform(tag: str) -> tuple:
    """(family and architecture, version) of a platform tag: pip takes the wheel needing
    the newest glibc, musl or macOS the machine has (PEP 600, PEP 656)."""
    parts = platform_parts(tag)
    return ((tag, None), ()) if parts is None else ((parts[0], parts[1]), parts[2])


@functools.lru_cache(maxsize=1024)
def _cpython(tags: frozenset) -> tuple:
    """The CPython 3 minor versions among interpreter tags (``cp311`` -> 11)."""
    return tuple(int(tag[3:]) for tag in tags if re.fullmatch(r"cp3[0-9]{1,3}", tag))


def _fit(tags: Tags, like: Optional[Tags], newest: dict) -> Optional[tuple]:
    """How well a wheel of *tags* suits a client like *like* (higher is better): its
    interpreter and platform (its ABI, else the stable ABI, else none), else a pure
    ``py3`` wheel; None if it does not suit.
    *newest*: the newest version of each platform family in *like* (its glibc, say)."""
    if like is not None and not like.pure:
        # pip's order: its own ABI, the stable ABI of an older CPython 3 (PEP 384), none.
        if tags.python & like.python and (tags.abi & like.abi) - _SHARED_ABIS:
            interpreter = 3
        elif "abi3" in tags.abi and min(_cpython(tags.python), default=1000) <= max(_cpython(like.python), default=-1):
            interpreter = 2
        elif tags.abi == {"none"} and ("py3" in tags.python or tags.python & like.python):
            interpreter = 1  # py3-none-<platform>: a binary that needs no Python ABI
        else:
            interpreter = 0
        if interpreter:  # of its platform, what its libc or OS can take (none newer than it has)
            versions = [version for family, version in map(_platform, tags.platform)
                        if family in newest and version <= newest[family]]
            if versions:
                return 2, interpreter, max(versions)
    if tags.pure and "py3" in tags.python:
        return (1,)
    return None


def pick_wheels(
    released: Releases, like: Optional[Tags], lock: Optional[LockTime] = None, python: Optional[tuple] = None
) -> tuple:
    """The wheels a client like *like* (the tags of the wheels it asked about) will
    likely pick from a project's *released* versions: its interpreter's (else the stable
    ABI's) for its platform, the newest platform version it has first, else a pure
    ``py3`` one, of the newest version that has one. With *lock* (and upload times),
    of the newest released before its end and, if another, of the newest released by
    its start (the two ends of the span the lock was made in). With *python* (the
    client's version), only wheels whose Requires-Python it satisfies, as pip and uv
    pass the others over. () if there is none."""
    newest: dict = {}  # platform family -> the newest version *like* has of it
    for family, version in map(_platform, like.platform if like is not None else ()):
        newest[family] = max(version, newest.get(family, version))
    if lock is not None and all(time is None for time in released.times.values()):
        lock = None  # no upload times (HTML pages): the newest
    if lock is None:
        bounds: list = [None]
    elif lock.before is None:  # every pick the newest of its project: no lock, it seems
        bounds = [lambda time: True]
    else:
        bounds = [lambda time: time < lock.before, lambda time: time <= lock.after]
    picked: list = []
    for bound in bounds:
        for version in released.newest_first:
            time = released.times.get(version)
            if bound is not None and (time is None or not bound(time)):
                continue
            fits = [(fit, build, entry) for fit, build, entry in
                    ((_fit(tags, like, newest), build, entry) for tags, build, entry in released.wheels[version])
                    if fit is not None and _runs_on(entry, python)]
            if fits:  # the best fit, of the highest build number (PEP 427)
                entry = max(fits, key=lambda fit: fit[:2])[2]
                if entry not in picked:
                    picked.append(entry)
                break
    return tuple(picked)


def _runs_on(entry: FileEntry, python: Optional[tuple]) -> bool:
    return python is None or not entry.requires_python or python_satisfies(entry.requires_python, python)


def joined(tags: Optional[Tags], more: Tags) -> Tags:
    """The tags of a client that asked for wheels of *tags* and of *more*."""
    if tags is None:
        return more
    return Tags(tags.python | more.python, tags.abi | more.abi, tags.platform | more.platform)


def _object(document: object, key: str) -> dict:
    """*document*'s member *key* if both are JSON objects, else an empty one."""
    value = document.get(key) if isinstance(document, dict) else None
    return value if isinstance(value, dict) else {}


def _text(document: dict, key: str, pattern: str) -> Optional[re.Match]:
    """*document*'s member *key* matched whole against *pattern*, if it is a string."""
    value = document.get(key)
    return re.fullmatch(pattern, value) if isinstance(value, str) else None


def _about(user_agent: str) -> dict:
    """The JSON object a pip or uv User-Agent carries after the installer's name (PyPI's
    download statistics read the same), or an empty one. Any text may come: nothing is
    trusted to have a shape."""
    _, _, data = user_agent.partition(" ")
    if not data.startswith("{"):
        return {}
    try:
        about = json.loads(data)
    except (ValueError, RecursionError):
        return {}
    return about if isinstance(about, dict) else {}


def client_python(user_agent: str) -> Optional[tuple]:
    """The version of the Python language a pip or uv client runs for (what
    Requires-Python is checked against: PyPy's own version is not), as numbers; None
    where its User-Agent does not say."""
    python = _text(_about(user_agent), "python", r"([0-9]{1,4})\.([0-9]{1,4})(?:\.([0-9]{1,4}))?(?:[^0-9.].*)?")
    return None if python is None else tuple(int(part) for part in python.groups() if part is not None)


def client_tags(user_agent: str) -> Optional[Tags]:
    """The interpreter and platform of a pip or uv client, from its User-Agent (see
    :func:`_about`); None where it says too little."""
    about = _about(user_agent)
    implementation, system, distro = (_object(about, key) for key in ("implementation", "system", "distro"))
    python = _text(implementation, "version", r"3\.([0-9]{1,3})(?:\..*)?")
    cpu = _text(about, "cpu", r"[A-Za-z0-9_]{1,32}")
    if implementation.get("name") != "CPython" or python is None or cpu is None:
        return None
    interpreter = frozenset({f"cp3{python.group(1)}"})
    cpu_name, libc, version = cpu.group(0), _object(distro, "libc"), r"([0-9]{1,4})\.([0-9]{1,4})(?:\..*)?"
    platform: frozenset
    if system.get("name") == "Linux" and libc.get("lib") in ("glibc", "musl"):
        release = _text(libc, "version", version)
        if release is None:
            return None
        family = "manylinux" if libc["lib"] == "glibc" else "musllinux"
        platform = frozenset({f"{family}_{release.group(1)}_{release.group(2)}_{cpu_name}"})
    elif system.get("name") == "Darwin" and (release := _text(distro, "version", version)) is not None:
        major, minor = int(release.group(1)), int(release.group(2))
        minor = 0 if major >= 11 else minor  # macOS 11 on: one tag per major release
        platform = frozenset({f"macosx_{major}_{minor}_{cpu_name}", f"macosx_{major}_{minor}_universal2"})
    elif system.get("name") == "Windows" and cpu_name in ("AMD64", "x86_64"):
        platform = frozenset({"win_amd64"})
    else:
        return None
    return Tags(interpreter, interpreter, platform)
