"""Whether a file is the sdist its name says: a gzipped tar (PEP 625) or a zip with
PKG-INFO in its top folder, as PyPI checks an upload; read from an open binary file, in
bounded memory and time."""

from __future__ import annotations

import gzip
import tarfile
import zipfile
from typing import BinaryIO

from .errors import BadRequest

__all__ = ["MAX_SCAN", "check_sdist"]

# How far into an sdist's tar stream PKG-INFO is looked for: a gzip bomb inflates no further.
MAX_SCAN = 2 * 1024**3
# A GNU long name or a pax header larger than this is no sdist's (tarfile would read it whole).
MAX_EXTENDED_HEADER = 1024 * 1024
_BLOCK = tarfile.BLOCKSIZE
_SKIP_CHUNK = 1024 * 1024


def check_sdist(file: BinaryIO, filename: str) -> None:
    """Refuse *file* (open, seekable), named *filename*, unless it is the archive its
    name says with a PKG-INFO in its top folder: an empty or damaged file would be
    listed, and fail every install that picks it.

    :raises BadRequest: it is not (the message says why).
    """
    try:
        if filename.endswith(".zip"):
            with zipfile.ZipFile(file) as archive:
                found = any(_is_pkg_info(name) for name in archive.namelist())
        else:
            with gzip.GzipFile(fileobj=file, mode="rb") as stream:
                found = _tar_has_pkg_info(stream)
    except Exception as exc:  # whatever a damaged archive makes zipfile, gzip or tarfile raise
        raise BadRequest(f"{filename!r} is not a valid sdist: {exc}") from None
    if not found:
        raise BadRequest(f"{filename!r} is not a valid sdist: no PKG-INFO in its top folder")


def _tar_has_pkg_info(stream: BinaryIO) -> bool:
    """Whether the tar read from *stream* names a PKG-INFO in its top folder, reading
    its headers and skipping its members' data; False past :data:`MAX_SCAN` bytes.

    :raises tarfile.TarError: a header that does not parse (or checksum), an extended
        header past :data:`MAX_EXTENDED_HEADER`, a tar cut short.
    """
    scanned = 0
    long_name = None  # a GNU long name (type L), for the member that follows
    while scanned <= MAX_SCAN:
        block = stream.read(_BLOCK)
        if len(block) < _BLOCK or block == bytes(_BLOCK):  # the end (two zero blocks, or none)
            if scanned == 0:
                raise tarfile.ReadError("not a tar file")
            return False
        member = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        if member.size < 0:  # base-256 allows it; no member is smaller than nothing
            raise tarfile.ReadError(f"a member of {member.size} bytes")
        padded = -(-member.size // _BLOCK) * _BLOCK
        scanned += _BLOCK + padded
        if member.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE):
            if member.size > MAX_EXTENDED_HEADER:
                raise tarfile.ReadError(f"a tar header of {member.size} bytes")
            data = _read_exactly(stream, padded)[: member.size]
            if member.type == tarfile.GNUTYPE_LONGNAME:
                long_name = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
            continue
        name, long_name = long_name or member.name, None
        if _is_pkg_info(name):
            return True
        _skip(stream, padded)
    return False


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) < size:
        raise tarfile.ReadError("the tar ends inside a member")
    return data


def _skip(stream: BinaryIO, size: int) -> None:
    while size > 0:
        chunk = stream.read(min(size, _SKIP_CHUNK))
        if not chunk:
            raise tarfile.ReadError("the tar ends inside a member")
        size -= len(chunk)


def _is_pkg_info(name: str) -> bool:
    parts = name.removeprefix("./").split("/")
    return len(parts) == 2 and parts[1] == "PKG-INFO"
