"""Connections that cost nothing while they wait: heads trickled past their deadline,
idle keep-alive connections parked without a thread and served again (pipelined too),
TLS handshakes that stall, the request-thread cap and its queue, and the drain."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from typing import Iterator

import pytest

from tests.support.cache_dir import wait_for as _wait_for
from tests.support.proxy import http

KEEP = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"


def _read_response(stream) -> tuple:
    """(status, headers dict, body) of one response with a Content-Length."""
    status = int(stream.readline().split()[1])
    headers = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, stream.read(int(headers.get("content-length", 0)))


def _until_closed(sock: socket.socket) -> bytes:
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def _closed_count(running, reason: str) -> float:
    for line in running.server.app.metrics_text().decode().splitlines():
        if line.startswith(f'proxpi_connections_closed_total{{reason="{reason}"}} '):
            return float(line.split()[-1])
    raise AssertionError(f"no closings counted for {reason}")


@contextlib.contextmanager
def _held_download(running, upstream, dist) -> Iterator[tuple]:
    """A download held by the upstream mid-file while the block runs (or until its hold
    is opened), released after: yields (the hold, the fetching thread, its result)."""
    assert running.get("/index/alpha/").status == 200
    hold = upstream.hold(dist)
    result: dict = {}
    path = f"/index/alpha/{dist.filename}"
    fetch = threading.Thread(target=lambda: result.update(r=running.get(path, timeout=30)))
    fetch.start()
    _wait_for(lambda: upstream.hits(f"/files/alpha/{dist.filename}") > 0, "the download")
    try:
        yield hold, fetch, result
    finally:
        hold.open()
        fetch.join(30)


def _parked(running, count: int) -> None:
    _wait_for(lambda: running.server.connections.counts().idle >= count, f"{count} parked connections")


def test_a_head_trickled_past_the_header_deadline_gets_408_and_is_counted(proxy, upstream_json):
    running = proxy(upstream_json, header_timeout=0.5)
    threads = threading.active_count()
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
        started = time.monotonic()
        try:
            for byte in KEEP:  # a byte every 0.1 s: the whole head would take 3 s
                sock.send(bytes([byte]))
                time.sleep(0.1)
                assert threading.active_count() == threads, "a thread was given to a trickling head"
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = _until_closed(sock)
        assert time.monotonic() - started < 2.5
    assert answer.startswith(b"HTTP/1.1 408 ") and b"\r\nConnection: close\r\n" in answer, answer
    # A connection that sent nothing is closed without a word.
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as silent:
        assert _until_closed(silent) == b""
    assert _closed_count(running, "header-timeout") == 2
    assert running.get("/health").status == 200


def test_a_head_past_64_kib_is_answered_by_the_selector(proxy, upstream_json):
    """No thread is given a head to trickle into: past 64 KiB without its end, 431."""
    running = proxy(upstream_json)
    threads = threading.active_count()
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\n" + b"X-Big: " + b"a" * 70_000)  # and no more
        answer = _until_closed(sock)
        assert threading.active_count() == threads
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    assert _closed_count(running, "too-long") == 1


def test_a_thousand_idle_keep_alive_connections_hold_no_thread(proxy, upstream_json):
    running = proxy(upstream_json)
    threads = threading.active_count()
    idle = []
    try:
        for _ in range(1000):
            sock = socket.create_connection(("127.0.0.1", running.port), timeout=20)
            sock.sendall(KEEP)
            idle.append(sock)
            if len(idle) % 64 == 0:  # within the listen backlog: past it a SYN is dropped, retried 1 s later
                _wait_for(lambda: running.server.connections.counts().open >= len(idle), "the connections accepted")
        for sock in idle:
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        _parked(running, 1000)
        assert threading.active_count() < threads + 5
        for _ in range(50):  # normal traffic, on new connections, all served
            assert http("GET", running.url + "/index/alpha/").status == 200
        counts = running.server.connections.counts()
        assert counts.open >= 1000 and counts.idle >= 1000
        gauges = running.get("/metrics").text
        assert "\nproxpi_connections_idle 1000\n" in gauges or "\nproxpi_connections_idle 1001\n" in gauges
        for sock in idle[:10]:  # and the parked ones are served again
            sock.sendall(KEEP)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in idle:
            sock.close()
    _wait_for(lambda: running.server.connections.counts().open == 0, "the connections closed")


def test_a_parked_connection_is_served_again_and_takes_pipelined_requests_in_order(proxy, upstream_json):
    running = proxy(upstream_json)
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
        stream = sock.makefile("rb")
        sock.sendall(KEEP)
        assert _read_response(stream)[0] == 200
        _parked(running, 1)
        sock.sendall(KEEP)
        assert _read_response(stream)[0] == 200
        _parked(running, 1)
        # Three at once on the parked connection: answered in the order sent.
        sock.sendall(
            b"GET /index/alpha/ HTTP/1.1\r\nHost: x\r\nAccept: application/vnd.pypi.simple.v1+json\r\n\r\n"
            + KEEP
            + b"GET /index/nope-never/ HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        first, second, third = (_read_response(stream) for _ in range(3))
        assert first[0] == 200 and b'"name"' in first[2] and b"alpha" in first[2]
        assert second[0] == 200 and second[2].startswith(b'{"status": "success"')
        assert third[0] == 404
        # A head split across the park: half now, half later.
        sock.sendall(KEEP[:10])
        time.sleep(0.2)
        sock.sendall(KEEP[10:])
        assert _read_response(stream)[0] == 200
        stream.close()


def test_drain_closes_idle_connections_at_once_and_lets_active_ones_finish(proxy, upstream_html, dists):
    running = proxy(upstream_html)
    with _held_download(running, upstream_html, dists.alpha_1) as (hold, fetch, result), \
            socket.create_connection(("127.0.0.1", running.port), timeout=10) as idle:
        idle.sendall(KEEP)
        assert idle.recv(65536).startswith(b"HTTP/1.1 200 ")
        _parked(running, 1)
        drained = {}
        drain = threading.Thread(target=lambda: drained.update(ok=running.server.drain(20)))
        drain.start()
        assert _until_closed(idle) == b""  # at once, while the download still runs
        assert fetch.is_alive()
        hold.open()
        fetch.join(30)
        drain.join(30)
    assert result["r"].status == 200 and result["r"].body == dists.alpha_1.content
    assert drained["ok"] is True
    # The answered connection was closed, not parked: nothing is left open.
    _wait_for(lambda: running.server.connections.counts().open == 0, "every connection closed")


def test_a_stalled_tls_handshake_holds_no_thread(proxy, upstream_html, server_cert, test_ca):
    running = proxy(upstream_html, header_timeout=1.0, tls_cert=str(server_cert.cert), tls_key=str(server_cert.key))
    threads = threading.active_count()
    stalled = [socket.create_connection(("127.0.0.1", running.port), timeout=10) for _ in range(20)]
    try:
        for sock in stalled[:10]:
            sock.sendall(b"\x16\x03\x01\x02\x00\x01")  # a ClientHello that stops short
        time.sleep(0.3)
        assert threading.active_count() == threads
        context = ssl.create_default_context(cafile=str(test_ca.cert))
        with socket.create_connection(("127.0.0.1", running.port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as client:
                client.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert client.recv(65536).startswith(b"HTTP/1.1 200 ")
        for sock in stalled:
            assert _until_closed(sock) == b""
    finally:
        for sock in stalled:
            sock.close()
    _wait_for(lambda: running.server.connections.counts().open == 0, "the stalled connections closed")
    assert _closed_count(running, "header-timeout") == 20


def test_past_the_thread_cap_a_request_waits_then_gets_503(proxy, upstream_html, dists):
    running = proxy(upstream_html, threads=1, header_timeout=0.5)
    with _held_download(running, upstream_html, dists.alpha_1) as (_, _, result):
        with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = _until_closed(sock)
        head = answer.partition(b"\r\n\r\n")[0]
        assert head.startswith(b"HTTP/1.1 503 ") and b"\r\nRetry-After: 1" in head, answer
        assert b"every request thread is busy" in answer
    assert result["r"].status == 200 and result["r"].body == dists.alpha_1.content
    assert _closed_count(running, "queue-timeout") == 1


def test_a_health_probe_is_answered_while_every_request_thread_is_busy(proxy, upstream_html, dists):
    """A load balancer's probe while a stuck upstream holds every thread: the process
    is alive, and a restart would not help; other requests still wait, then get 503."""
    running = proxy(upstream_html, threads=1, header_timeout=0.5)
    with _held_download(running, upstream_html, dists.alpha_1) as (_, _, result):
        with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = _until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 200 ") and b"\r\nConnection: close\r\n" in answer, answer
        assert answer.endswith(b'\r\n\r\n{"status": "success", "data": null}\n')
        with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
            for _ in range(2):  # kept alive, as any HTTP/1.1 answer
                sock.sendall(b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = sock.recv(65536)
                assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\n"), answer
                assert b"Connection: close" not in answer
        # Anything more than one bare head waits for a thread like any request (a body or
        # a pipelined head must never be taken for the next request): then a 503.
        for sent in (
            b"GET /index/ HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 25\r\n\r\nHEAD /health HTTP/1.1\r\n\r\n",
            b"GET /health HTTP/1.1\r\nHost: x\n\nHEAD /health HTTP/1.1\r\n\r\n",
            b"GET /health HTTP/1.1\r\n\r\n" * 2000,
        ):
            with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
                sock.sendall(sent)
                answer = _until_closed(sock)
            assert answer.startswith(b"HTTP/1.1 503 ") and answer.count(b"HTTP/1.1 ") == 1, answer[:300]
    assert result["r"].status == 200


def test_a_body_no_route_reads_has_one_client_timeout_in_all(proxy, upstream_json):
    """A body sent with its head is read away and the connection kept; one sent a byte
    at a time, each within the client timeout, is given up after one client timeout in
    all, unanswered (a request not whole is not acted on), freeing the only thread."""
    running = proxy(upstream_json, threads=1, client_timeout=1.0)
    with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" + KEEP)
        stream = sock.makefile("rb")
        assert [_read_response(stream)[0] for _ in range(2)] == [200, 200]  # kept alive
    stop = threading.Event()
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
        sock.sendall(b"DELETE /cache/alpha/ HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")

        def trickle() -> None:
            while not stop.wait(0.3):
                try:
                    sock.send(b"x")
                except OSError:
                    return

        sender = threading.Thread(target=trickle)
        sender.start()
        try:
            answer = _until_closed(sock)  # closed while bytes still come
            assert not stop.is_set()
        finally:
            stop.set()
            sender.join()
    assert answer == b""
    assert http("GET", running.url + "/health").status == 200


def test_an_https_client_on_the_plain_http_port_is_closed_at_once(proxy, upstream_json):
    """pip given https:// for a plain-HTTP proxy must fail at once, not after the head
    timeout for each of its retries."""
    running = proxy(upstream_json, header_timeout=30)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", running.port), timeout=20) as sock:
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            context.wrap_socket(sock, server_hostname="127.0.0.1")
    assert time.monotonic() - started < 10  # well under the 30 s head timeout it would wait
    assert _closed_count(running, "tls-failed") == 1
    assert http("GET", running.url + "/health").status == 200
