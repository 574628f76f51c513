"""File downloads through the proxy, black-box over real HTTP (and real pip where said):
stream-through, one upstream download per file, verified and atomic storage, crash
safety, the persistent LRU cache and its cap, two proxies on one cache dir, PEP 658/714
metadata files, and the HTTP details of file responses.

Ordering facts ("the client had bytes before the upstream finished") are checked
against the state of a held upstream response (:meth:`Upstream.hold`): the fake
index sends the first part of a file, then holds the rest until the test releases it.
Nothing here asserts on wall-clock durations; deadlines only bound how long a broken
proxy can make a test wait.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import http.client as http_client
import os
import re
import socket
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

import pytest

from proxpi_min.files.ledger import Ledger
from tests.support.cache_dir import (
    WAIT, file_path, files_tree, peak_while, settled, sized_wheel, stored_content, stored_paths, wait_until,
)
from tests.support.dists import Dist
from tests.support.markers import needs_pip_json_metadata
from tests.support.pages import json_files, parse_anchors
from tests.support.proxy import PIP_ACCEPT, ProxyProcess, run_pip
from tests.support.upstream import Upstream

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
FILE_CACHE_CONTROL = "public, max-age=31536000, immutable"
# How long a held upstream response waits at most (Upstream.hold); a client here waits
# a few times that, so that a proxy that does not stream cannot hang a test.
BACKSTOP = WAIT


# -- HTTP clients ----------------------------------------------------------------


def open_response(base_url: str, path: str, headers: Optional[dict] = None, method: str = "GET",
                  version: str = "HTTP/1.1", timeout: float = 3 * BACKSTOP):
    """(connection, response) with the body not yet read."""
    parts = urllib.parse.urlsplit(base_url)
    conn = http_client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    if version == "HTTP/1.0":
        conn._http_vsn, conn._http_vsn_str = 10, "HTTP/1.0"
    conn.request(method, path, headers=headers or {})
    return conn, conn.getresponse()


class CutShort(NamedTuple):
    status: int
    headers: http_client.HTTPMessage
    received: int  # body bytes the client got before the response broke off
    error: BaseException


def read_broken(base_url: str, path: str) -> Any:
    """GET *path*; a :class:`CutShort` if the body broke off, else (status, headers, body)."""
    conn, response = open_response(base_url, path)
    try:
        return finish_read(response)
    finally:
        conn.close()


def finish_read(response: http_client.HTTPResponse) -> Any:
    """Read the rest of *response*: a :class:`CutShort` if it broke off (fewer bytes
    than its Content-Length, or chunked without the last chunk), else (status, headers, body)."""
    try:
        body = response.read()
    except http_client.IncompleteRead as exc:
        return CutShort(response.status, response.headers, len(exc.partial), exc)
    except (http_client.HTTPException, ConnectionError, socket.timeout) as exc:
        return CutShort(response.status, response.headers, -1, exc)
    return response.status, response.headers, body


def headers_without_date(headers: http_client.HTTPMessage) -> list:
    return sorted((k.lower(), v) for k, v in headers.items() if k.lower() != "date")


# -- an HTML index whose file responses can be held ------------------------------


@pytest.fixture
def html_index(upstream_factory) -> Callable[..., Upstream]:
    """``make(*dists, chunked=False)``: an HTML index (relative links, sha256 fragments,
    no sizes, no metadata) listing *dists*; ``chunked=True`` sends files without a length."""

    def make(*dists: Dist, chunked: bool = False) -> Upstream:
        index = upstream_factory("html", None).send_chunked(chunked)
        for dist in dists:
            index.add(dist, metadata=False)
        return index

    return make


# =============================================================================
# Stream-through
# =============================================================================


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "upstream-chunked"])
def test_uncached_file_streams_through_while_written_to_temp(proxy, html_index, chunked):
    dist = sized_wheel("streamy", "1.0", 96_000)
    index = html_index(dist, chunked=chunked)
    p = proxy(index.url)
    assert p.get(f"/index/{dist.normalized}/").status == 200
    hold = index.hold(dist)

    conn, response = open_response(p.url, file_path(dist))
    try:
        assert response.status == 200
        if chunked:
            # The upstream gave no length and the HTML index none either: HTTP/1.1
            # chunked, never a made-up Content-Length.
            assert response.getheader("Content-Length") is None
            assert response.getheader("Transfer-Encoding", "").lower() == "chunked"
        else:
            assert int(response.getheader("Content-Length")) == dist.size
        first = response.read1(65536)
        upstream_done_at_first_bytes = hold.passed
        in_cache_dir = files_tree(p.settings.cache_dir)
        hold.open()
        rest = response.read()
    finally:
        conn.close()

    assert first, "no body bytes"
    assert not upstream_done_at_first_bytes, "the first bytes came only after the upstream sent everything"
    # Meanwhile the bytes were going to a temp file in the cache dir, not the final name.
    assert dist.filename not in {os.path.basename(rel) for rel in in_cache_dir}, in_cache_dir
    assert any(size > 0 for size in in_cache_dir.values()), in_cache_dir
    assert first + rest == dist.content
    assert wait_until(lambda: stored_content(p.settings.cache_dir, dist.filename)) == dist.content
    assert list(files_tree(p.settings.cache_dir)) == [os.path.relpath(
        stored_paths(p.settings.cache_dir, dist.filename)[0], os.path.join(p.settings.cache_dir, "files"))]


def test_a_stop_mid_download_leaves_no_lock_file_nor_reservation(proxy, html_index):
    """A download the stop abandons gives everything back: its temp file, its room
    under the cap (other processes on the cache dir count it) and its lock file."""
    dist = sized_wheel("abandoned", "1.0", 96_000)
    index = html_index(dist)
    p = proxy(index.url)
    assert p.get(f"/index/{dist.normalized}/").status == 200
    hold = index.hold(dist)
    conn, response = open_response(p.url, file_path(dist))
    root = os.path.join(p.settings.cache_dir, "files")

    def writing() -> list:
        return sorted(name for _, _, names in os.walk(root) for name in names if name.startswith((".lock-", ".tmp-")))

    try:
        assert response.status == 200 and response.read1(65536)
        assert len(writing()) == 2  # the lock file and the temp file
        p.stop()
    finally:
        conn.close()
        hold.open()
    assert writing() == []
    ledger = Ledger(root)
    try:
        with ledger.locked() as held:
            assert held.reservations() == {}
    finally:
        ledger.close()


def test_upstream_without_length_is_sent_chunked_never_with_a_wrong_length(proxy, html_index):
    dist = sized_wheel("chunky", "1.0", 30_000)
    index = html_index(dist, chunked=True)
    p = proxy(index.url)
    hold = index.hold(dist)  # the proxy answers before it can know the length
    conn, response = open_response(p.url, file_path(dist))
    try:
        assert response.status == 200
        assert response.getheader("Content-Length") is None
        assert response.getheader("Transfer-Encoding", "").lower() == "chunked"
        hold.open()
        assert response.read() == dist.content  # http.client checks the chunked framing
    finally:
        conn.close()
    # Once cached, the length is known.
    result = p.get(file_path(dist))
    assert result.body == dist.content
    assert int(result.headers["Content-Length"]) == dist.size
    assert index.hits(dist.filename) == 1


def test_upstream_without_length_to_http10_client_is_read_to_close(proxy, html_index):
    dist = sized_wheel("chunky", "1.0", 30_000)
    index = html_index(dist, chunked=True)
    p = proxy(index.url)
    hold = index.hold(dist)
    conn, response = open_response(p.url, file_path(dist), version="HTTP/1.0")
    try:
        assert response.status == 200
        assert response.getheader("Transfer-Encoding") is None  # HTTP/1.0 has no chunked
        length = response.getheader("Content-Length")
        assert length is None or int(length) == dist.size
        hold.open()
        assert response.read() == dist.content
    finally:
        conn.close()


# =============================================================================
# One upstream download per file
# =============================================================================


def test_twenty_concurrent_clients_share_one_download_and_stream(proxy, html_index):
    dist = sized_wheel("crowd", "1.0", 64_000)
    index = html_index(dist)
    p = proxy(index.url)
    assert p.get(f"/index/{dist.normalized}/").status == 200
    hold = index.hold(dist)
    clients = 20
    got_first = threading.Condition()
    first_seen: list[bool] = []  # per client: upstream already past the gate at its first bytes?
    results: list[Any] = []

    def client() -> None:
        try:
            conn, response = open_response(p.url, file_path(dist))
            try:
                body = response.read1(65536)
                with got_first:
                    first_seen.append(hold.passed)
                    got_first.notify_all()
                body += response.read()
                results.append((response.status, body))
            finally:
                conn.close()
        except Exception as exc:  # reported below
            results.append((None, repr(exc)))
            with got_first:
                got_first.notify_all()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    with got_first:
        got_first.wait_for(lambda: len(first_seen) + sum(r[0] is None for r in results) >= clients, WAIT)
    hold.open()
    for thread in threads:
        thread.join(3 * BACKSTOP)

    assert [r for r in results if r[0] is None] == []
    assert len(results) == clients
    assert {status for status, _ in results} == {200}
    assert {hashlib.sha256(body).hexdigest() for _, body in results} == {dist.sha256}
    assert index.hits(dist.filename) == 1
    # Every client, leader and followers, had bytes while the upstream was still sending.
    assert first_seen == [False] * clients


def test_twenty_concurrent_clients_throttled_upstream_one_get(proxy, upstream_factory):
    dist = sized_wheel("crowd", "2.0", 40_000)
    up = upstream_factory("json", None)
    up.add(dist)
    up.throttle(4096, 0.02)
    p = proxy(up)
    assert p.get(f"/index/{dist.normalized}/").status == 200
    results: list[Any] = []
    start = threading.Barrier(20)

    def client() -> None:
        start.wait(WAIT)
        results.append(p.get(file_path(dist), timeout=30))

    threads = [threading.Thread(target=client) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 20
    assert {r.status for r in results} == {200}
    assert {r.body for r in results} == {dist.content}
    assert up.hits(f"/files/{dist.normalized}/{dist.filename}") == 1
    assert stored_content(p.settings.cache_dir, dist.filename) == dist.content


# =============================================================================
# Verified and atomic
# =============================================================================


def _assert_cut_short(result: Any, size: int) -> None:
    if isinstance(result, CutShort):
        assert result.status == 200, result
        length = result.headers.get("Content-Length")
        if length is not None:
            assert int(length) == size
            assert result.received < size
        else:
            assert result.headers.get("Transfer-Encoding", "").lower() == "chunked"
        return
    status, headers, body = result
    # A complete response is only acceptable as an error, never as a 200 with bytes.
    assert status >= 500, (status, len(body))


@pytest.mark.parametrize("fmt", ["html", "json"])
@pytest.mark.parametrize("mode", ["corrupt", "truncate", "midway"])
def test_failed_download_is_cut_short_not_stored_then_recovers(proxy, upstream_factory, fmt, mode):
    dist = sized_wheel("fragile", "1.0", 40_000)
    up = upstream_factory(fmt, None)
    up.add(dist)
    p = proxy(up)
    assert p.get(f"/index/{dist.normalized}/").status == 200
    up.fail(dist.filename, mode, times=1)

    _assert_cut_short(read_broken(p.url, file_path(dist)), dist.size)
    assert wait_until(lambda: files_tree(p.settings.cache_dir) == {}), files_tree(p.settings.cache_dir)
    assert up.hits(dist.filename) == 1

    result = p.get(file_path(dist))
    assert result.status == 200 and result.body == dist.content
    assert wait_until(lambda: stored_content(p.settings.cache_dir, dist.filename)) == dist.content
    assert p.get(file_path(dist)).body == dist.content
    assert up.hits(dist.filename) == 2


@pytest.mark.parametrize("mode", ["corrupt", "cut"])
def test_failed_chunked_download_is_cut_short_not_stored(proxy, html_index, mode):
    dist = sized_wheel("fragile", "2.0", 30_000)
    index = html_index(dist, chunked=True)
    p = proxy(index.url)
    hold = index.hold(dist, mode=mode)
    conn, response = open_response(p.url, file_path(dist))
    try:
        # Headers are out before the upstream has sent everything: the proxy cannot
        # know yet that this download fails, so it must break the response off.
        assert response.status == 200
        assert response.getheader("Transfer-Encoding", "").lower() == "chunked"
        hold.open()
        result = finish_read(response)
    finally:
        conn.close()
    assert isinstance(result, CutShort), f"a complete response: {result[0]}, {len(result[2])} bytes"
    assert wait_until(lambda: files_tree(p.settings.cache_dir) == {}), files_tree(p.settings.cache_dir)
    result = p.get(file_path(dist))
    assert result.status == 200 and result.body == dist.content
    assert wait_until(lambda: stored_content(p.settings.cache_dir, dist.filename)) == dist.content


@pytest.mark.parametrize("cap", [1 << 30, 0], ids=["download", "pass-through"])
def test_trickling_upstream_is_cut_by_the_minimum_rate(proxy, html_index, monkeypatch, caplog, cap):
    # The rate is averaged over upstream_body.RATE_WINDOW (30 s); a short window keeps the test short.
    from proxpi_min.files import upstream_body

    monkeypatch.setattr(upstream_body, "RATE_WINDOW", 0.3)
    dist = sized_wheel("trickle", "1.0", 30_000)
    index = html_index(dist)
    index.throttle(16, 0.05)  # about 320 bytes a second, every read well within the read timeout
    p = proxy(index.url, cache_size=cap, download_min_rate=4096)
    with caplog.at_level("WARNING"):
        result = read_broken(p.url, file_path(dist))
    assert isinstance(result, CutShort), f"a complete response: {result[0]}"
    assert 0 <= result.received < dist.size
    assert wait_until(lambda: files_tree(p.settings.cache_dir) == {}), files_tree(p.settings.cache_dir)
    assert any("under the minimum of 4096 bytes a second" in r.getMessage() for r in caplog.records), caplog.text
    index.throttle(None)
    result = p.get(file_path(dist))  # a healthy upstream again: served whole
    assert result.status == 200 and result.body == dist.content


def test_kill_9_mid_download_leaves_nothing_partial(html_index, tmp_path):
    dist = sized_wheel("crashy", "1.0", 64_000)
    index = html_index(dist)
    cache_dir = tmp_path / "cache"
    hold = index.hold(dist)
    first = ProxyProcess(["--index-url", index.url, "--cache-dir", str(cache_dir)])
    try:
        conn, response = open_response(first.url, file_path(dist))
        assert response.status == 200
        assert hold.sent_first.wait(WAIT)
        # The download is under way: its bytes go to a temp file in the cache dir.
        assert wait_until(lambda: files_tree(cache_dir)), "no temp file in the cache dir"
        first.kill()
        first.wait()
        conn.close()
    finally:
        first.kill()
        first.wait()
    leftovers = files_tree(cache_dir)
    assert leftovers and not stored_paths(cache_dir, dist.filename), leftovers

    with ProxyProcess(["--index-url", index.url, "--cache-dir", str(cache_dir)]) as second:
        assert files_tree(cache_dir) == {}, "temp files left after start"
        result = second.get(file_path(dist))
        assert result.status == 200 and result.body == dist.content
        assert int(result.headers["Content-Length"]) == dist.size
        assert wait_until(lambda: stored_content(cache_dir, dist.filename)) == dist.content
    assert index.hits(dist.filename) == 2


# =============================================================================
# Persistent LRU, the cap
# =============================================================================


def _three_similar_wheels() -> list[Dist]:
    return [sized_wheel(name, "1.0", 12_000) for name in ("lru-a", "lru-b", "lru-c")]


def _two_of_three_setup(upstream_factory, tmp_path):
    """Three similar wheels on a fresh upstream, a cache dir, and a cap that holds two."""
    wheels = _three_similar_wheels()
    up = upstream_factory("html", None)
    for dist in wheels:
        up.add(dist)
    return wheels, up, str(tmp_path / "cache"), _cap_for_two(list(wheels))


def _cap_for_two(dists: list[Dist]) -> int:
    sizes = sorted(d.size for d in dists)
    cap = sizes[-1] + sizes[-2] + 16
    assert cap < sum(sizes)
    return cap


def test_restart_serves_stored_files_without_upstream_get(proxy, upstream_factory, dists, tmp_path):
    up = upstream_factory("html")
    cache_dir = str(tmp_path / "cache")
    chosen = [dists.alpha_1, dists.alpha_2, dists.alpha_2_sdist, dists.beta_1]
    first = proxy(up, cache_dir=cache_dir)
    for dist in chosen:
        assert first.get(file_path(dist)).body == dist.content
    first.stop()
    up.reset_hits()

    second = proxy(up, cache_dir=cache_dir)
    for dist in chosen:
        result = second.get(file_path(dist))
        assert result.status == 200 and result.body == dist.content
    assert [r.path for r in up.requests if not r.path.startswith("/simple/")] == []


@pytest.mark.parametrize("restarted_by", ["in-process", "process"])
def test_lru_recency_survives_restart(proxy, upstream_factory, tmp_path, restarted_by):
    (a, b, c), up, cache_dir, cap = _two_of_three_setup(upstream_factory, tmp_path)
    first = proxy(up, cache_dir=cache_dir, cache_size=cap)
    for dist in (a, b):  # access order: A, then B
        assert first.get(file_path(dist)).body == dist.content
    first.stop()
    now = time.time()
    for dist, age in ((a, 200), (b, 100)):
        [path] = stored_paths(cache_dir, dist.filename)
        os.utime(path, (now - age, now - age))
    up.reset_hits()

    def run(p: Any) -> None:
        assert p.get(file_path(a)).body == a.content  # A is now the most recent
        assert up.hits(a.filename) == 0
        assert p.get(file_path(c)).body == c.content
        assert wait_until(lambda: stored_content(cache_dir, c.filename)) == c.content
        assert stored_content(cache_dir, a.filename) == a.content, "A was used last, yet evicted"
        assert stored_paths(cache_dir, b.filename) == [], "B, the least recently used, is still there"
        assert sum(files_tree(cache_dir).values()) <= cap
        assert p.get(file_path(a)).body == a.content
        assert up.hits(a.filename) == 0
        assert p.get(file_path(b)).body == b.content
        assert up.hits(b.filename) == 1  # evicted, so fetched again

    if restarted_by == "process":
        with ProxyProcess(["--index-url", up.url, "--cache-dir", cache_dir, "--cache-size", str(cap)]) as p:
            run(p)
    else:
        run(proxy(up, cache_dir=cache_dir, cache_size=cap))


def test_lru_recency_of_hits_before_restart_survives(proxy, upstream_factory, tmp_path):
    """A hit (not only a download) counts as use, and that survives a restart."""
    (a, b, c), up, cache_dir, cap = _two_of_three_setup(upstream_factory, tmp_path)
    first = proxy(up, cache_dir=cache_dir, cache_size=cap)
    for dist in (a, b):
        assert first.get(file_path(dist)).body == dist.content
    assert settled(cache_dir)
    now = time.time()
    for dist, age in ((a, 200), (b, 100)):  # downloaded: A long ago, B later
        [path] = stored_paths(cache_dir, dist.filename)
        os.utime(path, (now - age, now - age))
    assert first.get(file_path(a)).body == a.content  # ... then A used again
    first.stop()

    second = proxy(up, cache_dir=cache_dir, cache_size=cap)
    assert second.get(file_path(c)).body == c.content
    assert wait_until(lambda: stored_content(cache_dir, c.filename)) == c.content
    assert stored_content(cache_dir, a.filename) == a.content, "A was used last, yet evicted"
    assert stored_paths(cache_dir, b.filename) == []


def test_total_size_stays_under_cap(proxy, upstream_factory, dists):
    up = upstream_factory("json")
    chosen = [dists.alpha_1, dists.alpha_2, dists.alpha_2_sdist, dists.beta_1, dists.gamma_2, dists.delta,
              dists.zope]
    cap = sorted(d.size for d in chosen)[-1] * 3
    assert cap < sum(d.size for d in chosen)
    p = proxy(up, cache_size=cap)
    for dist in chosen:
        if dist.metadata is not None and dist is not dists.zope:
            assert p.get(file_path(dist) + ".metadata").body == dist.metadata
        assert p.get(file_path(dist)).body == dist.content
        assert wait_until(lambda: stored_content(p.settings.cache_dir, dist.filename)) == dist.content
        assert 0 < sum(files_tree(p.settings.cache_dir).values()) <= cap
    for dist in chosen:  # evicted or not, every file downloads correctly
        assert p.get(file_path(dist)).body == dist.content
        assert settled(p.settings.cache_dir)
        assert sum(files_tree(p.settings.cache_dir).values()) <= cap


@pytest.mark.parametrize("fmt", ["json", "html"], ids=["index-size", "content-length"])
def test_six_downloads_at_once_never_put_more_than_the_cap_plus_one_file_on_disk(proxy, upstream_factory, fmt):
    chosen = [sized_wheel(f"six{n}", "1.0", 60_000) for n in range(6)]
    up = upstream_factory(fmt, None)
    for dist in chosen:
        up.add(dist, metadata=False)
    largest = max(dist.size for dist in chosen)
    cap = 2 * largest + largest // 2  # room for two and a half
    up.throttle(8192, 0.02)  # slow enough that all six are in flight together
    p = proxy(up, cache_size=cap)
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results, peak = peak_while(p.settings.cache_dir, lambda: list(pool.map(lambda d: p.get(file_path(d)), chosen)))
    assert [(r.status, r.body) for r in results] == [(200, d.content) for d in chosen]
    assert settled(p.settings.cache_dir)
    assert peak <= cap + largest, (peak, cap)
    assert 0 < sum(files_tree(p.settings.cache_dir).values()) <= cap
    up.throttle(None)
    for dist in chosen:  # those passed through are stored now there is room
        assert p.get(file_path(dist)).body == dist.content
    assert sum(files_tree(p.settings.cache_dir).values()) <= cap


def test_file_larger_than_cap_size_known_is_streamed_whole_but_not_stored(proxy, upstream_factory, dists):
    big = sized_wheel("bulky", "1.0", 40_000)
    small = dists.alpha_1
    up = upstream_factory("json", None)  # JSON gives the size up front
    up.add(big).add(small)
    cap = big.size // 2
    assert small.size < cap
    p = proxy(up, cache_size=cap)
    assert p.get(file_path(small)).body == small.content
    assert wait_until(lambda: stored_content(p.settings.cache_dir, small.filename))
    for _ in range(2):
        result = p.get(file_path(big))
        assert result.status == 200 and result.body == big.content
        assert int(result.headers["Content-Length"]) == big.size
    assert up.hits(big.filename) == 2
    assert stored_paths(p.settings.cache_dir, big.filename) == []
    # The small file was not evicted to make room for a file that was never stored.
    assert stored_content(p.settings.cache_dir, small.filename) == small.content
    assert p.get(file_path(small)).body == small.content
    assert up.hits(small.filename) == 1


def test_file_larger_than_cap_size_unknown_is_streamed_whole_but_not_stored(proxy, html_index):
    big = sized_wheel("bulky", "1.0", 40_000)
    small = sized_wheel("tiny", "1.0", 100)
    index = html_index(big, small)  # HTML, no sizes: the proxy learns the size while downloading
    cap = big.size // 2
    assert small.size < cap
    p = proxy(index.url, cache_size=cap)
    assert p.get(file_path(small)).body == small.content
    assert wait_until(lambda: stored_content(p.settings.cache_dir, small.filename))
    for _ in range(2):
        # Held midway, so that the proxy answers while its download is still running.
        hold = index.hold(big)
        conn, response = open_response(p.url, file_path(big))
        try:
            assert response.status == 200
            length = response.getheader("Content-Length")
            assert length is None or int(length) == big.size
            hold.open()
            assert response.read() == big.content
        finally:
            conn.close()
        assert settled(p.settings.cache_dir)  # that download over: the next is a new one
    assert index.hits(big.filename) == 2
    assert stored_paths(p.settings.cache_dir, big.filename) == []
    assert stored_content(p.settings.cache_dir, small.filename) == small.content
    assert p.get(file_path(small)).body == small.content
    assert index.hits(small.filename) == 1


def _crowd_on_held_download(p: Any, hold: Any, dist: Dist, clients: int) -> list:
    """*clients* concurrent GETs of *dist* while its upstream response is held midway:
    each client's first bytes are waited for, then the hold is opened; returns each
    client's (status, body), or (None, the error)."""
    results: list[Any] = []
    started = threading.Semaphore(0)

    def client() -> None:
        try:
            conn, response = open_response(p.url, file_path(dist))
            try:
                first = response.read1(65536)
                started.release()
                results.append((response.status, first + response.read()))
            finally:
                conn.close()
        except Exception as exc:  # reported by the caller
            results.append((None, repr(exc)))
            started.release()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for _ in threads:
        started.acquire(timeout=3 * BACKSTOP)
    hold.open()
    for thread in threads:
        thread.join(3 * BACKSTOP)
    return results


def test_concurrent_clients_of_a_file_over_the_cap_share_one_upstream_get(proxy, upstream_factory):
    big = sized_wheel("towering", "1.0", 60_000)
    up = upstream_factory("json", None)  # JSON gives the size up front: over the cap before any GET
    up.add(big, metadata=False)
    cap = big.size // 2
    p = proxy(up, cache_size=cap)
    assert p.get(f"/index/{big.normalized}/").status == 200
    hold = up.hold(big)

    results, peak = peak_while(p.settings.cache_dir, lambda: _crowd_on_held_download(p, hold, big, 8))

    assert results == [(200, big.content)] * 8
    assert up.hits(big.filename) == 1
    assert settled(p.settings.cache_dir)
    assert files_tree(p.settings.cache_dir) == {}, "a file over the cap was left on disk"
    assert peak <= cap + big.size, (peak, cap)


def test_concurrent_clients_of_a_file_with_no_room_beside_a_download_share_one_upstream_get(proxy, upstream_factory):
    other = sized_wheel("roomy", "1.0", 40_000)
    big = sized_wheel("crowded", "1.0", 40_000)
    up = upstream_factory("json", None)
    up.add(other, metadata=False).add(big, metadata=False)
    cap = max(other.size, big.size) + min(other.size, big.size) // 2  # either fits, not both
    p = proxy(up, cache_size=cap)
    for dist in (other, big):
        assert p.get(f"/index/{dist.normalized}/").status == 200
    other_hold, big_hold = up.hold(other), up.hold(big)
    # The other download holds its room under the cap while its upstream is held.
    other_conn, other_response = open_response(p.url, file_path(other))
    try:
        assert other_hold.sent_first.wait(WAIT)
        results, peak = peak_while(p.settings.cache_dir, lambda: _crowd_on_held_download(p, big_hold, big, 8))
        other_hold.open()
        assert other_response.read() == other.content
    finally:
        other_conn.close()

    assert results == [(200, big.content)] * 8
    assert up.hits(big.filename) == 1
    assert settled(p.settings.cache_dir)
    assert stored_content(p.settings.cache_dir, other.filename) == other.content
    assert sum(files_tree(p.settings.cache_dir).values()) <= cap
    assert peak <= cap + big.size, (peak, cap)


def test_files_over_the_cap_of_unknown_size_at_once_never_put_more_than_one_beyond_the_cap_on_disk(proxy, html_index):
    chosen = [sized_wheel(f"wide{n}", "1.0", 40_000) for n in range(4)]
    index = html_index(*chosen)  # HTML, no sizes: each is over the cap by its Content-Length only
    largest = max(dist.size for dist in chosen)
    cap = min(dist.size for dist in chosen) // 2
    index.throttle(8192, 0.02)  # slow enough that all four are in flight together
    p = proxy(index.url, cache_size=cap)
    wanted = [dist for dist in chosen for _ in range(3)]
    with concurrent.futures.ThreadPoolExecutor(len(wanted)) as pool:
        results, peak = peak_while(p.settings.cache_dir, lambda: list(pool.map(lambda d: p.get(file_path(d)), wanted)))
    assert [(r.status, r.body) for r in results] == [(200, d.content) for d in wanted]
    assert settled(p.settings.cache_dir)
    assert peak <= cap + largest, (peak, cap)
    assert files_tree(p.settings.cache_dir) == {}


# =============================================================================
# Two proxies on one cache dir
# =============================================================================


def test_two_proxy_processes_share_one_cache_dir(upstream_factory, dists, tmp_path):
    up = upstream_factory("html")
    busy = sized_wheel("shared", "1.0", 64_000)
    up.add(busy)
    cache_dir = str(tmp_path / "cache")
    args = ["--index-url", up.url, "--cache-dir", cache_dir]
    with ProxyProcess(args) as one, ProxyProcess(args) as two:
        # The same file through both at once (throttled): both correct.
        up.throttle(8192, 0.02)
        results: dict = {}
        threads = [threading.Thread(target=lambda n=n, p=p: results.__setitem__(n, p.get(file_path(busy), timeout=30)))
                   for n, p in (("one", one), ("two", two))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        up.throttle(None)
        assert {n: (r.status, r.body == busy.content) for n, r in results.items()} == {
            "one": (200, True), "two": (200, True)}
        assert wait_until(lambda: stored_content(cache_dir, busy.filename)) == busy.content

        # Stored by one, served by the other without an upstream download, both ways.
        for stored_by, served_by, dist in ((one, two, dists.alpha_2), (two, one, dists.beta_1)):
            assert stored_by.get(file_path(dist)).body == dist.content
            assert wait_until(lambda: stored_content(cache_dir, dist.filename)) == dist.content
            result = served_by.get(file_path(dist))
            assert result.status == 200 and result.body == dist.content
            assert up.hits(dist.filename) == 1
    assert not [rel for rel in files_tree(cache_dir) if os.path.basename(rel) not in
                {busy.filename, dists.alpha_2.filename, dists.beta_1.filename}]


def test_file_evicted_by_one_proxy_is_refetched_by_the_other(proxy, upstream_factory, tmp_path):
    (a, b, c), up, cache_dir, cap = _two_of_three_setup(upstream_factory, tmp_path)
    one = proxy(up, cache_dir=cache_dir, cache_size=cap)
    two = proxy(up, cache_dir=cache_dir, cache_size=cap)
    for dist in (a, b):
        assert one.get(file_path(dist)).body == dist.content
    assert two.get(file_path(a)).body == a.content  # served from what one stored
    assert up.hits(a.filename) == 1
    assert one.get(file_path(c)).body == c.content  # one evicts A or B
    assert wait_until(lambda: stored_content(cache_dir, c.filename)) == c.content
    gone = [d for d in (a, b) if not stored_paths(cache_dir, d.filename)]
    assert len(gone) == 1, files_tree(cache_dir)
    [evicted] = gone
    kept = b if evicted is a else a
    hits_before = up.hits(evicted.filename)
    result = two.get(file_path(evicted))
    assert result.status == 200 and result.body == evicted.content
    assert up.hits(evicted.filename) == hits_before + 1
    # Two makes room under the one cap, whoever stored the files: the kept one, now
    # the least recently used (C came after it), goes.
    assert wait_until(lambda: stored_content(cache_dir, evicted.filename)) == evicted.content
    assert stored_paths(cache_dir, kept.filename) == []
    assert sum(files_tree(cache_dir).values()) <= cap


@pytest.mark.parametrize("kind", ["json", "html"], ids=["size-on-the-page", "size-as-stored"])
def test_a_stored_file_removed_or_cut_short_by_hand_is_fetched_again_and_counted_once(
    proxy, upstream_factory, dists, kind
):
    # A JSON page gives each file's size; without one, the hashed file's size as stored.
    up = upstream_factory(kind)
    removed, cut = dists.alpha_1, dists.beta_1
    p = proxy(up)
    cache_dir = p.settings.cache_dir
    for dist in (removed, cut):
        assert p.get(file_path(dist)).body == dist.content
        assert wait_until(lambda: stored_content(cache_dir, dist.filename)) == dist.content
    os.remove(stored_paths(cache_dir, removed.filename)[0])
    with open(stored_paths(cache_dir, cut.filename)[0], "r+b") as file:
        file.truncate(10)
    for dist in (removed, cut):
        assert p.get(file_path(dist)).body == dist.content  # never the short copy
        assert wait_until(lambda: stored_content(cache_dir, dist.filename)) == dist.content
        assert up.hits(dist.filename) == 2
    assert settled(cache_dir)
    on_disk = files_tree(cache_dir)
    assert p.server.files.stats() == (sum(on_disk.values()), len(on_disk))


def _stored_then_emptied(proxy, up, dist, size: int = 0) -> str:
    """A cache dir where a stopped proxy stored *dist*, then left at 0 bytes as a crash
    before the write-back does (or cut to *size*, as a copy cut short)."""
    p = proxy(up)
    cache_dir = p.settings.cache_dir
    assert p.get(file_path(dist)).body == dist.content
    assert wait_until(lambda: stored_content(cache_dir, dist.filename)) == dist.content
    p.stop()
    with open(stored_paths(cache_dir, dist.filename)[0], "r+b") as file:
        file.truncate(size)
    return cache_dir


def test_a_stored_file_emptied_by_a_crash_is_fetched_again_after_a_restart(proxy, upstream_factory, dists):
    """A crash before the write-back leaves a stored file at 0 bytes: with no size on
    the page, its hash (not the empty file's) says it is damaged."""
    up = upstream_factory("html")
    dist = dists.alpha_1
    cache_dir = _stored_then_emptied(proxy, up, dist)
    restarted = proxy(up, cache_dir=cache_dir)
    assert restarted.get(file_path(dist)).body == dist.content
    assert wait_until(lambda: stored_content(cache_dir, dist.filename)) == dist.content
    assert up.hits(dist.filename) == 2


def test_a_stored_file_cut_while_no_proxy_ran_is_removed_at_the_start(proxy, upstream_factory, dists, caplog):
    """A copy of the cache dir cut short: with no size on the page, the size its journal
    recorded at the store says the file is not whole; served as it is, a front cache
    would keep it for a year."""
    up = upstream_factory("html")  # a hash, no size
    dist = dists.alpha_1
    cache_dir = _stored_then_emptied(proxy, up, dist, size=100)
    restarted = proxy(up, cache_dir=cache_dir)
    assert f"is 100 bytes on disk, not the {len(dist.content)} stored: removed" in caplog.text
    assert stored_content(cache_dir, dist.filename) is None
    assert restarted.get(file_path(dist)).body == dist.content
    assert wait_until(lambda: stored_content(cache_dir, dist.filename)) == dist.content
    assert up.hits(dist.filename) == 2
    assert settled(cache_dir)
    on_disk = files_tree(cache_dir)
    assert restarted.server.files.stats() == (sum(on_disk.values()), len(on_disk))


def test_a_file_healed_by_another_process_is_not_taken_for_damage_by_this_one(proxy, upstream_factory, dists):
    """Two processes on one cache dir: what one stored in place of an emptied copy is
    the other's to serve once its view has caught up, not a size mismatch to remove."""
    up = upstream_factory("html")  # a hash, no size
    dist = dists.alpha_1
    cache_dir = _stored_then_emptied(proxy, up, dist)
    one, other = proxy(up, cache_dir=cache_dir), proxy(up, cache_dir=cache_dir)
    assert one.get(file_path(dist)).body == dist.content  # removed and fetched again
    assert wait_until(lambda: stored_content(cache_dir, dist.filename)) == dist.content
    assert other.get(file_path(dist)).body == dist.content
    assert up.hits(dist.filename) == 2  # the first store and the heal, no third


def test_a_file_that_cannot_be_evicted_stays_counted(proxy, upstream_factory, tmp_path, monkeypatch, caplog):
    (a, b, c), up, cache_dir, cap = _two_of_three_setup(upstream_factory, tmp_path)
    p = proxy(up, cache_dir=cache_dir, cache_size=cap)
    for dist in (a, b):
        assert p.get(file_path(dist)).body == dist.content
        assert wait_until(lambda: stored_content(cache_dir, dist.filename)) == dist.content
    # Run as root, no permission stops an unlink: the refusal is mocked, for A alone.
    stuck = stored_paths(cache_dir, a.filename)[0]
    unlink = os.unlink

    def refusing(path, *args, **kwargs):
        if os.fspath(path) == stuck:
            raise PermissionError(13, "Permission denied", path)
        return unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", refusing)
    assert p.get(file_path(c)).body == c.content
    assert wait_until(lambda: stored_content(cache_dir, c.filename)) == c.content
    assert settled(cache_dir)
    on_disk = files_tree(cache_dir)
    assert stuck in [os.path.join(cache_dir, "files", path) for path in on_disk]  # B went instead
    assert p.server.files.stats() == (sum(on_disk.values()), len(on_disk))
    assert "cannot evict" in caplog.text


# =============================================================================
# PEP 658 / 714 metadata files
# =============================================================================


def test_metadata_file_is_served_hash_checked_and_cached(proxy, upstream, dists):
    dist = dists.alpha_2
    p = proxy(upstream)
    anchors = parse_anchors(p.get("/index/alpha/").body)
    advertised = anchors[dist.filename]["data-core-metadata"]
    for _ in range(2):
        result = p.get(file_path(dist) + ".metadata")
        assert result.status == 200
        assert result.body == dist.metadata
        assert int(result.headers["Content-Length"]) == len(dist.metadata)
        assert advertised == "sha256=" + hashlib.sha256(result.body).hexdigest()
        assert "Content-Encoding" not in result.headers
    assert upstream.hits(dist.filename + ".metadata") == 1
    assert upstream.hits(dist.filename) == 0  # the wheel itself was never needed


def test_corrupt_metadata_file_is_not_served_whole_nor_stored(proxy, upstream_html, dists):
    dist = dists.alpha_2
    p = proxy(upstream_html)
    assert p.get("/index/alpha/").status == 200
    upstream_html.fail(dist.filename + ".metadata", "corrupt", times=1)
    _assert_cut_short(read_broken(p.url, file_path(dist) + ".metadata"), len(dist.metadata))
    assert wait_until(lambda: files_tree(p.settings.cache_dir) == {}), files_tree(p.settings.cache_dir)
    # nor the folders made for it
    assert wait_until(lambda: not os.path.exists(os.path.join(p.settings.cache_dir, "files", "alpha")))
    result = p.get(file_path(dist) + ".metadata")
    assert result.status == 200 and result.body == dist.metadata


def test_html_page_advertises_metadata_under_both_names(proxy, upstream, dists):
    p = proxy(upstream, metadata="off")  # else zope's is the proxy's own (test_metadata.py)
    for project, with_meta, without_meta in (
        ("alpha", [dists.alpha_1, dists.alpha_2], [dists.alpha_2_sdist]),
        ("zope-interface", [], [dists.zope]),
    ):
        result = p.get(f"/index/{project}/", {"Accept": "text/html"})
        assert result.status == 200
        anchors = parse_anchors(result.body)
        for dist in with_meta:
            expected = f"sha256={dist.metadata_sha256}"
            assert anchors[dist.filename].get("data-core-metadata") == expected
            assert anchors[dist.filename].get("data-dist-info-metadata") == expected
        for dist in without_meta:
            assert "data-core-metadata" not in anchors[dist.filename]
            assert "data-dist-info-metadata" not in anchors[dist.filename]
        assert not re.search(rb'data-(core|dist-info)-metadata="false"', result.body, re.IGNORECASE)


def test_json_page_advertises_core_metadata_only(proxy, upstream, dists):
    p = proxy(upstream, metadata="off")  # else zope's is the proxy's own (test_metadata.py)
    for project, with_meta, without_meta in (
        ("alpha", [dists.alpha_1, dists.alpha_2], [dists.alpha_2_sdist]),
        ("zope-interface", [], [dists.zope]),
    ):
        result = p.get(f"/index/{project}/", {"Accept": PIP_ACCEPT})
        assert result.content_type == JSON_TYPE
        files = json_files(result.body)
        for item in files.values():
            assert "dist-info-metadata" not in item  # PEP 714: pip 22.3-23.1 crash on it
        for dist in with_meta:
            assert files[dist.filename]["core-metadata"] == {"sha256": dist.metadata_sha256}
        for dist in without_meta:
            assert files[dist.filename].get("core-metadata", False) is False


def test_metadata_not_advertised_upstream_is_404(proxy, upstream, dists):
    p = proxy(upstream, metadata="off")  # else zope's is the proxy's own (test_metadata.py)
    for dist in (dists.zope, dists.alpha_2_sdist):
        assert p.get(file_path(dist) + ".metadata").status == 404
        assert upstream.hits(dist.filename + ".metadata") == 0
    assert p.get(file_path(dists.alpha_2) + ".metadata").status == 200  # the route itself works


@needs_pip_json_metadata
def test_real_pip_resolves_from_metadata_files(proxy, upstream, dists, tmp_path):
    """pip's resolver learns beta's dependencies from beta's .metadata, not its wheel.

    pip 23.2 still downloads the chosen wheels once the resolution is done, even with
    --dry-run (pypa/pip#12603), so zero wheel GETs cannot be asked of it; what can be
    checked is the order: both .metadata files, and alpha's page (found only through
    beta's metadata), come before any wheel.
    """
    p = proxy(upstream)
    result = run_pip(["install", "--dry-run", "--ignore-installed", "beta"], p.index_url, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Would install alpha-2.0 beta-1.0" in result.stdout
    paths = [r.path for r in upstream.requests if r.method == "GET"]
    beta_meta = f"/files/beta/{dists.beta_1.filename}.metadata"
    alpha_meta = f"/files/alpha/{dists.alpha_2.filename}.metadata"
    assert beta_meta in paths and alpha_meta in paths, paths
    wheels = [i for i, path in enumerate(paths) if path.endswith(".whl")]
    resolved_by = max(paths.index(beta_meta), paths.index(alpha_meta), paths.index("/simple/alpha/"))
    assert paths.index(beta_meta) < paths.index("/simple/alpha/"), paths
    assert all(i > resolved_by for i in wheels), paths
    assert paths.count(beta_meta) == paths.count(alpha_meta) == 1


# =============================================================================
# HTTP details of pages and files
# =============================================================================


@pytest.mark.parametrize("accept", [None, PIP_ACCEPT])
@pytest.mark.parametrize("path", ["/index/", "/index/alpha/"])
def test_head_on_pages_has_the_get_headers_and_no_body(proxy, upstream_html, accept, path):
    p = proxy(upstream_html)
    headers = {"Accept": accept} if accept else {}
    get = p.get(path, headers)
    head = p.request("HEAD", path, headers)
    assert (get.status, head.status, head.body) == (200, 200, b"")
    assert headers_without_date(head.headers) == headers_without_date(get.headers)
    assert int(head.headers["Content-Length"]) == len(get.body)


def test_head_on_files_cached_and_not(proxy, upstream, dists):
    """HTML gives no size (the proxy asks upstream), JSON does."""
    upstream_html = upstream
    dist = dists.alpha_2
    p = proxy(upstream)
    uncached = p.request("HEAD", file_path(dist))
    assert (uncached.status, uncached.body) == (200, b"")
    assert int(uncached.headers["Content-Length"]) == dist.size
    assert upstream_html.hits(dist.filename, "GET") == 0  # a HEAD downloads nothing
    assert files_tree(p.settings.cache_dir) == {}
    get = p.get(file_path(dist))
    assert get.body == dist.content
    assert headers_without_date(uncached.headers) == headers_without_date(get.headers)
    cached = p.request("HEAD", file_path(dist))
    assert (cached.status, cached.body) == (200, b"")
    assert headers_without_date(cached.headers) == headers_without_date(get.headers)
    assert upstream_html.hits(dist.filename, "GET") == 1


def test_file_response_headers(proxy, upstream_html, dists):
    p = proxy(upstream_html)
    for dist, types in (
        (dists.alpha_2, {"application/zip", "application/octet-stream", "application/x-wheel+zip"}),
        (dists.alpha_2_sdist, {"application/gzip", "application/x-gzip", "application/x-tar",
                               "application/x-gtar", "application/x-tar+gzip"}),
    ):
        first = p.get(file_path(dist))  # uncached: streamed from upstream
        second = p.get(file_path(dist))  # cached
        for result in (first, second):
            assert result.status == 200 and result.body == dist.content
            assert int(result.headers["Content-Length"]) == dist.size
            assert result.content_type in types, result.headers["Content-Type"]
            assert "Content-Encoding" not in result.headers  # bytes as hashed, never re-encoded
            assert result.headers["Accept-Ranges"] == "bytes"
            assert result.headers["Cache-Control"] == FILE_CACHE_CONTROL
            assert result.headers["ETag"]
        assert first.headers["ETag"] == second.headers["ETag"]
    assert p.get(file_path(dists.alpha_2)).content_type != p.get(file_path(dists.alpha_2_sdist)).content_type


def test_binary_file_mime_type_setting(proxy, upstream_html, dists):
    p = proxy(upstream_html, binary_file_mime_type=True)
    for dist in (dists.alpha_2, dists.alpha_2_sdist):
        for _ in range(2):  # uncached, then cached
            result = p.get(file_path(dist))
            assert result.body == dist.content
            assert result.content_type == "application/octet-stream"
            assert "Content-Encoding" not in result.headers


def test_if_none_match_gets_304(proxy, upstream_html, dists):
    dist = dists.alpha_2
    p = proxy(upstream_html)
    etag = p.get(file_path(dist)).headers["ETag"]
    for sent in (etag, f'"nope", {etag}', f"W/{etag}"):
        status, headers, body = p.get(file_path(dist), {"If-None-Match": sent})
        assert (status, body) == (304, b""), sent
        assert headers["ETag"] == etag
    assert p.get(file_path(dist), {"If-None-Match": '"something-else"'}).body == dist.content


def test_ranges_on_a_cached_file(proxy, upstream_html, dists):
    dist = dists.alpha_2
    size, content = dist.size, dist.content
    p = proxy(upstream_html)
    assert p.get(file_path(dist)).body == content
    for header, start, stop in (
        ("bytes=100-199", 100, 200),
        ("bytes=0-0", 0, 1),
        (f"bytes={size - 10}-", size - 10, size),
        ("bytes=-30", size - 30, size),
        (f"bytes=200-{size + 500}", 200, size),
        # The whole file is still a range: uv reads a 200 as "no range support".
        ("bytes=0-", 0, size),
        (f"bytes=-{size + 10}", 0, size),
    ):
        status, headers, body = p.get(file_path(dist), {"Range": header})
        assert status == 206, header
        assert body == content[start:stop], header
        assert headers["Content-Range"] == f"bytes {start}-{stop - 1}/{size}", header
        assert int(headers["Content-Length"]) == stop - start
        assert headers["Accept-Ranges"] == "bytes"
    status, headers, _ = p.get(file_path(dist), {"Range": f"bytes={size}-"})
    assert status == 416
    assert headers["Content-Range"] == f"bytes */{size}"
    # RFC 9110 13.2.2: If-None-Match is judged before Range, so the copy held stands.
    etag = p.get(file_path(dist))[1]["ETag"]
    status, headers, body = p.get(file_path(dist), {"Range": f"bytes={size}-", "If-None-Match": etag})
    assert (status, body, headers["ETag"]) == (304, b"", etag)
    assert p.get(file_path(dist), {"Range": f"bytes={size}-", "If-None-Match": '"other"'})[0] == 416
    status, headers, body = p.get(file_path(dist), {"Range": "bytes=0-9,20-29"})
    assert (status, body) == (200, content)
    assert "Content-Range" not in headers
    status, _, body = p.get(file_path(dist), {"Range": f"bytes={'9' * 5000}-"})  # past what int() takes
    assert (status, body) == (200, content)
    assert upstream_html.hits(dist.filename, None) == 1


def test_range_on_an_uncached_file_is_answered_correctly(proxy, upstream, dists):
    dist = dists.alpha_2
    size, content = dist.size, dist.content
    p = proxy(upstream)
    status, headers, body = p.get(file_path(dist), {"Range": "bytes=100-199"})
    assert status == 206
    assert body == content[100:200]
    assert headers["Content-Range"] == f"bytes 100-199/{size}"
    assert int(headers["Content-Length"]) == 100
    assert headers["Accept-Ranges"] == "bytes"
    other = dists.beta_1  # never fetched whole: the 416 cannot come from a cached copy
    status, headers, _ = p.get(file_path(other), {"Range": f"bytes={other.size + 5}-"})
    assert status == 416
    assert headers["Content-Range"] == f"bytes */{other.size}"
    assert p.get(file_path(dist)).body == content


@pytest.mark.parametrize("header", ["bytes=-100", "bytes=100-199"], ids=["zip-probe", "from-the-start"])
def test_a_range_of_an_uncached_file_from_an_index_that_ignores_ranges_is_still_a_range(
    proxy, upstream, dists, header
):
    """The HEAD said Accept-Ranges: the upstream's whole-file 200 is not passed on (pip's
    lazy wheels write it at the range's offset); the file is downloaded through the
    cache and the range answered from it."""
    dist = dists.alpha_2
    upstream.honour_ranges = False
    p = proxy(upstream)
    assert p.request("HEAD", file_path(dist)).headers["Accept-Ranges"] == "bytes"
    status, headers, body = p.get(file_path(dist), {"Range": header})
    start, stop = (dist.size - 100, dist.size) if header == "bytes=-100" else (100, 200)
    assert (status, body, headers["Content-Range"]) == (206, dist.content[start:stop], f"bytes {start}-{stop - 1}/{dist.size}")
    assert wait_until(lambda: stored_content(p.settings.cache_dir, dist.filename)) == dist.content
    hits = upstream.hits(dist.filename, None)
    assert p.get(file_path(dist), {"Range": "bytes=0-9"}).body == dist.content[:10]  # from the cache now
    assert p.get(file_path(dist)).body == dist.content
    assert upstream.hits(dist.filename, None) == hits


def test_a_zip_probe_of_a_file_of_unknown_length_from_an_index_that_ignores_ranges_asks_once(proxy, html_index):
    # Neither the page nor the upstream gives a length: no range can be answered from a
    # download, so the upstream's whole-file answer is passed on, from one request.
    dist = sized_wheel("lengthless", "1.0", 96_000)
    index = html_index(dist, chunked=True)
    index.honour_ranges = False
    p = proxy(index.url)
    assert p.get(f"/index/{dist.normalized}/").status == 200
    status, _, body = p.get(file_path(dist), {"Range": "bytes=-100"})
    assert (status, body) == (200, dist.content)
    assert index.hits(dist.filename, None) == 1


def test_range_on_an_uncached_file_is_passed_upstream_and_prefetches_the_file(proxy, upstream, dists):
    """A range is answered at once from upstream as a Range. A probe of the zip's end
    (uv and pip read a wheel's directory there) starts no download; a range from the
    start of the file fetches the whole file once in the background, so the next
    client finds it cached."""
    dist = dists.alpha_2
    p = proxy(upstream)

    def file_requests() -> list:
        return [r for r in upstream.requests if r.path.endswith("/" + dist.filename)]

    status, _, body = p.get(file_path(dist), {"Range": "bytes=-50"})
    assert (status, body) == (206, dist.content[-50:])
    assert [r.headers.get("range") for r in file_requests()] == ["bytes=-50"]
    status, _, body = p.get(file_path(dist), {"Range": "bytes=0-199"})
    assert (status, body) == (206, dist.content[:200])
    assert any(r.headers.get("range") == "bytes=0-199" for r in file_requests())
    assert wait_until(lambda: stored_paths(p.settings.cache_dir, dist.filename), timeout=10.0)
    assert len([r for r in file_requests() if "range" not in r.headers]) == 1
    upstream.reset_hits()
    status, _, body = p.get(file_path(dist), {"Range": "bytes=-50"})
    assert (status, body) == (206, dist.content[-50:])
    assert p.get(file_path(dist)).body == dist.content
    assert file_requests() == []  # served from the cache now


# =============================================================================
# Done when: a second pip run through a restarted proxy fetches index pages only
# =============================================================================


def test_second_pip_run_through_restarted_proxy_fetches_no_files(upstream_json, dists, tmp_path):
    up = upstream_json
    cache_dir = str(tmp_path / "cache")
    args = ["--index-url", up.url, "--cache-dir", cache_dir, "--index-ttl", "0"]
    wanted = {dists.alpha_2.filename: dists.alpha_2.content, dists.beta_1.filename: dists.beta_1.content,
              dists.delta.filename: dists.delta.content}

    def downloaded(directory: Path) -> dict:
        return {path.name: path.read_bytes() for path in directory.iterdir()}

    with ProxyProcess(args) as first:
        result = run_pip(["download", "-d", str(tmp_path / "one"), "beta", "delta"], first.index_url)
        assert result.returncode == 0, result.stdout + result.stderr
    assert downloaded(tmp_path / "one") == wanted
    assert up.hits(dists.beta_1.filename) == 1

    up.reset_hits()
    with ProxyProcess(args) as second:
        result = run_pip(["download", "-d", str(tmp_path / "two"), "beta", "delta"], second.index_url)
        assert result.returncode == 0, result.stdout + result.stderr
        result = run_pip(["install", "--target", str(tmp_path / "target"), "beta", "delta"], second.index_url)
        assert result.returncode == 0, result.stdout + result.stderr
    assert downloaded(tmp_path / "two") == wanted
    assert (tmp_path / "target" / "alpha.py").is_file() and (tmp_path / "target" / "beta.py").is_file()
    paths = [r.path for r in up.requests]
    assert paths, "the proxy never asked upstream for pages with TTL 0"
    assert [path for path in paths if not path.startswith("/simple/")] == []
