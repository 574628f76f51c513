"""atomic: lock files and the size ledger between real processes (real flock locks),
and the names that walks of the cache dir must tell apart from stored files."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from proxpi_min.files.file_cache import FileCache
from proxpi_min.infra.atomic import (
    JournalEntry,
    Ledger,
    LedgerRecord,
    LockFile,
    is_private,
    lock_path,
    remove_temp_files,
    same_file,
    temp_path,
)
from tests.support.proxy import REPO_ROOT

# A child process that takes a lock file, records TEXT in it, says "held", and lets go
# (cleanly) when its stdin closes; the test may instead kill it.
HOLDER = """
import sys
from proxpi_min.infra.atomic import LockFile
lock = LockFile(sys.argv[1])
assert lock.acquire(wait=False)
lock.record(sys.argv[2])
print("held", flush=True)
sys.stdin.read()
lock.release()
"""

# A child that adds 1 byte and 1 file to the ledger N times, each under the lock.
ADDER = """
import sys
from proxpi_min.infra.atomic import Ledger
ledger = Ledger(sys.argv[1])
for _ in range(int(sys.argv[2])):
    with ledger.locked() as handle:
        handle.write(handle.record.used + 1, handle.record.count + 1)
"""


def child(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=str(REPO_ROOT),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def holding(path: str, record: str = "") -> subprocess.Popen:
    process = child(HOLDER, path, record)
    assert process.stdout.readline() == "held\n"
    return process


def test_is_private_and_lock_path() -> None:
    assert lock_path("/c/files/p/sha256-ab/p-1.0.whl") == "/c/files/p/sha256-ab/.lock-p-1.0.whl"
    for name in (".ledger", ".lock-p-1.0.whl", os.path.basename(temp_path("/c"))):
        assert is_private(name)
    assert not is_private("p-1.0-py3-none-any.whl")


def test_LockFile_held_by_another_process_then_released(tmp_path) -> None:
    path = str(tmp_path / ".lock-x")
    holder = holding(path, ".tmp-a 123")
    try:
        lock = LockFile(path)
        assert not lock.acquire(wait=False)
        assert lock.read_record() == ".tmp-a 123"
    finally:
        holder.stdin.close()
        assert holder.wait(10) == 0
    assert not os.path.exists(path), "a holder that lets go removes its lock file"
    assert lock.acquire(wait=False)
    assert lock.stale == "" and same_file(lock._fd, path)
    lock.release()
    assert not os.path.exists(path)


def test_LockFile_of_a_killed_holder_is_free_and_stale(tmp_path) -> None:
    path = str(tmp_path / ".lock-x")
    holder = holding(path, ".tmp-dead 9")
    holder.kill()
    holder.wait(10)
    lock = LockFile(path)
    assert lock.acquire(wait=False), "the kernel frees a dead holder's lock"
    assert lock.stale == ".tmp-dead 9"
    lock.release()


def test_LockFile_waiter_gets_the_lock_on_the_path_not_the_removed_file(tmp_path) -> None:
    path = str(tmp_path / ".lock-x")
    holder = holding(path)
    lock = LockFile(path)
    got = threading.Event()
    waiter = threading.Thread(target=lambda: lock.acquire(wait=True) and got.set(), daemon=True)
    waiter.start()
    assert not got.wait(0.2)
    holder.stdin.close()
    holder.wait(10)
    waiter.join(10)
    assert got.is_set()
    # The holder removed the file it locked; the waiter holds the one now at the path,
    # so a third party cannot take it too.
    assert same_file(lock._fd, path)
    assert not LockFile(path).acquire(wait=False)
    lock.release()


def test_Ledger_updates_from_two_processes_are_not_lost(tmp_path) -> None:
    adders = [child(ADDER, str(tmp_path), "200") for _ in range(2)]
    for adder in adders:
        adder.stdin.close()
        assert adder.wait(60) == 0
    assert Ledger(str(tmp_path)).read() == LedgerRecord(400, 400, 400)


def test_Ledger_opened_before_fork_still_keeps_the_processes_apart(tmp_path) -> None:
    """A worker forked after the cache was built (inheriting its ledger) must not share
    the parent's lock: updates from both are all counted."""
    ledger = Ledger(str(tmp_path))
    pids = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:  # the child: add 200, one at a time, then leave at once
            code = 1
            try:
                for _ in range(200):
                    with ledger.locked() as handle:
                        record = handle.record
                        os.sched_yield()  # widen the window a shared lock would leave open
                        handle.write(record.used + 1, record.count + 1)
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    for pid in pids:
        assert os.waitpid(pid, 0)[1] == 0
    assert ledger.read()[1:3] == (400, 400)
    ledger.close()


@pytest.mark.parametrize("content", [b"", b"garbage\n", b"proxpi-ledger 1 3 x 4\n"])
def test_Ledger_unreadable_record_reads_as_empty(tmp_path, content) -> None:
    (tmp_path / ".ledger").write_bytes(content)
    ledger = Ledger(str(tmp_path))
    assert ledger.read() == LedgerRecord(0, 0, 0)
    with ledger.locked() as handle:
        assert handle.write(10, 1) == LedgerRecord(1, 10, 1)
    assert ledger.read() == LedgerRecord(1, 10, 1)
    ledger.close()
    with pytest.raises(OSError):
        ledger.read()


# A child that journals one stored file per line of stdin (a path), under the lock.
JOURNALER = """
import sys
from proxpi_min.infra.atomic import JournalEntry, Ledger
ledger = Ledger(sys.argv[1])
for line in sys.stdin:
    with ledger.locked() as handle:
        handle.append([JournalEntry(line.strip(), 7, 1.5)], None)
        handle.write(handle.record.used + 7, handle.record.count + 1)
    print("done", flush=True)
"""


def test_Ledger_journal_shows_each_process_what_the_others_did(tmp_path) -> None:
    ledger = Ledger(str(tmp_path))
    with ledger.locked() as handle:
        position = handle.snapshot([JournalEntry("a/x/a-1.whl", 5, 1.0)], 5, 1)
        entries, position, snapshot = handle.changes(position)
        assert (entries, snapshot) == ([], False)
    other = child(JOURNALER, str(tmp_path))
    other.stdin.write("b/x/b-1.whl\n")
    other.stdin.flush()
    assert other.stdout.readline() == "done\n"
    with ledger.locked() as handle:
        entries, position, snapshot = handle.changes(position)
        assert (entries, snapshot) == ([JournalEntry("b/x/b-1.whl", 7, 1.5)], False)
        assert handle.record[1:3] == (12, 2)
        position = handle.append([JournalEntry("a/x/a-1.whl")], position)
    # A rewrite (new epoch) is read from its start, whatever was read before.
    with ledger.locked() as handle:
        handle.snapshot([JournalEntry("b/x/b-1.whl", 7, 1.5)], 7, 1)
    with ledger.locked() as handle:
        assert handle.changes(position) == ([JournalEntry("b/x/b-1.whl", 7, 1.5)], (handle.record.epoch, len(b"+ 7 1.500 b/x/b-1.whl\n")), True)
    other.stdin.close()
    other.wait(10)
    ledger.close()


def test_Ledger_journal_skips_torn_and_foreign_lines(tmp_path) -> None:
    (tmp_path / ".journal").write_bytes(
        b"+ 5 1.0 a/x/a-1.whl\n+ 5 1.0 ../../etc/passwd\n+ 5 1.0 /etc/passwd\n? what\n+ x 1 a\n- a/x/a-1.whl\n+ 9 1.0 b/x/b"
    )
    ledger = Ledger(str(tmp_path))
    with ledger.locked() as handle:
        entries, position, _ = handle.changes(None)
    assert entries == [JournalEntry("a/x/a-1.whl", 5, 1.0), JournalEntry("a/x/a-1.whl")]
    assert position[1] == len((tmp_path / ".journal").read_bytes()) - len(b"+ 9 1.0 b/x/b")
    ledger.close()


def test_start_sweep_removes_free_lock_files_only(tmp_path) -> None:
    held, dead = str(tmp_path / ".lock-held"), str(tmp_path / ".lock-dead")
    Path(dead).write_text(".tmp-gone 5")
    holder = holding(held)
    try:
        remove_temp_files(str(tmp_path))
        assert os.path.exists(held) and not os.path.exists(dead)
    finally:
        holder.stdin.close()
        holder.wait(10)


def test_FileCache_walks_the_dir_only_when_no_other_process_uses_it(tmp_path) -> None:
    root = tmp_path / "files"
    first = FileCache(str(root), 10_000, upstream=None)
    unrecorded = root / "p" / "sha256-ab" / "p-1.0-py3-none-any.whl"
    unrecorded.parent.mkdir(parents=True)
    unrecorded.write_bytes(b"x" * 100)  # put there by hand: no journal line
    second = FileCache(str(root), 10_000, upstream=None)
    assert (list(second._files), second.stats()) == ([], (0, 0)), "the second walked the directory"
    first.close()
    second.close()
    third = FileCache(str(root), 10_000, upstream=None)
    assert (list(third._files), third.stats()) == ([str(unrecorded)], (100, 1))
    third.close()


def test_FileCache_counts_stored_files_only(tmp_path) -> None:
    root = tmp_path / "files"
    stored = root / "p" / "sha256-ab" / "p-1.0-py3-none-any.whl"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"x" * 1000)
    (stored.parent / ".lock-p-1.0-py3-none-any.whl").write_text(".tmp-x 1000")
    cache = FileCache(str(root), 10_000, upstream=None)
    try:
        assert cache.stats() == (1000, 1)
        assert list(cache._files) == [str(stored)]
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
