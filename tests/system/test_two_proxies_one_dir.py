"""Two real proxy processes on one cache dir act as one cache: one upstream fetch per
file, one size cap with LRU across both, a writer killed mid-download taken over by
the other process. Black-box: subprocesses, real HTTP, the upstream's request count."""

from __future__ import annotations

import concurrent.futures
import fcntl
import http.client
import json
import logging
import os
import time
import urllib.parse

import pytest

from proxpi_min.files import accounting, liveness
from proxpi_min.files.ledger import Ledger
from proxpi_min.infra.atomic import LOCK_PREFIX, TEMP_PREFIX, LockFile, lock_path, temp_path
from tests.support.cache_dir import WAIT, file_path, files_tree, peak_while, sized_wheel, stored_content, stored_paths, wait_until
from tests.support.proxy import ProxyProcess, temp_files


def _pair(up, cache_dir: str, *extra: str):
    args = ["--index-url", up.url, "--cache-dir", cache_dir, *extra]
    return ProxyProcess(args), ProxyProcess(args)


def _stop(*processes: ProxyProcess) -> None:
    for process in processes:
        process.__exit__(None, None, None)


def _settled(cache_dir: str) -> bool:
    return not temp_files(cache_dir)


@pytest.mark.parametrize("second_after_first_started", [True, False])
def test_one_upstream_fetch_for_a_file_asked_through_both(upstream_factory, tmp_path, second_after_first_started):
    dist = sized_wheel("both", "1.0", 150_000)
    up = upstream_factory("json", None).add(dist)
    cache_dir = str(tmp_path / "cache")
    one, two = _pair(up, cache_dir)
    try:
        up.throttle(16_384, 0.02)  # the download lasts a while: the second ask meets it
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            first = pool.submit(one.get, file_path(dist), timeout=30)
            if second_after_first_started:
                assert wait_until(lambda: temp_files(cache_dir)), "no download started"
            second = pool.submit(two.get, file_path(dist), timeout=30)
            results = [first.result(), second.result()]
        up.throttle(None)
        assert [(r.status, r.body == dist.content) for r in results] == [(200, True), (200, True)]
        assert up.hits(dist.filename) == 1
        assert wait_until(lambda: stored_content(cache_dir, dist.filename)) == dist.content
        for proxy in (one, two):  # and later asks fetch nothing
            assert proxy.get(file_path(dist)).body == dist.content
        assert up.hits(dist.filename) == 1
    finally:
        _stop(one, two)


def test_total_size_stays_within_one_cap_across_processes(upstream_factory, tmp_path):
    wheels = [sized_wheel(f"fill-{n}", "1.0", 60_000) for n in range(16)]
    up = upstream_factory("json", None)
    for dist in wheels:
        up.add(dist)
    cap = 4 * max(d.size for d in wheels) + 100
    assert sum(d.size for d in wheels) > 3 * cap  # each process alone would overrun
    cache_dir = str(tmp_path / "cache")
    one, two = _pair(up, cache_dir, "--cache-size", str(cap))
    try:
        up.throttle(16_384, 0.002)

        def ask_all() -> list:
            with concurrent.futures.ThreadPoolExecutor(6) as pool:
                asks = [pool.submit((one, two)[n % 2].get, file_path(d), timeout=30) for n, d in enumerate(wheels)]
                return [ask.result() for ask in asks]

        # Downloads in flight count against the cap too, whichever process runs them.
        results, peak = peak_while(cache_dir, ask_all)
        assert peak <= cap + max(d.size for d in wheels), (peak, cap)
        up.throttle(None)
        assert [(r.status, r.body == d.content) for r, d in zip(results, wheels)] == [(200, True)] * len(wheels)
        assert wait_until(lambda: _settled(cache_dir))
        stored = files_tree(cache_dir)
        assert 0 < sum(stored.values()) <= cap, stored
        # Both processes report the shared count, which is what the directory holds.
        for proxy in (one, two):
            status = json.loads(proxy.get("/", {"Accept": "application/json"}).body)
            assert status["file_cache"]["files"] == len(stored)
            assert status["file_cache"]["used_bytes"] == sum(stored.values())
        # Every file is still served right, fetched again where it was evicted.
        for n, dist in enumerate(wheels):
            assert (two, one)[n % 2].get(file_path(dist)).body == dist.content
        assert wait_until(lambda: _settled(cache_dir))
        assert sum(files_tree(cache_dir).values()) <= cap
    finally:
        _stop(one, two)


def test_lru_order_counts_hits_in_the_other_process(upstream_factory, tmp_path):
    a, b, c = (sized_wheel(name, "1.0", 12_000) for name in ("lru-a", "lru-b", "lru-c"))
    up = upstream_factory("json", None).add(a).add(b).add(c)
    sizes = sorted(d.size for d in (a, b, c))
    cap = sizes[-1] + sizes[-2] + 16
    cache_dir = str(tmp_path / "cache")
    args = ["--index-url", up.url, "--cache-dir", cache_dir, "--cache-size", str(cap)]
    with ProxyProcess(args) as first:
        for dist in (a, b):
            assert first.get(file_path(dist)).body == dist.content
    now = time.time()
    for dist, age in ((a, 200), (b, 100)):  # stored long ago: A first, then B
        [path] = stored_paths(cache_dir, dist.filename)
        os.utime(path, (now - age, now - age))
    one, two = _pair(up, cache_dir, "--cache-size", str(cap))
    try:
        assert two.get(file_path(a)).body == a.content  # A used, through the other process
        assert one.get(file_path(c)).body == c.content  # one makes room for C
        assert wait_until(lambda: stored_content(cache_dir, c.filename)) == c.content
        assert stored_content(cache_dir, a.filename) == a.content, "A was used last, yet evicted"
        assert stored_paths(cache_dir, b.filename) == []
        assert up.hits(a.filename) == 1
    finally:
        _stop(one, two)


def test_writer_killed_mid_download_the_other_process_completes_it(upstream_factory, tmp_path):
    dist = sized_wheel("killed", "1.0", 200_000)
    up = upstream_factory("json", None).add(dist)
    cache_dir = str(tmp_path / "cache")
    one, two = _pair(up, cache_dir)
    try:
        up.throttle(8_192, 0.03)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            doomed = pool.submit(one.get, file_path(dist), timeout=30)
            assert wait_until(lambda: any(os.path.getsize(t) > 0 for t in temp_files(cache_dir) if os.path.exists(t)))
            port = urllib.parse.urlsplit(two.url).port
            follower = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            follower.request("GET", file_path(dist))
            response = follower.getresponse()  # two answers: it follows one's download
            assert response.status == 200
            assert up.hits(dist.filename) == 1, "two fetched the file itself"
            one.kill()
            one.wait()
            with pytest.raises((http.client.HTTPException, ConnectionError)):  # cut mid-body
                doomed.result()
        body = response.read()
        follower.close()
        # Its client got every byte right: the rest came from upstream, hash-checked.
        assert body == dist.content
        up.throttle(None)
        # ... and two took the download over, so the file is stored for everyone.
        assert wait_until(lambda: stored_content(cache_dir, dist.filename), WAIT * 2) == dist.content
        assert wait_until(lambda: _settled(cache_dir))
        hits = up.hits(dist.filename)
        assert two.get(file_path(dist)).body == dist.content
        assert up.hits(dist.filename) == hits
    finally:
        _stop(one, two)


@pytest.mark.parametrize("writer_ends", ["stored", "stored corrupt", "given up"])
def test_proxy_follows_a_download_written_by_another_tool(upstream_factory, tmp_path, writer_ends):
    """This test is the other process: it takes the file's lock the way the proxy does
    and writes the temp file by hand; the proxy follows it instead of fetching."""
    dist = sized_wheel("handmade", "1.0", 40_000)
    up = upstream_factory("json", None).add(dist)
    cache_dir = str(tmp_path / "cache")
    final = os.path.join(cache_dir, "files", dist.normalized, f"sha256-{dist.sha256}", dist.filename)
    os.makedirs(os.path.dirname(final))
    lock = LockFile(lock_path(final))
    assert lock.acquire(wait=False)
    temp = temp_path(os.path.dirname(final))
    content = dist.content
    if writer_ends == "stored corrupt":
        content = content[:-10] + bytes(10)
    with ProxyProcess(["--index-url", up.url, "--cache-dir", cache_dir]) as proxy, open(temp, "wb") as file:
        file.write(content[:20_000])
        file.flush()
        lock.record(f"{os.path.basename(temp)} {len(content)}")
        connection = http.client.HTTPConnection("127.0.0.1", urllib.parse.urlsplit(proxy.url).port, timeout=30)
        connection.request("GET", file_path(dist))
        response = connection.getresponse()
        assert response.status == 200
        assert response.read(10_000) == dist.content[:10_000]  # streamed as written
        if writer_ends == "given up":  # midway (a temp file left whole and verified is kept)
            os.unlink(temp)
        else:
            file.write(content[20_000:])
            file.flush()
            os.replace(temp, final)
        lock.release()
        try:
            rest = response.read()
        except http.client.IncompleteRead as exc:
            rest = exc.partial
        connection.close()
        got = dist.content[:10_000] + rest
        if writer_ends == "stored corrupt":
            assert len(got) < dist.size, "a file that fails the hash was sent whole"
        else:
            assert got == dist.content
        # Only a writer that gave up makes the proxy fetch (the rest, for its client).
        assert up.hits(dist.filename) == (1 if writer_ends == "given up" else 0)


def test_a_writer_that_gives_no_sign_of_life_is_followed_only_until_it_counts_as_frozen(
    proxy, upstream_factory, monkeypatch, caplog
):
    """This test is the other process, frozen (SIGSTOP, a paused container) mid-download:
    its lock stays held, and neither its lock file (its heartbeat) nor its temp file
    changes. The proxy's client waits STALL_AFTER (made short here), then gets the rest
    from upstream, hash-checked; later clients do not wait on it at all; once the writer
    lets go, the file is downloaded and stored as usual."""
    monkeypatch.setattr(liveness, "STALL_AFTER", 1.5)
    dist = sized_wheel("frozen", "1.0", 60_000)
    up = upstream_factory("json", None).add(dist)
    running = proxy(up)
    cache_dir = running.settings.cache_dir
    final = os.path.join(cache_dir, "files", dist.normalized, f"sha256-{dist.sha256}", dist.filename)
    os.makedirs(os.path.dirname(final))
    lock = LockFile(lock_path(final))
    assert lock.acquire(wait=False)
    temp = temp_path(os.path.dirname(final))
    with open(temp, "wb") as file:
        file.write(dist.content[:20_000])
    lock.record(f"{os.path.basename(temp)} {dist.size}")
    caplog.set_level(logging.WARNING)
    first = running.get(file_path(dist), timeout=30)
    assert (first.status, first.body == dist.content) == (200, True)
    assert "has given no sign of life for 2 s" in caplog.text
    assert up.hits(dist.filename) == 1  # the rest, for this client
    started = time.monotonic()
    second = running.get(file_path(dist), timeout=30)
    waited = time.monotonic() - started
    assert (second.status, second.body == dist.content) == (200, True)
    assert waited < 1.0, f"the second client waited {waited:.1f} s on the frozen writer again"
    assert up.hits(dist.filename) == 2
    assert stored_paths(cache_dir, dist.filename) == []  # nothing stored beside the held lock
    os.unlink(temp)  # the writer thaws and gives up
    lock.release()
    assert running.get(file_path(dist)).body == dist.content
    assert wait_until(lambda: stored_content(cache_dir, dist.filename)) == dist.content
    assert caplog.text.count("no sign of life") == 1


def test_a_download_waits_on_a_ledger_held_by_a_frozen_process_no_longer_than_its_patience(
    proxy, upstream_factory, monkeypatch
):
    """This test is another process, frozen while it holds the ledger's lock: a file
    asked for meanwhile is passed through once the download's patience (made short
    here) is spent, and stored when asked again after the lock is let go."""
    monkeypatch.setattr(accounting, "DOWNLOAD_PATIENCE", 3.0)
    dist, other = sized_wheel("waiting", "1.0", 30_000), sized_wheel("after", "1.0", 30_000)
    up = upstream_factory("json", None).add(dist).add(other)
    running = proxy(up)
    cache_dir = running.settings.cache_dir
    ledger = os.open(os.path.join(cache_dir, "files", ".ledger"), os.O_RDWR)
    try:
        fcntl.flock(ledger, fcntl.LOCK_EX)
        result = running.get(file_path(dist), timeout=30)
        assert (result.status, result.body == dist.content) == (200, True)
        assert stored_paths(cache_dir, dist.filename) == []
        started = time.monotonic()  # the lock still held: the next download does not wait again
        result = running.get(file_path(other), timeout=30)
        assert (result.status, result.body == other.content) == (200, True)
        assert time.monotonic() - started < 2.0
    finally:
        os.close(ledger)
    assert running.get(file_path(dist)).body == dist.content
    assert wait_until(lambda: stored_content(cache_dir, dist.filename)) == dist.content


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "no-length"])
def test_a_file_over_the_cap_followed_in_the_other_process_is_not_fetched_again(upstream_factory, tmp_path, chunked):
    big = sized_wheel("oversized", "1.0", 120_000)
    up = upstream_factory("html", None).send_chunked(chunked)  # HTML: the index gives no size
    up.add(big, metadata=False)
    cache_dir = str(tmp_path / "cache")
    one, two = _pair(up, cache_dir, "--cache-size", str(big.size // 2))
    try:
        up.throttle(16_384, 0.02)  # the first download lasts a while: the other process follows it
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            first = pool.submit(one.get, file_path(big), timeout=30)
            assert wait_until(lambda: temp_files(cache_dir)), "no download started"
            second = pool.submit(two.get, file_path(big), timeout=30)
            results = [first.result(), second.result()]
        assert [(r.status, r.body == big.content) for r in results] == [(200, True), (200, True)]
        assert up.hits(big.filename) == 1
        assert wait_until(lambda: _settled(cache_dir))
        assert stored_paths(cache_dir, big.filename) == []
    finally:
        _stop(one, two)
    assert "ended early" not in one.stderr + two.stderr


def _leftovers(cache_dir: str) -> list:
    """What is under the files root beyond the bookkeeping every cache dir has (the
    ledger, its journal, the users' lock): stored files, temp and lock files, folders."""
    root = os.path.join(cache_dir, "files")
    found = []
    for directory, folders, names in os.walk(root):
        found += [os.path.relpath(os.path.join(directory, name), root) + "/" for name in folders]
        found += [os.path.relpath(os.path.join(directory, name), root) for name in names
                  if directory != root or name not in (".ledger", ".journal", ".users")]
    return sorted(found)


def test_a_writer_killed_mid_download_leaves_nothing_once_restarted_beside_the_other(upstream_factory, tmp_path):
    """SIGKILL (an OOM kill) mid-download while another process serves the dir: once the
    killed one is back (a worker restarted), nothing of its download stays on disk, and
    the cap counts no room for it."""
    dist = sized_wheel("oom", "1.0", 200_000)
    up = upstream_factory("json", None).add(dist)
    cache_dir = str(tmp_path / "cache")
    args = ["--index-url", up.url, "--cache-dir", cache_dir]
    one, two = _pair(up, cache_dir)
    restarted = None
    try:
        up.throttle(8_192, 0.03)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            doomed = pool.submit(one.get, file_path(dist), timeout=30)
            assert wait_until(lambda: any(os.path.getsize(t) > 0 for t in temp_files(cache_dir) if os.path.exists(t)))
            one.kill()
            one.wait()
            with pytest.raises((http.client.HTTPException, ConnectionError)):
                doomed.result()
        up.throttle(None)
        kinds = [LOCK_PREFIX if name.startswith(LOCK_PREFIX) else TEMP_PREFIX if name.startswith(TEMP_PREFIX) else name
                 for name in (os.path.basename(p) for p in _leftovers(cache_dir) if not p.endswith("/"))]
        assert kinds == [LOCK_PREFIX, TEMP_PREFIX]
        restarted = ProxyProcess(args)
        assert wait_until(lambda: _leftovers(cache_dir) == [])  # swept beside the start

        def no_reservation() -> bool:
            with Ledger(os.path.join(cache_dir, "files")).locked() as ledger:
                return ledger.reservations() == {}

        assert wait_until(no_reservation)
        for proxy in (two, restarted):
            assert json.loads(proxy.get("/", {"Accept": "application/json"}).body)["file_cache"]["used_bytes"] == 0
    finally:
        _stop(*(p for p in (one, two, restarted) if p is not None))


def test_a_file_spooled_by_a_killed_process_goes_once_it_is_restarted_beside_the_other(upstream_factory, tmp_path):
    """A file over the cap is spooled for a client that reads slowly; the download ends
    (its file's lock goes) while the spool stays for that reader; SIGKILL then. The
    spool's lock names the file, so the restarted process removes it at once, not
    after the age rule for temp files nobody names."""
    big = sized_wheel("spooled", "1.0", 12_000_000)
    up = upstream_factory("json", None).add(big)
    cache_dir = str(tmp_path / "cache")
    args = ["--index-url", up.url, "--cache-dir", cache_dir, "--cache-size", str(big.size // 2)]
    one, two = _pair(up, cache_dir, "--cache-size", str(big.size // 2))
    restarted = None
    try:
        reader = http.client.HTTPConnection("127.0.0.1", urllib.parse.urlsplit(one.url).port, timeout=30)
        reader.request("GET", file_path(big))
        response = reader.getresponse()
        assert response.status == 200 and response.read(1000) == big.content[:1000]

        def spooled_whole() -> bool:
            names = [os.path.basename(p) for p in _leftovers(cache_dir) if not p.endswith("/")]
            sizes = [os.path.getsize(t) for t in temp_files(cache_dir) if os.path.exists(t)]
            return sizes == [big.size] and not any(n.startswith(LOCK_PREFIX + big.normalized) for n in names)

        assert wait_until(spooled_whole), _leftovers(cache_dir)
        one.kill()
        one.wait()
        reader.close()
        restarted = ProxyProcess(args)
        assert wait_until(lambda: _leftovers(cache_dir) == []), _leftovers(cache_dir)
    finally:
        _stop(*(p for p in (one, two, restarted) if p is not None))


@pytest.mark.parametrize("download", ["stored", "spooled"])
def test_a_stop_mid_download_leaves_nothing_behind(upstream_factory, tmp_path, download):
    """SIGTERM (a worker replaced, a deploy) while a file is downloaded for a client:
    its temp file, its lock file, the spool's lock and the folders made for it go with
    the process, so nothing is left for a later start or `verify` to blame on a kill."""
    dist = sized_wheel("stopped", "1.0", 4_000_000)
    up = upstream_factory("json", None).add(dist)
    cache_dir = str(tmp_path / "cache")
    cap = dist.size // 2 if download == "spooled" else dist.size * 2
    proxy = ProxyProcess(["--index-url", up.url, "--cache-dir", cache_dir, "--cache-size", str(cap)])
    try:
        up.throttle(16_384, 0.05)  # the download lasts longer than the stop takes
        reader = http.client.HTTPConnection("127.0.0.1", urllib.parse.urlsplit(proxy.url).port, timeout=30)
        reader.request("GET", file_path(dist))
        response = reader.getresponse()
        assert response.status == 200 and response.read(1000) == dist.content[:1000]
        assert temp_files(cache_dir)
        if download == "spooled":
            assert os.path.exists(os.path.join(cache_dir, "files", LOCK_PREFIX + "spool"))
    finally:
        _stop(proxy)
    reader.close()
    assert _leftovers(cache_dir) == []


@pytest.mark.parametrize("cap", ["0", "1"])
def test_a_process_started_beside_another_with_a_smaller_cap_evicts_nothing_at_start(upstream_factory, tmp_path, cap):
    """A second process on the directory (a rolling restart, a pass-through instance)
    with a cap of 0 (never store) or a smaller one does not clear what the first keeps."""
    wheels = [sized_wheel(f"kept-{n}", "1.0", 20_000) for n in range(3)]
    up = upstream_factory("json", None)
    for dist in wheels:
        up.add(dist)
    cache_dir = str(tmp_path / "cache")
    first = ProxyProcess(["--index-url", up.url, "--cache-dir", cache_dir])
    second = None
    try:
        for dist in wheels:
            assert first.get(file_path(dist)).body == dist.content
        assert wait_until(lambda: all(stored_content(cache_dir, d.filename) for d in wheels))
        second = ProxyProcess(["--index-url", up.url, "--cache-dir", cache_dir, "--cache-size", cap])
        assert second.get(file_path(wheels[0])).body == wheels[0].content
        assert all(stored_content(cache_dir, d.filename) == d.content for d in wheels)
        assert "evicted" not in second.stderr
    finally:
        _stop(*(p for p in (first, second) if p is not None))


def test_an_eviction_in_one_process_leaves_no_empty_folders(upstream_factory, tmp_path):
    a, b = sized_wheel("gone-a", "1.0", 20_000), sized_wheel("gone-b", "1.0", 20_000)
    up = upstream_factory("json", None).add(a).add(b)
    cache_dir = str(tmp_path / "cache")
    one, two = _pair(up, cache_dir, "--cache-size", str(max(a.size, b.size) + 100))
    try:
        assert one.get(file_path(a)).body == a.content
        assert wait_until(lambda: stored_content(cache_dir, a.filename)) == a.content
        assert two.get(file_path(b)).body == b.content  # evicts a, stored by the other process
        assert wait_until(lambda: _leftovers(cache_dir) == [f"{b.normalized}/", f"{b.normalized}/sha256-{b.sha256}/",
                                                          f"{b.normalized}/sha256-{b.sha256}/{b.filename}"])
    finally:
        _stop(one, two)
