"""Unit tests for proxpi_min/files/local.py: storing uploads (never twice), pages read
from the folder, yank and delete, --local-dir folders."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from proxpi_min.core.errors import Conflict, NotFound
from proxpi_min.core.names import NormalizedName
from proxpi_min.files.local import LocalIndex, Upload
from proxpi_min.infra.atomic import temp_path
from tests.support.dists import make_sdist, make_wheel

ACME = NormalizedName("acme-app")


def _upload(local: LocalIndex, dist, metadata: bool = True) -> Upload:
    temp = temp_path(local.root)
    with open(temp, "wb") as file:
        file.write(dist.content)
    return Upload(ACME, dist.filename, temp, dist.sha256, dist.size, dist.metadata if metadata else None, ">=3.8")


def test_a_stored_upload_is_a_page_with_its_metadata(tmp_path) -> None:
    local = LocalIndex(str(tmp_path / "local"))
    wheel = make_wheel("acme-app", "1.0")
    upload = _upload(local, wheel)
    local.store(upload)
    os.unlink(upload.temp)
    generation, page = local.page(ACME)
    (entry,) = page.files
    assert (entry.filename, entry.hashes, entry.size, entry.requires_python) == (
        wheel.filename, (("sha256", wheel.sha256),), wheel.size, ">=3.8"
    )
    assert entry.metadata == (("sha256", hashlib.sha256(wheel.metadata).hexdigest()),)
    assert entry.upload_time.endswith("Z") and page.versions == ("1.0",)
    assert local.page(ACME) == (generation, page)  # nothing changed: the same page
    assert local.projects() == ["acme-app"] and local.stats() == (1, wheel.size)


def test_a_name_is_stored_once_even_racing(tmp_path) -> None:
    local = LocalIndex(str(tmp_path / "local"))
    wheel = make_wheel("acme-app", "1.0")
    uploads = [_upload(local, wheel) for _ in range(6)]
    outcomes = []

    def store(upload: Upload) -> None:
        try:
            local.store(upload)
            outcomes.append("stored")
        except Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=store, args=(upload,)) for upload in uploads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["conflict"] * 5 + ["stored"]


def test_yank_and_delete_change_the_page_at_once(tmp_path) -> None:
    local = LocalIndex(str(tmp_path / "local"))
    wheel, sdist = make_wheel("acme-app", "1.0"), make_sdist("acme-app", "1.0")
    local.store(_upload(local, wheel))
    local.store(_upload(local, sdist, metadata=False))
    local.yank(ACME, wheel.filename, "broken")
    assert {e.filename: e.yanked for e in local.page(ACME).page.files} == {wheel.filename: "broken", sdist.filename: None}
    local.yank(ACME, wheel.filename, None)
    assert all(e.yanked is None for e in local.page(ACME).page.files)
    local.delete(ACME, wheel.filename)
    assert [e.filename for e in local.page(ACME).page.files] == [sdist.filename]
    assert not os.path.exists(tmp_path / "local" / "acme-app" / (wheel.filename + ".metadata"))
    local.delete(ACME, sdist.filename)
    assert local.page(ACME) is None and local.projects() == []
    for action in (lambda: local.delete(ACME, sdist.filename), lambda: local.yank(ACME, sdist.filename, "x")):
        with pytest.raises(NotFound):
            action()


def test_a_local_dir_flat_or_per_project(tmp_path) -> None:
    folder = tmp_path / "wheels"
    (folder / "whatever-folder").mkdir(parents=True)
    flat, nested = make_wheel("acme-app", "1.0"), make_wheel("acme-app", "2.0")
    (folder / flat.filename).write_bytes(flat.content)
    (folder / "whatever-folder" / nested.filename).write_bytes(nested.content)
    (folder / "notes.txt").write_text("not a distribution")
    local = LocalIndex(None, (str(folder),))
    page = local.page(ACME).page
    assert {e.filename: e.hashes for e in page.files} == {
        flat.filename: (("sha256", flat.sha256),), nested.filename: (("sha256", nested.sha256),)
    }
    assert local.projects() == ["acme-app"]
    body = local.open(ACME, nested.filename, False, None)
    try:
        assert body.length == nested.size
    finally:
        body.close()
    with pytest.raises(NotFound):
        local.open(ACME, nested.filename, True, None)  # no metadata file for a --local-dir wheel


def test_an_entry_gone_between_listing_and_stat_leaves_the_others(tmp_path) -> None:
    # A dangling symbolic link stands for a file deleted between readdir and stat: its
    # stat fails as the deleted file's would. Several, so that one is listed first.
    local = LocalIndex(str(tmp_path / "local"))
    wheel = make_wheel("acme-app", "1.0")
    local.store(_upload(local, wheel))
    folder = tmp_path / "wheels" / "acme-app"
    folder.mkdir(parents=True)
    listed = make_wheel("acme-app", "2.0")
    (folder / listed.filename).write_bytes(listed.content)
    for number in range(8):
        for where in (tmp_path / "local" / "acme-app", folder, tmp_path / "wheels"):
            (where / f"acme_app-0.{number}-py3-none-any.whl").symlink_to(tmp_path / "deleted")
    local = LocalIndex(str(tmp_path / "local"), (str(tmp_path / "wheels"),))
    assert sorted(e.filename for e in local.page(ACME).page.files) == [wheel.filename, listed.filename]
