"""A wheel's core metadata read from its zip bytes (PEP 427, 658), and its dependencies;
pure: byte strings and offsets in, values out (APPNOTE.TXT for the zip format); where
ranges of the wheel must be read, the reading is the caller's, passed in."""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import re
import struct
import zlib
from typing import Callable, Iterable, NamedTuple, Optional

from .byteranges import ByteRange
from .errors import UpstreamError
from .names import canonicalize_name

__all__ = [
    "MAX_METADATA",
    "BrokenWheel",
    "CentralDirectory",
    "Member",
    "HEAD_READ",
    "TAIL_READ",
    "central_directory",
    "find_metadata",
    "names_itself",
    "is_zip_probe",
    "member_data",
    "metadata_from_ranges",
    "metadata_headers",
    "metadata_name",
    "requirements",
    "tail_read",
]

# The first read of a wheel's end: its end record and, for most wheels, the whole
# central directory and the METADATA member too (most tools write them last); a wheel
# this small comes whole.
TAIL_READ = 128 * 1024
# A larger wheel's first read grows with it: its central directory holds ~100 bytes a
# member, about 1% of a wheel; capped, as on a slow link the bytes cost more than a turn.
MAX_TAIL_READ = 512 * 1024
# auditwheel, maturin and pdm-backend write the dist-info first: a larger wheel's start
# is read alongside its end.
HEAD_READ = 64 * 1024
# A range that starts this close to the end of a file only probes its zip directory
# (uv, pip's lazy wheels): it starts no download of the whole file.
PROBE_TAIL = 1024 * 1024
# A header line naming the project, and one giving its version, with a value (field
# names are case-insensitive, as in email headers).
# A value may be folded onto the next line (RFC 5322 2.2.3).
_NAME_FIELD = re.compile(rb"^name:[ \t]*(?:\r?\n[ \t]+)*\S", re.IGNORECASE | re.MULTILINE)
_VERSION_FIELD = re.compile(rb"^version:[ \t]*(?:\r?\n[ \t]+)*\S", re.IGNORECASE | re.MULTILINE)
MAX_METADATA = 16 * 1024 * 1024  # a METADATA larger than this is refused (a zip bomb, say)
# A zip directory larger than this is refused: ~100 bytes a member, so 160,000 members.
MAX_DIRECTORY = 16 * 1024 * 1024
_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_EOCD64 = b"PK\x06\x06"
_CENTRAL = b"PK\x01\x02"
_LOCAL = b"PK\x03\x04"
_LOCAL_HEADER = 30  # bytes before a local header's name and extra field
_CENTRAL_HEADER = 46
# The compression methods zipfile reads (APPNOTE.TXT 4.4.5), so the same wheels as pip.
_STORED, _DEFLATED, _BZIP2, _LZMA = 0, 8, 12, 14
# <name>-<version>.dist-info/METADATA at the top level (PEP 427)
_METADATA = re.compile(r"([^/]+)\.dist-info/METADATA\Z")
# "extra" compared in a marker: the requirement applies only with an extra.
_EXTRA_MARKER = re.compile(r"\bextra\s*[=!]=")
_REQUIREMENT_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


class BrokenWheel(UpstreamError):
    """The wheel is no zip, or has no readable ``.dist-info/METADATA`` (502)."""


class CentralDirectory(NamedTuple):
    """Where a zip's central directory lies, and the zip's size."""

    offset: int
    size: int
    total: int  # the whole file's size


class Member(NamedTuple):
    """One zip member as the central directory describes it."""

    name: str
    offset: int  # of its local header
    compressed: int
    size: int
    method: int
    crc: int


def tail_read(size: Optional[int]) -> int:
    """How many bytes of its end to read first from a wheel of *size* bytes (None: unknown)."""
    return TAIL_READ if not size else max(TAIL_READ, min(size // 64, MAX_TAIL_READ))


def central_directory(tail: bytes, total: int) -> CentralDirectory:
    """Locate the central directory from the last ``len(tail)`` bytes of a zip of
    *total* bytes (zip64 too).

    :raises BrokenWheel: no end record in *tail*, or one that points outside the file.
    """
    at = tail.rfind(_EOCD)
    if at < 0 or len(tail) - at < 22:
        raise BrokenWheel("not a zip file: no end of central directory record")
    size, offset = struct.unpack_from("<II", tail, at + 12)
    locator = at - 20
    if locator >= 0 and tail[locator : locator + 4] == _EOCD64_LOCATOR:
        (record,) = struct.unpack_from("<Q", tail, locator + 8)
        start = record - (total - len(tail))
        if start < 0 or tail[start : start + 4] != _EOCD64 or len(tail) < start + 56:
            raise BrokenWheel("broken zip64 end of central directory record")
        size, offset = struct.unpack_from("<QQ", tail, start + 40)
    if offset + size > total:
        raise BrokenWheel("the central directory lies outside the file")
    if size > MAX_DIRECTORY:
        raise BrokenWheel(f"a central directory of {size} bytes")
    return CentralDirectory(offset, size, total)


def metadata_name(names: Iterable[str], wheel_filename: str) -> str:
    """The wheel's ``<name>-<version>.dist-info/METADATA`` among its member *names*:
    the one whose folder matches the file name's, else the only one.

    :raises BrokenWheel: none, or several and none matching.
    """
    found = [name for name in names if _METADATA.match(name)]
    prefix = "-".join(wheel_filename.split("-")[:2]).lower()
    for name in found:
        if name.lower().startswith(prefix + ".dist-info/"):
            return name
    if len(found) == 1:
        return found[0]
    raise BrokenWheel(f"{wheel_filename} has {'no' if not found else 'more than one'} .dist-info/METADATA")


def _members(directory: bytes) -> Iterable[Member]:
    at = 0
    while at + _CENTRAL_HEADER <= len(directory) and directory[at : at + 4] == _CENTRAL:
        method, _, _, crc, compressed, size, name_length, extra_length, comment_length = struct.unpack_from(
            "<HHHIIIHHH", directory, at + 10
        )
        (offset,) = struct.unpack_from("<I", directory, at + 42)
        start = at + _CENTRAL_HEADER
        name = directory[start : start + name_length].decode("utf-8", "replace")
        extra = directory[start + name_length : start + name_length + extra_length]
        if 0xFFFFFFFF in (compressed, size, offset):
            size, compressed, offset = _zip64_sizes(extra, size, compressed, offset)
        yield Member(name, offset, compressed, size, method, crc)
        at = start + name_length + extra_length + comment_length


def _zip64_sizes(extra: bytes, size: int, compressed: int, offset: int) -> tuple:
    """The zip64 extra field's values for the fields saturated in the header."""
    at = 0
    while at + 4 <= len(extra):
        kind, length = struct.unpack_from("<HH", extra, at)
        if kind == 1:  # as many 8-byte values as its length says and it holds
            values = list(struct.unpack_from(f"<{min(length, len(extra) - at - 4) // 8}Q", extra, at + 4))
            if size == 0xFFFFFFFF and values:
                size = values.pop(0)
            if compressed == 0xFFFFFFFF and values:
                compressed = values.pop(0)
            if offset == 0xFFFFFFFF and values:
                offset = values.pop(0)
            break
        at += 4 + length
    return size, compressed, offset


def find_metadata(directory: bytes, wheel_filename: str) -> Member:
    """The METADATA member in the central directory's bytes.

    :raises BrokenWheel: there is none (or several), or it is encrypted.
    """
    members = {member.name: member for member in _members(directory)}
    member = members[metadata_name(members, wheel_filename)]
    if member.method not in (_STORED, _DEFLATED, _BZIP2, _LZMA):
        raise BrokenWheel(f"{member.name} uses zip compression method {member.method}")
    _check_size(member)  # before its range is asked for
    return member


def _check_size(member: Member) -> None:
    if member.size > MAX_METADATA or member.compressed > MAX_METADATA:
        raise BrokenWheel(f"{member.name} is too large ({max(member.size, member.compressed)} bytes)")


def member_data(data: bytes, member: Member) -> Optional[bytes]:
    """The member's uncompressed bytes from *data*, the file's bytes from the member's
    local header on; None if *data* is too short (read ``member.compressed`` bytes
    past the name and extra field of its local header).

    :raises BrokenWheel: no local header there, bad compressed data or checksum.
    """
    _check_size(member)
    if len(data) < _LOCAL_HEADER:
        return None
    if data[:4] != _LOCAL:
        raise BrokenWheel(f"no local header for {member.name}")
    name_length, extra_length = struct.unpack_from("<HH", data, 26)
    start = _LOCAL_HEADER + name_length + extra_length
    if len(data) < start + member.compressed:
        return None
    try:
        content = _decompressed(data[start : start + member.compressed], member)
    except (zlib.error, OSError, EOFError, ValueError, MemoryError, ImportError) as exc:  # bad data; a missing module
        raise BrokenWheel(f"{member.name} does not decompress: {exc}") from None
    if zlib.crc32(content) != member.crc or len(content) != member.size:
        raise BrokenWheel(f"{member.name} fails its CRC check")
    return content


def _decompressed(raw: bytes, member: Member) -> bytes:
    """*raw*, a member's data, decompressed; never to more than the directory said plus
    a byte (a lying size cannot make us inflate a bomb).

    :raises ValueError: an LZMA member without LZMA1 properties.
    """
    limit = member.size + 1
    if member.method == _DEFLATED:
        return zlib.decompressobj(-15).decompress(raw, limit)
    if member.method == _BZIP2:
        import bz2  # an optional module of the standard library, as zipfile uses it

        return bz2.BZ2Decompressor().decompress(raw, limit)
    if member.method == _LZMA:
        import lzma

        # APPNOTE.TXT 5.8.8: a version (2 bytes), the properties' length (2), then LZMA1's
        # properties: lc, lp and pb in one byte, the dictionary size in four; then the stream.
        if len(raw) < 9 or struct.unpack_from("<H", raw, 2)[0] != 5:
            raise ValueError("no LZMA1 properties")
        # liblzma allocates the dictionary the header asks for up front: never more than
        # the member's size needs (a crafted 4 GiB dictionary would be a MemoryError).
        packed, dict_size = raw[4], max(4096, min(struct.unpack_from("<I", raw, 5)[0], member.size))
        lzma1 = {
            "id": lzma.FILTER_LZMA1, "dict_size": dict_size, "lc": packed % 9, "lp": packed // 9 % 5, "pb": packed // 45
        }
        try:
            return lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[lzma1]).decompress(raw[9:], limit)
        except lzma.LZMAError as exc:
            raise ValueError(str(exc)) from None
    return raw


def local_span(member: Member) -> tuple:
    """(first, last) bytes to read for *member* with its local header, allowing the
    local extra field as long as the longest one tools write."""
    return member.offset, member.offset + _LOCAL_HEADER + len(member.name.encode()) + 1024 + member.compressed


# A range of a file as read: (its bytes, the offset of the first, the file's size).
RangeRead = tuple


def metadata_from_ranges(
    read_range: Callable[[str], Optional[RangeRead]],
    wheel_filename: str,
    tail: int,
    early: Optional[Callable[[], Optional[RangeRead]]] = None,
    on_whole: Optional[Callable[[bytes], None]] = None,
) -> Optional[bytes]:
    """The wheel's METADATA read with ``read_range(Range header value)``: its last
    *tail* bytes, then the central directory if they did not hold it, then the member if
    neither held it; *early* gives a read of the wheel's start made beside them, tried
    before the member's own read; *on_whole* is told the whole wheel when the first read
    held it. None if a read gave no range (the upstream ignores ``Range``).

    :raises BrokenWheel: no zip, no METADATA, or a member past the end of the file.
    :raises UpstreamError: a read gave less than it asked for (cut short), or of a file
        of another size: what it lacks proves nothing about the wheel.
    """
    got = read_range(f"bytes=-{tail}")
    if got is None:
        return None
    data, start, total = got
    _check_whole(got, max(total - tail, 0), total, total, wheel_filename)
    if on_whole is not None and start == 0 and len(data) == total:
        on_whole(data)
    directory = central_directory(data, total)
    if directory.offset < start:
        got = read_range(f"bytes={directory.offset}-{directory.offset + directory.size - 1}")
        if got is None:
            return None
        _check_whole(got, directory.offset, directory.offset + directory.size, total, wheel_filename)
        data, start, _ = got
    at = directory.offset - start
    member = find_metadata(data[at : at + directory.size], wheel_filename)
    if member.offset >= total:  # else its range would be refused as if ranges were
        raise BrokenWheel(f"{member.name} lies past the end of {wheel_filename}")
    content = member_data(data[member.offset - start :], member) if member.offset >= start else None
    head = early() if content is None and early is not None else None
    if head is not None and head[1] == 0 and head[2] == total and member.offset < len(head[0]):
        content = member_data(head[0][member.offset :], member)
    if content is None:
        first, stop = local_span(member)
        stop = min(stop, total)
        got = read_range(f"bytes={first}-{stop - 1}")
        if got is None:
            return None
        _check_whole(got, first, stop, total, wheel_filename)
        content = member_data(got[0], member)
    if content is None:
        raise BrokenWheel(f"{member.name} runs past the end of {wheel_filename}")
    return content


def _check_whole(got: RangeRead, first: int, stop: int, total: int, wheel_filename: str) -> None:
    """Check that *got* holds bytes *first* to *stop* of a file of *total* bytes, all of
    them: a read lacking some (an answer cut short) proves nothing about the wheel.

    :raises UpstreamError: it does not.
    """
    data, start, size = got
    if (start, start + len(data), size) != (first, stop, total):
        raise UpstreamError(
            f"upstream's answer for bytes {first}-{stop - 1} of {wheel_filename} ({total} bytes) "
            f"was incomplete: {len(data)} bytes from {start} of {size}"
        )


def is_zip_probe(byte_range: ByteRange, size: Optional[int]) -> bool:
    """Whether a range only reads a zip's end (its directory, the dist-info members
    last in a wheel): a suffix range, or one starting within PROBE_TAIL of the end
    (not at the first byte: that reads the file from its start)."""
    if byte_range.first is None:
        return True
    return size is not None and 0 < byte_range.first and byte_range.first >= size - PROBE_TAIL


def metadata_headers(metadata: bytes) -> email.message.Message:
    """The header fields of a core metadata file, each value a str. The file is UTF-8
    (core metadata specification), bytes that are not are replaced: parsed as bytes,
    a value with non-ASCII would come as an ``email.header.Header``."""
    return email.parser.HeaderParser(policy=email.policy.compat32).parsestr(metadata.decode("utf-8", "replace"))


def names_itself(metadata: bytes) -> bool:
    """Whether *metadata* has the Name and Version every core metadata file has (an
    emptied or cut file, what a crash or a hand leaves, often has not); a scan, not a
    parse: a restart checks every stored metadata file."""
    return bool(_NAME_FIELD.search(metadata) and _VERSION_FIELD.search(metadata))


def requirements(metadata: bytes) -> list:
    """The projects (normalised names) the core metadata's ``Requires-Dist`` name, in
    order, without those that apply only with an extra."""
    out: dict = {}  # a dict keeps the order, and finds a repeated name at once
    for value in metadata_headers(metadata).get_all("Requires-Dist") or ():
        requirement, _, marker = value.partition(";")
        match = _REQUIREMENT_NAME.match(requirement)
        if match is None or _EXTRA_MARKER.search(marker):
            continue
        out[canonicalize_name(match.group(1))] = None
    return list(out)
