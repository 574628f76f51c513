"""accounting: room on a disk that holds less than the cap. A disk of an exact size
cannot be made without root, so ``os.statvfs`` is faked from the real files' sizes;
the files, temp files and the ledger are real."""

from __future__ import annotations

import os
import types

import pytest

from proxpi_min.core.simple import FileEntry
from proxpi_min.files import accounting
from proxpi_min.files.accounting import Accounting
from proxpi_min.files.layout import Target
from proxpi_min.infra.atomic import temp_path
from proxpi_min.infra.metrics import Metrics


def _stored(root: str, count: int, size: int) -> None:
    for n in range(count):
        folder = os.path.join(root, "p", f"sha256-{n:064x}")
        os.makedirs(folder)
        with open(os.path.join(folder, f"p-{n}.0-py3-none-any.whl"), "wb") as file:
            file.write(b"x" * size)


def _target(root: str, name: str) -> Target:
    entry = FileEntry(f"{name}-1.0-py3-none-any.whl", f"http://x/{name}.whl", (("sha256", "ab" * 32),))
    return Target(root, "q", entry, False)


def _on_disk(root: str) -> int:
    return sum(os.path.getsize(os.path.join(folder, name)) for folder, _, names in os.walk(root) for name in names
               if not name.startswith(".ledger") and not name.startswith(".journal"))


@pytest.fixture
def disk(monkeypatch):
    """A disk of ``disk["size"]`` bytes (0: one that tells no size) holding what is under
    ``disk["root"]`` and ``disk["other"]`` bytes more."""
    sized = {"size": 2000, "root": None, "other": 0}  # other: bytes of other data on the disk

    def statvfs(path):
        free = sized["size"] - _on_disk(sized["root"]) - sized["other"]
        return types.SimpleNamespace(f_frsize=1, f_blocks=sized["size"], f_bavail=free)

    monkeypatch.setattr(accounting.os, "statvfs", statvfs)
    return sized


def _temp(root: str, written: int) -> str:
    temp = temp_path(root)
    with open(temp, "wb") as file:
        file.write(b"y" * written)
    return temp


def test_bytes_a_download_in_flight_has_written_are_counted_once(tmp_path, disk):
    root = disk["root"] = str(tmp_path)
    _stored(root, 10, 100)  # 1,000 of the 2,000 bytes; a margin of 100
    cache = Accounting(root, 10**9, Metrics())
    first = _temp(root, 0)
    assert cache.reserve(_target(root, "a"), first, 500)
    with open(first, "ab") as file:
        file.write(b"y" * 500)  # all written: 500 bytes free, 400 past the margin
    assert cache.reserve(_target(root, "b"), _temp(root, 0), 300)
    assert len(cache.files) == 10  # nothing evicted: it fits beside them


def test_a_disk_that_holds_less_than_the_next_file_evicts_the_least_recently_used(tmp_path, disk):
    root = disk["root"] = str(tmp_path)
    _stored(root, 10, 100)
    cache = Accounting(root, 10**9, Metrics())
    assert cache.reserve(_target(root, "a"), _temp(root, 0), 1_300)  # 900 free past the margin
    assert len(cache.files) == 6  # four files (400 bytes) made the room


@pytest.mark.parametrize("size", [0, 10**12], ids=["untold", "larger-than-the-cap"])
def test_the_cap_alone_counts_on_a_disk_that_tells_no_size_or_holds_more(tmp_path, disk, size):
    root = disk["root"] = str(tmp_path)
    disk["size"] = size
    _stored(root, 10, 100)
    cache = Accounting(root, 2_000, Metrics())
    assert cache.reserve(_target(root, "a"), _temp(root, 0), 1_000)
    assert len(cache.files) == 10


def test_a_disk_larger_than_the_cap_that_other_data_fills_evicts_too(tmp_path, disk):
    root = disk["root"] = str(tmp_path)
    disk["size"] = 3_000
    _stored(root, 10, 100)
    disk["other"] = 1_700
    cache = Accounting(root, 2_500, Metrics())
    assert cache.reserve(_target(root, "a"), _temp(root, 0), 1_000)  # 300 free, 150 of them the margin
    assert len(cache.files) == 1  # nine files made the room


def test_files_counted_but_gone_make_no_room_and_the_reservation_is_refused(tmp_path, disk):
    root = disk["root"] = str(tmp_path)
    _stored(root, 10, 100)
    cache = Accounting(root, 10**9, Metrics())
    for path in list(cache.files)[:5]:
        os.unlink(path)  # by hand: still counted
    # 1,500 bytes free past the margin in truth; the count says 2,400 could be made.
    assert not cache.reserve(_target(root, "a"), _temp(root, 0), 2_350)


@pytest.mark.parametrize(
    ("size", "other", "upload", "kept"),
    [
        (2000, 900, 500, 1),  # 3 x 300 cached, 200 free (less the 100 margin): the two oldest go
        (2000, 900, 5000, 3),  # more than evicting them all frees: none goes for nothing
        (0, 0, 500, 3),  # a disk that tells no size: nothing to go by
    ],
    ids=["room made", "impossible", "no size"],
)
def test_an_upload_is_made_room_for_only_where_evicting_can_make_it(tmp_path, disk, size, other, upload, kept):
    root = disk["root"] = str(tmp_path / "files")
    disk["size"], disk["other"] = size, other
    _stored(root, 3, 300)
    cache = Accounting(root, 10_000, Metrics())
    try:
        cache.make_room_beside(root, upload)
        assert len(cache.paths()) == kept
        assert cache.stats() == (_on_disk(root), kept)
    finally:
        cache.close()
