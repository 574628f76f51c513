"""integrity: which of the index's hashes a file is checked against, and the check;
without one, whether an archive (wheel, zip, compressed tar) ends where its bytes end."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import struct
import tarfile
import zipfile

import pytest

from proxpi_min.core.errors import IntegrityError
from proxpi_min.files.integrity import FileHash, Verifier, best_hash
from tests.support.dists import make_sdist, make_wheel

DATA = b"wheel bytes"


@pytest.mark.parametrize(
    "hashes, expected",
    [
        ((("md5", "1"), ("sha256", "2"), ("sha512", "3")), FileHash("sha256", "2")),
        ((("md5", "1"), ("sha512", "3")), FileHash("sha512", "3")),
        ((("md5", "1"),), FileHash("md5", "1")),
        ((("whirlpool", "1"),), None),
        ((), None),
    ],
)
def test_best_hash_is_the_strongest_known(hashes, expected) -> None:
    assert best_hash(hashes) == expected


def test_Verifier_matches_bytes_fed_in_pieces() -> None:
    verifier = Verifier(FileHash("sha256", hashlib.sha256(DATA).hexdigest()))
    for piece in (DATA[:3], DATA[3:], b""):
        verifier.update(piece)
    assert verifier.matches()
    verifier.check("never raised")


def test_Verifier_check_raises_with_the_message_given() -> None:
    verifier = Verifier(FileHash("sha256", hashlib.sha256(DATA).hexdigest()))
    verifier.update(DATA[:-1])
    assert not verifier.matches()
    with pytest.raises(IntegrityError, match="^a-1.0.whl: bad$"):
        verifier.check("a-1.0.whl: bad")


def test_Verifier_without_a_hash_passes_anything() -> None:
    verifier = Verifier(None)
    verifier.update(DATA)
    assert verifier.matches()
    verifier.check("never raised")


# -- a file the index gives no hash for: its archive must end where the bytes end -----


def _tar(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("pkg-1.0/big.bin")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _zip(entries: list, comment: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.comment = comment
        for name, data, compression in entries:
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return buffer.getvalue()


def _zip64() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        with archive.open("pkg/data.bin", "w", force_zip64=True) as member:
            member.write(os.urandom(1000))
    # Python writes the zip64 end records only past the zip limits: a central directory
    # said to start past 4 GiB is one, which is what the end records then hold.
    content = buffer.getvalue()
    end = content.rindex(b"PK\x05\x06")
    size, offset = struct.unpack_from("<2L", content, end + 12)
    zip64_end = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, 1, 1, size, offset)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, offset + size, 1)
    record = content[end:end + 12] + struct.pack("<2LH", 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return content[:end] + zip64_end + locator + record


BIG = os.urandom(300_000)  # past the tail the zip check keeps, and past one feed
ARCHIVES = {
    "wheel": (make_wheel("lib", "1.0", module_source=f"# {BIG.hex()}\n").content, "lib-1.0-py3-none-any.whl"),
    "small wheel": (make_wheel("lib", "1.0").content, "lib-1.0-py3-none-any.whl"),
    # A comment may hold the end record's signature (APPNOTE 4.3.16: nothing forbids it).
    "commented zip": (_zip([("a.txt", b"a", zipfile.ZIP_STORED)], comment=b"PK\x05\x06 in the comment"), "lib-1.0.zip"),
    "zip64": (_zip64(), "lib-1.0.zip"),
    "egg": (_zip([("lib/__init__.py", BIG, zipfile.ZIP_DEFLATED)]), "lib-1.0-py3.11.egg"),
    "sdist": (make_sdist("lib", "1.0").content, "lib-1.0.tar.gz"),
    "big sdist": (gzip.compress(_tar(BIG)), "lib-1.0.TAR.GZ"),
    "two gzip members": (
        gzip.compress(_tar(BIG)[:5000]) + gzip.compress(_tar(BIG)[5000:]), "lib-1.0.tgz"),
    "bzip2": (bz2.compress(_tar(BIG)), "lib-1.0.tar.bz2"),
    "xz": (lzma.compress(_tar(BIG)), "lib-1.0.tar.xz"),
}


def _verifier_fed(content: bytes, filename: str, piece: int = 65_536) -> Verifier:
    verifier = Verifier(None, filename)
    for start in range(0, len(content), piece):
        verifier.update(content[start:start + piece])
    return verifier


@pytest.mark.parametrize("kind", ARCHIVES)
def test_Verifier_without_a_hash_takes_a_whole_archive(kind) -> None:
    content, filename = ARCHIVES[kind]
    verifier = _verifier_fed(content, filename)
    assert verifier.matches()
    verifier.check("never raised")


@pytest.mark.parametrize("kind", ARCHIVES)
def test_Verifier_without_a_hash_refuses_an_archive_cut_short(kind) -> None:
    content, filename = ARCHIVES[kind]
    cuts = {0, 1, 10, len(content) // 3, len(content) // 2, len(content) - 23, len(content) - 22,
            len(content) - 8, len(content) - 1}
    for cut in sorted(cut for cut in cuts if 0 <= cut < len(content)):
        verifier = _verifier_fed(content[:cut], filename, piece=7_919)
        assert not verifier.matches(), cut
        with pytest.raises(IntegrityError, match="before the end of the"):
            verifier.check("the index hash")


def test_Verifier_without_a_hash_takes_zero_bytes_after_the_last_gzip_member() -> None:
    content, filename = ARCHIVES["sdist"]
    assert _verifier_fed(content + bytes(512), filename).matches()  # padding gzip readers skip


def test_Verifier_without_a_hash_refuses_a_wheel_cut_where_a_zip_inside_it_ends() -> None:
    inner = _zip([("data.txt", b"inner", zipfile.ZIP_STORED)])
    wheel = _zip([("lib/fixture.zip", inner, zipfile.ZIP_STORED), ("lib/after.py", BIG, zipfile.ZIP_STORED)])
    cut = wheel.index(inner) + len(inner)  # the stored zip's own end record ends the bytes
    assert not _verifier_fed(wheel[:cut], "lib-1.0-py3-none-any.whl").matches()
    assert _verifier_fed(wheel, "lib-1.0-py3-none-any.whl").matches()


@pytest.mark.parametrize(
    "filename", ["lib-1.0-py3-none-any.whl", "lib-1.0.tar.gz", "lib-1.0.tar.bz2", "lib-1.0.tar.xz"])
def test_Verifier_without_a_hash_refuses_bytes_of_another_format(filename) -> None:
    assert not _verifier_fed(b"<html>not found</html>" * 100, filename).matches()


def test_Verifier_without_a_hash_refuses_a_gzip_member_with_a_wrong_crc() -> None:
    content = bytearray(ARCHIVES["sdist"][0])
    content[-8] ^= 1  # RFC 1952 2.3.1: the CRC-32 of the data
    assert not _verifier_fed(bytes(content), "lib-1.0.tar.gz").matches()


def test_Verifier_with_a_hash_checks_the_hash_alone() -> None:
    content, filename = ARCHIVES["wheel"]
    cut = content[:1000]
    verifier = Verifier(FileHash("sha256", hashlib.sha256(cut).hexdigest()), filename)
    verifier.update(cut)
    assert verifier.matches()


def test_Verifier_without_a_hash_passes_a_file_of_unknown_type_cut_short() -> None:
    content, _ = ARCHIVES["wheel"]
    assert _verifier_fed(content[:1000], "lib-1.0.exe").matches()
