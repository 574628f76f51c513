"""The index's hash of a file: which of its hashes to trust, and checking bytes against
it; where the index gives none, checking that an archive ends where its format says."""

from __future__ import annotations

import bz2
import hashlib
import lzma
import struct
import zlib
from typing import Callable, NamedTuple, Optional

from ..core.errors import HashMismatch, IntegrityError
from ..core import simple
from ..core.simple import Hashes

__all__ = ["FileHash", "Verifier", "best_hash"]

# Decompressed bytes made at a time while checking a compressed archive's end, then
# dropped: the memory a check takes whatever the file's size.
OUTPUT_LIMIT = 64 * 1024
# APPNOTE 4.3.16: the end of central directory record is 22 bytes and a comment of at
# most 65,535; before it the zip64 locator (4.3.15, 20 bytes) and record (4.3.14, 56
# bytes and its extensible data): the tail that holds them all.
ZIP_TAIL = 128 * 1024
ZIP_END = b"PK\x05\x06"
ZIP64_LOCATOR = b"PK\x06\x07"
ZIP64_END = b"PK\x06\x06"
ZIP_END_FORMAT = struct.Struct("<4s4H2LH")  # signature, disks and counts, size, offset, comment length
ZIP64_LOCATOR_FORMAT = struct.Struct("<4sLQL")  # signature, disk, the zip64 record's offset, disks
ZIP64_END_FORMAT = struct.Struct("<4sQ2H2L4Q")  # signature, record size, ..., size, offset


class FileHash(NamedTuple):
    algorithm: str  # a hashlib name
    digest: str  # hex, as the index gives it


def best_hash(hashes: Hashes) -> Optional[FileHash]:
    """The strongest of the index's hashes of a file, or None if it gives none we know."""
    found = simple.best_hash(hashes)
    return FileHash(*found) if found else None


class _ZipEnd:
    """The last bytes of a zip (a wheel, a zip sdist), to tell it whole: its end of
    central directory record ends the file, and its central directory ends where that
    record (or its zip64 record) begins (APPNOTE 4.3.6). A zip cut at the end of one
    stored inside it fails the second test: that one's offsets are from its own start."""

    def __init__(self) -> None:
        self._tail = bytearray()
        self._size = 0

    def update(self, data: bytes) -> None:
        self._size += len(data)
        self._tail += data
        del self._tail[:-ZIP_TAIL]

    def complete(self) -> bool:
        tail = bytes(self._tail)
        start = self._size - len(tail)  # the file offset of tail[0]
        position = tail.rfind(ZIP_END)
        while position >= 0:  # a comment may hold the signature: each candidate, last first
            if self._ends_at(tail, start, position):
                return True
            position = tail.rfind(ZIP_END, 0, position)
        return False

    @staticmethod
    def _ends_at(tail: bytes, start: int, position: int) -> bool:
        """Whether an end record at *position* in *tail* ends the file and its central
        directory ends where the record says."""
        if position + ZIP_END_FORMAT.size > len(tail):
            return False
        fields = ZIP_END_FORMAT.unpack_from(tail, position)
        directory_size, directory_offset, comment_length = fields[5], fields[6], fields[7]
        if position + ZIP_END_FORMAT.size + comment_length != len(tail):
            return False
        locator = position - ZIP64_LOCATOR_FORMAT.size
        if locator >= 0 and tail.startswith(ZIP64_LOCATOR, locator):
            record_offset = ZIP64_LOCATOR_FORMAT.unpack_from(tail, locator)[2]
            record = record_offset - start
            if record < 0 or record + ZIP64_END_FORMAT.size > locator or not tail.startswith(ZIP64_END, record):
                return False
            zip64 = ZIP64_END_FORMAT.unpack_from(tail, record)
            # 4.3.14.1: the record's size counts what follows its first 12 bytes.
            if record + 12 + zip64[1] != locator:
                return False
            return zip64[8] + zip64[9] == record_offset
        return directory_offset + directory_size == start + position


class _GzipMember:
    """zlib's decompressor of one gzip member (RFC 1952), with the interface of bz2's
    and lzma's: it says ``eof`` only once the member's CRC-32 and ISIZE match."""

    def __init__(self) -> None:
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip header and trailer
        self.needs_input = True

    @property
    def eof(self) -> bool:
        return self._inflate.eof

    @property
    def unused_data(self) -> bytes:
        return self._inflate.unused_data

    def decompress(self, data: bytes, max_length: int) -> bytes:
        output = self._inflate.decompress(self._inflate.unconsumed_tail + data, max_length)
        # A full output may leave more to come even with all the input taken.
        self.needs_input = not self._inflate.unconsumed_tail and len(output) < max_length
        return output


class _CompressedEnd:
    """A compressed stream of members one after another, to tell it whole: the last
    member's own trailer is read and checked where the bytes end. Zero bytes between
    and after members are padding (gzip readers and xz, 2.2 of its format, skip them)."""

    def __init__(self, new_member: Callable[[], object]) -> None:
        self._new_member = new_member
        self._member = None  # the member being read, None between members
        self._members = 0  # members read to their end
        self._broken = False

    def update(self, data: bytes) -> None:
        if self._broken:
            return
        try:
            while data:
                if self._member is None:
                    data = data.lstrip(b"\0")
                    if not data:
                        return
                    self._member = self._new_member()
                data = self._read_member(data)
        except (zlib.error, OSError, EOFError, lzma.LZMAError):  # not this format, or corrupt
            self._broken = True

    def _read_member(self, data: bytes) -> bytes:
        """Feed *data* to the member being read; what follows its end, if it ended."""
        member = self._member
        member.decompress(data, OUTPUT_LIMIT)
        while not member.eof and not member.needs_input:
            member.decompress(b"", OUTPUT_LIMIT)
        if not member.eof:
            return b""
        self._member = None
        self._members += 1
        return member.unused_data

    def complete(self) -> bool:
        return not self._broken and self._member is None and self._members > 0


# What a file's name says it is, and how to tell it whole: the archives an index serves.
_ARCHIVE_ENDS = (
    ((".whl", ".zip", ".egg"), "zip", _ZipEnd),
    ((".tar.gz", ".tgz"), "gzip", lambda: _CompressedEnd(_GzipMember)),
    ((".tar.bz2", ".tbz2"), "bzip2", lambda: _CompressedEnd(bz2.BZ2Decompressor)),
    ((".tar.xz", ".txz"), "xz", lambda: _CompressedEnd(lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ))),
)


class Verifier:
    """Hashes bytes as they pass, to compare with *expected* at the end. With no hash
    expected, an archive named *filename* (a wheel, a zip, a compressed tar) must end
    where its format says, so that one cut short is not taken whole; any other file
    passes every check."""

    def __init__(self, expected: Optional[FileHash], filename: str = "") -> None:
        self.expected = expected
        self._filename = filename
        self._hasher = hashlib.new(expected.algorithm) if expected is not None else None
        self._format = ""
        self._archive_end = None
        if expected is None:
            for suffixes, name, new_check in _ARCHIVE_ENDS:
                if filename.lower().endswith(suffixes):
                    self._format, self._archive_end = name, new_check()
                    break

    def update(self, data: bytes) -> None:
        if self._hasher is not None:
            self._hasher.update(data)
        elif self._archive_end is not None:
            self._archive_end.update(data)

    def matches(self) -> bool:
        """Whether the bytes so far have the expected hash (with none: whether the
        archive ends here)."""
        if self._hasher is not None:
            return self._hasher.hexdigest() == self.expected.digest
        return self._archive_end is None or self._archive_end.complete()

    def check(self, message: str) -> None:
        """:raises HashMismatch: (with *message*) the bytes do not have the expected
            hash, which the caller has made sure are all of them.
        :raises IntegrityError: with no hash, the archive does not end here."""
        if self.matches():
            return
        if self._hasher is not None:
            raise HashMismatch(message)
        raise IntegrityError(f"{self._filename}: the bytes end before the end of the {self._format} archive")
