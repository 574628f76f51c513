"""Project names (PEP 503 normalisation) and distribution file names."""

from __future__ import annotations

import re
from typing import NamedTuple, NewType, Optional

from .errors import BadRequest

__all__ = [
    "NAME_PATTERN",
    "NormalizedName",
    "WheelName",
    "canonicalize_name",
    "check_filename",
    "is_safe_filename",
    "parse_project_name",
    "parse_wheel_name",
    "version_from_filename",
]

NormalizedName = NewType("NormalizedName", str)

# PEP 508 / core metadata: a valid project name (a regular expression without groups).
NAME_PATTERN = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_VALID_NAME = re.compile(rf"^{NAME_PATTERN}\Z")
_SEPARATORS = re.compile(r"[-_.]+")

# Names of files we are willing to store: one path segment, printable, not hidden.
# Indices may list any extension (PEP 503 says nothing of it), so only the shape is checked.
_SAFE_FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+!~-]*\Z")
_MAX_FILENAME = 255

# Every archive pip takes as an sdist (in any case), so that a deny of a version finds
# its files whatever their compression.
_SDIST_SUFFIXES = (
    ".tar.gz", ".tar.bz2", ".tar.xz", ".tar.lzma", ".tar.lz", ".tgz", ".tbz", ".txz", ".tlz", ".zip", ".tar"
)


def canonicalize_name(name: str) -> NormalizedName:
    """The PEP 503 normalised form: lowercase, runs of ``-_.`` as one ``-``."""
    return NormalizedName(_SEPARATORS.sub("-", name).lower())


def parse_project_name(text: str) -> NormalizedName:
    """Validate a project name taken from a request and normalise it.

    :raises BadRequest: the text is not a valid project name (this also refuses every
        path traversal spelling: ``..``, slashes, backslashes, NUL, ...).
    """
    if len(text) > 200 or not _VALID_NAME.match(text):
        raise BadRequest(f"not a valid project name: {text!r}")
    return canonicalize_name(text)


def check_filename(filename: str) -> str:
    """Return *filename* if it is safe as one path segment under the cache dir.

    :raises BadRequest: it is not.
    """
    if not is_safe_filename(filename):
        raise BadRequest(f"not a valid file name: {filename!r}")
    return filename


def is_safe_filename(filename: str) -> bool:
    """Whether :func:`check_filename` accepts *filename* (and so the file route serves it)."""
    return len(filename) <= _MAX_FILENAME and _SAFE_FILENAME.match(filename) is not None


class WheelName(NamedTuple):
    """The parts of a wheel's file name (PEP 427), each tag set expanded (PEP 425)."""

    name: str  # as written, not normalised
    version: str
    pythons: frozenset  # python tags: "py3", "cp311", ...
    abis: frozenset  # "none", "abi3", "cp311", ...
    platforms: frozenset  # "any", "manylinux_2_17_x86_64", ...


def parse_wheel_name(filename: str) -> Optional[WheelName]:
    """The parts of ``name-version[-build]-python-abi-platform.whl``, or None when
    *filename* is not a wheel's name."""
    parts = filename[:-4].split("-") if filename.endswith(".whl") else []
    if len(parts) < 5:
        return None
    pythons, abis, platforms = (frozenset(part.split(".")) for part in parts[-3:])
    return WheelName(parts[0], parts[1], pythons, abis, platforms)


def version_from_filename(filename: str, project: NormalizedName) -> Optional[str]:
    """Guess a file's version from its name (for PEP 700 ``versions`` from HTML pages).

    Wheels follow PEP 427 (``name-version-...whl``); sdists are ``name-version.ext``.
    Returns None when the name does not start with the project name.
    """
    if filename.endswith(".whl"):
        parts = filename[:-4].split("-")  # as parse_wheel_name, without its tag sets
        if len(parts) < 5 or (parts[0] != project and canonicalize_name(parts[0]) != project):
            return None
        return parts[1]
    lowered = filename.lower()
    for suffix in _SDIST_SUFFIXES:
        if lowered.endswith(suffix):
            stem = filename[: -len(suffix)]
            break
    else:
        return None
    # The name part may itself contain dashes; match it in normalised form.
    for index in range(len(stem) - 1, 0, -1):
        if stem[index] == "-" and canonicalize_name(stem[:index]) == project:
            return stem[index + 1 :] or None
    return None
