"""The wheel a client will most likely pick next from a project's files, guessed from the
wheel it just asked about (PEP 425 tags, PEP 440 versions in their common forms); pure."""

from __future__ import annotations

import re
from typing import Iterable, NamedTuple, Optional

from .simple import FileEntry

__all__ = ["Tags", "pick_wheel", "wheel_tags"]

# <name>-<version>(-<build>)?-<python>-<abi>-<platform>.whl (PEP 427)
_WHEEL = re.compile(r"[^-]+-([^-]+)(?:-\d[^-]*)?-([^-]+)-([^-]+)-([^-]+)\.whl\Z")
# A final release (post-releases too): no pre-release, dev or local part.
_FINAL = re.compile(r"(\d+(?:\.\d+)*)(?:\.?post(\d+))?\Z")
_PURE = frozenset({"none"}), frozenset({"any"})


class Tags(NamedTuple):
    """A wheel's compressed tag sets (PEP 425), each expanded."""

    python: frozenset
    abi: frozenset
    platform: frozenset

    @property
    def pure(self) -> bool:
        return (self.abi, self.platform) == _PURE


def wheel_tags(filename: str) -> Optional[Tags]:
    """The tag sets of a wheel file name, or None if it is no wheel name."""
    match = _WHEEL.match(filename)
    if match is None:
        return None
    return Tags(*(frozenset(match.group(i).split(".")) for i in (2, 3, 4)))


def _final_version(filename: str) -> Optional[tuple]:
    match = _WHEEL.match(filename)
    version = match and _FINAL.match(match.group(1))
    if not version:
        return None
    return tuple(int(part) for part in version.group(1).split(".")), int(version.group(2) or -1)


def pick_wheel(files: Iterable[FileEntry], like: Optional[Tags]) -> Optional[FileEntry]:
    """Of the newest final, non-yanked version that has a wheel a client like *like*
    (the tags of a wheel it asked about) can install, that wheel: one sharing its
    interpreter, ABI and platform tags, else a pure ``py3`` one. None if there is none."""
    best: Optional[tuple] = None
    for entry in files:
        if entry.yanked is not None:
            continue
        tags = wheel_tags(entry.filename)
        version = _final_version(entry.filename)
        if tags is None or version is None:
            continue
        if like is not None and not like.pure and tags.abi & like.abi and tags.platform & like.platform \
                and tags.python & like.python:
            fit = 2
        elif tags.pure and "py3" in tags.python:
            fit = 1
        else:
            continue
        key = (version, fit)
        if best is None or key > best[0]:
            best = (key, entry)
    return None if best is None else best[1]
