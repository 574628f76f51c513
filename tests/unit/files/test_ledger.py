"""ledger: the size record and the journal of a cache dir, shared by real processes
(real flock locks, forked and spawned children)."""

from __future__ import annotations

import fcntl
import os
import time

import pytest

from proxpi_min.files.ledger import USERS_NAME, JournalEntry, Ledger, LedgerRecord
from tests.support.writers import child

# A child that adds 1 byte and 1 file to the ledger N times, each under the lock.
ADDER = """
import sys
from proxpi_min.files.ledger import Ledger
ledger = Ledger(sys.argv[1])
for _ in range(int(sys.argv[2])):
    with ledger.locked() as handle:
        handle.write(handle.record.used + 1, handle.record.count + 1)
"""


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
from proxpi_min.files.ledger import JournalEntry, Ledger
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


@pytest.mark.parametrize("torn", [b"+ 9 1.0 b/sha256-ab", b"+ 9 1.0", b"+ 9", b"+", b"- b/sha256-ab", b"-", b"+ 9 1.0 b/x/b.whl"])
def test_Ledger_journal_never_takes_a_torn_tail_for_a_record_once_appended_to(tmp_path, torn) -> None:
    """A journal cut short (a crash, a copy cut, a hand) ends in a torn line: the next
    append ends it so that no reader takes it for a whole record, even one whose path
    was cut where a path could end."""
    (tmp_path / ".journal").write_bytes(b"+ 5 1.0 a/x/a-1.whl\n" + torn)
    ledger = Ledger(str(tmp_path))
    with ledger.locked() as handle:
        handle.append([JournalEntry("c/x/c-1.whl", 7, 2.0)], None)
        entries, _, _ = handle.changes(None)
    assert entries == [JournalEntry("a/x/a-1.whl", 5, 1.0), JournalEntry("c/x/c-1.whl", 7, 2.0)]
    ledger.close()


def test_reservations_follow_the_record_without_touching_it(tmp_path) -> None:
    ledger = Ledger(str(tmp_path))
    with ledger.locked() as handle:
        handle.write(100, 2)
        handle.reserve({"p/sha256-ab/.tmp-h-1-aa": 500, "q/unverified/.tmp-h-2-bb": 7})
        handle.write(150, 3)
        assert handle.reservations() == {"p/sha256-ab/.tmp-h-1-aa": 500, "q/unverified/.tmp-h-2-bb": 7}
        handle.reserve({"q/unverified/.tmp-h-2-bb": 7})
    assert ledger.read()[1:3] == (150, 3)
    with ledger.locked() as handle:
        assert handle.reservations() == {"q/unverified/.tmp-h-2-bb": 7}
        handle.reserve({})
        assert handle.reservations() == {}
    assert os.path.getsize(tmp_path / ".ledger") == 80
    ledger.close()


def test_a_rewrite_after_the_record_was_lost_is_still_a_new_epoch(tmp_path) -> None:
    """A record read as zeros (torn, overwritten by hand) must not give the next rewrite
    an epoch a process read before: that process would go on at its old offset."""
    ledger = Ledger(str(tmp_path))
    with ledger.locked() as handle:
        handle.snapshot([JournalEntry("a/x/a-1.whl", 5, 1.0)], 5, 1)
        _, position, _ = handle.changes(None)  # what another process has read
    with open(tmp_path / ".ledger", "r+b") as file:
        file.write(b"garbage".ljust(80))
    with ledger.locked() as handle:
        assert handle.record.epoch == 0
        handle.snapshot([JournalEntry("b/x/b-1.whl", 7, 1.5)], 7, 1)
    with ledger.locked() as handle:
        assert handle.changes(position) == ([JournalEntry("b/x/b-1.whl", 7, 1.5)], (handle.record.epoch, 22), True)
    ledger.close()


def test_a_journal_shorter_than_what_was_read_is_read_from_its_start(tmp_path) -> None:
    ledger = Ledger(str(tmp_path))
    with ledger.locked() as handle:
        position = handle.append([JournalEntry("a/x/a-1.whl", 5, 1.0)] * 3, None)
        _, position, _ = handle.changes(position)
    (tmp_path / ".journal").unlink()  # removed by hand
    with ledger.locked() as handle:
        assert handle.changes(position)[:2] == ([], (handle.record.epoch, 0))
        handle.append([JournalEntry("b/x/b-1.whl", 7, 1.5)], None)
        assert handle.changes(position)[0] == [JournalEntry("b/x/b-1.whl", 7, 1.5)]
    ledger.close()


def test_reservations_skip_lines_that_are_not_a_name_and_a_size(tmp_path) -> None:
    ledger = Ledger(str(tmp_path))
    with ledger.locked() as handle:
        handle.write(100, 2)
        handle.reserve({"p/x/.tmp-h-1-aa": 500})
    with open(tmp_path / ".ledger", "ab") as file:  # torn or foreign lines after them
        file.write("q/x/.tmp-h-2-bb \u00b2\nno-size\n 7\nr/x/.tmp-h-3-cc 12\n".encode())
    with ledger.locked() as handle:
        assert handle.reservations() == {"p/x/.tmp-h-1-aa": 500, "r/x/.tmp-h-3-cc": 12}
    ledger.close()


def test_Ledger_users_file_is_data_not_an_executable(tmp_path) -> None:
    ledger = Ledger(str(tmp_path))
    try:
        ledger.register_user()
        assert os.stat(tmp_path / USERS_NAME).st_mode & 0o111 == 0
    finally:
        ledger.close()


def test_Ledger_held_elsewhere_is_waited_on_with_patience_then_tried_once_until_had(tmp_path) -> None:
    """The test holds the ledger's lock as another (frozen) process would."""
    ledger = Ledger(str(tmp_path))
    with ledger.locked() as handle:
        handle.write(100, 2)
    frozen = os.open(ledger.path, os.O_RDWR)
    try:
        fcntl.flock(frozen, fcntl.LOCK_EX)
        started = time.monotonic()
        assert ledger.read(0.3) == LedgerRecord(1, 100, 2, 0)  # as last read
        assert time.monotonic() - started >= 0.3
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            with ledger.locked(5.0):
                pass
        assert time.monotonic() - started < 2.5, "a wait that ran out was waited again"
    finally:
        os.close(frozen)
    with ledger.locked(5.0) as handle:  # had again: waits are patient again
        handle.write(50, 1)
    assert ledger.read(0.3) == LedgerRecord(2, 50, 1, 0)
    ledger.close()


def test_Ledger_in_place_cannot_tell_when_its_path_cannot_be_looked_at(tmp_path, monkeypatch) -> None:
    """A folder made unreadable for a moment (a chmod -R, a mount hiccup) is not a cache
    dir replaced: taking it for one would reopen the ledger as a private copy for good.
    The stat's refusal is mocked: root, which runs the tests, reads any folder."""
    ledger = Ledger(str(tmp_path))
    real_stat = os.stat

    def refusing_stat(path, *args, **kwargs):
        if str(path) == ledger.path:
            raise PermissionError(13, "Permission denied", str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", refusing_stat)
    assert ledger.in_place()
    monkeypatch.setattr(os, "stat", real_stat)
    os.unlink(ledger.path)  # replaced for real: told
    assert not ledger.in_place()
    ledger.close()
