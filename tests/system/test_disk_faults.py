"""The cache dir on a bad day: a write to the journal or the ledger failing (ENOSPC,
EIO), a really full disk (a small tmpfs, where mounting is allowed), a broken ledger
for ``verify`` to catch. Clients always get whole files; the bookkeeping stays whole
and agrees with the disk once the disk takes writes again."""

from __future__ import annotations

import contextlib
import errno
import glob
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from proxpi_min.cli.verify import run_verify
from proxpi_min.files import accounting
from proxpi_min.files import ledger as ledger_module
from proxpi_min.files.ledger import JournalEntry, Ledger
from proxpi_min.index.page_store import URL_FILE
from tests.support.proxy import REPO_ROOT, assert_healthy, http, proxy_env
from tests.support.uploads import basic_auth, encode_form, twine_fields
from tests.support.cache_dir import (
    file_path, files_tree, settled, sized_wheel, stored_content, stored_paths, wait_until,
)


def verify(cache_dir, *args: str) -> tuple:
    out = io.StringIO()
    code = run_verify(str(cache_dir), repair="--repair" in args, out=out, err=io.StringIO())
    return code, out.getvalue()


def journal_lines(cache_dir) -> list:
    data = (Path(cache_dir) / "files" / ".journal").read_bytes()
    assert data == b"" or data.endswith(b"\n"), data[-80:]
    return data.decode().splitlines()


def assert_bookkeeping_agrees(cache_dir) -> None:
    """The ledger's total and the journal's files are the disk's (what verify checks)."""
    code, out = verify(cache_dir)
    assert code == 0 and "0 bad" in out, out
    on_disk = {path: size for path, size in files_tree(cache_dir).items()}
    record = Ledger(os.path.join(cache_dir, "files")).read()
    assert (record.used, record.count) == (sum(on_disk.values()), len(on_disk))


def _fd_name(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


@pytest.fixture
def faults(monkeypatch) -> Iterator[dict]:
    """The seam: ``os.write`` and ``os.pwrite``, as the ledger module calls them, fail
    while ``faults[name]`` is set to an errno, for ``.journal`` (its write lands half
    its bytes first, as a disk filling up mid-write does), ``.ledger`` (the total, at
    offset 0) or ``reservations`` (the ledger past its record). Every other write goes
    through: the fault is the ledger's alone."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to tell the ledger's writes apart")
    set_faults: dict = {}
    real_write, real_pwrite = os.write, os.pwrite

    def write(fd, data):
        code = set_faults.get(".journal")
        if code and _fd_name(fd).endswith("/.journal"):
            real_write(fd, bytes(data)[: len(data) // 2])
            raise OSError(code, os.strerror(code))
        return real_write(fd, data)

    def pwrite(fd, data, offset):
        code = set_faults.get(".ledger" if offset == 0 else "reservations")
        if code and _fd_name(fd).endswith("/.ledger"):
            raise OSError(code, os.strerror(code))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(ledger_module.os, "write", write)
    monkeypatch.setattr(ledger_module.os, "pwrite", pwrite)
    yield set_faults


def get_whole(p, dist) -> None:
    """GET *dist* through *p*: a whole, right file, whatever the disk did; its download over."""
    result = p.get(file_path(dist))
    assert result.status == 200 and result.body == dist.content
    assert settled(p.settings.cache_dir)


def wheels_stored(proxy, upstream_factory, name: str, count: int, stored: int) -> tuple:
    """(a running proxy, its cache dir, *count* wheels it lists, the first *stored* of
    them fetched and stored)."""
    wheels = tuple(sized_wheel(f"{name}{n}", "1.0", 20_000) for n in range(count))
    up = upstream_factory("json", None)
    for dist in wheels:
        up.add(dist)
    p = proxy(up)
    for dist in wheels[:stored]:
        assert p.get(file_path(dist)).body == dist.content
        assert wait_until(lambda: stored_content(p.settings.cache_dir, dist.filename))
    return p, p.settings.cache_dir, wheels


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO], ids=["ENOSPC", "EIO"])
def test_a_failed_journal_append_leaves_whole_records_and_the_client_a_whole_file(
    proxy, upstream_factory, faults, caplog, code
):
    p, cache_dir, (_, second, third) = wheels_stored(proxy, upstream_factory, "journal", 3, 1)

    faults[".journal"] = code
    with caplog.at_level("WARNING"):
        get_whole(p, second)
    assert "cannot update the cache size ledger" in caplog.text
    # Not recorded, so not stored: a file the ledger does not know would escape the cap.
    assert stored_content(cache_dir, second.filename) is None
    assert all(line.startswith(("+ ", "- ")) for line in journal_lines(cache_dir))
    assert_bookkeeping_agrees(cache_dir)

    faults.clear()  # the disk takes writes again
    for dist in (second, third):
        assert p.get(file_path(dist)).body == dist.content
        assert wait_until(lambda: stored_content(cache_dir, dist.filename))
    assert_bookkeeping_agrees(cache_dir)
    assert "malformed" not in caplog.text


def test_a_failed_ledger_write_is_recounted_from_the_disk(proxy, upstream_factory, faults):
    p, cache_dir, (_, second, third) = wheels_stored(proxy, upstream_factory, "record", 3, 1)

    faults[".ledger"] = errno.EIO  # the journal takes the record, the total does not
    get_whole(p, second)
    faults.clear()
    assert p.get(file_path(third)).body == third.content
    assert wait_until(lambda: stored_content(cache_dir, third.filename))
    assert settled(cache_dir)
    assert_bookkeeping_agrees(cache_dir)
    assert p.get("/").status == 200


def test_a_reservation_that_cannot_be_written_passes_the_file_through(proxy, upstream_factory, faults, caplog):
    p, cache_dir, (_, second, _) = wheels_stored(proxy, upstream_factory, "reserve", 3, 1)
    faults["reservations"] = errno.ENOSPC  # the ledger cannot grow to hold one more
    with caplog.at_level("WARNING"):
        get_whole(p, second)
    assert "cannot reserve room for" in caplog.text
    assert stored_content(cache_dir, second.filename) is None
    faults.clear()
    assert p.get(file_path(second)).body == second.content
    assert wait_until(lambda: stored_content(cache_dir, second.filename))
    assert_bookkeeping_agrees(cache_dir)


def test_a_torn_journal_line_is_skipped_and_reported_once(tmp_path, caplog):
    ledger = Ledger(str(tmp_path))
    (tmp_path / ".journal").write_bytes(b"+ 10 1.000 a/b/c.whl\n+ 20 2.0")  # a crash mid-append
    with caplog.at_level("WARNING"), ledger.locked() as handle:
        handle.append([JournalEntry("d/e/f.whl", 30, 3.0)], None)
        handle.append([JournalEntry("a/b/c.whl")], None)
        for _ in range(2):
            entries = handle.changes(None)[0]
            assert entries == [JournalEntry("a/b/c.whl", 10, 1.0), JournalEntry("d/e/f.whl", 30, 3.0),
                               JournalEntry("a/b/c.whl")]
    assert caplog.text.count("skipping 1 malformed lines") == 1, caplog.text
    ledger.close()


def test_verify_catches_a_broken_ledger_and_repair_rebuilds_it(proxy, upstream_factory):
    p, cache_dir, dists = wheels_stored(proxy, upstream_factory, "counted", 2, 2)
    p.stop()
    assert_bookkeeping_agrees(cache_dir)

    files = Path(cache_dir) / "files"
    with Ledger(str(files)).locked() as handle:  # one file short, as a torn append left it
        handle.write(handle.record.used - dists[0].size, handle.record.count - 1)
    with open(files / ".journal", "ab") as journal:
        journal.write(b"+ 99 1.000 gone/sha256-00/gone-1.0-py3-none-any.whl\n")
    code, out = verify(cache_dir)
    assert code == 1, out
    assert f"bad: {files / '.ledger'}: records 1 files" in out
    assert f"bad: {files / '.journal'}: 0 files on disk missing, 1 listed but gone" in out

    code, out = verify(cache_dir, "--repair")
    assert code == 1 and "rewrote the ledger and journal" in out, out
    assert_bookkeeping_agrees(cache_dir)
    assert all(stored_content(cache_dir, dist.filename) == dist.content for dist in dists)


# -- a really full disk ------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=10)


def fill(disk: Path) -> Path:
    """Fill *disk* to its last block; returns the file that does."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    with contextlib.suppress(OSError):
        while os.write(fd, b"\0" * 4096):
            pass
    os.close(fd)
    return filler


def test_full_tmpfs_passes_files_through_then_stores_them_once_space_returns(proxy, upstream_factory, tmp_path):
    big = sized_wheel("fills", "1.0", 200_000)
    small = sized_wheel("fits", "1.0", 5_000)
    up = upstream_factory("json", None).add(big).add(small)
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        cache_dir = disk / "cache"
        p = proxy(up, cache_dir=str(cache_dir))
        assert p.get(file_path(small)).body == small.content
        assert wait_until(lambda: stored_content(cache_dir, small.filename))
        filler = fill(disk)
        for _ in range(2):
            result = p.get(file_path(big))
            assert result.status == 200 and result.body == big.content
            assert settled(cache_dir)
        assert stored_content(cache_dir, big.filename) is None
        journal_lines(cache_dir)  # whole lines only
        assert_bookkeeping_agrees(cache_dir)

        filler.unlink()  # space returns
        assert p.get(file_path(big)).body == big.content
        assert wait_until(lambda: stored_content(cache_dir, big.filename)) == big.content
        assert_bookkeeping_agrees(cache_dir)
        p.stop()


def test_metadata_from_an_index_that_ignores_ranges_is_read_in_memory_when_the_disk_is_full(
    proxy, upstream_factory, tmp_path, caplog
):
    """The wheel must be read whole for its METADATA, and neither the cache nor a spool
    beside it can take it: it is read in memory (pages advertise the metadata, and pip
    fails on an error for it), never a 500."""
    tiny, large = sized_wheel("tinyone", "1.0", 3_000), sized_wheel("largeone", "1.0", 300_000)
    up = upstream_factory("html", None).add(tiny, metadata=False).add(large, metadata=False)
    up.honour_ranges = False
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        cache_dir = disk / "cache"
        p = proxy(up, cache_dir=str(cache_dir))
        assert p.get("/index/").status == 200
        filler = fill(disk)
        for dist in (tiny, large):
            answer = p.get(file_path(dist) + ".metadata")
            assert (answer.status, answer.body) == (200, dist.metadata), answer.text[:300]
        assert "cannot spool it" in caplog.text
        assert settled(cache_dir)
        assert_healthy(p)
        p.stop()


def stored_by_a_stopped_proxy(proxy, up, dist, disk: Path) -> Path:
    """The cache dir on *disk* where a proxy, stopped since, stored *dist*."""
    cache_dir = disk / "cache"
    p = proxy(up, cache_dir=str(cache_dir))
    assert p.get(file_path(dist)).body == dist.content
    assert wait_until(lambda: stored_content(cache_dir, dist.filename))
    p.stop()
    return cache_dir


def read_only(disk: Path) -> None:
    done = subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr


def test_verify_of_a_cache_dir_on_read_only_media_reads_its_ledger(proxy, upstream_factory, tmp_path):
    dist = sized_wheel("kept", "1.0", 5_000)
    up = upstream_factory("json", None).add(dist)
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        cache_dir = stored_by_a_stopped_proxy(proxy, up, dist, disk)
        read_only(disk)
        code, out = verify(cache_dir)
        assert code == 0 and "0 bad" in out, out


def test_a_disk_other_data_filled_has_cached_files_make_room_for_a_new_one(proxy, upstream_factory, tmp_path):
    """Another program fills the disk to its last block: a new file is stored in place
    of the least recently used cached ones (it could not even get its lock file written)."""
    cached = [sized_wheel(f"older{n}", "1.0", 200_000) for n in range(3)]
    new = sized_wheel("newer", "1.0", 100_000)
    up = upstream_factory("json", None).add(new)
    for dist in cached:
        up.add(dist)
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        cache_dir = disk / "cache"
        p = proxy(up, cache_dir=str(cache_dir))
        for dist in cached:
            assert p.get(file_path(dist)).body == dist.content
            assert wait_until(lambda: stored_content(cache_dir, dist.filename))
        fill(disk)
        assert p.get(file_path(new)).body == new.content
        assert wait_until(lambda: stored_content(cache_dir, new.filename)) == new.content
        assert stored_content(cache_dir, cached[0].filename) is None  # the least recently used made room
        assert settled(cache_dir)
        assert_bookkeeping_agrees(cache_dir)
        p.stop()


def test_a_cap_larger_than_the_disk_evicts_to_make_room_on_it(proxy, upstream_factory, tmp_path, caplog):
    """Once the disk is full, a new file is stored in place of the least recently used
    ones, as under the cap; it was passed through, and nothing stored again, for good."""
    wheels = [sized_wheel(f"roomy{n}", "1.0", 250_000) for n in range(6)]
    up = upstream_factory("json", None)
    for dist in wheels:
        up.add(dist)
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        cache_dir = disk / "cache"
        p = proxy(up, cache_dir=str(cache_dir), cache_size=100 << 20)
        assert "is more than the disk of" in caplog.text
        for dist in wheels:
            assert p.get(file_path(dist)).body == dist.content
            assert wait_until(lambda: stored_content(cache_dir, dist.filename)) == dist.content, dist.filename
        assert stored_content(cache_dir, wheels[0].filename) is None  # the oldest made room
        assert settled(cache_dir)
        assert_bookkeeping_agrees(cache_dir)
        p.stop()


@pytest.mark.parametrize("short_by", [100, 20_000], ids=["a-little", "a-chunk"])
def test_a_wheel_spooled_for_its_metadata_onto_a_disk_that_fills_up_midway_is_read_whole(
    proxy, upstream_factory, tmp_path, short_by
):
    """The disk takes part of a chunk, then no more: the spool is never read cut short
    (a broken wheel remembered for good), the wheel is read in memory instead."""
    wheel = sized_wheel("spilled", "1.0", 1_500_000)
    up = upstream_factory("html", None).add(wheel, metadata=False)
    up.honour_ranges = False
    with small_tmpfs(tmp_path / "disk", "4m") as disk:
        p = proxy(up, cache_dir=str(disk / "cache"), cache_size=0)  # spooled beside the cache
        assert p.get("/index/spilled/").status == 200
        assert wait_until(lambda: glob.glob(str(disk / "cache" / "index" / "*" / "spilled.json")))
        room = os.statvfs(disk)
        with open(disk / "filler", "wb") as filler:
            filler.write(b"\0" * (room.f_bavail * room.f_frsize - (wheel.size - short_by)))
        answer = p.get(f"/index/spilled/{wheel.filename}.metadata")
        assert (answer.status, answer.body) == (200, wheel.metadata), answer.text[:300]
        p.stop()


def test_an_emptied_file_on_a_read_only_disk_is_a_miss_not_a_500(proxy, upstream_factory, tmp_path):
    dist = sized_wheel("emptied", "1.0", 5_000)
    up = upstream_factory("html", None).add(dist)  # a hash, no size
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        cache_dir = stored_by_a_stopped_proxy(proxy, up, dist, disk)
        with open(stored_paths(cache_dir, dist.filename)[0], "r+b") as file:
            file.truncate(0)  # a crash before the write-back
        read_only(disk)
        again = proxy(up, cache_dir=str(cache_dir), offline=True)  # a copy on read-only media
        assert again.get(file_path(dist)).status == 404  # not served empty, and not a 500
        assert_healthy(again)
        again.stop()


# -- a cache dir lost while serving ------------------------------------------------


def test_an_upload_to_a_full_disk_is_a_507_and_one_after_the_cache_dir_is_removed_is_stored(
    proxy, upstream_factory, tmp_path
):
    token = "s3cret-token"
    wheels = [sized_wheel(f"upped{n}", "1.0", size) for n, size in enumerate((300_000, 3_000, 3_000))]
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        cache_dir = disk / "cache"
        p = proxy(upstream_factory("json", None), cache_dir=str(cache_dir), upload_token=token)
        fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
        with contextlib.suppress(OSError):  # fill the disk to its last block
            while os.write(fd, b"\0" * 4096):
                pass
        os.close(fd)
        full = _upload(p, wheels[0], token)
        assert full.status == 507 and b"No space left on device" in full.body, full
        os.remove(disk / "filler")
        shutil.rmtree(cache_dir)
        for wheel in wheels[1:]:  # the local index's folder is made again
            assert _upload(p, wheel, token).status == 200
            assert p.get(f"/index/{wheel.normalized}/{wheel.filename}").body == wheel.content
        assert_healthy(p)


def _upload(p, dist, token: str):
    content_type, body = encode_form(twine_fields(dist), dist.filename, dist.content)
    headers = {"Content-Type": content_type, "Authorization": basic_auth(token)}
    return http("POST", p.url + "/upload/", headers, body)


def file_cache_status(p) -> tuple:
    status = json.loads(p.get("/", {"Accept": "application/json"}).body)["file_cache"]
    return status["used_bytes"], status["files"]


def disk_status(cache_dir) -> tuple:
    on_disk = files_tree(cache_dir)
    return sum(on_disk.values()), len(on_disk)


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_cache_dir_deleted_or_replaced_while_serving_is_noticed(proxy, upstream_factory, monkeypatch, caplog, how):
    monkeypatch.setattr(accounting, "ROOT_CHECK_INTERVAL", 0.0)  # checked at every look, not once a second
    p, cache_dir, chosen = wheels_stored(proxy, upstream_factory, "vanish", 3, 2)
    assert file_cache_status(p) == disk_status(cache_dir)
    kept = stored_paths(cache_dir, chosen[0].filename)[0]

    shutil.rmtree(cache_dir)
    if how == "replaced":  # a restore from a backup holding one of the two files
        os.makedirs(os.path.dirname(kept))
        Path(kept).write_bytes(chosen[0].content)
    with caplog.at_level("ERROR"):
        assert file_cache_status(p) == disk_status(cache_dir) == ((chosen[0].size, 1) if how == "replaced" else (0, 0))
        assert file_cache_status(p) == disk_status(cache_dir)
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and cache_dir in errors[0] and "deleted or replaced" in errors[0], errors

    for dist in chosen:  # served, stored again where missing, counted
        assert p.get(file_path(dist)).body == dist.content
        assert wait_until(lambda: stored_content(cache_dir, dist.filename))
    assert settled(cache_dir)
    assert file_cache_status(p) == disk_status(cache_dir) == (sum(d.size for d in chosen), 3)
    assert_bookkeeping_agrees(cache_dir)
    # The page first fetched since is saved with its index's URL beside it (what verify
    # and an offline start match saved pages by).
    saved = wait_until(lambda: glob.glob(os.path.join(cache_dir, "index", "*", f"{chosen[2].normalized}.json")))
    assert os.path.exists(os.path.join(os.path.dirname(saved[0]), URL_FILE))


def test_a_cache_dir_turned_into_a_file_while_serving_leaves_the_status_pages_up(
    proxy, upstream_factory, monkeypatch, caplog
):
    monkeypatch.setattr(accounting, "ROOT_CHECK_INTERVAL", 0.0)
    p, cache_dir, chosen = wheels_stored(proxy, upstream_factory, "flat", 2, 2)
    shutil.rmtree(cache_dir)
    Path(cache_dir).write_text("a file where the cache dir was")
    with caplog.at_level("ERROR"):
        assert p.get("/metrics").status == 200
        assert p.get("/", {"Accept": "application/json"}).status == 200
    assert any(cache_dir in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
    assert p.get(file_path(chosen[0])).body == chosen[0].content  # passed through


@pytest.mark.parametrize("given", ["missing", "none"])
def test_offline_without_its_cache_dir_stops_the_start(tmp_path, given):
    """Offline, the cache dir is all there is: a typo or a disk not mounted must not
    start a proxy that answers 404 to everything."""
    flags = ["--cache-dir", str(tmp_path / "typo-dir")] if given == "missing" else []
    for check in ([], ["--check-config"]):
        done = subprocess.run(
            [sys.executable, "-m", "proxpi_min", "--port", "0", "--offline", *flags, *check],
            capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, env=proxy_env(),
        )
        assert done.returncode == 2, done
        assert "--offline serves what a cache dir holds" in done.stderr
    assert not (tmp_path / "typo-dir").exists()


def test_a_cache_dir_that_cannot_hold_files_exits_2_with_one_line(tmp_path):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    (cache_dir / "files").write_text("a file where the file cache's folder should be")
    done = subprocess.run(
        [sys.executable, "-m", "proxpi_min", "--port", "0", "--index-url", "http://127.0.0.1:9/simple/",
         "--cache-dir", str(cache_dir)],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, env=proxy_env(),
    )
    assert done.returncode == 2, done
    assert done.stderr.strip() == f"proxpi-min: error: --cache-dir={str(cache_dir)!r} cannot be made (File exists)"


def test_an_upload_evicts_cached_files_where_the_disk_has_no_room_for_it(proxy, upstream_factory, tmp_path):
    """Cached files can be fetched again, an upload is the only copy: on a disk the
    cache filled, the least recently used cached files make room for it."""
    cached = [sized_wheel(f"cached{n}", "1.0", 1_300_000) for n in range(3)]  # about 1 MB each
    private = sized_wheel("private", "1.0", 1_700_000)
    up = upstream_factory("json", None)
    for dist in cached:
        up.add(dist)
    with small_tmpfs(tmp_path / "disk", "4m") as disk:
        cache_dir = disk / "cache"
        p = proxy(up, cache_dir=str(cache_dir), upload_token="t0ken")
        for dist in cached:
            assert p.get(file_path(dist)).body == dist.content
            assert wait_until(lambda: stored_content(cache_dir, dist.filename))
        assert os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize < len(private.content)
        content_type, body = encode_form(twine_fields(private), private.filename, private.content)
        answer = http("POST", p.url + "/upload/", {"Content-Type": content_type, "Authorization": basic_auth("t0ken")},
                      body, timeout=30)
        assert answer.status == 200, answer.body
        assert p.get(file_path(private)).body == private.content
        assert stored_content(cache_dir, cached[0].filename) is None  # the least recently used went
        assert settled(cache_dir)
        assert_bookkeeping_agrees(cache_dir)
        p.stop()
