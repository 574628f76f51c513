"""atomic: lock files between real processes (real flock locks), the sweep of what dead
writers left, and the names that walks of the cache dir must tell apart from stored files."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from proxpi_min.infra import atomic
from proxpi_min.infra.atomic import (
    STALE_TEMP,
    LockFile,
    is_private,
    lock_path,
    remove_temp_files,
    same_file,
    temp_path,
    write_atomically,
)
from tests.support.writers import child, writing

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
    assert not lock.held_by_another()
    assert lock.acquire(wait=False), "the kernel frees a dead holder's lock"
    assert lock.stale == ".tmp-dead 9"
    lock.release()


def test_LockFile_held_by_another_is_asked_without_taking_the_lock(tmp_path) -> None:
    path = str(tmp_path / ".lock-x")
    lock = LockFile(path)
    assert not lock.held_by_another()  # no file: nobody holds it
    holder = holding(path, ".tmp-a 123")
    try:
        assert lock.held_by_another()
        assert not lock.acquire(wait=False)
    finally:
        holder.stdin.close()
        assert holder.wait(10) == 0
    open(path, "w").close()  # a file nobody holds
    assert not lock.held_by_another()
    assert lock.acquire(wait=False), "the question left no lock behind"
    assert not lock.held_by_another(), "our own lock is not another's"
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


def test_temp_in_use_follows_the_writer_process(tmp_path) -> None:
    from proxpi_min.infra.atomic import temp_in_use

    ours = temp_path(str(tmp_path))
    assert not temp_in_use(ours)  # not there (yet, or any more)
    open(ours, "wb").close()
    assert temp_in_use(ours)
    dead = child("pass")
    dead.stdin.close()
    dead.wait(30)
    left = os.path.join(str(tmp_path), os.path.basename(ours).replace(f"-{os.getpid()}-", f"-{dead.pid}-"))
    open(left, "wb").close()
    assert not temp_in_use(left)  # its process is gone: a download killed midway


@pytest.mark.parametrize("at_start", [True, False], ids=["start", "running"])
def test_sweep_removes_a_killed_writers_temp_and_lock_however_young(tmp_path, at_start) -> None:
    """Its free lock tells a dead writer: its files go at once, at start or running,
    not STALE_TEMP seconds later; a live writer's stay, however old."""
    dead_target, live_target = str(tmp_path / "p" / "h" / "p.whl"), str(tmp_path / "q" / "h" / "q.whl")
    dead, dead_temp = writing(dead_target)
    dead.kill()
    dead.wait(10)
    live, live_temp = writing(live_target)
    try:
        long_ago = time.time() - 2 * STALE_TEMP  # a stalled download is still its writer's
        os.utime(live_temp, (long_ago, long_ago))
        assert remove_temp_files(str(tmp_path), at_start=at_start) == 1
        assert not os.path.exists(dead_temp) and not os.path.exists(lock_path(dead_target))
        assert os.path.exists(live_temp) and os.path.exists(lock_path(live_target))
    finally:
        live.stdin.close()
        live.wait(10)


def test_sweep_never_opens_a_lock_file_this_process_may_hold(tmp_path) -> None:
    """On NFS a process's own flock does not shut it out: its own downloads' lock
    files are not judged by it at all."""
    target = str(tmp_path / "p" / "h" / "p.whl")
    writer, temp = writing(target)
    writer.kill()
    writer.wait(10)
    assert remove_temp_files(str(tmp_path), at_start=False, mine=lambda path: path == lock_path(target)) == 0
    assert os.path.exists(temp) and os.path.exists(lock_path(target))


def test_sweep_removes_the_folders_it_empties_and_old_empty_ones(tmp_path) -> None:
    """Folders go when the sweep empties them, or when found empty long ago; a folder
    just made (its writer not yet in it) stays."""
    writer, _ = writing(str(tmp_path / "dead" / "h" / "dead.whl"))
    writer.kill()
    writer.wait(10)
    stored = tmp_path / "kept" / "h" / "kept.whl"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"x")
    long_ago = time.time() - 3600
    (tmp_path / "old" / "h").mkdir(parents=True)
    for folder in (tmp_path / "old" / "h", tmp_path / "old"):
        os.utime(folder, (long_ago, long_ago))
    (tmp_path / "new" / "h").mkdir(parents=True)
    remove_temp_files(str(tmp_path), at_start=False, folders=True)
    left = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*"))
    assert left == ["kept", "kept/h", "kept/h/kept.whl", "new", "new/h"]


def test_LockFile_makes_its_folder_again_when_it_was_removed(tmp_path) -> None:
    """A folder emptied by an eviction goes: a writer about to lock a file in it (its
    first file there) makes it again instead of failing."""
    folder = tmp_path / "p" / "h"
    folder.mkdir(parents=True)
    lock = LockFile(lock_path(str(folder / "p.whl")))
    folder.rmdir()
    folder.parent.rmdir()
    assert lock.acquire(wait=False)
    lock.release()


@pytest.mark.parametrize("durable", [False, True])
def test_write_atomically_durable_syncs_the_bytes_before_they_get_the_name(tmp_path, monkeypatch, durable) -> None:
    # A crash of the machine cannot be made here: what fsync was called on, and when, is
    # recorded instead (the real fsync still runs).
    seen = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (seen.append(("fsync", os.fstat(fd).st_size)), real_fsync(fd)))
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (seen.append(("replace", None)), real_replace(a, b)))
    target = tmp_path / "page.json"
    write_atomically(str(target), b"x" * 1000, durable=durable)
    assert target.read_bytes() == b"x" * 1000
    assert seen == ([("fsync", 1000), ("replace", None)] if durable else [("replace", None)])
