"""Unit tests for proxpi_min/files/local.py: storing uploads (never twice, the same bytes
again answered as stored, one file per normalized name and one sdist per release), pages
read from the folder, a watched folder made later, yank and delete, --local-dir folders."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest

from proxpi_min.core.errors import Conflict, NotFound
from proxpi_min.core.names import NormalizedName
from proxpi_min.files import local as local_module
from proxpi_min.files import wheel_folders
from proxpi_min.files.local import WATCH_SECONDS, LocalIndex, Upload
from proxpi_min.infra.atomic import temp_path
from tests.support.dists import make_sdist, make_wheel

ACME = NormalizedName("acme-app")


def _upload(local: LocalIndex, dist, metadata: bool = True, filename: str = "") -> Upload:
    temp = temp_path(local.root)
    with open(temp, "wb") as file:
        file.write(dist.content)
    return Upload(ACME, filename or dist.filename, temp, dist.sha256, dist.size,
                  dist.metadata if metadata else None, ">=3.8")


def _snapshot(folder) -> dict:
    """Every file under *folder* and its bytes."""
    return {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}


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
    builds = [make_wheel("acme-app", "1.0", module_source=f"BUILD = {number}\n") for number in range(6)]
    uploads = [_upload(local, wheel) for wheel in builds]
    outcomes = []

    def store(upload: Upload) -> None:
        try:
            outcomes.append("stored" if local.store(upload) else "same")
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
    # The name stays held, its page empty, until released; it is listed no more.
    assert local.page(ACME).page.files == () and local.projects() == []
    for action in (lambda: local.delete(ACME, sdist.filename), lambda: local.yank(ACME, sdist.filename, "x")):
        with pytest.raises(NotFound):
            action()
    local.release(ACME)
    assert local.page(ACME) is None
    with pytest.raises(NotFound):
        local.release(ACME)


def test_the_last_delete_holds_the_name_before_the_file_goes(tmp_path) -> None:
    """Where the name cannot be held (here its marker's place is taken by a folder), the
    last file stays: never a moment, or a failure, that leaves the name to the upstreams."""
    local = LocalIndex(str(tmp_path / "local"))
    wheel = make_wheel("acme-app", "1.0")
    local.store(_upload(local, wheel))
    (tmp_path / "local" / "acme-app" / ".reserved").mkdir()
    with pytest.raises(OSError):
        local.delete(ACME, wheel.filename)
    assert [e.filename for e in local.page(ACME).page.files] == [wheel.filename]


def test_an_upload_after_the_last_delete_holds_the_name_as_before(tmp_path) -> None:
    local = LocalIndex(str(tmp_path / "local"))
    wheel = make_wheel("acme-app", "1.0")
    local.store(_upload(local, wheel))
    local.delete(ACME, wheel.filename)
    local.store(_upload(local, wheel))
    with pytest.raises(Conflict):
        local.release(ACME)
    local.delete(ACME, wheel.filename)
    local.release(ACME)
    assert local.page(ACME) is None


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


def test_the_same_file_again_is_answered_as_stored_and_nothing_is_written(tmp_path) -> None:
    """A re-run publish job (PyPI answers 200 where name and hashes match); other bytes
    under the name are still refused."""
    local = LocalIndex(str(tmp_path / "local"))
    wheel = make_wheel("acme-app", "1.0")
    assert local.store(_upload(local, wheel)) is True
    local.yank(ACME, wheel.filename, "broken")
    folder = tmp_path / "local" / "acme-app"
    before = _snapshot(folder)
    assert local.store(_upload(local, wheel)) is False
    assert _snapshot(folder) == before  # the upload time and the yank kept
    other = make_wheel("acme-app", "1.0", module_source="OTHER = True\n")
    with pytest.raises(Conflict, match="File already exists"):
        local.store(_upload(local, other))
    assert _snapshot(folder) == before


def test_a_file_put_there_by_hand_refuses_the_name_and_nothing_is_written(tmp_path) -> None:
    """Without its info the file is not listed; an upload of its name must not give it
    the upload's sidecars (its bytes would be listed under the upload's hash)."""
    local = LocalIndex(str(tmp_path / "local"))
    by_hand = make_wheel("acme-app", "1.0", module_source="BY_HAND = True\n")
    folder = tmp_path / "local" / "acme-app"
    folder.mkdir(parents=True)
    (folder / by_hand.filename).write_bytes(by_hand.content)
    for dist in (make_wheel("acme-app", "1.0"), by_hand):  # other bytes, and the same: neither listed
        with pytest.raises(Conflict, match="File already exists"):
            local.store(_upload(local, dist))
        assert _snapshot(folder) == {by_hand.filename: by_hand.content}
        assert local.page(ACME) is None


@pytest.mark.parametrize(
    ("stored", "refused", "message"),
    [
        ("acme_app-1.0-py3-none-any.whl", "Acme_App-1.0-py3-none-any.whl", "spelled otherwise"),
        ("acme_app-1.0-py3-none-any.whl", "acme.app-1.0.0-PY3-None-Any.whl", "spelled otherwise"),
        ("acme_app-1.0-1-py3-none-any.whl", "acme_app-1.0-1-py3-none-ANY.whl", "spelled otherwise"),
        ("acme_app-1.0.tar.gz", "ACME_APP-1.0.tar.gz", "Only one sdist may be uploaded per release"),
        ("acme_app-1.0.tar.gz", "acme_app-1.0.zip", "Only one sdist may be uploaded per release"),
        ("acme_app-1.0.zip", "acme_app-1.0.0.tar.gz", "Only one sdist may be uploaded per release"),
    ],
    ids=["name-case", "name-dot-version-tags", "build-tag-case", "sdist-case", "zip-beside-tar", "tar-beside-zip"],
)
def test_one_file_per_normalized_name_and_one_sdist_per_release(tmp_path, stored, refused, message) -> None:
    """As PyPI compares them; the same bytes too (only the very name is a re-upload)."""
    local = LocalIndex(str(tmp_path / "local"))
    dist = (make_wheel if stored.endswith(".whl") else make_sdist)("acme-app", "1.0")
    local.store(_upload(local, dist, metadata=False, filename=stored))
    folder = tmp_path / "local" / "acme-app"
    before = _snapshot(folder)
    with pytest.raises(Conflict, match=message) as refusal:
        local.store(_upload(local, dist, metadata=False, filename=refused))
    assert repr(stored) in str(refusal.value)
    assert _snapshot(folder) == before
    assert [entry.filename for entry in local.page(ACME).page.files] == [stored]


def test_other_tags_builds_and_versions_are_other_files(tmp_path) -> None:
    local = LocalIndex(str(tmp_path / "local"))
    names = [
        "acme_app-1.0-py3-none-any.whl", "acme_app-1.0-1-py3-none-any.whl", "acme_app-1.0-cp312-cp312-linux_x86_64.whl",
        "acme_app-1.0.tar.gz", "acme_app-1.0+local.1-py3-none-any.whl", "acme_app-1.0.post1.tar.gz",
    ]
    for name in names:
        assert local.store(_upload(local, make_wheel("acme-app", "1.0"), metadata=False, filename=name)) is True
    assert sorted(entry.filename for entry in local.page(ACME).page.files) == sorted(names)


def test_a_watched_folder_made_later_is_read_after_one_look_a_second(tmp_path, monkeypatch) -> None:
    """A proxy without uploads on a cache dir another proxy publishes to: the folder the
    publisher makes on its first upload is looked for once a second, never on each
    request, and read for good once found."""
    root = tmp_path / "local"
    now = [1000.0]
    reader = LocalIndex(str(root), watch=True, clock=lambda: now[0])
    assert not root.exists()  # a reader makes nothing
    looks, listings = [], []
    real_isdir, real_scandir = os.path.isdir, os.scandir
    monkeypatch.setattr(local_module.os.path, "isdir", lambda path: looks.append(path) or real_isdir(path))
    monkeypatch.setattr(wheel_folders.os, "scandir", lambda path: listings.append(path) or real_scandir(path))
    for _ in range(50):
        assert reader.page(ACME) is None and reader.projects() == [] and not reader.active
    assert looks == [str(root)] and listings == []
    publisher = LocalIndex(str(root))
    wheel = make_wheel("acme-app", "1.0")
    publisher.store(_upload(publisher, wheel))
    now[0] += WATCH_SECONDS / 2
    assert reader.page(ACME) is None and len(looks) == 1  # within the second: not looked for again
    now[0] += WATCH_SECONDS / 2
    assert [entry.filename for entry in reader.page(ACME).page.files] == [wheel.filename]
    assert reader.active and reader.projects() == ["acme-app"] and len(looks) == 2
    now[0] += 10 * WATCH_SECONDS
    assert reader.active and len(looks) == 2  # found for good: never looked for again


def _settle(*folders) -> None:
    """Date folders a minute back: an mtime that recent changes cannot share."""
    for folder in folders:
        past = time.time() - 60
        os.utime(folder, (past, past))


def test_a_scrape_lists_only_the_upload_folders_that_changed(tmp_path, monkeypatch) -> None:
    local = LocalIndex(str(tmp_path / "local"))
    first, second = make_wheel("acme-app", "1.0"), make_wheel("other-app", "1.0")
    local.store(_upload(local, first))
    other = Upload(NormalizedName("other-app"), *_upload(local, second)[1:])
    local.store(other)
    _settle(tmp_path / "local" / "acme-app", tmp_path / "local" / "other-app")
    listings = []
    real_scandir = os.scandir
    monkeypatch.setattr(wheel_folders.os, "scandir", lambda path: listings.append(os.path.basename(path)) or real_scandir(path))
    assert local.stats() == (2, first.size + second.size)
    listings.clear()
    assert local.stats() == (2, first.size + second.size)
    assert listings == ["local"], "an unchanged project folder was listed again"
    local.delete(ACME, first.filename)
    assert local.stats() == (1, second.size)


def test_local_dir_folders_are_listed_again_only_once_one_changed(tmp_path, monkeypatch) -> None:
    folder = tmp_path / "wheels"
    (folder / "acme").mkdir(parents=True)
    one, two = make_wheel("acme-app", "1.0"), make_wheel("acme-app", "2.0")
    (folder / "acme" / one.filename).write_bytes(one.content)
    _settle(folder / "acme", folder)
    now = [1000.0]
    local = LocalIndex(None, (str(folder),), clock=lambda: now[0])
    listings = []
    real_scandir = os.scandir
    monkeypatch.setattr(wheel_folders.os, "scandir", lambda path: listings.append(path) or real_scandir(path))
    for _ in range(20):
        assert [e.filename for e in local.page(ACME).page.files] == [one.filename]
    assert listings == [], "a page request walked the folders (listed once, at the start)"
    now[0] += WATCH_SECONDS
    assert local.page(ACME) is not None and listings == [], "unchanged folders were listed again"
    (folder / "acme" / two.filename).write_bytes(two.content)
    assert len(local.page(ACME).page.files) == 1  # within the second: the listing stands
    now[0] += WATCH_SECONDS
    assert sorted(e.filename for e in local.page(ACME).page.files) == [one.filename, two.filename]


def test_requests_during_the_first_listing_of_a_local_dir_get_its_files(tmp_path, monkeypatch) -> None:
    folder = tmp_path / "wheels"
    folder.mkdir()
    wheel = make_wheel("acme-app", "1.0")
    (folder / wheel.filename).write_bytes(wheel.content)
    real_listing = wheel_folders.listing
    monkeypatch.setattr(wheel_folders, "listing", lambda path: time.sleep(0.2) or real_listing(path))  # a slow disk
    local = LocalIndex(None, (str(folder),), clock=lambda: 1000.0)
    pages = []
    threads = [threading.Thread(target=lambda: pages.append(local.page(ACME))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert len(pages) == 2 and all(page is not None for page in pages)
