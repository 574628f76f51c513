"""layout: the path a stored file gets, read back the same; the cache dir's folders."""

from __future__ import annotations

import os

import pytest

from proxpi_min.core.errors import ProxpiError
from proxpi_min.core.simple import FileEntry
from proxpi_min.files.integrity import FileHash
from proxpi_min.files.layout import StoredFile, Target, files_root, index_root, parse_stored, stored_files

SHA = "ab" * 32
WHEEL = FileEntry("a-1.0-py3-none-any.whl", "https://f.example/a.whl", (("md5", "00"), ("sha256", SHA)), size=5)


def test_cache_dir_folders() -> None:
    assert (files_root("/c"), index_root("/c")) == ("/c/files", "/c/index")


def test_Target_path_names_the_strongest_hash() -> None:
    target = Target("/c/files", "a", WHEEL, metadata=False, index="https://i.example/")
    assert target.path == f"/c/files/a/sha256-{SHA}/a-1.0-py3-none-any.whl"
    assert (target.url, target.hash, target.size, target.index) == ("https://f.example/a.whl", ("sha256", SHA), 5, "https://i.example/")
    assert target.etag == f'"{SHA[:40]}"'


def test_Target_metadata_sits_beside_its_wheel_with_its_own_hash() -> None:
    entry = WHEEL._replace(metadata=(("sha256", "cd" * 32),))
    target = Target("/c/files", "a", entry, metadata=True)
    assert target.path == f"/c/files/a/sha256-{SHA}/a-1.0-py3-none-any.whl.metadata"
    assert (target.url, target.hash, target.size) == ("https://f.example/a.whl.metadata", ("sha256", "cd" * 32), None)


def test_Target_without_a_hash_is_unverified_and_has_no_etag() -> None:
    target = Target("/c/files", "a", WHEEL._replace(hashes=()), metadata=False)
    assert target.path == "/c/files/a/unverified/a-1.0-py3-none-any.whl"
    assert (target.hash, target.etag) == (None, None)


@pytest.mark.parametrize("filename", ["../x.whl", ".hidden.whl", "a/b.whl", ""])
def test_Target_refuses_a_file_name_that_is_not_one(filename) -> None:
    with pytest.raises(ProxpiError):
        Target("/c/files", "a", WHEEL._replace(filename=filename), metadata=False)


@pytest.mark.parametrize("metadata", [False, True])
def test_parse_stored_reads_back_what_Target_encodes(metadata) -> None:
    target = Target("/c/files", "a", WHEEL, metadata=metadata)
    assert parse_stored(os.path.relpath(target.path, "/c/files")) == StoredFile(
        "a", target.filename, FileHash("sha256", SHA), metadata
    )


@pytest.mark.parametrize(
    "relative, expected",
    [
        ("a/unverified/a-1.0.tar.gz", StoredFile("a", "a-1.0.tar.gz", None, False)),
        ("a/nohash-ab/a-1.0.tar.gz", StoredFile("a", "a-1.0.tar.gz", None, False)),
        ("a/sha256-/a-1.0.tar.gz", StoredFile("a", "a-1.0.tar.gz", None, False)),
        ("a/sha256-ab/x/a-1.0.tar.gz", StoredFile("a", "a-1.0.tar.gz", None, False)),  # too deep
        ("a/a-1.0.tar.gz.metadata", StoredFile("a", "a-1.0.tar.gz.metadata", None, True)),
        ("a-1.0.tar.gz", StoredFile("a-1.0.tar.gz", "a-1.0.tar.gz", None, False)),  # at the root
    ],
)
def test_parse_stored_outside_the_layout_names_no_hash(relative, expected) -> None:
    assert parse_stored(relative) == expected


def test_stored_files_leave_out_bookkeeping(tmp_path) -> None:
    folder = tmp_path / "a" / f"sha256-{SHA}"
    folder.mkdir(parents=True)
    for name in ("b.whl", "a.whl", ".lock-a.whl", ".tmp-host-1-ab"):
        (folder / name).write_bytes(b"x")
    (tmp_path / ".ledger").write_bytes(b"x")
    assert list(stored_files(str(tmp_path))) == [str(folder / "a.whl"), str(folder / "b.whl")]


def test_remove_empty_folders_of_a_removed_file_up_to_one_still_used(tmp_path) -> None:
    from proxpi_min.files.layout import remove_empty_folders

    for folder in ("p/sha256-ab", "p/sha256-cd", "q/sha256-ef"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "p" / "sha256-cd" / "p-2.whl").write_bytes(b"x")
    remove_empty_folders(str(tmp_path), str(tmp_path / "p" / "sha256-ab" / "p-1.whl"))  # p holds p-2 still
    remove_empty_folders(str(tmp_path), str(tmp_path / "q" / "sha256-ef" / "q-1.whl"))  # q goes, the root stays
    remove_empty_folders(str(tmp_path), str(tmp_path / "p" / "sha256-cd" / "p-3.whl"))  # p-2 is there
    left = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*"))
    assert left == ["p", "p/sha256-cd", "p/sha256-cd/p-2.whl"]
    assert tmp_path.is_dir()
