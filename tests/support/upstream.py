"""A fake upstream package index: a real HTTP server on 127.0.0.1 serving the simple API.

Layout (``PORT`` is picked by the OS)::

    /simple/                        root project list
    /simple/<normalized>/           project page (slashless or non-normalised: 301)
    /files/<normalized>/<filename>  distribution files (ETag, HEAD, single Range)
    /files/<normalized>/<filename>.metadata   PEP 658 core metadata (wheels only)

Besides fault modes and throttling, a file response can be held midway
(:meth:`Upstream.hold`), so that a test can look at the proxy while its download
is under way, and files can be sent chunked, without a length.

``fmt="html"`` always answers HTML with *relative* file links, so the proxy must
resolve them against the page URL. ``fmt="json"`` negotiates per PEP 691 and
answers JSON (with a ``; charset=utf-8`` parameter on purpose) when the Accept
header prefers it.

The pieces: ``IndexState`` (upstream_state.py) holds everything mutable behind one
lock and does no I/O; the functions of upstream_render.py turn snapshots into bytes;
``_Handler`` here does HTTP, fault injection and holds; ``Upstream`` is the public
face used by the tests.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .dists import Dist, canonicalize
from .upstream_render import (
    HTML_TYPE, JSON_TYPE, FileEntry, Reply, etag, etag_matches, negotiate_json, parse_range,
    render_project_html, render_project_json, render_root_html, render_root_json, text_reply,
)
from .upstream_state import ALL_PATHS, Hold, IndexState, RequestRecord

__all__ = ["Upstream"]

# "hang" waits for the server to stop; this is only a backstop so that a test that
# forgets to stop its upstream cannot keep a thread alive forever.
_HANG_LIMIT = 120.0
# "midway": how much of the body is sent, in how many pieces, how far apart.
_MIDWAY_FRACTION = 0.5
_MIDWAY_PIECES = 4
_MIDWAY_DELAY = 0.05


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its open connections, so ``down()``/``stop()``
    can cut them, and carries the shared state for the handler."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], upstream: Upstream) -> None:
        self.upstream = upstream
        self.stopping = threading.Event()
        self._connections: set = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up mid-response are part of the tests, not errors.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeUpstream/1.0"
    timeout = 60  # idle keep-alive connections end eventually even if never cut
    # Headers and body go out in separate writes; with Nagle on, the second waits for
    # the client's delayed ACK (~40 ms) on every reused keep-alive connection.
    disable_nagle_algorithm = True
    server: _Server
    _chunked = False  # the response being sent is chunked (set per response)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:
        self._handle(send_body=True)

    def do_HEAD(self) -> None:
        self._handle(send_body=False)

    # -- request flow ----------------------------------------------------

    def _handle(self, send_body: bool) -> None:
        upstream = self.server.upstream
        state = upstream.state
        split = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(split.path)
        state.record(self.command, path, {k.lower(): v for k, v in self.headers.items()})

        fault = state.take_fault(path)
        if fault == "hang":
            self.server.stopping.wait(_HANG_LIMIT)
            self.close_connection = True
            return
        if fault == "close":
            self.close_connection = True
            return
        if fault in ("500", "503"):
            self._send(text_reply(int(fault), f"injected fault {fault}"), send_body, None, None)
            return

        reply = self._route(path)
        etag = dict(reply.headers).get("ETag")
        if reply.status == 200 and etag and etag_matches(self.headers.get("If-None-Match"), etag):
            kept = [(k, v) for k, v in reply.headers if k in ("ETag", "Vary")]
            reply = Reply(304, kept, b"")
        elif reply.status == 200 and reply.is_file and self.headers.get("Range") and upstream.honour_ranges:
            reply = self._apply_range(reply, self.headers["Range"])
        hold = None
        if reply.status in (200, 206) and reply.is_file and send_body and fault is None:
            hold = state.take_hold(path.rpartition("/")[2], ranged=reply.status == 206)
        self._send(reply, send_body, fault, hold)

    def _route(self, path: str) -> Reply:
        if path == "/simple":
            return self._redirect("/simple/")
        if path == "/simple/":
            return self._page(*self._root())
        if path.startswith("/simple/"):
            rest = path[len("/simple/"):]
            name = rest[:-1] if rest.endswith("/") else rest
            if not name or "/" in name:
                return text_reply(404, "not found")
            normalized = canonicalize(name)
            if not rest.endswith("/") or name != normalized:
                return self._redirect(f"/simple/{urllib.parse.quote(normalized)}/")
            found = self.server.upstream.state.project(normalized)
            if found is None:
                return text_reply(404, f"project {name} not found")
            return self._page(*self._project(normalized, *found))
        if path.startswith("/files/"):
            parts = path[len("/files/"):].split("/")
            if len(parts) == 2:
                return self._file(*parts)
        return text_reply(404, "not found")

    # -- content ---------------------------------------------------------

    def _wants_json(self) -> bool:
        return self.server.upstream.fmt == "json" and negotiate_json(self.headers.get("Accept"))

    def _root(self) -> tuple[bytes, str]:
        names = self.server.upstream.state.project_names()
        if self._wants_json():
            return render_root_json(names), JSON_TYPE
        return render_root_html(names), HTML_TYPE

    def _project(self, normalized: str, display: str, entries: list[FileEntry]) -> tuple[bytes, str]:
        if self._wants_json():
            return render_project_json(normalized, entries, self.server.upstream.base_url), JSON_TYPE
        return render_project_html(display, normalized, entries), HTML_TYPE

    def _page(self, body: bytes, media_type: str) -> Reply:
        headers = [
            ("Content-Type", f"{media_type}; charset=utf-8"),
            ("ETag", etag(body)),
            ("Cache-Control", "max-age=600, public"),
        ]
        if self.server.upstream.fmt == "json":
            headers.append(("Vary", "Accept"))
        return Reply(200, headers, body)

    def _file(self, normalized: str, filename: str) -> Reply:
        state = self.server.upstream.state
        entry = state.find_file(normalized, filename)
        if entry is not None:
            return self._bytes_reply(entry.dist.content, entry.dist.sha256)
        if filename.endswith(".metadata"):
            entry = state.find_file(normalized, filename[: -len(".metadata")])
            if entry is not None and entry.has_metadata:
                assert entry.dist.metadata is not None
                return self._bytes_reply(entry.dist.metadata, entry.dist.metadata_sha256 or "")
        return text_reply(404, f"file {filename} not found")

    @staticmethod
    def _bytes_reply(body: bytes, sha256: str) -> Reply:
        headers = [
            ("Content-Type", "application/octet-stream"),
            ("ETag", f'"{sha256[:32]}"'),
            ("Accept-Ranges", "bytes"),
            ("Cache-Control", "max-age=365000000, immutable"),
        ]
        return Reply(200, headers, body, is_file=True)

    @staticmethod
    def _redirect(location: str) -> Reply:
        return text_reply(301, f"moved to {location}", [("Location", location)])

    @staticmethod
    def _apply_range(reply: Reply, header: str) -> Reply:
        size = len(reply.body)
        parsed = parse_range(header, size)
        if parsed is None:
            return reply
        if parsed == "unsatisfiable":
            return text_reply(416, "range not satisfiable", [("Content-Range", f"bytes */{size}")])
        first, last = parsed  # type: ignore[misc]
        headers = reply.headers + [("Content-Range", f"bytes {first}-{last}/{size}")]
        return Reply(206, headers, reply.body[first: last + 1], is_file=True)

    # -- output ----------------------------------------------------------

    def _send(self, reply: Reply, send_body: bool, fault: str | None, hold: Hold | None) -> None:
        body = reply.body
        # RFC 9112 7.1: a chunked file response carries no Content-Length.
        self._chunked = reply.status == 200 and reply.is_file and self.server.upstream.state.chunked()
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        if self._chunked:
            self.send_header("Transfer-Encoding", "chunked")
        elif reply.status != 304:  # a 304 has no body and describes none here
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not send_body or reply.status == 304 or not (body or self._chunked):
            return
        try:
            if fault == "truncate":
                self._put(body[: len(body) // 2])
                self._hang_up()
            elif fault == "corrupt" and body:
                middle = len(body) // 2
                self._put(body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1:])
                self._end()
            elif fault == "midway":
                sent = max(1, int(len(body) * _MIDWAY_FRACTION))
                piece = max(1, sent // _MIDWAY_PIECES)
                for offset in range(0, sent, piece):
                    self._put(body[offset: min(offset + piece, sent)])
                    if self.server.stopping.wait(_MIDWAY_DELAY):
                        break
                self._hang_up()
            elif hold is not None:
                self._send_held(body, hold)
            elif reply.is_file and self.server.upstream.state.throttle():
                self._write_slowly(body, *self.server.upstream.state.throttle())  # type: ignore[misc]
            else:
                self._put(body)
                self._end()
        except OSError:  # the client went away; that is its business
            self.close_connection = True

    def _send_held(self, body: bytes, hold: Hold) -> None:
        self._put(body[: hold.first])
        hold.sent_first.set()
        hold.wait()
        rest = body[hold.first:]
        if hold.mode == "cut":
            self._hang_up()
            return
        if hold.mode == "corrupt" and rest:
            rest = bytes([rest[0] ^ 0xFF]) + rest[1:]
        self._put(rest)
        self._end()

    def _write_slowly(self, body: bytes, chunk_size: int, delay: float) -> None:
        for offset in range(0, len(body), chunk_size):
            self._put(body[offset: offset + chunk_size])
            if offset + chunk_size < len(body) and self.server.stopping.wait(delay):
                self._hang_up()
                return
        self._end()

    def _put(self, data: bytes) -> None:
        """Send body bytes now, as one chunk if the response is chunked."""
        if not data:
            return
        if self._chunked:
            data = b"%x\r\n" % len(data) + data + b"\r\n"
        self.wfile.write(data)
        self.wfile.flush()

    def _end(self) -> None:
        """The body is complete: the last chunk if the response is chunked."""
        if self._chunked:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _hang_up(self) -> None:
        self.wfile.flush()
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Upstream:
    """A fake simple-API index on 127.0.0.1. Use as a context manager or start()/stop()."""

    def __init__(self, fmt: str = "html", tls: ssl.SSLContext | None = None) -> None:
        """``tls``: a server context to serve HTTPS with (``base_url`` says https)."""
        if fmt not in ("html", "json"):
            raise ValueError(f"fmt must be 'html' or 'json', not {fmt!r}")
        self.fmt = fmt
        self.tls = tls
        self.state = IndexState()
        self.honour_ranges = True  # False: answer a Range with the whole file (200), as some servers do
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    # -- lifecycle -------------------------------------------------------

    def start(self) -> Upstream:
        if self._server is not None:
            return self
        self._server = self._bind(self._port or 0)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.002},
            name=f"fake-upstream-{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def _bind(self, port: int) -> _Server:
        deadline = time.monotonic() + 5.0
        while True:
            try:
                server = _Server(("127.0.0.1", port), self)
                if self.tls is not None:
                    # Each connection's handshake happens on its first read, in its own
                    # thread; a client that refuses our certificate ends only that one.
                    server.socket = self.tls.wrap_socket(
                        server.socket, server_side=True, do_handshake_on_connect=False
                    )
                return server
            except OSError:
                if port == 0 or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop serving, cut open connections, release hanging handlers."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.stopping.set()
        self.state.open_holds()
        server.shutdown()
        server.server_close()
        server.cut_connections()
        if thread is not None:
            thread.join(5)

    def down(self) -> None:
        """Refuse connections from now on (the port is kept for ``up()``)."""
        self.stop()

    def up(self) -> None:
        """Serve again, on the same port as before."""
        self.start()

    def __enter__(self) -> Upstream:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    # -- addresses -------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("upstream not started")
        return self._port

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The index URL, ``http://127.0.0.1:PORT/simple/``."""
        return f"{self.base_url}/simple/"

    def page_path(self, project: str) -> str:
        return f"/simple/{canonicalize(project)}/"

    def file_path(self, dist: Dist) -> str:
        return f"/files/{dist.normalized}/{dist.filename}"

    def file_url(self, dist: Dist) -> str:
        return f"{self.base_url}/files/{dist.normalized}/{urllib.parse.quote(dist.filename)}"

    # -- content ---------------------------------------------------------

    def add(
        self,
        dist: Dist,
        *,
        yanked: bool | str | None = None,
        metadata: bool = True,
        upload_time: str | None = None,
    ) -> Upstream:
        """List ``dist`` (replacing a file of the same name). ``yanked``: None/False,
        True (no reason) or a reason string. ``upload_time`` is only sent in JSON."""
        self.state.add(FileEntry(dist, yanked, metadata, upload_time))
        return self

    def add_project(self, name: str) -> Upstream:
        """A project with no files."""
        self.state.add_project(name)
        return self

    def remove(self, project: str, filename: str | None = None) -> Upstream:
        """Drop a whole project (404 from then on), or one of its files."""
        self.state.remove(project, filename)
        return self

    # -- faults ----------------------------------------------------------

    def fail(self, path: str | None, mode: str, *, times: int | None = None) -> Upstream:
        """Inject a fault for requests whose path matches ``path`` (see ``path_matches``;
        None or "*" means every request), for ``times`` requests or until cleared.

        Modes: "500", "503", "hang" (never answer; released by stop/down), "close"
        (hang up without answering), "truncate" (full Content-Length, half the
        body, hang up), "corrupt" (full length, one byte flipped), "midway" (half
        the body in slow pieces, then hang up).
        """
        self.state.set_fault(ALL_PATHS if path is None else path, mode, times)
        return self

    def clear_faults(self) -> Upstream:
        self.state.clear_faults()
        return self

    def throttle(self, chunk_size: int | None, delay: float = 0.0) -> Upstream:
        """Send file bodies ``chunk_size`` bytes at a time, ``delay`` seconds apart.
        ``throttle(None)`` turns it off."""
        self.state.set_throttle(None if not chunk_size else (int(chunk_size), float(delay)))
        return self

    def send_chunked(self, on: bool = True) -> Upstream:
        """Send file bodies with ``Transfer-Encoding: chunked`` and no Content-Length."""
        self.state.set_chunked(on)
        return self

    def hold(self, dist: Dist, first: int | None = None, mode: str = "ok", ranged: bool = False) -> Hold:
        """Hold the next GET of *dist*'s file (with *ranged*, the next range of it)
        after *first* bytes (default: half of the file) until the returned hold is
        opened; see :class:`Hold` for ``mode``."""
        hold = Hold(dist.size // 2 if first is None else first, mode, ranged)
        self.state.add_hold(dist.filename, hold)
        return hold

    # -- accounting ------------------------------------------------------

    def hits(self, path_or_suffix: str, method: str | None = "GET") -> int:
        """Requests received for a path (exact, or suffix at a ``/`` boundary, or
        "*" for all), counting only ``method`` unless it is None."""
        return self.state.hits(path_or_suffix, method)

    def reset_hits(self) -> None:
        self.state.reset_hits()

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request so far, oldest first."""
        return self.state.requests()
