"""``--workers N`` as real processes: one port served by N workers, a killed worker
restarted (also mid-download, the file then completed by another), SIGTERM draining
them all, /metrics and the home page counting the whole proxy; and the supervisor's
crash back-off."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest

from proxpi_min.app import workers
from proxpi_min.infra.snapshots import INTERVAL
from tests.support.cache_dir import file_path, sized_wheel, stored_content, wait_until
from tests.support.dists import make_wheel
from tests.support.proxy import REPO_ROOT, ProxyProcess, http, temp_files
from tests.support.prometheus import parse, sample

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="--workers needs os.fork")

STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")


def _worker_pids(process: ProxyProcess) -> dict:
    """Worker number -> pid of its latest start, from the log."""
    return {int(number): int(pid) for number, pid in STARTED.findall(process.stderr)}


def _wait_for(condition, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _serves_alpha(process: ProxyProcess) -> None:
    result = process.get("/index/alpha/")
    assert result.status == 200, result
    assert b"alpha-1.0-py3-none-any.whl" in result.body


def test_sigterm_as_workers_start_still_drains_each(upstream_html):
    """A stop signal that reaches a worker before its server installed its handlers
    waits (blocked) for them, rather than killing the worker by the default action."""
    process = ProxyProcess(["--workers", "2", "--index-url", upstream_html.url])
    with process:
        _wait_for(lambda: "worker 2 started" in process.stderr, "worker 2 forked")
        process.terminate()  # at once: the workers are still building their caches
        assert process.wait(20) == 0, process.stderr
    assert "killed by" not in process.stderr, process.stderr
    assert process.stderr.count("proxpi_min: stopped") == 2, process.stderr


def test_two_workers_serve_one_port_and_stop_on_sigterm(upstream_html, dists):
    process = ProxyProcess(["--workers", "2", "--index-url", upstream_html.url])
    with process:
        pids = _wait_for(lambda: len(_worker_pids(process)) == 2 and _worker_pids(process), "two workers")
        cache_dir = re.search(r"cache dir (\S+),", process.stderr).group(1)
        assert os.path.isdir(cache_dir)  # a temp dir, made by the parent for both
        for _ in range(6):
            _serves_alpha(process)
        file_path = f"/index/alpha/{dists.alpha_1.filename}"
        assert process.get(file_path).body == dists.alpha_1.content
        # Request lines name the worker that served them (written within a moment).
        _wait_for(lambda: re.search(r"\[worker [12]\] proxpi_min\.web\.routes", process.stderr), "request lines")
        process.terminate()
        assert process.wait(20) == 0, process.stderr
    assert "stopping 2 workers" in process.stderr
    assert process.stderr.count("proxpi_min: stopped") == 2, process.stderr
    assert not any(_alive(pid) for pid in pids.values()), "a worker outlived the parent"
    assert not os.path.exists(cache_dir), "the temp cache dir was not removed"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sighup_stops_and_drains_as_sigterm_does(upstream_html, workers):
    """The terminal that started it was closed: no worker is left serving the port."""
    process = ProxyProcess(["--workers", workers, "--index-url", upstream_html.url])
    with process:
        pids = _wait_for(lambda: len(_worker_pids(process)) == 2 and _worker_pids(process), "two workers") \
            if workers == "2" else {}
        _serves_alpha(process)
        cache_dir = re.search(r"cache dir (\S+),", process.stderr).group(1)
        process.process.send_signal(signal.SIGHUP)
        assert process.wait(20) == 0, process.stderr
    assert "SIGHUP" in process.stderr
    assert not any(_alive(pid) for pid in pids.values()), "a worker outlived the parent"
    assert not os.path.exists(cache_dir), "the temp cache dir was not removed"


def test_killed_worker_is_restarted_and_port_keeps_answering(upstream_html, tmp_path):
    process = ProxyProcess(["--workers", "2", "--index-url", upstream_html.url, "--cache-dir", str(tmp_path)])
    with process:
        pids = _wait_for(lambda: len(_worker_pids(process)) == 2 and _worker_pids(process), "two workers")
        _serves_alpha(process)
        os.kill(pids[1], signal.SIGKILL)
        # Clients keep getting answers while the worker is down and after its restart.
        failures = []
        stop = threading.Event()

        def hammer():
            while not stop.is_set():
                try:
                    _serves_alpha(process)
                except Exception as exc:  # noqa: BLE001 - collected for the assertion
                    failures.append(exc)

        client = threading.Thread(target=hammer)
        client.start()
        try:
            new = _wait_for(lambda: _worker_pids(process).get(1) not in (None, pids[1]) and _worker_pids(process), "a restart")
        finally:
            stop.set()
            client.join(20)
        assert f"worker 1 (pid {pids[1]}) killed by SIGKILL; restarting" in process.stderr
        assert new[2] == pids[2] and _alive(new[1])
        _serves_alpha(process)
        assert not failures, failures
        process.terminate()
        assert process.wait(20) == 0, process.stderr
    assert not any(_alive(pid) for pid in (*pids.values(), *new.values()))
    assert os.path.isdir(tmp_path)  # a given cache dir is kept


def test_an_invalidation_reaches_every_worker(upstream_html, tmp_path):
    """DELETE /cache/<project> is answered by one worker; the next requests, whichever
    worker takes them, ask upstream and list the new release."""
    process = ProxyProcess(["--workers", "3", "--index-url", upstream_html.url, "--cache-dir", str(tmp_path)])
    with process:
        _wait_for(lambda: len(_worker_pids(process)) == 3, "three workers")
        for _ in range(12):  # each worker, most likely, has the page in memory
            _serves_alpha(process)
        release = make_wheel("alpha", "9.0")
        upstream_html.add(release)
        assert http("DELETE", process.url + "/cache/alpha").status == 200
        # The others read it within their INTERVAL: by 0.6 s, every answer lists the release.
        assert wait_until(lambda: all(release.filename.encode() in process.get("/index/alpha/").body
                                      for _ in range(12)), 0.6), "a worker still serves the page it had"


def test_workers_stop_when_their_supervisor_is_killed_outright(upstream_html, tmp_path):
    """kill -9 of the supervisor (no systemd cgroup, no container to end them): its
    workers stop on their own instead of holding the port as orphans."""
    temp = tmp_path / "temp"  # the run dir a supervisor killed outright cannot remove
    temp.mkdir()
    cache_dir = str(tmp_path / "cache")
    process = ProxyProcess(["--workers", "2", "--index-url", upstream_html.url, "--cache-dir", cache_dir],
                           env={"TMPDIR": str(temp)})
    with process:
        pids = _wait_for(lambda: len(_worker_pids(process)) == 2 and _worker_pids(process), "two workers")
        _serves_alpha(process)
        os.kill(process.process.pid, signal.SIGKILL)
        _wait_for(lambda: not any(_running(pid) for pid in pids.values()), "the orphaned workers to stop", 10)


def _running(pid: int) -> bool:
    """Whether *pid* runs (a zombie no reaper collected does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_worker_killed_mid_download_is_restarted_and_the_file_completed(upstream_factory, tmp_path):
    dist = sized_wheel("killed", "1.0", 200_000)
    up = upstream_factory("json", None).add(dist)
    cache_dir = str(tmp_path / "cache")
    process = ProxyProcess(["--workers", "2", "--index-url", up.url, "--cache-dir", cache_dir])
    with process:
        pids = _wait_for(lambda: len(_worker_pids(process)) == 2 and _worker_pids(process), "two workers")
        up.throttle(8_192, 0.03)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            doomed = pool.submit(process.get, file_path(dist), timeout=30)
            # The writer is the worker whose temp file grows: the name carries its pid.
            grown = _wait_for(
                lambda: [t for t in temp_files(cache_dir) if os.path.exists(t) and os.path.getsize(t) > 0], "a download"
            )
            writer = int(os.path.basename(grown[0]).rsplit("-", 2)[1])
            number = next(n for n, pid in pids.items() if pid == writer)
            os.kill(writer, signal.SIGKILL)
            try:
                result = doomed.result()
            except Exception:  # noqa: BLE001 - cut short with its worker: allowed
                result = None
            # Never a partial or unverified file served as whole.
            assert result is None or result.status != 200 or result.body == dist.content
        up.throttle(None)
        _wait_for(lambda: _worker_pids(process).get(number) not in (None, writer), "the killed worker's restart")
        # Whichever worker answers now serves the right bytes, and the file ends up stored.
        for _ in range(4):
            assert process.get(file_path(dist), timeout=30).body == dist.content
        assert wait_until(lambda: stored_content(cache_dir, dist.filename)) == dist.content
        process.terminate()
        assert process.wait(20) == 0, process.stderr


def test_sigterm_drains_a_response_in_flight(upstream_html, dists, tmp_path):
    hold = upstream_html.hold(dists.alpha_1)  # half the wheel goes out, the rest once the port is closed
    process = ProxyProcess(["--workers", "2", "--index-url", upstream_html.url, "--cache-dir", str(tmp_path)])
    with process:
        _wait_for(lambda: len(_worker_pids(process)) == 2, "two workers")
        result = {}
        fetch = threading.Thread(
            target=lambda: result.update(r=process.get(f"/index/alpha/{dists.alpha_1.filename}", timeout=30))
        )
        fetch.start()
        _wait_for(lambda: hold.sent_first.is_set(), "the download")
        process.terminate()
        _wait_for(lambda: "SIGTERM: stopping 2 workers" in process.stderr, "the stop")
        time.sleep(0.3)  # the workers close their copies of the listening socket
        assert fetch.is_alive(), "the download ended too early for this check"
        parts = urllib.parse.urlsplit(process.url)
        with pytest.raises(ConnectionRefusedError):  # the parent closed its own too
            socket.create_connection((parts.hostname, parts.port), timeout=2).close()
        hold.open()
        fetch.join(30)
        assert process.wait(20) == 0, process.stderr
    assert result["r"].status == 200 and result["r"].body == dists.alpha_1.content
    log = process.stderr
    # The worker was told to stop while the response was still going out.
    assert log.index("SIGTERM: stopping") < log.index(f'"GET /index/alpha/{dists.alpha_1.filename}" 200'), log


def _alpha_in_files(run_dir) -> int:
    """Requests for alpha the workers' files in *run_dir* count, summed (each file is
    replaced whole, never read half written)."""
    return sum(
        dict(json.loads(path.read_bytes())["metrics"]["projects"]).get("alpha", 0)
        for path in run_dir.glob("worker-*.json")
    )


def _scrape(process: ProxyProcess) -> tuple:
    """(types, samples) of one /metrics answer (on a new connection, so any worker)."""
    result = process.get("/metrics")
    assert result.status == 200, result
    return parse(result.text)


def _never_backwards(scrapes: list) -> None:
    """Every counter sample (and histogram bucket, sum, count) of each scrape is at
    least that of the scrape before."""
    for (types, before), (_, after) in zip(scrapes, scrapes[1:]):
        for (name, labels), value in before.items():
            family = name if name in types else name.rsplit("_", 1)[0]
            if types.get(family) in ("counter", "histogram"):
                assert after.get((name, labels), 0) >= value, f"{name}{dict(labels)} went from {value} down"


def test_metrics_and_home_page_count_every_worker(upstream_html, tmp_path):
    """However the scrapes land on workers, each counts every request; counters never go
    back, not even when a worker is killed; the run dir goes at exit."""
    process = ProxyProcess(["--workers", "2", "--index-url", upstream_html.url], env={"TMPDIR": str(tmp_path)})
    with process:
        pids = _wait_for(lambda: len(_worker_pids(process)) == 2 and _worker_pids(process), "two workers")
        (run_dir,) = tmp_path.glob("proxpi-run-*")
        served = 0
        # New connections, until both workers have answered some (the log names them).
        while served < 20 or not all(f"[worker {n}] proxpi_min.web.routes" in process.stderr for n in (1, 2)):
            _serves_alpha(process)
            served += 1
            assert served < 500, "one worker took every connection"
        # Every worker's file written since, by its own timer (no scrape yet), within 1.5 INTERVALs.
        assert wait_until(lambda: _alpha_in_files(run_dir) == served, INTERVAL * 1.5), "a worker's file lags"
        assert len(list(run_dir.glob("worker-*.json"))) == 2
        scrapes = [_scrape(process) for _ in range(12)]
        for _, samples in scrapes:
            assert sample(samples, "proxpi_requests_total", route="page", method="GET", status="200") == served
            assert sample(samples, "proxpi_cache_hits_total", kind="page") + sample(
                samples, "proxpi_cache_misses_total", kind="page"
            ) == served
            assert sample(samples, "proxpi_upstream_requests_total", index=upstream_html.url, kind="page", outcome="ok") <= 2
        _never_backwards(scrapes)
        status = json.loads(process.get("/", headers={"Accept": "application/json"}).body)
        assert status["top_projects"] == [{"project": "alpha", "requests": served}]
        assert status["cache"]["page"]["hits"] + status["cache"]["page"]["misses"] == served
        assert status["requests"] >= served  # the scrapes too, but others' lag up to a second
        assert [index["last_success"] is not None for index in status["indexes"]] == [True]

        os.kill(pids[1], signal.SIGKILL)  # its numbers stay in the sum
        _wait_for(lambda: _worker_pids(process).get(1) not in (None, pids[1]), "a restart")
        # The restarted worker's file beside the killed one's (counted below), within 1.5 INTERVALs.
        wait_until(lambda: len(list(run_dir.glob("worker-*.json"))) == 3, INTERVAL * 1.5)
        scrapes += [_scrape(process) for _ in range(6)]
        for _, samples in scrapes[-6:]:
            assert sample(samples, "proxpi_requests_total", route="page", method="GET", status="200") == served
        _never_backwards(scrapes)
        assert len(list(run_dir.glob("worker-*.json"))) == 3
    assert process.returncode == 0
    assert not run_dir.exists()


def test_supervisor_backs_off_a_crash_loop(monkeypatch):
    """A worker dying at once is restarted later and later; one that ran a while, at once."""
    now = [100.0]
    supervisor = workers.Supervisor(1, lambda number, run_dir: 0, 1.0, clock=lambda: now[0])
    (slot,) = supervisor._slots
    monkeypatch.setattr(os, "waitpid", lambda pid, options: (pid, 1 << 8))  # exited with status 1
    delays = []
    for _ in range(8):
        slot.pid, slot.started = 12345, now[0]
        supervisor._reap(stopping=False)
        delays.append(slot.restart_at - now[0])
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    slot.pid, slot.started = 12345, now[0]
    now[0] += workers.HEALTHY_UPTIME
    supervisor._reap(stopping=False)
    assert (slot.restart_at, slot.failures) == (now[0], 0)


def test_supervisor_backs_off_a_fork_that_fails_and_gives_up_with_no_worker_running(monkeypatch):
    """A fork refused (a process limit, no memory) is a worker that died at once; when
    every worker has failed GIVE_UP_FAILURES times in a row, the supervisor gives up."""
    now = [100.0]
    supervisor = workers.Supervisor(2, lambda number, run_dir: 0, 1.0, clock=lambda: now[0])

    def refused():
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", refused)
    first, second = supervisor._slots
    for _ in range(workers.GIVE_UP_FAILURES):
        supervisor._start(first)
        assert first.pid is None and first.restart_at > now[0]
    assert first.failures == workers.GIVE_UP_FAILURES
    assert not supervisor._hopeless()  # the other may yet start
    for _ in range(workers.GIVE_UP_FAILURES):
        supervisor._start(second)
    assert supervisor._hopeless()


# A supervisor of real forks, in a process of its own (forking the test process, with
# its threads, could leave a child waiting on a lock no thread of it holds).
GIVE_UP = """
import os, signal, sys
from proxpi_min.app import workers
workers.BACKOFF_FIRST, workers.BACKOFF_MAX, workers.GIVE_UP_FAILURES = 0.01, 0.02, 3

def served_then_died(number, run_dir):
    workers.mark_serving(run_dir)
    return 1

if sys.argv[1] == "served":
    # A stop signal once well over GIVE_UP_FAILURES restarts each have come and gone; a
    # timer, not a thread: the forks stay single-threaded.
    signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), signal.SIGTERM))
    signal.setitimer(signal.ITIMER_REAL, 0.4)
work = served_then_died if sys.argv[1] == "served" else (lambda number, run_dir: 1)
sys.exit(workers.Supervisor(2, work, 0.1).run())
"""


@pytest.mark.parametrize(("workers_do", "status"), [("never serve", 1), ("served", 0)])
def test_supervisor_gives_up_on_workers_that_never_serve_not_on_ones_that_did(workers_do, status):
    """Workers that die before they serve end the supervisor (exit 1) after
    GIVE_UP_FAILURES each; workers that served and died keep being restarted until a
    stop signal (exit 0)."""
    ran = subprocess.run([sys.executable, "-c", GIVE_UP, workers_do.split()[0]], cwd=str(REPO_ROOT),
                         capture_output=True, text=True, timeout=30)
    assert ran.returncode == status, ran.stderr
    if workers_do == "served":  # each died more often than the give-up count, and went on
        assert ran.stderr.count("worker 1 (pid") > 3, ran.stderr


def test_worker_log_lines_name_the_worker():
    import logging

    from proxpi_min.infra.logs import formatter

    record = logging.LogRecord("proxpi_min.web.routes", logging.INFO, "", 0, "GET %s", ("/x",), None)
    assert " INFO [worker 2] proxpi_min.web.routes: GET /x" in formatter("text", 2).format(record)
    assert " INFO proxpi_min.web.routes: GET /x" in formatter("text").format(record)
    assert json.loads(formatter("json", 2).format(record))["worker"] == 2
    assert "worker" not in json.loads(formatter("json").format(record))
