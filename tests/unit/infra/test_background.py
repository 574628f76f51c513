"""Background: jobs run in order off the caller's thread, flushed on demand, a failing
job logged without stopping the rest, a full queue and a closed one run jobs at once."""

from __future__ import annotations

import logging
import os
import signal
import threading

import pytest

from proxpi_min.infra.background import Background


def gate(background: Background) -> threading.Event:
    """Hold *background*'s thread until the returned event is set."""
    opened = threading.Event()
    background.submit(lambda: opened.wait(10))
    return opened


def test_Background_runs_jobs_in_order_off_the_callers_thread() -> None:
    background = Background()
    opened = gate(background)
    seen = []
    for number in range(5):
        background.submit(lambda number=number: seen.append((number, threading.current_thread().name)))
    assert seen == [] and background.pending == 6  # the caller did not wait for them
    assert not background.flush(0.05)
    opened.set()
    assert background.flush(10)
    assert [number for number, _ in seen] == [0, 1, 2, 3, 4]
    assert {name for _, name in seen} == {"proxpi-background"}
    assert background.pending == 0


def test_Background_a_failing_job_is_logged_and_the_next_ones_run(caplog) -> None:
    background = Background()
    done = []

    def broken() -> None:
        raise RuntimeError("boom")

    background.submit(broken)
    background.submit(lambda: done.append(1))
    assert background.flush(10)
    assert done == [1]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "proxpi_min.infra.background"]
    assert len(errors) == 1 and "boom" in errors[0].exc_text


def test_Background_close_flushes_and_later_jobs_run_at_once() -> None:
    background = Background()
    opened = gate(background)
    done = []
    background.submit(lambda: done.append("queued"))
    threading.Timer(0.1, opened.set).start()
    assert background.close(10)
    assert done == ["queued"]
    background.submit(lambda: done.append(threading.current_thread().name))
    assert done == ["queued", threading.current_thread().name]


def test_Background_close_gives_up_after_its_timeout() -> None:
    background = Background()
    opened = gate(background)
    try:
        assert not background.close(0.05)
        assert background.pending == 1
    finally:
        opened.set()
    assert background.flush(10)


def test_Background_a_full_queue_runs_the_job_in_the_callers_thread() -> None:
    background = Background(max_pending=2)
    opened = gate(background)
    names = []
    background.submit(lambda: names.append("second"))
    background.submit(lambda: names.append(threading.current_thread().name))  # third: full
    assert names == [threading.current_thread().name]
    opened.set()
    assert background.flush(10)
    assert names[1:] == ["second"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_Background_a_forked_child_runs_its_own_jobs() -> None:
    background = Background()
    opened = gate(background)  # the parent's thread is busy, and does not follow the fork
    # ... and a parent thread holds the lock as the fork happens (the child inherits it
    # held, with no thread left to release it).
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with background._changed:
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(5)
    pid = os.fork()
    if pid == 0:  # the child: its own thread, none of the parent's jobs
        code = 1
        try:
            signal.alarm(5)  # a hang fails the test instead of blocking it
            done = []
            background.submit(lambda: done.append(1))
            code = 0 if background.flush(5) and done == [1] else 1
        finally:
            os._exit(code)
    release.set()
    holder.join(10)
    _, status = os.waitpid(pid, 0)
    opened.set()
    assert os.waitstatus_to_exitcode(status) == 0
    assert background.flush(10)
