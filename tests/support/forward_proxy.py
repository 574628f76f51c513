"""A small outbound (forward) HTTP proxy on 127.0.0.1, the kind CI fleets sit behind.

``CONNECT host:port`` opens a tunnel (for https targets); an absolute-form request
(``GET http://host:port/path``) is forwarded and answered with keep-alive. With
``credentials=("user", "pw")`` every request needs ``Proxy-Authorization: Basic`` or gets
407; ``refuse=True`` answers 403 to everything. ``requests`` records what arrived (method,
target, Proxy-Authorization), so a test can prove traffic went through the proxy.

``Tinyproxy`` runs Debian's tinyproxy the same way (``requests`` read from its log).
"""

from __future__ import annotations

import base64
import re
import http.client
import selectors
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["ForwardProxy", "ProxyRequest", "TINYPROXY", "Tinyproxy", "free_port"]

TINYPROXY = shutil.which("tinyproxy")
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authorization", "proxy-connection", "te", "upgrade"}


class ProxyRequest(NamedTuple):
    method: str
    target: str  # "host:port" for CONNECT, the absolute URL otherwise
    proxy_authorization: str | None


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, owner: ForwardProxy) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients and targets hanging up are part of the tests


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def _admitted(self) -> bool:
        owner = self.server.owner
        owner.record(ProxyRequest(self.command, self.path, self.headers.get("Proxy-Authorization")))
        if owner.refuse:
            self._answer(403, b"forbidden by policy\n")
            return False
        if owner.credentials and self.headers.get("Proxy-Authorization") != basic(*owner.credentials):
            self._answer(407, b"proxy authentication required\n", [("Proxy-Authenticate", 'Basic realm="test"')])
            return False
        return True

    def _answer(self, status: int, body: bytes, headers: list = ()) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_CONNECT(self) -> None:
        if not self._admitted():
            return
        host, _, port = self.path.rpartition(":")
        try:
            target = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
        except OSError:
            self._answer(502, b"cannot reach the target\n")
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        self.close_connection = True
        with target:
            _relay(self.connection, target)

    def _forward(self) -> None:
        if not self._admitted():
            return
        parts = urllib.parse.urlsplit(self.path)
        if parts.scheme != "http" or not parts.hostname:
            self._answer(400, b"absolute http URL expected\n")
            return
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=10)
        try:
            conn.request(self.command, path, headers=headers)
            response = conn.getresponse()
            body = response.read()
        except OSError:
            self._answer(502, b"cannot reach the target\n")
            return
        finally:
            conn.close()
        self.send_response(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP | {"content-length", "transfer-encoding"}:
                self.send_header(name, value)
        length = response.getheader("Content-Length") if self.command == "HEAD" else str(len(body))
        if length is not None:
            self.send_header("Content-Length", length)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = _forward


def _relay(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    with selectors.DefaultSelector() as selector:
        selector.register(a, selectors.EVENT_READ, b)
        selector.register(b, selectors.EVENT_READ, a)
        while True:
            events = selector.select(timeout=30)
            if not events:
                return  # idle for 30 s
            for key, _ in events:
                try:
                    data = key.fileobj.recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)
                except OSError:
                    return


class ForwardProxy:
    """Start with ``with ForwardProxy() as proxy:``; ``proxy.url`` carries any credentials."""

    def __init__(self, credentials: tuple[str, str] | None = None, refuse: bool = False) -> None:
        self.credentials = credentials
        self.refuse = refuse
        self.requests: list[ProxyRequest] = []
        self._lock = threading.Lock()
        self._server = _Server(self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.002}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return _proxy_url(self.port, self.credentials)

    def record(self, request: ProxyRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def count(self, method: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests if method is None or r.method == method)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> ForwardProxy:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


def _proxy_url(port: int, credentials: tuple[str, str] | None) -> str:
    """The proxy's URL, credentials percent-encoded as a URL's userinfo needs."""
    user = ""
    if credentials:
        user = ":".join(urllib.parse.quote(part, safe="") for part in credentials) + "@"
    return f"http://{user}127.0.0.1:{port}"


def free_port() -> int:
    """A port nothing listens on right now (closed again at once: connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Tinyproxy:
    """Debian's tinyproxy in the foreground, on a free port, logging to *directory*."""

    def __init__(self, directory: Path, credentials: tuple[str, str] | None = None) -> None:
        if TINYPROXY is None:
            raise RuntimeError("tinyproxy is not installed")
        self.credentials = credentials
        self.port = free_port()
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.log = Path(directory) / "tinyproxy.log"
        config = Path(directory) / "tinyproxy.conf"
        lines = [
            f"Port {self.port}", "Listen 127.0.0.1", "Timeout 30", "Allow 127.0.0.1",
            f'LogFile "{self.log}"', "LogLevel Info", "MaxClients 20",
        ]
        if credentials:
            lines.append("BasicAuth {} {}".format(*credentials))
        config.write_text("\n".join(lines) + "\n")
        self.process = subprocess.Popen(
            [TINYPROXY, "-d", "-c", str(config)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"tinyproxy did not start; log:\n{self._log_text()}")
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return _proxy_url(self.port, self.credentials)

    def _log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def count(self, method: str) -> int:
        """Requests with *method* tinyproxy logged (it logs each request line)."""
        return len(re.findall(rf'Request \(file descriptor \d+\): {method} ', self._log_text()))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def __enter__(self) -> Tinyproxy:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
