"""Whether a Python version satisfies a file's Requires-Python (PEP 345, in PEP 440's
version specifiers, against the final release a Python version is); pure."""

from __future__ import annotations

import functools
import re
from typing import Optional

from .versions import Version, parse_version

__all__ = ["is_valid_specifier", "python_satisfies"]

# One clause: an operator and a version, "*" after it for a prefix (PEP 440).
_CLAUSE = re.compile(r"\s*(~=|===|==|!=|<=|>=|<|>)\s*(\S+?)(\.\*)?\s*\Z")


def _padded(release: tuple, length: int) -> tuple:
    return release + (0,) * (length - len(release))


def _compare(python: tuple, version: Version) -> int:
    """-1, 0 or 1 as final release *python* comes before, is, or comes after *version*
    (PEP 440's order: a pre-release or dev release before its release, a post-release
    after it)."""
    length = max(len(python), len(version.release))
    have, want = (0, _padded(python, length)), (version.epoch, _padded(version.release, length))
    if have != want:
        return -1 if have < want else 1
    if version.pre is not None:  # 3.8rc1.post1 is still before 3.8
        return 1
    if version.post is not None:  # 3.8.post1.dev0 is after 3.8
        return -1
    return 0 if version.dev is None else 1


def _holds(operator: str, version: Version, prefix: bool, python: tuple) -> bool:
    """One clause (*prefix*: "==V.*" or "!=V.*") against a final release *python*."""
    if prefix:  # PEP 440 prefix matching: the candidate padded to the prefix's length
        release = version.release
        equal = version.epoch == 0 and _padded(python, len(release))[: len(release)] == release
        return equal if operator == "==" else not equal
    if operator == "~=":  # ~=3.8 means >=3.8, ==3.*
        return _compare(python, version) >= 0 and _holds("==", version._replace(release=version.release[:-1]), True, python)
    order = _compare(python, version)
    if operator in ("==", "!="):
        # A Python release has no local label: "==V+local" holds for none.
        equal = order == 0 and not version.local
        return equal if operator == "==" else not equal
    return {"<": order < 0, "<=": order <= 0, ">": order > 0, ">=": order >= 0}[operator]


def _clauses(specifier: str) -> Optional[list]:
    """(operator, version or the text after "===", prefix) of each clause, or None if
    one is not a valid clause."""
    clauses = []
    for text in specifier.split(","):
        if not text.strip():
            continue
        match = _CLAUSE.match(text)
        if match is None:
            return None
        operator, written, star = match.groups()
        if operator == "===":  # arbitrary equality: the text itself, "*" and all
            clauses.append((operator, written + (star or ""), False))
            continue
        version = parse_version(written)
        if version is None:
            return None
        plain = version.pre is None and version.post is None and version.dev is None and not version.local
        if star and (operator not in ("==", "!=") or not plain):
            return None  # PEP 440: ".*" only with == and !=, after a release
        if version.local and operator not in ("==", "!="):
            return None  # PEP 440: a local label only with == and !=
        if operator == "~=" and len(version.release) < 2:
            return None  # PEP 440: ~= needs two parts
        clauses.append((operator, version, bool(star)))
    return clauses


def is_valid_specifier(specifier: str) -> bool:
    """Whether *specifier* is a PEP 440 version specifier (empty: no clause, valid)."""
    return _clauses(specifier) is not None


@functools.lru_cache(maxsize=1024)  # a few dozen distinct specifiers across a whole index
def python_satisfies(specifier: str, python: tuple) -> bool:
    """Whether Python *python* (its release numbers, e.g. ``(3, 11, 4)``) satisfies
    *specifier*; True for one that is not valid (junk), as pip takes an invalid
    Requires-Python: not a reason to pass a file over."""
    clauses = _clauses(specifier)
    if clauses is None:
        return True
    for operator, version, prefix in clauses:
        if operator == "===":
            if version != ".".join(map(str, python)):
                return False
        elif not _holds(operator, version, prefix, python):
            return False
    return True
