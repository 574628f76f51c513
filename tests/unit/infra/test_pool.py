"""WorkerPool: jobs run on a bounded set of threads, a bounded queue, a close that drops."""

from __future__ import annotations

import threading

from proxpi_min.infra.pool import WorkerPool


def test_jobs_run_in_order_on_at_most_size_threads_and_a_failure_stops_none():
    pool = WorkerPool(1, 10, "test-pool")
    ran, names = [], set()

    def job(n):
        names.add(threading.current_thread().name)
        if n == 1:
            raise RuntimeError("boom")
        ran.append(n)

    for n in range(4):
        assert pool.submit(lambda n=n: job(n))
    assert pool.wait(5)
    assert ran == [0, 2, 3] and names == {"test-pool"}


def test_a_full_queue_and_a_closed_pool_drop_jobs():
    pool = WorkerPool(1, 1, "test-pool")
    release, ran = threading.Event(), []
    assert pool.submit(lambda: release.wait(5))  # running
    assert pool.submit(lambda: ran.append("queued"))  # waiting: the queue is full
    assert not pool.submit(lambda: ran.append("dropped"))
    pool.close(0)  # the waiting job dropped; the running one given no time
    release.set()
    assert not pool.submit(lambda: ran.append("late"))
    assert pool.wait(5) and ran == []


def test_a_job_no_thread_can_run_is_dropped(monkeypatch):
    """The process may start no more threads (its limit): the job is refused, not queued
    for a thread that never comes, and the pool takes jobs again once it can."""
    pool = WorkerPool(2, 10, "test-pool")
    ran = []

    def refuse(thread):
        raise RuntimeError("can't start new thread")

    with monkeypatch.context() as patched:
        patched.setattr(threading.Thread, "start", refuse)
        assert not pool.submit(lambda: ran.append("refused"))
    assert pool.wait(5)  # nothing counted as running
    assert pool.submit(lambda: ran.append("later"))
    assert pool.wait(5) and ran == ["later"]
