"""Distribution file names an upload may have: wheels (PEP 427, the binary distribution
format) and sdists (PEP 625), split into project name and version."""

from __future__ import annotations

import re
from typing import NamedTuple

from .errors import BadRequest
from .names import NormalizedName, canonicalize_name

__all__ = ["SDIST_SUFFIXES", "DistName", "is_dist_filename", "parse_dist_filename"]

# PEP 440 versions as they may be written (any case, separators, "v" prefix, local label).
_VERSION = re.compile(
    r"v?(?:[0-9]+!)?[0-9]+(?:\.[0-9]+)*"
    r"(?:[-_.]?(?:a|b|c|rc|alpha|beta|pre|preview)[-_.]?[0-9]*)?"
    r"(?:-[0-9]+|[-_.]?(?:post|rev|r)[-_.]?[0-9]*)?"
    r"(?:[-_.]?dev[-_.]?[0-9]*)?"
    r"(?:\+[a-z0-9]+(?:[-_.][a-z0-9]+)*)?\Z",
    re.IGNORECASE | re.ASCII,
)
# The binary distribution format: "-" in a name is written "_", so the name has none.
_WHEEL_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._]*[A-Za-z0-9])?\Z", re.ASCII)
_TAG = re.compile(r"[A-Za-z0-9_.+]+\Z", re.ASCII)
_BUILD = re.compile(r"[0-9][A-Za-z0-9_.]*\Z", re.ASCII)
# PEP 625: "{name}-{version}.tar.gz"; ".zip" is the legacy form PyPI still takes.
SDIST_SUFFIXES = (".tar.gz", ".zip")


class DistName(NamedTuple):
    """What a distribution's file name says of it."""

    project: NormalizedName
    version: str  # as written in the file name
    wheel: bool  # a wheel (else an sdist)


def parse_dist_filename(filename: str) -> DistName:
    """The project and version of a wheel or sdist named *filename*.

    :raises BadRequest: it is neither (the message says what is wrong).
    """
    if filename.endswith(".whl"):
        parts = filename[:-4].split("-")
        if len(parts) not in (5, 6):
            raise BadRequest(
                f"{filename!r} is not a wheel name: name-version[-build]-python-abi-platform.whl (PEP 427)"
            )
        if len(parts) == 6 and not _BUILD.match(parts[2]):
            raise BadRequest(f"{filename!r} has a build tag that does not start with a digit (PEP 427)")
        if not all(_TAG.match(tag) for tag in parts[-3:]):
            raise BadRequest(f"{filename!r} has a malformed compatibility tag (PEP 425)")
        name, version, wheel = parts[0], parts[1], True
    else:
        suffix = next((suffix for suffix in SDIST_SUFFIXES if filename.endswith(suffix)), None)
        if suffix is None:
            raise BadRequest(f"{filename!r} is neither a wheel (.whl) nor an sdist (.tar.gz, PEP 625)")
        name, dash, version = filename[: -len(suffix)].rpartition("-")
        if not dash:
            raise BadRequest(f"{filename!r} is not an sdist name: name-version.tar.gz (PEP 625)")
        wheel = False
    if not _WHEEL_NAME.match(name):
        raise BadRequest(f"{filename!r}: {name!r} is not a project name as file names write it ('-' as '_')")
    if not _VERSION.match(version):
        raise BadRequest(f"{filename!r}: {version!r} is not a valid version (PEP 440)")
    return DistName(canonicalize_name(name), version, wheel)


def is_dist_filename(filename: str) -> bool:
    """Whether :func:`parse_dist_filename` takes *filename*."""
    try:
        parse_dist_filename(filename)
    except BadRequest:
        return False
    return True

