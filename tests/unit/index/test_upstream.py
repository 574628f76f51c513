"""upstream.Upstream against a tiny recording server on 127.0.0.1."""

from __future__ import annotations

import base64
import contextlib
import http.server
import socket
import struct
import threading
import time

import pytest

from proxpi_min.core.errors import UpstreamError, UpstreamTimeout
from proxpi_min.index.upstream import Upstream
from tests.support.raw_server import Relay, raw_server


class _Recorder(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list = []

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Authorization")))
        body = b"<html></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def recorder():
    _Recorder.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.002}, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def basic(pair: str) -> str:
    return "Basic " + base64.b64encode(pair.encode()).decode()


def test_credentials_follow_the_index_whose_path_matches(recorder) -> None:
    """Two indices on one host with their own tokens (a GitLab project each): a file
    URL without credentials gets those of the index it belongs to."""
    upstream = Upstream(
        3,
        3,
        index_urls=[
            f"http://alice:tokA@{recorder}/api/projects/1/pypi/simple/",
            f"http://bob:tokB@{recorder}/api/projects/2/pypi/simple/",
        ],
    )
    for path in ("/api/projects/1/pypi/files/x.whl", "/api/projects/2/pypi/files/y.whl"):
        upstream.fetch_page(f"http://{recorder}{path}", "text/html")
    assert _Recorder.seen == [
        ("/api/projects/1/pypi/files/x.whl", basic("alice:tokA")),
        ("/api/projects/2/pypi/files/y.whl", basic("bob:tokB")),
    ]


def test_no_credentials_for_other_hosts(recorder) -> None:
    upstream = Upstream(3, 3, index_urls=["http://alice:tokA@other.invalid/simple/"])
    upstream.fetch_page(f"http://{recorder}/simple/x/", "text/html")
    assert _Recorder.seen == [("/simple/x/", None)]


class _FileServer(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    ports: set = set()

    def do_GET(self) -> None:
        self.ports.add(self.client_address[1])
        body = b"x" * 100_000
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_file_connections_are_reused_once_read_to_the_end() -> None:
    _FileServer.ports = set()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FileServer)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.002}, daemon=True).start()
    try:
        upstream = Upstream(3, 3)
        for name in ("a", "b", "c"):
            with upstream.open_file(f"http://127.0.0.1:{server.server_address[1]}/{name}.whl") as response:
                received = b""
                while True:
                    chunk = response.read(65536)
                    if not chunk:
                        break
                    received += chunk
            assert len(received) == 100_000
        assert len(_FileServer.ports) == 1  # one kept-alive connection for all three
    finally:
        server.shutdown()
        server.server_close()


class _IdleCloser(_Recorder):
    """Closes a kept-alive connection idle for 0.3 s (nginx's keepalive_timeout does the
    same, later); three requests at once wait for each other, so take three."""

    timeout = 0.3
    started = threading.Barrier(3, timeout=5)

    def do_GET(self) -> None:
        if self.path.startswith("/burst/"):
            self.started.wait()
        super().do_GET()


def test_a_request_after_the_server_closed_every_idle_connection_takes_a_new_one() -> None:
    _IdleCloser.started.reset()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _IdleCloser)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.002}, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        upstream = Upstream(3, 3)
        burst = [threading.Thread(target=upstream.fetch_page, args=(f"{base}/burst/{n}/", "text/html")) for n in range(3)]
        for thread in burst:
            thread.start()
        for thread in burst:
            thread.join(10)
        assert sum(len(conns) for conns in upstream._idle.values()) == 3  # kept, then closed by the server
        time.sleep(0.8)  # past the server's idle timeout: all three are closed now
        assert upstream.fetch_page(f"{base}/after/", "text/html").status == 200
    finally:
        server.shutdown()
        server.server_close()


def test_a_file_cut_short_does_not_give_its_connection_back() -> None:
    def answer(conn: socket.socket) -> None:
        with conn:
            conn.makefile("rb").readline()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 500)
            conn.shutdown(socket.SHUT_WR)  # 500 of the 1,000 bytes said

    with raw_server(answer) as port:
        upstream = Upstream(3, 3)
        with upstream.open_file(f"http://127.0.0.1:{port}/cut.whl") as response:
            received = b""
            while chunk := response.read(65536):
                received += chunk
        assert len(received) == 500
        assert not any(upstream._idle.values())


def test_a_request_on_a_tls_connection_reset_while_idle_goes_again_on_a_new_one(test_ca, server_cert) -> None:
    """An https upstream drops its idle kept-alive connection with a TCP reset and no
    TLS close_notify (as a load balancer dropping idle connections does): writing the
    next request on it fails with ssl.SSLEOFError (a FIN alone would not: the ragged
    end of a TLS read is taken for a RemoteDisconnected), and the request goes again on
    a new connection."""
    context = server_cert.context()
    connections: list = []
    reset_now, was_reset = threading.Event(), threading.Event()

    def answer(raw: socket.socket) -> None:
        connections.append(raw.getpeername())
        reset_when_idle = len(connections) == 1
        tls = context.wrap_socket(raw, server_side=True)
        with tls.makefile("rb") as head:
            while True:
                while (line := head.readline()) not in (b"\r\n", b""):
                    pass
                if not line:
                    break
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 13\r\n\r\n<html></html>")
                if reset_when_idle:
                    reset_now.wait(5)
                    # A zero linger time makes close() an abort (RFC 9293 3.10.5): a reset, no close_notify first.
                    tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    break
        tls.close()
        if reset_when_idle:
            was_reset.set()

    upstream = Upstream(3, 3, ca_bundle=str(test_ca.cert))
    with raw_server(answer) as port:
        url = f"https://127.0.0.1:{port}/simple/alpha/"
        try:
            assert upstream.fetch_page(url, "text/html").status == 200
            reset_now.set()
            assert was_reset.wait(5)
            page = upstream.fetch_page(url, "text/html")
            assert (page.status, page.body) == (200, b"<html></html>")
            assert len(connections) == 2
        finally:
            upstream.close()


@pytest.mark.parametrize("what", ["page", "file", "range under the caller's deadline"])
def test_a_tls_handshake_trickled_by_the_upstream_is_cut_at_the_deadline(test_ca, server_cert, what) -> None:
    """A real TLS server's handshake relayed a byte each 0.05 s: alone it is bounded by
    the connect timeout (20 s here) only; the deadline (PAGE_DEADLINE_READS read
    timeouts of 0.1 s: 0.6 s) cuts it as it cuts the answer that would follow."""
    context = server_cert.context()

    def answer(raw: socket.socket) -> None:
        with contextlib.suppress(OSError), context.wrap_socket(raw, server_side=True) as tls:
            tls.recv(1)

    upstream = Upstream(20, 0.1, ca_bundle=str(test_ca.cert))
    outcome: list = []

    def fetch(url: str) -> None:
        started = time.monotonic()
        try:
            if what == "page":
                upstream.fetch_page(url, "text/html")
            elif what == "file":
                upstream.open_file(url).close()
            else:
                deadline = upstream.deadline()
                try:
                    upstream.open_file(url, "GET", "bytes=0-99", deadline).close()
                finally:
                    deadline.cancel()
        except UpstreamError as exc:
            outcome.append((exc, time.monotonic() - started))

    with raw_server(answer) as port, Relay(port, every=0.05) as relay:
        relay.trickle()
        fetching = threading.Thread(target=fetch, args=(f"https://127.0.0.1:{relay.port}/x.whl",), daemon=True)
        fetching.start()
        fetching.join(10)  # the relay's end then cuts a handshake still going
        assert not fetching.is_alive(), "the handshake went on past the deadline"
    upstream.close()
    (error, took), = outcome
    assert isinstance(error, UpstreamTimeout) and "took over 0.6 s" in str(error), error
    assert took < 2.0, f"cut after {took:.1f} s"
