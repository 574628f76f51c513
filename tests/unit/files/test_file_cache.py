"""FileCache.ensure (storing a file without a client), following another process's
download, over a file: upstream: no network; and what a cache finds in its dir at start."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from proxpi_min.core.errors import IntegrityError, NotFound
from proxpi_min.files import liveness
from proxpi_min.files import file_cache as file_cache_module
from proxpi_min.files.file_cache import FileCache
from proxpi_min.files.layout import Target
from proxpi_min.files.ledger import Ledger
from proxpi_min.infra.atomic import LockFile, lock_path, temp_path
from proxpi_min.core.simple import FileEntry
from proxpi_min.index.upstream import Upstream
from tests.support.cache_dir import wait_until
from tests.support.writers import writing

DATA = b"wheel bytes " * 1000


class CountingUpstream(Upstream):
    """Counts file opens; the first waits for *gate*, so that others can join it."""

    def __init__(self) -> None:
        super().__init__(1.0, 1.0)
        self.opened = 0
        self.gate = threading.Event()
        self.gate.set()

    def open_file(self, url, method="GET", byte_range=None, deadline=None):
        self.opened += 1
        self.gate.wait(5)
        return super().open_file(url, method, byte_range, deadline)


@pytest.fixture
def source(tmp_path) -> FileEntry:
    path = tmp_path / "a-1.0-py3-none-any.whl"
    path.write_bytes(DATA)
    return FileEntry(path.name, path.as_uri(), (("sha256", hashlib.sha256(DATA).hexdigest()),), size=len(DATA))


def test_FileCache_ensure_stores_once(tmp_path, source) -> None:
    upstream = CountingUpstream()
    cache = FileCache(str(tmp_path / "files"), 10**6, upstream)
    upstream.gate.clear()
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.ensure("a", source))) for _ in range(3)]
    for thread in threads:
        thread.start()
    upstream.gate.set()
    for thread in threads:
        thread.join(10)
    assert results == [True, True, True]
    assert upstream.opened == 1
    stored = tmp_path / "files" / "a" / f"sha256-{source.hashes[0][1]}" / source.filename
    assert stored.read_bytes() == DATA
    assert cache.ensure("a", source) is True and upstream.opened == 1  # already cached


def test_FileCache_ensure_bad_bytes_raise_and_store_nothing(tmp_path, source) -> None:
    cache = FileCache(str(tmp_path / "files"), 10**6, CountingUpstream())
    with pytest.raises(IntegrityError):
        cache.ensure("a", source._replace(hashes=(("sha256", "0" * 64),)))
    # Only the bookkeeping every cache dir has (ledger, journal, lock files) is left.
    assert [p for p in Path(tmp_path / "files").rglob("*") if p.is_file() and not p.name.startswith(".")] == []


def test_FileCache_ensure_false_when_it_cannot_store(tmp_path, source) -> None:
    assert FileCache(str(tmp_path / "small"), len(DATA) - 1, CountingUpstream()).ensure("a", source) is False
    assert FileCache(str(tmp_path / "off"), 0, CountingUpstream()).ensure("a", source) is False


def test_FileCache_ensure_offline_is_not_found(tmp_path, source) -> None:
    with pytest.raises(NotFound):
        FileCache(str(tmp_path / "files"), 10**6, CountingUpstream(), offline=True).ensure("a", source)


def test_follower_never_takes_a_short_length_record_for_the_whole_file(tmp_path, source) -> None:
    """Another process's record of the length is read without its lock (on NFS it may
    be torn). For a file the index gives no hash for, the follower checks the stored
    file's own size, so a client is cut short instead of sent a short file as whole."""
    entry = source._replace(hashes=(), size=None)  # nothing to check the bytes against
    cache = FileCache(str(tmp_path / "files"), 10**6, CountingUpstream())
    final = os.path.join(cache.root, "a", "unverified", entry.filename)
    os.makedirs(os.path.dirname(final))
    lock = LockFile(lock_path(final))  # this test is the other process, writing the file
    assert lock.acquire(wait=False)
    temp = temp_path(os.path.dirname(final))
    with open(temp, "wb") as file:
        file.write(DATA)
    lock.record(f"{os.path.basename(temp)} {len(DATA) // 2}")  # as if torn: half the length
    body = cache.open("a", entry)
    os.replace(temp, final)
    lock.release()
    ours, theirs = socket.socketpair()
    with ours, theirs:
        with pytest.raises(IntegrityError):
            body.send(ours, b"", chunked=False)
    body.close()


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def test_bad_bytes_never_go_out_whole_however_soon_they_are_checked(tmp_path, source) -> None:
    """A hash mismatch holds back the last byte: the client is cut short."""
    cache = FileCache(str(tmp_path / "files"), 10**6, CountingUpstream())
    body = cache.open("a", source._replace(hashes=(("sha256", "0" * 64),)))
    ours, theirs = socket.socketpair()
    with ours, theirs:
        with pytest.raises(IntegrityError):
            body.send(ours, b"", chunked=False)
        ours.shutdown(socket.SHUT_WR)
        assert len(_read_exactly(theirs, len(DATA))) < len(DATA)
    body.close()


def _temp_files(root) -> list:
    return [p.name for p in Path(root).rglob(".tmp-*")]


def _sent(body) -> bytes:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        body.send(ours, b"", chunked=False)
        ours.shutdown(socket.SHUT_WR)
        return _read_exactly(theirs, len(DATA) + 1)


def test_FileCache_spools_one_file_over_the_cap_until_its_last_reader_is_done(tmp_path, source) -> None:
    """A file over the cap is downloaded once into a temp file its readers share, kept
    until the last of them is done; meanwhile another such file is not spooled too."""
    other_path = tmp_path / "b-1.0-py3-none-any.whl"
    other_path.write_bytes(DATA)
    other = source._replace(filename=other_path.name, url=other_path.as_uri())
    root = tmp_path / "files"
    cache = FileCache(str(root), len(DATA) // 2, CountingUpstream())
    cache.upstream.gate.clear()
    opened: list = []
    readers = [threading.Thread(target=lambda: opened.append(cache.open("a", source))) for _ in range(2)]
    for reader in readers:
        reader.start()
    assert _wait(lambda: [d.clients for d in cache._downloads.values()] == [2]), "the second did not join"
    cache.upstream.gate.set()
    for reader in readers:
        reader.join(5)
    first, second = opened
    assert cache.upstream.opened == 1
    assert _wait(lambda: cache.downloads_in_progress() == 0)
    assert len(_temp_files(root)) == 1, "the spool went before its readers were done"
    passed = cache.open("b", other)  # over the cap too, while the spool is in use
    assert _wait(lambda: cache.downloads_in_progress() == 0)
    assert len(_temp_files(root)) == 1, "a second file spooled beyond the cap"
    assert _sent(passed) == DATA
    passed.close()
    assert _sent(first) == DATA
    first.close()
    assert len(_temp_files(root)) == 1
    assert _sent(second) == DATA
    second.close()
    assert _temp_files(root) == []
    assert [p.name for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")] == []
    cache.close()


def test_FileCache_ensure_fetches_nothing_that_has_no_room_and_no_client(tmp_path, source) -> None:
    """warm and prefetch store files: one with no room beside a download in flight is
    not fetched (a spool is for clients, and there are none), nor held in the spool."""
    other_path = tmp_path / "b-1.0-py3-none-any.whl"
    other_path.write_bytes(DATA)
    other = source._replace(filename=other_path.name, url=other_path.as_uri())
    upstream = CountingUpstream()
    cache = FileCache(str(tmp_path / "files"), len(DATA) * 3 // 2, upstream)
    upstream.gate.clear()
    results = {}
    first = threading.Thread(target=lambda: results.setdefault("a", cache.ensure("a", source)))
    first.start()
    assert _wait(lambda: upstream.opened == 1)
    results["b"] = cache.ensure("b", other)  # while a's download holds the room
    upstream.gate.set()
    first.join(10)
    assert results == {"a": True, "b": False}
    assert upstream.opened == 1
    assert LockFile(lock_path(str(tmp_path / "files" / "spool"))).acquire(wait=False)  # no spool held


def _wait(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_FileCache_walks_the_dir_only_when_no_other_process_uses_it(tmp_path) -> None:
    root = tmp_path / "files"
    first = FileCache(str(root), 10_000, upstream=None)
    unrecorded = root / "p" / "sha256-ab" / "p-1.0-py3-none-any.whl"
    unrecorded.parent.mkdir(parents=True)
    unrecorded.write_bytes(b"x" * 100)  # put there by hand: no journal line
    second = FileCache(str(root), 10_000, upstream=None)
    assert (list(second._accounting.files), second.stats()) == ([], (0, 0)), "the second walked the directory"
    first.close()
    second.close()
    third = FileCache(str(root), 10_000, upstream=None)
    assert (list(third._accounting.files), third.stats()) == ([str(unrecorded)], (100, 1))
    third.close()


def test_FileCache_largest_files_include_what_another_process_stored_and_evicted(tmp_path, source) -> None:
    # Two caches on one directory, each with its own ledger lock: two processes (workers).
    root = str(tmp_path / "files")
    storing, asked = FileCache(root, len(DATA) + 10, Upstream(1.0, 1.0)), FileCache(root, len(DATA) + 10, upstream=None)
    try:
        assert storing.ensure("a", source) is True
        assert asked.largest(10) == [("a", source.filename, len(DATA))]
        other = tmp_path / "b-1.0-py3-none-any.whl"
        other.write_bytes(DATA)
        entry = FileEntry(other.name, other.as_uri(), (("sha256", hashlib.sha256(DATA).hexdigest()),), size=len(DATA))
        assert storing.ensure("b", entry) is True  # evicts a: both do not fit
        assert asked.largest(10) == [("b", other.name, len(DATA))]
    finally:
        storing.close()
        asked.close()


@pytest.mark.parametrize("offline_cap", [0, len(DATA) // 2])
def test_FileCache_offline_never_evicts_what_was_warmed(tmp_path, source, offline_cap) -> None:
    root = str(tmp_path / "files")
    warming = FileCache(root, 10 * len(DATA), Upstream(1.0, 1.0))
    assert warming.ensure("a", source) is True
    warming.close()
    stored = tmp_path / "files" / "a" / f"sha256-{source.hashes[0][1]}" / source.filename
    offline = FileCache(root, offline_cap, upstream=None, offline=True)  # a cap smaller than what was warmed
    try:
        assert stored.read_bytes() == DATA and offline.stats() == (len(DATA), 1)
        assert offline.has("a", source, False)
    finally:
        offline.close()
    assert stored.exists()


def test_FileCache_offline_hears_what_warm_stores_beside_it(tmp_path, source, monkeypatch) -> None:
    monkeypatch.setattr(file_cache_module, "OFFLINE_CATCH_UP", 0.0)  # every look reads the journal
    root = str(tmp_path / "files")
    offline = FileCache(root, 10 * len(DATA), upstream=None, offline=True)
    warming = FileCache(root, 10 * len(DATA), Upstream(1.0, 1.0))
    try:
        before = offline.generation
        assert warming.ensure("a", source) is True
        assert offline.generation != before, "offline pages would keep listing the files as they were"
    finally:
        warming.close()
        offline.close()


def test_FileCache_a_download_finishing_after_its_cache_closed_stores_nothing_quietly(tmp_path, source) -> None:
    # warm's Ctrl-C: a download under way outlives the cache it was started for.
    root = str(tmp_path / "files")
    cache = FileCache(root, 10 * len(DATA), Upstream(1.0, 1.0))
    target = Target(root, "a", source, False)
    os.makedirs(os.path.dirname(target.path))
    temp = temp_path(os.path.dirname(target.path))
    Path(temp).write_bytes(DATA)
    cache.close()
    assert cache._accounting.store(target, temp, len(DATA)) is False
    assert not os.path.exists(target.path)


def test_FileCache_counts_stored_files_only(tmp_path) -> None:
    root = tmp_path / "files"
    stored = root / "p" / "sha256-ab" / "p-1.0-py3-none-any.whl"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"x" * 1000)
    (stored.parent / ".lock-p-1.0-py3-none-any.whl").write_text(".tmp-x 1000")
    cache = FileCache(str(root), 10_000, upstream=None)
    try:
        assert cache.stats() == (1000, 1)
        assert list(cache._accounting.files) == [str(stored)]
        # A second process on the directory sees the same total without a walk.
        assert Ledger(str(root)).read().used == 1000
    finally:
        cache.close()


def test_FileCache_in_a_directory_it_cannot_write(tmp_path, monkeypatch) -> None:
    """Offline from read-only media: the stored files are counted, nothing breaks."""
    root = tmp_path / "files"
    stored = root / "p" / "sha256-ab" / "p-1.0-py3-none-any.whl"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"x" * 1000)
    real_open = os.open

    def refusing_open(path, flags, *args):
        if os.path.basename(path).startswith(".") and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise PermissionError(13, "Read-only file system", path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refusing_open)
    monkeypatch.setattr("builtins.open", lambda *a, **k: (_ for _ in ()).throw(PermissionError(13, "ro")))
    cache = FileCache(str(root), 10_000, upstream=None, offline=True)
    try:
        assert cache.stats() == (1000, 1)
        assert not (root / ".ledger").exists()
    finally:
        cache.close()


def _folders(root) -> list:
    # os.walk, not Path.rglob: a sweep in another thread may remove a folder mid-walk.
    return sorted(os.path.relpath(os.path.join(top, name), root) for top, names, _ in os.walk(root) for name in names)


def test_FileCache_eviction_removes_the_folders_it_empties(tmp_path, source) -> None:
    other_path = tmp_path / "b-1.0-py3-none-any.whl"
    other_path.write_bytes(DATA)
    other = source._replace(filename=other_path.name, url=other_path.as_uri())
    root = tmp_path / "files"
    cache = FileCache(str(root), len(DATA) + 10, CountingUpstream())
    try:
        assert cache.ensure("a", source) and cache.ensure("b", other)  # a evicted for b
        assert _folders(root) == ["b", f"b/sha256-{source.hashes[0][1]}"]
    finally:
        cache.close()


def test_FileCache_removes_the_folders_of_a_file_it_deletes(tmp_path, source) -> None:
    """A stored file of the wrong size is deleted (fetched again): its folders go too."""
    root = tmp_path / "files"
    stored = root / "a" / f"sha256-{source.hashes[0][1]}" / source.filename
    stored.parent.mkdir(parents=True)
    stored.write_bytes(DATA[:-1])
    cache = FileCache(str(root), 10**6, CountingUpstream(), offline=True)
    try:
        with pytest.raises(NotFound):
            cache.open("a", source)
        assert _folders(root) == []
    finally:
        cache.close()


def test_FileCache_started_beside_a_live_process_removes_a_killed_writers_leftovers(tmp_path) -> None:
    """A worker restarted after an OOM kill, or a proxy beside another: what the killed
    download left (temp file, lock file, reservation, folders) goes, in the background
    of the start (it walks the whole tree)."""
    root = tmp_path / "files"
    live = FileCache(str(root), 10**6, upstream=None)  # uses the dir: the next is not alone
    target = root / "p" / "sha256-ab" / "p-1.0-py3-none-any.whl"
    writer, temp = writing(str(target))
    with Ledger(str(root)).locked() as ledger:  # its room under the cap, as reserve() holds it
        ledger.reserve({os.path.relpath(temp, root): 1000})
    writer.kill()
    writer.wait(10)
    restarted = FileCache(str(root), 10**6, upstream=None)
    try:
        assert wait_until(lambda: not os.path.exists(temp) and not os.path.exists(lock_path(str(target))))
        assert wait_until(lambda: _folders(root) == [])

        def no_reservation() -> bool:
            with Ledger(str(root)).locked() as ledger:
                return ledger.reservations() == {}

        assert wait_until(no_reservation)
    finally:
        restarted.close()
        live.close()


def test_FileCache_a_miss_does_not_wait_for_another_process_holding_the_directory_lock(tmp_path, source) -> None:
    # Two caches on one directory, each with its own ledger lock: two processes (workers).
    root = str(tmp_path / "files")
    cache, other = FileCache(root, 10 * len(DATA), Upstream(1.0, 1.0)), FileCache(root, 10 * len(DATA), upstream=None)
    try:
        assert cache.ensure("a", source) is True
        unknown = Target(root, "b", FileEntry("b-1.0-py3-none-any.whl", "file:///nowhere/b-1.0-py3-none-any.whl"), False)
        answers: list = []
        with other._accounting._ledger.locked():  # the other process is storing a file
            asking = threading.Thread(target=lambda: answers.append(cache.open_cached(unknown)), daemon=True)
            asking.start()
            asking.join(5)
            assert answers == [None], "a cold miss waited for another process's store"
        # A file this process stored, removed by hand, still leaves the count on its miss.
        stored = Target(root, "a", source, False)
        os.unlink(stored.path)
        assert cache.open_cached(stored) is None
        assert cache.stats() == (0, 0)
    finally:
        cache.close()
        other.close()


@pytest.mark.parametrize("damage", ["removed", "truncated"])
def test_FileCache_a_file_another_process_stored_then_damaged_is_counted_once_when_fetched_again(
    tmp_path, source, damage
) -> None:
    # Two caches on one directory, each with its own ledger lock: two processes (workers).
    root = str(tmp_path / "files")
    here, other = FileCache(root, 10 * len(DATA), Upstream(1.0, 1.0)), FileCache(root, 10 * len(DATA), Upstream(1.0, 1.0))
    try:
        assert other.ensure("a", source) is True
        target = Target(root, "a", source, False)
        if damage == "removed":  # by hand, or a temp cleaner
            os.unlink(target.path)
        else:
            os.truncate(target.path, 10)
        assert here.open_cached(target) is None
        assert here.ensure("a", source) is True
        with open(target.path, "rb") as file:
            assert file.read() == DATA
        assert here.stats() == (len(DATA), 1)
    finally:
        here.close()
        other.close()


def test_FileCache_a_closing_follower_leaves_the_writers_lock_file(tmp_path, source) -> None:
    # Two caches on one directory (two processes): the first writes the file, the
    # second's client follows that download; the second closing (a worker stopping)
    # must not remove the lock the first still holds, or a third would fetch it again.
    root = str(tmp_path / "files")
    slow = CountingUpstream()
    slow.gate.clear()
    writer, follower = FileCache(root, 10 * len(DATA), slow), FileCache(root, 10 * len(DATA), Upstream(1.0, 1.0))
    target = Target(root, "a", source, False)
    lock = lock_path(target.path)
    try:
        storing = threading.Thread(target=writer.ensure, args=("a", source), daemon=True)
        storing.start()
        assert wait_until(lambda: os.path.exists(lock))
        following = threading.Thread(target=lambda: follower.open("a", source).close(), daemon=True)
        following.start()
        assert wait_until(lambda: follower.downloads_in_progress() == 1)
        follower.close()
        assert os.path.exists(lock), "the follower removed the writer's lock file"
        slow.gate.set()
        storing.join(10)
        with open(target.path, "rb") as file:
            assert file.read() == DATA
        assert slow.opened == 1
    finally:
        slow.gate.set()
        writer.close()


def test_FileCache_a_stalled_writer_is_followed_again_once_it_moves(tmp_path, source) -> None:
    """This test is the other process: its download stands still (frozen) with the lock
    held, so the cache passes the file through; once it writes again, the next client
    follows it (one upstream fetch for the fleet again)."""
    upstream = CountingUpstream()
    cache = FileCache(str(tmp_path / "files"), 10**6, upstream, stall_after=0.5)
    final = Target(cache.root, "a", source, False).path
    os.makedirs(os.path.dirname(final))
    lock = LockFile(lock_path(final))
    assert lock.acquire(wait=False)
    temp = temp_path(os.path.dirname(final))
    with open(temp, "wb") as file:
        file.write(DATA[:100])
    lock.record(f"{os.path.basename(temp)} {len(DATA)}")
    try:
        assert cache.ensure("a", source) is False  # waited the 0.5 s, then gave up on it
        assert upstream.opened == 0
        cache.open("a", source).close()  # passed through at once
        assert upstream.opened == 1
        with open(temp, "ab") as file:  # it moves again
            file.write(DATA[100:200])
        results = []
        following = threading.Thread(target=lambda: results.append(cache.ensure("a", source)))
        following.start()
        assert wait_until(lambda: cache.downloads_in_progress() == 1)
        with open(temp, "ab") as file:
            file.write(DATA[200:])
        os.replace(temp, final)
        lock.release()
        following.join(10)
        assert results == [True]
        assert upstream.opened == 1, "a moving writer's file was fetched, not followed"
    finally:
        lock.release()
        cache.close()


def test_FileCache_a_writer_waiting_on_upstream_is_alive_by_its_heartbeat(tmp_path, source, monkeypatch) -> None:
    """Two caches on one directory (two processes): the writer waits on its upstream for
    three times the follower's patience without writing a byte; its heartbeat keeps the
    follower following, so the file is fetched once."""
    monkeypatch.setattr(liveness, "HEARTBEAT", 0.1)
    root = str(tmp_path / "files")
    slow = CountingUpstream()
    slow.gate.clear()
    writer = FileCache(root, 10 * len(DATA), slow)
    follower = FileCache(root, 10 * len(DATA), CountingUpstream(), stall_after=0.5)
    lock = lock_path(Target(root, "a", source, False).path)
    try:
        storing = threading.Thread(target=writer.ensure, args=("a", source), daemon=True)
        storing.start()
        assert wait_until(lambda: os.path.exists(lock))
        results = []
        following = threading.Thread(target=lambda: results.append(follower.ensure("a", source)), daemon=True)
        following.start()
        time.sleep(1.5)
        slow.gate.set()
        storing.join(10)
        following.join(10)
        assert results == [True]
        assert slow.opened == 1
    finally:
        slow.gate.set()
        writer.close()
        follower.close()
