"""The test distributions are real: valid archives, correct RECORD, reproducible bytes."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import tarfile
import zipfile

import pytest

from tests.support.dists import canonicalize, make_sdist, make_wheel, record_hash


def _zip_entries(content: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        assert archive.testzip() is None
        return {name: archive.read(name) for name in archive.namelist()}


def test_make_wheel_filename_and_layout(dists):
    wheel = dists.zope
    assert wheel.filename == "zope_interface-5.0-py3-none-any.whl"
    assert wheel.project == "Zope.Interface"
    assert wheel.normalized == "zope-interface"
    entries = _zip_entries(wheel.content)
    assert sorted(entries) == [
        "zope_interface-5.0.dist-info/METADATA",
        "zope_interface-5.0.dist-info/RECORD",
        "zope_interface-5.0.dist-info/WHEEL",
        "zope_interface.py",
    ]
    assert b"Root-Is-Purelib: true" in entries["zope_interface-5.0.dist-info/WHEEL"]
    assert b"Tag: py3-none-any" in entries["zope_interface-5.0.dist-info/WHEEL"]


def test_make_wheel_record_hashes_and_sizes_are_correct(dists):
    entries = _zip_entries(dists.beta_1.content)
    record = entries.pop("beta-1.0.dist-info/RECORD").decode("utf-8")
    rows = {row[0]: row[1:] for row in csv.reader(io.StringIO(record)) if row}
    assert rows.pop("beta-1.0.dist-info/RECORD") == ["", ""]
    assert set(rows) == set(entries)
    for path, (digest, size) in rows.items():
        assert digest == record_hash(entries[path])
        assert int(size) == len(entries[path])


def test_make_wheel_metadata_fields_and_exact_bytes(dists):
    wheel = dists.beta_1
    entries = _zip_entries(wheel.content)
    assert wheel.metadata == entries["beta-1.0.dist-info/METADATA"]
    text = wheel.metadata.decode("utf-8")
    assert "Metadata-Version: 2.1\n" in text
    assert "Name: beta\n" in text
    assert "Version: 1.0\n" in text
    assert "Requires-Dist: alpha>=1.0\n" in text
    assert wheel.metadata_sha256 == hashlib.sha256(wheel.metadata).hexdigest()
    assert "Requires-Python: >=3.8, <4\n" in dists.gamma_2.metadata.decode("utf-8")
    assert dists.gamma_2.requires_python == ">=3.8, <4"


def test_make_wheel_sha256_matches_content(dists):
    for dist in dists.root + dists.extra:
        assert dist.sha256 == hashlib.sha256(dist.content).hexdigest()
        assert dist.size == len(dist.content)


def test_make_wheel_is_reproducible():
    first = make_wheel("Some_Project", "1.2.3", requires=["alpha"], requires_python=">=3")
    second = make_wheel("Some_Project", "1.2.3", requires=["alpha"], requires_python=">=3")
    assert first == second
    assert first.filename == "some_project-1.2.3-py3-none-any.whl"


def test_make_wheel_module_source_changes_bytes_not_name(dists):
    assert dists.alpha_2_other.filename == dists.alpha_2.filename
    assert dists.alpha_2_other.sha256 != dists.alpha_2.sha256
    entries = _zip_entries(dists.alpha_2_other.content)
    assert entries["alpha.py"].startswith(b"# the extra index")


def test_make_wheel_local_version_keeps_plus(dists):
    assert dists.delta.filename == "delta-1.0+local.1-py3-none-any.whl"
    assert "delta-1.0+local.1.dist-info/METADATA" in _zip_entries(dists.delta.content)


def test_make_wheel_rejects_invalid_name():
    with pytest.raises(ValueError):
        make_wheel("-bad-", "1.0")


def test_make_sdist_layout_and_reproducible(dists):
    sdist = dists.alpha_2_sdist
    assert sdist.filename == "alpha-2.0.tar.gz"
    assert sdist.metadata is None and not sdist.is_wheel
    assert make_sdist("alpha", "2.0") == sdist
    assert gzip.decompress(sdist.content)  # a real gzip stream
    with tarfile.open(fileobj=io.BytesIO(sdist.content), mode="r:gz") as archive:
        names = archive.getnames()
        assert set(names) == {"alpha-2.0/PKG-INFO", "alpha-2.0/pyproject.toml", "alpha-2.0/alpha.py"}
        pkg_info = archive.extractfile("alpha-2.0/PKG-INFO").read().decode()
        assert "Name: alpha\n" in pkg_info and "Version: 2.0\n" in pkg_info
        assert b"[build-system]" in archive.extractfile("alpha-2.0/pyproject.toml").read()


@pytest.mark.parametrize(
    "name, expected",
    [("Zope.Interface", "zope-interface"), ("A__b--C..d", "a-b-c-d"), ("alpha", "alpha")],
)
def test_canonicalize(name, expected):
    assert canonicalize(name) == expected
