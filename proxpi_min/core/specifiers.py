"""Whether a Python version satisfies a file's Requires-Python (PEP 345, in PEP 440's
version specifiers, against the final release a Python version is); pure."""

from __future__ import annotations

import functools
import re
from typing import Optional

__all__ = ["python_satisfies"]

# One clause: an operator, a release, and "*" or a pre-release or dev part (PEP 440's
# spellings, normalised or not); post-releases and local versions are not read here.
_CLAUSE = re.compile(
    r"\s*(~=|===|==|!=|<=|>=|<|>)\s*v?([0-9]{1,9}(?:\.[0-9]{1,9}){0,9})"
    r"(\.\*|(?:[-_.]?(?:a|b|c|rc|alpha|beta|pre|preview)[-_.]?[0-9]{0,9})?(?:[-_.]?dev[-_.]?[0-9]{0,9})?)\s*\Z",
    re.IGNORECASE,
)


def _padded(release: tuple, length: int) -> tuple:
    return release + (0,) * (length - len(release))


def _holds(operator: str, version: tuple, suffix: str, python: tuple) -> bool:
    """One clause against a final release *python*. A version with a pre-release or dev
    *suffix* comes just before its release, with no final release in between."""
    length = max(len(version), len(python))
    have, want = _padded(python, length), _padded(version, length)
    star, early = suffix == ".*", bool(suffix) and suffix != ".*"
    if operator in ("==", "!="):
        equal = python[: len(version)] == version if star else (have == want and not early)
        return equal if operator == "==" else not equal
    if operator == "~=":  # ~=3.8 means >=3.8, ==3.*
        return have >= want and python[: len(version) - 1] == version[:-1]
    if early:  # <3.13.0a1 is <3.13, >=3.13.0rc1 is >=3.13, for a final release
        return have < want if operator in ("<", "<=") else have >= want
    return {"<": have < want, "<=": have <= want, ">": have > want, ">=": have >= want}[operator]


def _clauses(specifier: str) -> Optional[list]:
    """(operator, release, suffix) of each clause, or None if one is not a valid clause."""
    clauses = []
    for text in specifier.split(","):
        if not text.strip():
            continue
        match = _CLAUSE.match(text)
        if match is None:
            return None
        operator, release, suffix = match.groups()
        if (suffix == ".*" and operator not in ("==", "!=")) or (operator == "~=" and "." not in release):
            return None  # PEP 440: ".*" only with == and !=, ~= needs two parts
        clauses.append((operator, release, suffix.lower()))
    return clauses


@functools.lru_cache(maxsize=1024)  # a few dozen distinct specifiers across a whole index
def python_satisfies(specifier: str, python: tuple) -> bool:
    """Whether Python *python* (its release numbers, e.g. ``(3, 11, 4)``) satisfies
    *specifier*; True for one with a clause not read here (junk, a post-release), as
    pip takes an invalid Requires-Python: not a reason to pass a file over."""
    clauses = _clauses(specifier)
    if clauses is None:
        return True
    for operator, release, suffix in clauses:
        if operator == "===":  # arbitrary equality: the text itself
            if suffix or release != ".".join(map(str, python)):
                return False
        elif not _holds(operator, tuple(int(part) for part in release.split(".")), suffix, python):
            return False
    return True
