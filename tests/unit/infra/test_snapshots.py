"""Snapshots: a worker's numbers in the run dir, read back beside its siblings', live
or gone."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from proxpi_min.infra.snapshots import Snapshots


def _gone_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    return int(child.stdout)


def test_Snapshots_gather_is_own_numbers_first_then_the_siblings(tmp_path) -> None:
    numbers = {"n": 1}
    mine = Snapshots(str(tmp_path), lambda: dict(numbers))
    sibling = Snapshots(str(tmp_path), lambda: {"n": 10})  # say, the worker it replaced
    sibling.publish()
    numbers["n"] = 2
    gathered = mine.gather()
    assert gathered[0] == {"n": 2, "live": True}  # taken now, not as last written
    assert gathered[1:] == [{"n": 10, "live": True}]
    # What it answered with is on disk before the answer: the next reader sees it.
    (own_file,) = [p for p in tmp_path.iterdir() if p.read_bytes() == b'{"n":2}']
    assert own_file.name.startswith(f"worker-{os.getpid()}-")


def test_Snapshots_of_a_gone_worker_stay_and_are_not_live(tmp_path) -> None:
    (tmp_path / f"worker-{_gone_pid()}-0badcafe.json").write_text(json.dumps({"n": 5}))
    (tmp_path / ".tmp-host-1-00").write_text("{partial")  # another's write in progress
    (tmp_path / "worker-xyz.json").write_text("not json")
    gathered = Snapshots(str(tmp_path), lambda: {"n": 1}).gather()
    assert gathered == [{"n": 1, "live": True}, {"n": 5, "live": False}]


def test_Snapshots_write_in_the_background_and_at_close(tmp_path) -> None:
    numbers = {"n": 0}
    snapshots = Snapshots(str(tmp_path), lambda: dict(numbers), interval=0.01)
    snapshots.start()
    numbers["n"] = 7
    reader = Snapshots(str(tmp_path), lambda: {})
    try:
        for _ in range(500):
            if {"n": 7, "live": True} in reader.gather()[1:]:
                break
            snapshots._stop.wait(0.01)
        else:
            raise AssertionError("the background writer never wrote the new numbers")
    finally:
        numbers["n"] = 8
        snapshots.close()
    assert {"n": 8, "live": True} in reader.gather()[1:]


def test_Snapshots_gather_survives_the_run_dir_going(tmp_path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    snapshots = Snapshots(str(run_dir), lambda: {"n": 1})
    run_dir.rmdir()  # the supervisor removed it at exit; the worker still answers
    assert snapshots.gather() == [{"n": 1, "live": True}]
