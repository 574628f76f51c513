"""check_sdist on archives made here: real sdists, damaged ones, and ones made to cost
memory or time."""

from __future__ import annotations

import gzip
import io
import random
import tarfile
import zipfile

import pytest

from proxpi_min.core import sdists
from proxpi_min.core.errors import BadRequest
from tests.support.dists import make_sdist


def _tar_gz(path, members, fmt=tarfile.GNU_FORMAT) -> str:
    with tarfile.open(path, "w:gz", format=fmt) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return str(path)


def _zip(path, members) -> str:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members:
            archive.writestr(name, data)
    return str(path)


def _check(path, filename) -> None:
    with open(path, "rb") as file:
        sdists.check_sdist(file, filename)


def _refusal(path, filename) -> str:
    with pytest.raises(BadRequest) as refused:
        _check(path, filename)
    return refused.value.message


def test_a_real_sdist_passes(tmp_path) -> None:
    sdist = make_sdist("acme-app", "1.0")
    (tmp_path / sdist.filename).write_bytes(sdist.content)
    _check(str(tmp_path / sdist.filename), sdist.filename)


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_pkg_info_after_the_rest_and_beside_long_names_passes(tmp_path, fmt) -> None:
    # Some backends write PKG-INFO last; long paths take GNU long names or pax headers.
    deep = "acme_app-1.0/" + "d" * 60 + "/" + "e" * 60 + "/module.py"
    members = [(deep, b"x = 1\n" * 1000), ("acme_app-1.0/setup.py", b""), ("acme_app-1.0/PKG-INFO", b"Name: acme-app\n")]
    if fmt == tarfile.USTAR_FORMAT:
        members = members[1:]
    _check(_tar_gz(tmp_path / "a.tar.gz", members, fmt), "acme_app-1.0.tar.gz")
    _check(_zip(tmp_path / "a.zip", members), "acme_app-1.0.zip")


def test_pkg_info_under_a_gnu_long_name_passes(tmp_path) -> None:
    top = "acme_" + "x" * 100 + "-1.0"
    path = _tar_gz(tmp_path / "a.tar.gz", [(f"{top}/PKG-INFO", b"")])
    _check(path, top + ".tar.gz")


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ([], "is not a valid sdist"),
        ([("acme_app-1.0/setup.py", b"")], "no PKG-INFO in its top folder"),
        ([("acme_app-1.0/src/PKG-INFO", b"")], "no PKG-INFO in its top folder"),
        ([("PKG-INFO", b"")], "no PKG-INFO in its top folder"),
    ],
    ids=["empty-tar", "no-pkg-info", "nested", "at-the-root"],
)
def test_a_tar_without_pkg_info_in_its_top_folder_is_refused(tmp_path, members, reason) -> None:
    assert reason in _refusal(_tar_gz(tmp_path / "a.tar.gz", members), "acme_app-1.0.tar.gz")


@pytest.mark.parametrize(
    "content", [b"", b"plain text", gzip.compress(b""), gzip.compress(b"no tar inside " * 100), b"\x1f\x8b\x08broken"],
    ids=["empty", "text", "empty-gzip", "gzip-of-text", "broken-gzip"],
)
def test_what_is_no_gzipped_tar_is_refused(tmp_path, content) -> None:
    path = tmp_path / "a.tar.gz"
    path.write_bytes(content)
    assert "is not a valid sdist" in _refusal(path, "acme_app-1.0.tar.gz")


def test_a_long_name_bomb_is_refused_without_reading_it(tmp_path) -> None:
    # A GNU long-name header announcing 64 MiB of name (zeros: a tiny upload).
    info = tarfile.TarInfo("././@LongLink")
    info.type, info.size = tarfile.GNUTYPE_LONGNAME, 64 * 1024 * 1024
    path = tmp_path / "bomb.tar.gz"
    with gzip.open(path, "wb") as stream:
        stream.write(info.tobuf(tarfile.GNU_FORMAT))
        for _ in range(64):
            stream.write(bytes(1024 * 1024))
    assert path.stat().st_size < 200_000
    assert "'p-1.0.tar.gz' is not a valid sdist: a tar header of 67108864 bytes" in _refusal(path, "p-1.0.tar.gz")


def test_the_scan_stops_past_its_bound(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(sdists, "MAX_SCAN", 64 * 1024)  # a small bound, so the test stays quick
    members = [("acme_app-1.0/data.bin", bytes(128 * 1024)), ("acme_app-1.0/PKG-INFO", b"")]
    path = _tar_gz(tmp_path / "a.tar.gz", members)
    assert "no PKG-INFO" in _refusal(path, "acme_app-1.0.tar.gz")


def test_a_negative_member_size_is_refused(tmp_path) -> None:
    info = tarfile.TarInfo("acme_app-1.0/setup.py")
    block = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    block[124:136] = b"\xff" * 12  # base-256: -1
    block[148:156] = b" " * 8
    block[148:155] = f"{sum(block):06o}\0".encode()
    path = tmp_path / "a.tar.gz"
    path.write_bytes(gzip.compress(bytes(block) * 1000))
    assert "is not a valid sdist" in _refusal(path, "acme_app-1.0.tar.gz")


def test_damaged_archives_are_refused_never_an_error_of_another_kind(tmp_path) -> None:
    members = [("acme_app-1.0/setup.py", b"print()\n" * 50), ("acme_app-1.0/PKG-INFO", b"Name: acme-app\n")]
    good = {
        "acme_app-1.0.zip": (tmp_path / "g.zip", _zip(tmp_path / "g.zip", members)),
        "acme_app-1.0.tar.gz": (tmp_path / "g.tar.gz", _tar_gz(tmp_path / "g.tar.gz", members)),
    }
    rng = random.Random(7)
    for filename, (path, _) in good.items():
        data = path.read_bytes()
        for _ in range(300):
            damaged = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                damaged[rng.randrange(len(damaged))] = rng.randrange(256)
            target = tmp_path / ("d-" + filename)
            target.write_bytes(bytes(damaged))
            try:
                _check(str(target), filename)
            except BadRequest:
                pass
