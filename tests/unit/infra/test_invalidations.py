"""infra.invalidations: an invalidation told by one worker reaches the others through
the run dir, never the teller, and only what was told after a worker started."""

from __future__ import annotations

import os

from proxpi_min.infra.invalidations import NAME, Invalidations
from tests.support.cache_dir import wait_until


def _worker(run_dir) -> tuple:
    forgotten: list = []
    return Invalidations(str(run_dir), forgotten.append), forgotten


def test_an_invalidation_reaches_the_other_workers_not_the_teller(tmp_path):
    (first, first_forgot), (second, second_forgot) = _worker(tmp_path), _worker(tmp_path)
    first.tell("alpha")
    first.tell(None)  # the project list
    second.tell("beta")
    first.read()
    second.read()
    assert first_forgot == ["beta"]
    assert second_forgot == ["alpha", None]
    second.read()  # each line once
    assert second_forgot == ["alpha", None]


def test_a_worker_started_later_has_nothing_to_forget(tmp_path):
    (first, _) = _worker(tmp_path)
    first.tell("alpha")
    later, later_forgot = _worker(tmp_path)
    later.read()
    assert later_forgot == []
    first.tell("beta")
    later.read()
    assert later_forgot == ["beta"]


def test_a_line_still_being_appended_waits_for_its_end(tmp_path):
    reader, forgot = _worker(tmp_path)
    with open(os.path.join(tmp_path, NAME), "ab") as file:
        file.write(b"other-token gam")
        file.flush()
        reader.read()
        assert forgot == []
        file.write(b"ma\n")
    reader.read()
    assert forgot == ["gamma"]


def test_the_watcher_reads_on_its_own_and_stops(tmp_path):
    teller, _ = _worker(tmp_path)
    forgot: list = []
    watcher = Invalidations(str(tmp_path), forgot.append, interval=0.01)
    watcher.start()
    try:
        teller.tell("alpha")
        assert wait_until(lambda: forgot == ["alpha"])
    finally:
        watcher.close()


def test_a_file_removed_and_made_anew_is_read_from_its_start(tmp_path):
    (teller, _), (reader, forgot) = _worker(tmp_path), _worker(tmp_path)
    teller.tell("alpha")
    reader.read()
    os.remove(os.path.join(tmp_path, NAME))  # by hand, say
    teller.tell("beta")
    reader.read()
    assert forgot == ["alpha", "beta"]
