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

The pieces: ``IndexState`` holds everything mutable behind one lock and does no
I/O; the ``render_*`` functions turn snapshots into bytes; ``_Handler`` does HTTP
and fault injection; ``Upstream`` is the public face used by the tests.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import html
import json
import socket
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable, NamedTuple

from .cache_dir import WAIT
from .dists import Dist, canonicalize

__all__ = [
    "FAULT_MODES",
    "FileEntry",
    "Hold",
    "IndexState",
    "RequestRecord",
    "Upstream",
    "negotiate_json",
    "path_matches",
]

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPE = "text/html"
FAULT_MODES = ("500", "503", "hang", "close", "truncate", "corrupt", "midway")
ALL_PATHS = "*"

# "hang" waits for the server to stop; this is only a backstop so that a test that
# forgets to stop its upstream cannot keep a thread alive forever.
_HANG_LIMIT = 120.0
# "midway": how much of the body is sent, in how many pieces, how far apart.
_MIDWAY_FRACTION = 0.5
_MIDWAY_PIECES = 4
_MIDWAY_DELAY = 0.05
# A held response goes on by itself after this long, so that a proxy that does not
# stream cannot hang a test; the test then fails on the hold's state.
_HOLD_BACKSTOP = WAIT


@dataclasses.dataclass(frozen=True)
class FileEntry:
    """One file as the index lists it."""

    dist: Dist
    yanked: bool | str | None = None
    metadata: bool = True
    upload_time: str | None = None

    @property
    def has_metadata(self) -> bool:
        """PEP 658: advertised and served only for wheels that have METADATA."""
        return self.metadata and self.dist.is_wheel and self.dist.metadata is not None

    @property
    def is_yanked(self) -> bool:
        return self.yanked is not None and self.yanked is not False


class RequestRecord(NamedTuple):
    """A request the upstream received. ``path`` is percent-decoded, without query;
    ``headers`` has lowercased names."""

    method: str
    path: str
    headers: dict


class Hold:
    """One held file response: ``first`` bytes go out, then the rest waits for
    :meth:`open` (or the backstop). ``mode``: "ok", "corrupt" (the first byte of the
    rest flipped) or "cut" (hang up instead of sending the rest)."""

    def __init__(self, first: int, mode: str) -> None:
        if mode not in ("ok", "corrupt", "cut"):
            raise ValueError(f"unknown hold mode {mode!r}")
        self.first = first
        self.mode = mode
        self.sent_first = threading.Event()  # the first part is on the wire
        self.passed = False  # the upstream went past the gate (opened or backstop)
        self._open = threading.Event()

    def open(self) -> None:
        self._open.set()

    def wait(self) -> None:
        self._open.wait(_HOLD_BACKSTOP)
        self.passed = True


@dataclasses.dataclass
class _Project:
    display: str
    files: dict  # filename -> FileEntry, in insertion order


@dataclasses.dataclass
class _Fault:
    mode: str
    remaining: int | None  # None: forever


def path_matches(path: str, pattern: str) -> bool:
    """True if ``pattern`` is ``path`` or a suffix of it starting at a ``/`` boundary.

    ``"alpha/"`` and ``"/simple/alpha/"`` both match ``/simple/alpha/``; ``"pha/"``
    does not, and neither does ``"simple/"`` (it matches ``/simple/`` only).
    """
    if pattern == ALL_PATHS or path == pattern:
        return True
    if not path.endswith(pattern):
        return False
    if pattern.startswith("/"):
        return True
    return path[: len(path) - len(pattern)].endswith("/")


def negotiate_json(accept: str | None) -> bool:
    """PEP 691 choice the way PyPI makes it: the highest q wins, a tie goes to HTML."""
    if not accept:
        return False
    q_json = 0.0
    q_html = 0.0
    for part in accept.split(","):
        media, _, params = part.partition(";")
        media = media.strip().lower()
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        if media in (JSON_TYPE, "application/vnd.pypi.simple.latest+json"):
            q_json = max(q_json, q)
        elif media in (HTML_TYPE, "application/vnd.pypi.simple.v1+html",
                       "application/vnd.pypi.simple.latest+html", "*/*", "text/*"):
            q_html = max(q_html, q)
    return q_json > q_html


class IndexState:
    """Everything mutable about the fake index, behind one lock. No I/O."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._projects: dict[str, _Project] = {}
        self._faults: dict[str, _Fault] = {}
        self._throttle: tuple[int, float] | None = None
        self._chunked = False
        self._holds: dict[str, list[Hold]] = {}  # file name -> holds not yet taken
        self._all_holds: list[Hold] = []
        self._hits: collections.Counter = collections.Counter()
        self._requests: list[RequestRecord] = []

    # -- content ---------------------------------------------------------

    def add(self, entry: FileEntry) -> None:
        key = entry.dist.normalized
        with self._lock:
            project = self._projects.setdefault(key, _Project(entry.dist.project, {}))
            project.files[entry.dist.filename] = entry

    def add_project(self, name: str) -> None:
        with self._lock:
            self._projects.setdefault(canonicalize(name), _Project(name, {}))

    def remove(self, name: str, filename: str | None = None) -> None:
        key = canonicalize(name)
        with self._lock:
            if filename is None:
                self._projects.pop(key, None)
            elif key in self._projects:
                self._projects[key].files.pop(filename, None)

    def project_names(self) -> list[str]:
        with self._lock:
            return [p.display for p in self._projects.values()]

    def project(self, normalized: str) -> tuple[str, list[FileEntry]] | None:
        with self._lock:
            project = self._projects.get(normalized)
            if project is None:
                return None
            return project.display, list(project.files.values())

    def find_file(self, normalized: str, filename: str) -> FileEntry | None:
        with self._lock:
            project = self._projects.get(normalized)
            return None if project is None else project.files.get(filename)

    # -- faults ----------------------------------------------------------

    def set_fault(self, pattern: str, mode: str, times: int | None) -> None:
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}; expected one of {FAULT_MODES}")
        with self._lock:
            self._faults[pattern] = _Fault(mode, times)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def take_fault(self, path: str) -> str | None:
        """The fault mode for this request (consuming one use of it), or None."""
        with self._lock:
            for pattern, fault in list(self._faults.items()):
                if path_matches(path, pattern):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining <= 0:
                            del self._faults[pattern]
                    return fault.mode
        return None

    def set_throttle(self, value: tuple[int, float] | None) -> None:
        with self._lock:
            self._throttle = value

    def throttle(self) -> tuple[int, float] | None:
        with self._lock:
            return self._throttle

    def set_chunked(self, value: bool) -> None:
        with self._lock:
            self._chunked = value

    def chunked(self) -> bool:
        with self._lock:
            return self._chunked

    def add_hold(self, filename: str, hold: Hold) -> None:
        with self._lock:
            self._holds.setdefault(filename, []).append(hold)
            self._all_holds.append(hold)

    def take_hold(self, filename: str) -> Hold | None:
        """The oldest hold waiting for this file's next GET (consuming it), or None."""
        with self._lock:
            holds = self._holds.get(filename)
            return holds.pop(0) if holds else None

    def open_holds(self) -> None:
        with self._lock:
            holds = list(self._all_holds)
        for hold in holds:
            hold.open()

    # -- accounting ------------------------------------------------------

    def record(self, method: str, path: str, headers: dict) -> None:
        with self._lock:
            self._hits[(method, path)] += 1
            self._requests.append(RequestRecord(method, path, headers))

    def hits(self, pattern: str, method: str | None) -> int:
        with self._lock:
            return sum(
                count
                for (m, path), count in self._hits.items()
                if (method is None or m == method) and path_matches(path, pattern)
            )

    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    def reset_hits(self) -> None:
        with self._lock:
            self._hits.clear()
            self._requests.clear()


# -- rendering (pure) ----------------------------------------------------


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _attr(value: str) -> str:
    return html.escape(value, quote=True)


def render_root_html(names: Iterable[str]) -> bytes:
    links = "".join(
        f'    <a href="{_attr(canonicalize(n))}/">{html.escape(n)}</a><br />\n' for n in names
    )
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        '    <meta name="pypi:repository-version" content="1.0">\n'
        "    <title>Simple index</title>\n  </head>\n  <body>\n"
        f"{links}  </body>\n</html>\n"
    ).encode("utf-8")


def render_project_html(display: str, normalized: str, entries: Iterable[FileEntry]) -> bytes:
    anchors = []
    for entry in entries:
        dist = entry.dist
        # Relative to /simple/<normalized>/, on purpose: the proxy must resolve it.
        href = f"../../files/{normalized}/{urllib.parse.quote(dist.filename)}#sha256={dist.sha256}"
        attrs = [f'href="{_attr(href)}"']
        if dist.requires_python is not None:
            attrs.append(f'data-requires-python="{_attr(dist.requires_python)}"')
        if entry.is_yanked:
            reason = entry.yanked if isinstance(entry.yanked, str) else ""
            attrs.append(f'data-yanked="{_attr(reason)}"')
        if entry.has_metadata:
            value = f"sha256={dist.metadata_sha256}"
            attrs.append(f'data-dist-info-metadata="{value}"')
            attrs.append(f'data-core-metadata="{value}"')
        anchors.append(f"    <a {' '.join(attrs)}>{html.escape(dist.filename)}</a><br />\n")
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        '    <meta name="pypi:repository-version" content="1.0">\n'
        f"    <title>Links for {html.escape(display)}</title>\n  </head>\n  <body>\n"
        f"    <h1>Links for {html.escape(display)}</h1>\n"
        f"{''.join(anchors)}  </body>\n</html>\n"
    ).encode("utf-8")


def render_root_json(names: Iterable[str]) -> bytes:
    document = {"meta": {"api-version": "1.1"}, "projects": [{"name": n} for n in names]}
    return json.dumps(document, indent=1).encode("utf-8")


def render_project_json(normalized: str, entries: list[FileEntry], base_url: str) -> bytes:
    files: list[dict[str, Any]] = []
    versions: list[str] = []
    for entry in entries:
        dist = entry.dist
        if dist.version not in versions:
            versions.append(dist.version)
        core_metadata: Any = {"sha256": dist.metadata_sha256} if entry.has_metadata else False
        item: dict[str, Any] = {
            "filename": dist.filename,
            "url": f"{base_url}/files/{normalized}/{urllib.parse.quote(dist.filename)}",
            "hashes": {"sha256": dist.sha256},
            "requires-python": dist.requires_python,
            "core-metadata": core_metadata,
            # PyPI's non-standard alias (see the API notes, section 10.4); a proxy
            # must not turn it into the key "dist-info-metadata".
            "data-dist-info-metadata": core_metadata,
            "size": dist.size,
            "yanked": entry.yanked if entry.is_yanked else False,
        }
        if entry.upload_time is not None:
            item["upload-time"] = entry.upload_time
        files.append(item)
    document = {
        "meta": {"api-version": "1.1", "_last-serial": 1},
        "name": normalized,
        "versions": versions,
        "files": files,
    }
    return json.dumps(document, indent=1).encode("utf-8")


# -- HTTP ------------------------------------------------------------------


@dataclasses.dataclass
class _Reply:
    status: int
    headers: list  # of (name, value)
    body: bytes = b""
    is_file: bool = False


def _text_reply(status: int, message: str, extra: list | None = None) -> _Reply:
    headers = [("Content-Type", "text/plain; charset=utf-8")] + (extra or [])
    return _Reply(status, headers, (message + "\n").encode("utf-8"))


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate.startswith("W/"):
            candidate = candidate[2:]
        if candidate in ("*", etag):
            return True
    return False


def _parse_range(value: str, size: int) -> tuple[int, int] | None | str:
    """(first, last) for a single satisfiable range, "unsatisfiable", or None to
    ignore the header (malformed or multi-range: a full 200 is allowed then)."""
    unit, _, spec = value.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    start_text, dash, end_text = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if start_text == "":
            suffix = int(end_text)
            if suffix <= 0:
                return "unsatisfiable"
            return max(0, size - suffix), size - 1
        first = int(start_text)
        last = int(end_text) if end_text else size - 1
    except ValueError:
        return None
    if first >= size:
        return "unsatisfiable"
    if first > last:
        return None
    return first, min(last, size - 1)


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
            self._send(_text_reply(int(fault), f"injected fault {fault}"), send_body, None, None)
            return

        reply = self._route(path)
        etag = dict(reply.headers).get("ETag")
        if reply.status == 200 and etag and _etag_matches(self.headers.get("If-None-Match"), etag):
            kept = [(k, v) for k, v in reply.headers if k in ("ETag", "Vary")]
            reply = _Reply(304, kept, b"")
        elif reply.status == 200 and reply.is_file and self.headers.get("Range"):
            reply = self._apply_range(reply, self.headers["Range"])
        hold = None
        if reply.status == 200 and reply.is_file and send_body and fault is None:
            hold = state.take_hold(path.rpartition("/")[2])
        self._send(reply, send_body, fault, hold)

    def _route(self, path: str) -> _Reply:
        if path == "/simple":
            return self._redirect("/simple/")
        if path == "/simple/":
            return self._page(*self._root())
        if path.startswith("/simple/"):
            rest = path[len("/simple/"):]
            name = rest[:-1] if rest.endswith("/") else rest
            if not name or "/" in name:
                return _text_reply(404, "not found")
            normalized = canonicalize(name)
            if not rest.endswith("/") or name != normalized:
                return self._redirect(f"/simple/{urllib.parse.quote(normalized)}/")
            found = self.server.upstream.state.project(normalized)
            if found is None:
                return _text_reply(404, f"project {name} not found")
            return self._page(*self._project(normalized, *found))
        if path.startswith("/files/"):
            parts = path[len("/files/"):].split("/")
            if len(parts) == 2:
                return self._file(*parts)
        return _text_reply(404, "not found")

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

    def _page(self, body: bytes, media_type: str) -> _Reply:
        headers = [
            ("Content-Type", f"{media_type}; charset=utf-8"),
            ("ETag", _etag(body)),
            ("Cache-Control", "max-age=600, public"),
        ]
        if self.server.upstream.fmt == "json":
            headers.append(("Vary", "Accept"))
        return _Reply(200, headers, body)

    def _file(self, normalized: str, filename: str) -> _Reply:
        state = self.server.upstream.state
        entry = state.find_file(normalized, filename)
        if entry is not None:
            return self._bytes_reply(entry.dist.content, entry.dist.sha256)
        if filename.endswith(".metadata"):
            entry = state.find_file(normalized, filename[: -len(".metadata")])
            if entry is not None and entry.has_metadata:
                assert entry.dist.metadata is not None
                return self._bytes_reply(entry.dist.metadata, entry.dist.metadata_sha256 or "")
        return _text_reply(404, f"file {filename} not found")

    @staticmethod
    def _bytes_reply(body: bytes, sha256: str) -> _Reply:
        headers = [
            ("Content-Type", "application/octet-stream"),
            ("ETag", f'"{sha256[:32]}"'),
            ("Accept-Ranges", "bytes"),
            ("Cache-Control", "max-age=365000000, immutable"),
        ]
        return _Reply(200, headers, body, is_file=True)

    @staticmethod
    def _redirect(location: str) -> _Reply:
        return _text_reply(301, f"moved to {location}", [("Location", location)])

    @staticmethod
    def _apply_range(reply: _Reply, header: str) -> _Reply:
        size = len(reply.body)
        parsed = _parse_range(header, size)
        if parsed is None:
            return reply
        if parsed == "unsatisfiable":
            return _text_reply(416, "range not satisfiable", [("Content-Range", f"bytes */{size}")])
        first, last = parsed  # type: ignore[misc]
        headers = reply.headers + [("Content-Range", f"bytes {first}-{last}/{size}")]
        return _Reply(206, headers, reply.body[first: last + 1], is_file=True)

    # -- output ----------------------------------------------------------

    def _send(self, reply: _Reply, send_body: bool, fault: str | None, hold: Hold | None) -> None:
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
            kwargs={"poll_interval": 0.02},
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

    def hold(self, dist: Dist, first: int | None = None, mode: str = "ok") -> Hold:
        """Hold the next GET of *dist*'s file after *first* bytes (default: half) until
        the returned hold is opened; see :class:`Hold` for ``mode``."""
        hold = Hold(dist.size // 2 if first is None else first, mode)
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
