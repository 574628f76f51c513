"""The server's connections: the per-process cap (503 + Retry-After past it, no thread),
and serving a listening socket handed over by a parent (``--workers``)."""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import socket
import ssl
import threading
import time

import pytest

from tests.support.cache_dir import wait_for as _wait_for
from tests.support.proxy import ProxyProcess, http, raw_request, raw_status, recv_until_closed


def _open_connections(server) -> int:
    return server.connections.counts().open


def test_connection_cap_refuses_with_503_then_serves_again(proxy, upstream_json, caplog):
    running = proxy(upstream_json, max_connections=3)
    slow = [socket.create_connection(("127.0.0.1", running.port), timeout=10) for _ in range(3)]
    try:
        _wait_for(lambda: _open_connections(running.server) == 3, "three connections accepted")
        threads = threading.active_count()
        with caplog.at_level(logging.WARNING, logger="proxpi_min.web.server"):
            # Sent nothing: the answer comes at once, without reading a request.
            with socket.create_connection(("127.0.0.1", running.port), timeout=10) as extra:
                received = b""
                while chunk := extra.recv(65536):  # until the proxy closes
                    received += chunk
            second = raw_request(running.url, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        head = received.partition(b"\r\n\r\n")[0].lower()
        assert raw_status(received) == 503, received
        assert b"\r\nretry-after: 1" in head and b"\r\nconnection: close" in head
        assert b"\r\ncache-control: no-store" in head
        assert b"\r\nserver: proxpi-min/" in head and b"\r\ndate: " in head  # as every answer's head
        assert raw_status(second) == 503
        assert threading.active_count() == threads, "a thread was started for a refused connection"
        warnings = [r for r in caplog.records if r.levelname == "WARNING" and "max-connections" in r.getMessage()]
        assert len(warnings) == 1, [r.getMessage() for r in caplog.records]  # one a minute, not one each
    finally:
        for sock in slow:
            sock.close()
    _wait_for(lambda: _open_connections(running.server) == 0, "the slow connections to end")
    assert running.get("/index/alpha/").status == 200


def test_connection_cap_closes_the_oldest_idle_connection_first(proxy, upstream_json):
    """At the cap, an idle keep-alive connection makes room for a new one; only a cap
    full of busy connections refuses."""
    running = proxy(upstream_json, max_connections=2)
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as older, \
            socket.create_connection(("127.0.0.1", running.port), timeout=10) as newer:
        for kept in (older, newer):
            kept.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert kept.recv(65536).startswith(b"HTTP/1.1 200")
            time.sleep(0.1)  # parked (past the request thread's linger), in this order
        _wait_for(lambda: running.server.connections.counts().idle == 2, "both parked")
        assert http("GET", running.url + "/health").status == 200
        assert older.recv(65536) == b""  # the oldest idle one was closed
        newer.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert newer.recv(65536).startswith(b"HTTP/1.1 200")
    assert b'proxpi_connections_closed_total{reason="evicted"} 1' in running.get("/metrics").body


def test_server_serves_a_socket_handed_over(upstream_json, tmp_path):
    from proxpi_min.core.settings import IndexSettings, Settings
    from proxpi_min.app.serve import ProxyServer
    from proxpi_min.web.server import listening_socket

    settings = Settings(indexes=(IndexSettings(upstream_json.url, 60.0),), host="127.0.0.1", port=0,
                        cache_dir=str(tmp_path))
    listener = listening_socket(settings)
    servers = [ProxyServer(settings, listener) for _ in range(2)]  # as two workers would
    threads = [threading.Thread(target=s.serve_forever) for s in servers]
    for thread in threads:
        thread.start()
    try:
        port = listener.getsockname()[1]
        assert all(s.server_address[1] == port for s in servers)
        for _ in range(10):
            assert http("GET", f"http://127.0.0.1:{port}/index/alpha/").status == 200
    finally:
        for server in servers:
            server.shutdown()
        for thread in threads:
            thread.join(10)
        for server in servers:
            server.server_close()


def test_shutdown_ends_serving_at_once_not_at_the_next_poll(upstream_json, tmp_path):
    """A stop signal ends serving at once: shutdown() wakes the accepting loop, which
    would otherwise notice only at its next poll (here an hour away)."""
    from proxpi_min.core.settings import IndexSettings, Settings
    from proxpi_min.app.serve import ProxyServer

    settings = Settings(indexes=(IndexSettings(upstream_json.url, 60.0),), host="127.0.0.1", port=0,
                        cache_dir=str(tmp_path))
    server = ProxyServer(settings)
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 3600}, daemon=True)
    serving.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert http("GET", url + "/health").status == 200
        stopping = threading.Thread(target=server.shutdown, daemon=True)
        stopping.start()
        stopping.join(10)
        serving.join(10)
        assert not stopping.is_alive() and not serving.is_alive()
    finally:
        server.server_close()
    server.shutdown()  # a second stop signal while the server drains and closes: nothing to do


def test_connection_cap_over_tls_answers_503_after_a_handshake(proxy, upstream_json, server_cert, test_ca, caplog):
    """Over TLS the 503 needs a handshake, which the accepting thread must not wait for:
    one thread of its own does it, and the WARNING says so."""
    running = proxy(upstream_json, max_connections=1, tls_cert=str(server_cert.cert), tls_key=str(server_cert.key))
    held = socket.create_connection(("127.0.0.1", running.port), timeout=10)
    context = ssl.create_default_context(cafile=str(test_ca.cert))
    try:
        _wait_for(lambda: _open_connections(running.server) == 1, "one connection accepted")
        with caplog.at_level(logging.WARNING, logger="proxpi_min.web.server"):
            with socket.create_connection(("127.0.0.1", running.port), timeout=10) as raw:
                with context.wrap_socket(raw, server_hostname="127.0.0.1") as extra:
                    answer = b""
                    while chunk := extra.recv(65536):
                        answer += chunk
            _wait_for(lambda: any("max-connections" in r.getMessage() for r in caplog.records), "the warning")
        head = answer.split(b"\r\n\r\n")[0].decode()
        assert head.startswith("HTTP/1.1 503 ") and "Retry-After: 1" in head and "Connection: close" in head
        warnings = [r.getMessage() for r in caplog.records if "max-connections" in r.getMessage()]
        assert len(warnings) == 1 and "503 after a TLS handshake" in warnings[0], warnings
        # A client that never starts its handshake holds the refusing thread a second at
        # most: the next refused one is still answered.
        with socket.create_connection(("127.0.0.1", running.port), timeout=10) as silent:
            with socket.create_connection(("127.0.0.1", running.port), timeout=10) as raw:
                with context.wrap_socket(raw, server_hostname="127.0.0.1") as extra:
                    assert extra.recv(65536).startswith(b"HTTP/1.1 503 ")
            assert silent.recv(65536) == b""  # closed after its second
    finally:
        held.close()
    _wait_for(lambda: _open_connections(running.server) == 0, "the held connection gone")
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as client:
            client.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert client.recv(65536).startswith(b"HTTP/1.1 200 ")  # served again below the cap


def test_connections_waiting_for_a_tls_503_are_closed_at_shutdown(proxy, upstream_json, server_cert):
    """Silent clients queued past the cap over TLS do not outlive the server: stopping
    closes them at once, and the thread answering them ends."""
    running = proxy(upstream_json, max_connections=1, tls_cert=str(server_cert.cert), tls_key=str(server_cert.key))
    held = socket.create_connection(("127.0.0.1", running.port), timeout=10)
    silent = []
    try:
        _wait_for(lambda: _open_connections(running.server) == 1, "one connection accepted")
        silent = [socket.create_connection(("127.0.0.1", running.port), timeout=20) for _ in range(12)]
        time.sleep(0.5)  # let the accepting thread hand them all over
        started = time.monotonic()
        running.stop()
        for sock in silent:
            assert sock.recv(65536) == b""  # closed (the first after its handshake second)
        # Not each given its second in turn, which would take 12 s.
        assert time.monotonic() - started < 8
        assert not [t for t in threading.enumerate() if t.name == "tls-refusals" and t.is_alive()]
    finally:
        held.close()
        for sock in silent:
            sock.close()


def test_a_burst_of_connections_while_the_proxy_is_busy_waits_in_the_backlog(upstream_json, tmp_path):
    """600 clients connecting while no connection is accepted (the process stopped:
    SIGSTOP, as a real busy moment cannot be held still) are all held by the kernel and
    then served; a backlog of 128 would leave ~470 SYNs dropped, retried a second later."""
    burst = 600
    with open("/proc/sys/net/core/somaxconn") as limit:
        if int(limit.read()) < burst:
            pytest.skip("net.core.somaxconn caps every listen backlog below the burst")
    with ProxyProcess(["--index-url", upstream_json.url, "--cache-dir", str(tmp_path / "cache")]) as process:
        port = int(process.url.rsplit(":", 1)[1])
        os.kill(process.process.pid, signal.SIGSTOP)
        clients = []
        try:
            for _ in range(burst):
                sock = socket.socket()
                sock.setblocking(False)
                assert sock.connect_ex(("127.0.0.1", port)) in (0, errno.EINPROGRESS)
                clients.append(sock)
            # A SYN the kernel drops stays unanswered for a second (its first retry):
            # well past the time loopback takes to complete the others.
            established = set()
            deadline = time.monotonic() + 0.5
            while len(established) < burst and time.monotonic() < deadline:
                _, writable, _ = select.select([], [s for s in clients if s not in established], [], 0.05)
                established.update(s for s in writable if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0)
        finally:
            os.kill(process.process.pid, signal.SIGCONT)
        try:
            assert len(established) == burst
            for sock in clients:
                sock.setblocking(True)
                sock.settimeout(20)
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            statuses = [raw_status(recv_until_closed(sock, 20)) for sock in clients]
            assert statuses.count(200) == burst, sorted(set(statuses), key=str)
        finally:
            for sock in clients:
                sock.close()
        assert http("GET", process.url + "/health").status == 200
