"""Whether a Python version satisfies a file's Requires-Python (PEP 345, in PEP 440's
version specifiers, for the final release numbers Python versions have); pure."""

from __future__ import annotations

import functools
import re

__all__ = ["python_satisfies"]

_CLAUSE = re.compile(r"\s*(~=|===|==|!=|<=|>=|<|>)\s*([0-9]{1,9}(?:\.[0-9]{1,9}){0,9})(\.\*)?\s*\Z")


def _padded(release: tuple, length: int) -> tuple:
    return release + (0,) * (length - len(release))


def _clause(operator: str, version: tuple, prefix: bool, python: tuple) -> bool:
    length = max(len(version), len(python))
    have, want = _padded(python, length), _padded(version, length)
    if operator in ("==", "!="):
        equal = python[: len(version)] == version if prefix else have == want  # "==3.*" is a prefix
        return equal if operator == "==" else not equal
    if operator == "~=":  # ~=3.8 means >=3.8, ==3.*
        return have >= want and python[: len(version) - 1] == version[:-1]
    return {"<": have < want, "<=": have <= want, ">": have > want, ">=": have >= want}[operator]


@functools.lru_cache(maxsize=1024)  # a few dozen distinct specifiers across a whole index
def python_satisfies(specifier: str, python: tuple) -> bool:
    """Whether Python *python* (its release numbers, e.g. ``(3, 11, 4)``) satisfies
    *specifier*; True for one that does not parse here (a pre-release bound, junk), as
    pip takes an invalid Requires-Python: not a reason to pass a file over."""
    for text in specifier.split(","):
        if not text.strip():
            continue
        match = _CLAUSE.match(text)
        if match is None:
            return True
        operator, version_text, star = match.groups()
        if operator == "===":
            if version_text != ".".join(map(str, python)) or star:
                return False
            continue
        version = tuple(int(part) for part in version_text.split("."))
        if star and operator not in ("==", "!=") or operator == "~=" and len(version) < 2:
            return True  # not a valid specifier (PEP 440)
        if not _clause(operator, version, bool(star), python):
            return False
    return True
