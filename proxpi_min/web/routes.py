"""The HTTP front: the request handler that routes requests to the caches.

The handler holds no caching logic and no locks. Every error becomes a response in one
place (:meth:`ProxyHandler._handle`).
"""

from __future__ import annotations

import email.utils
import functools
import hmac
import itertools
import http.server
import json
import logging
import socket
import ssl
import struct
import time
import urllib.parse
from http import HTTPStatus
from typing import TYPE_CHECKING, Iterable, Optional, Union

from .. import __version__
from ..files.bodies import FileBody, content_type_for
from ..core.byteranges import parse_range
from ..core.errors import (
    BadRequest,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    Overloaded,
    ProxpiError,
    RangeNotSatisfiable,
    Unauthorized,
)
from ..core.names import NormalizedName, check_filename, parse_project_name
from ..infra.metrics import CONTENT_TYPE as METRICS_TYPE
from ..core.render import TEXT_HTML, Rendered, accepts_gzip, choose_media_type, render_home, wants_json
from ..core.simple import HTML_TYPE, JSON_TYPE

if TYPE_CHECKING:  # the server hands itself to each handler; it imports this module
    from .server import ProxyServer

__all__ = ["CLIENT_GONE", "ProxyHandler", "refusal"]

logger = logging.getLogger(__name__)

_PAGE_METHODS = ("GET", "HEAD")
_CACHE_METHODS = ("DELETE",)
# Files never change once published (PyPI refuses a reused file name).
_FILE_CACHE_CONTROL = "public, max-age=31536000, immutable"
_CHARSET = {TEXT_HTML: "; charset=utf-8", HTML_TYPE: "; charset=utf-8", JSON_TYPE: ""}
_REASONS = {status.value: status.phrase for status in HTTPStatus}
MAX_DISCARDED_BODY = 64 * 1024  # no route takes a body; bigger ones close the connection
# Control characters are escaped in the log, so request text cannot forge log lines.
_LOG_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F)}
# Metrics label methods by name only for these (RFC 9110 9.3), so that made-up methods
# cannot grow the number of time series without bound.
_METHOD_LABELS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"))


# A client that went away or stopped reading (a BlockingIOError is a send that timed out
# in the kernel; over TLS it is an SSLError).
# socket.timeout is TimeoutError from Python 3.10 on; named for 3.9.
CLIENT_GONE = (ConnectionError, TimeoutError, socket.timeout, BlockingIOError, ssl.SSLError)
# http.client's limits for a header line and a header count (431 past them).
_MAX_HEADER_LINE = 65536
_MAX_HEADERS = 100
# The versions clients send, by minor version; others are parsed in full.
_MINOR_VERSIONS = {"HTTP/1.1": 1, "HTTP/1.0": 0}


class ProxyHandler(http.server.BaseHTTPRequestHandler):
    """Routes one request; see README.md for the URL layout."""

    server: "ProxyServer"
    protocol_version = "HTTP/1.1"  # keep-alive: every response has a length or is chunked
    server_version = f"proxpi-min/{__version__}"
    # A malformed request line gets a proper HTTP/1.0 error, not an HTTP/0.9 one.
    default_request_version = "HTTP/1.0"

    def parse_request(self) -> bool:
        """Parse the request line and headers, as http.server does (same limits and
        errors: 400, 414 earlier, 431, 505; keep-alive and Expect: 100-continue) but
        without the email package, which alone took a third of the time of a request
        for a cached page. ``self.headers`` becomes a plain dict keyed by lowercase
        name, repeated fields joined with ", " (RFC 9110 5.3)."""
        self.command = None
        self.request_version = self.default_request_version
        self.close_connection = True
        if self.raw_requestline in (b"\r\n", b"\n"):
            # RFC 9112 2.2: an empty line before the request line is to be skipped.
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:  # as http.server checks the first read
                self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
                return False
        if not self.raw_requestline.endswith(b"\n"):
            return False  # the client closed or timed out mid-line: close, nothing to say
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = self.requestline.split()
        if len(words) != 3 or not words[2].startswith("HTTP/"):
            self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request syntax ({self.requestline!r})")
            return False
        command, path, version = words
        minor = _MINOR_VERSIONS.get(version)
        if minor is None:
            numbers = version[5:].split(".")
            if len(numbers) != 2 or not all(n.isascii() and n.isdigit() and len(n) < 4 for n in numbers):
                self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request version ({version!r})")
                return False
            if int(numbers[0]) != 1:
                self.send_error(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, f"Invalid HTTP version ({version})")
                return False
            minor = int(numbers[1])
        self.command, self.request_version = command, version
        # As http.server (gh-87389): "//host/x" must not reach us as a network path.
        self.path = "/" + path.lstrip("/") if path.startswith("//") else path
        headers: dict = {}
        for count in itertools.count():
            line = self.rfile.readline(_MAX_HEADER_LINE + 1)
            if len(line) > _MAX_HEADER_LINE:
                self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long")
                return False
            if not line.endswith(b"\n"):
                return False  # closed or timed out mid-line
            if line in (b"\r\n", b"\n"):
                break
            if count >= _MAX_HEADERS:
                self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers")
                return False
            name, colon, value = line.decode("iso-8859-1").partition(":")
            if not colon or not name or name != name.strip():
                self.send_error(HTTPStatus.BAD_REQUEST, "Bad header line")
                return False
            key, value = name.lower(), value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        self.headers = headers  # type: ignore[assignment]
        connection = headers.get("connection")
        tokens = {token.strip() for token in connection.lower().split(",")} if connection else ()
        # RFC 9112 9.3: HTTP/1.1 persists unless told to close; HTTP/1.0 only if asked.
        self.close_connection = "close" in tokens or (minor == 0 and "keep-alive" not in tokens)
        if minor >= 1 and headers.get("expect", "").lower() == "100-continue":
            return self.handle_expect_100()
        return True

    def setup(self) -> None:
        # Idle or slow clients are dropped after the client timeout. Over plain TCP the
        # kernel applies it (SO_RCVTIMEO, SO_SNDTIMEO): socket.settimeout() would poll()
        # before every recv and send, giving up the GIL twice for each, which cost a
        # third of the time of a cached page. Over TLS, whose blocking reads retry past
        # a kernel timeout, StreamRequestHandler applies it with settimeout().
        self.timeout = self.server.settings.client_timeout
        self._kernel_timeouts = not isinstance(self.request, ssl.SSLSocket) and _set_kernel_timeouts(
            self.request, self.timeout
        )
        if self._kernel_timeouts:
            self.timeout = None
        super().setup()
        # Responses go out in one or few writes; never wait for Nagle's algorithm.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # ------------------------------------------------------------------ dispatch

    def __getattr__(self, name: str):
        # http.server calls do_<METHOD> and answers 501 where there is none. Every
        # method (GET, HEAD, DELETE and the rest) goes to _handle instead: the routes
        # say which they allow, and a wrong one gets 405 with Allow.
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    def _handle(self) -> None:
        """Route the request and map every error to a response, in this one place."""
        self._started = time.monotonic()
        self._status = 0
        self._sent = 0
        self._headers_done = False
        self._kind = "other"  # the route, as the metrics label it
        self._source: Optional[str] = None  # "cache" or "upstream": where the body came from
        self._project: Optional[NormalizedName] = None
        self.server.request_started()
        try:
            self._route()
        except ProxpiError as exc:
            self._error(exc)
        except CLIENT_GONE:
            self.close_connection = True
        except Exception:
            logger.exception("error handling %s", self._escaped_path())
            self._error(ProxpiError("internal error, see the proxy's log"))
        finally:
            self.server.request_finished()
            if self.server.stopping:
                self.close_connection = True
            self._done()

    # The usual methods, found without a call to __getattr__.
    do_GET = do_HEAD = do_DELETE = _handle

    def _route(self) -> None:
        self._discard_body()
        segments, query_string = _split_target(self.path)
        query = dict(urllib.parse.parse_qsl(query_string, keep_blank_values=True)) if query_string else {}
        if segments in ([""], []):
            self._allow(_PAGE_METHODS)
            self._home()
        elif segments == ["metrics"]:
            # Not behind the admin token: scrapers read it (README, "Monitoring").
            self._allow(_PAGE_METHODS)
            body = self.server.metrics_text()
            self._send(200, [("Content-Type", METRICS_TYPE), ("Cache-Control", "no-store")], body)
        elif segments == ["health"]:
            self._allow(_PAGE_METHODS)
            self._send(200, [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")], b"ok\n")
        elif segments[0] == "index":
            self._allow(_PAGE_METHODS)
            self._index(segments[1:], query, query_string)
        elif segments[0] == "cache" and len(segments) in (2, 3) and segments[2:] in ([], [""]):
            self._allow(_CACHE_METHODS)
            self._invalidate(segments[1])
        else:
            raise NotFound(f"no such page: {self._escaped_path()}")

    def _discard_body(self) -> None:
        """Read away a request body nobody needs, so that on a kept-alive connection it
        is never taken for the next request; a large or chunked one closes instead."""
        length = self.headers.get("content-length")
        if length is None and "transfer-encoding" not in self.headers:
            return  # the usual GET: no body
        if "transfer-encoding" in self.headers:
            self.close_connection = True
            return
        length = length.strip()
        if not (length.isascii() and length.isdigit()) or int(length) > MAX_DISCARDED_BODY:
            self.close_connection = True
        elif int(length) and len(self.rfile.read(int(length)) or b"") < int(length):
            # Closed or timed out mid-body: the request is not whole, so nothing is done.
            raise ConnectionError("the request body stopped short")

    def _allow(self, methods: tuple) -> None:
        if self.command not in methods:
            raise MethodNotAllowed(f"{self.command} is not allowed here", methods)

    # ------------------------------------------------------------------ routes

    def _index(self, segments: list, query: dict, query_string: str) -> None:
        suffix = f"?{query_string}" if query_string else ""
        self._kind = "list"
        if not segments:  # "/index"
            return self._redirect(f"/index/{suffix}")
        if segments == [""]:
            media = self._media(query)
            return self._page(media, *self.server.indexes.rendered_list(media, self._gzip()))
        self._kind = "page"
        project = parse_project_name(segments[0])
        self._project = project
        if len(segments) == 1 or (segments[1] == "" and project != segments[0]):
            # PEP 503: pages end in "/" and use the normalised name.
            return self._redirect(f"/index/{project}/{suffix}")
        if segments[1] == "" and len(segments) == 2:
            media = self._media(query)
            return self._page(media, *self.server.indexes.rendered_project(project, media, self._gzip()))
        if len(segments) == 2:
            return self._file(project, check_filename(segments[1]))
        raise NotFound(f"no such page: {self._escaped_path()}")

    def _media(self, query: dict) -> str:
        return choose_media_type(self.headers.get("accept"), query.get("format"))

    def _gzip(self) -> bool:
        return accepts_gzip(self.headers.get("accept-encoding"))

    def _page(self, media: str, page: Rendered, stale: bool, hit: bool, policies: str = "") -> None:
        self._source = "cache" if hit else "upstream"
        # A stale copy (upstream failing) must not outlive the outage in a front cache.
        cache_control = "no-store" if stale else self.server.page_cache_control
        if _etag_matches(self.headers.get("if-none-match"), page.etag):
            return self._send(304, _page_headers(media, page.etag, cache_control, stale, policies, None, None), b"")
        headers = _page_headers(media, page.etag, cache_control, stale, policies, page.encoding, len(page.body))
        self.wfile.write(self._head(200, headers) + (b"" if self.command == "HEAD" else page.body))
        self._sent = 0 if self.command == "HEAD" else len(page.body)

    def _file(self, project: NormalizedName, filename: str) -> None:
        indexes = self.server.indexes
        metadata = filename.endswith(".metadata")
        self._kind = "metadata" if metadata else "file"
        if metadata:
            entry, index = indexes.locate_file(project, filename[: -len(".metadata")])
            if entry.metadata is None:
                raise NotFound(f"the index has no metadata file for {entry.filename!r}")
        else:
            entry, index = indexes.locate_file(project, filename)
        head = self.command == "HEAD"
        try:
            byte_range = parse_range(self.headers.get("range"))
            body = self.server.files.open(
                project, entry, metadata=metadata, head=head, byte_range=byte_range, index=index
            )
        except RangeNotSatisfiable as exc:
            return self._send(
                416,
                [
                    ("Content-Type", "text/plain; charset=utf-8"),
                    ("Content-Range", f"bytes */{exc.size}"),
                    ("Cache-Control", "no-store"),
                ],
                f"416 Range Not Satisfiable: {exc.message}\n".encode(),
            )
        self._source = body.source
        try:
            self._send_file(body, filename, head)
        finally:
            body.close()

    def _send_file(self, body: FileBody, filename: str, head: bool) -> None:
        headers = [
            ("Content-Type", content_type_for(filename, self.server.settings.binary_file_mime_type)),
            ("Accept-Ranges", "bytes"),
            ("Cache-Control", _FILE_CACHE_CONTROL),
        ]
        if body.etag:
            headers.append(("ETag", body.etag))
            if _etag_matches(self.headers.get("if-none-match"), body.etag):
                return self._send(304, headers, b"")
        if body.content_range:
            headers.append(("Content-Range", body.content_range))
        chunked = False
        if body.length is not None:
            headers.append(("Content-Length", str(body.length)))
        elif self.request_version == "HTTP/1.1":
            headers.append(("Transfer-Encoding", "chunked"))
            chunked = True
        else:
            self.close_connection = True  # an HTTP/1.0 client reads to the close
        if head:
            return self._write_head(body.status, headers)
        if self._kernel_timeouts:
            # socket.sendfile waits without end on a blocking socket whose send timed
            # out in the kernel: file bodies are sent under a Python timeout instead.
            self.connection.settimeout(self.server.settings.client_timeout)
        try:
            body.send(self.connection, self._head(body.status, headers), chunked)
        except ProxpiError as exc:
            # Headers are out: cut the response short so the client sees the failure
            # instead of installing bad or partial bytes.
            logger.warning("cut %s short: %s", self._escaped_path(), exc.message)
            self.close_connection = True
        finally:
            self._sent = body.sent
            if self._kernel_timeouts:
                self.connection.settimeout(None)

    def _home(self) -> None:
        status = self.server.status()
        # The absolute URL to give pip: as this client reached us (https when serving TLS).
        status["index_url"] = f"{self.server.settings.scheme}://{self.headers.get('host') or self.server.address_text}/index/"
        vary = ("Vary", "Accept")
        if wants_json(self.headers.get("accept")):
            body = json.dumps(status, indent=1).encode()
            return self._send(200, [("Content-Type", "application/json"), ("Cache-Control", "no-store"), vary], body)
        body = render_home(status, self.server.settings.admin_token is not None)
        self._send(200, [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store"), vary], body)

    def _invalidate(self, target: str) -> None:
        token = self.server.settings.admin_token
        if token is not None:
            given = self.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                raise Unauthorized("DELETE needs the admin token (Authorization: Bearer <token>)")
        if target == "list":
            self.server.indexes.invalidate_list()
            message = "invalidated the project list"
        else:
            project = parse_project_name(target)
            self.server.indexes.invalidate_project(project)
            message = f"invalidated project {project}"
        logger.info("%s", message)
        self._send(200, [("Content-Type", "text/plain; charset=utf-8")], message.encode() + b"\n")

    # ------------------------------------------------------------------ responses

    def _redirect(self, location: str) -> None:
        body = f"moved to {location}\n".encode()
        self._send(301, [("Location", location), ("Content-Type", "text/plain; charset=utf-8")], body)

    def _error(self, error: ProxpiError) -> None:
        if self._headers_done:
            self.close_connection = True
            return
        if error.status >= 500:
            self.close_connection = self.close_connection or error.status == 500
        # A refusal's reason also goes in the status line: pip shows the reason phrase
        # ("403 Client Error: <reason> for url"), never the body (RFC 9112 4 allows any
        # reason phrase; clients must not depend on it).
        reason = _reason_phrase(error.message) if isinstance(error, Forbidden) else None
        self._send(error.status, _error_headers(error), _error_body(error), reason)

    def _head(self, status: int, headers: Union[str, Iterable[tuple]], reason: Optional[str] = None) -> bytes:
        """The status line and headers (pairs, or lines already made), as bytes; marks
        the headers as sent."""
        self._status = status
        self._headers_done = True
        if self.server.stopping:
            self.close_connection = True
        lines = [f"{self.protocol_version} {status} {reason or _REASONS[status]}\r\n"]
        lines.append(f"Server: {self.server_version}\r\nDate: {_http_date()}\r\n")
        lines.append(headers if isinstance(headers, str) else _header_lines(headers))
        if self.close_connection:
            lines.append("Connection: close\r\n")
        lines.append("\r\n")
        return "".join(lines).encode("latin-1")

    def _write_head(self, status: int, headers: list) -> None:
        self.wfile.write(self._head(status, headers))

    def _send(self, status: int, headers: Union[str, list], body: bytes, reason: Optional[str] = None) -> None:
        """Send a complete response in one write (headers and body together)."""
        no_body = self.command == "HEAD" or status == 304
        if status != 304:
            headers = [*headers, ("Content-Length", str(len(body)))]
        self.wfile.write(self._head(status, headers, reason) + (b"" if no_body else body))
        self._sent = 0 if no_body else len(body)

    # ------------------------------------------------------------------ logging

    def _escaped_path(self) -> str:
        return self.path.translate(_LOG_ESCAPES)

    def _done(self) -> None:
        """Count the request in the metrics and write its log line."""
        seconds = time.monotonic() - self._started
        method = str(self.command)
        metrics = self.server.metrics
        metrics.request(
            self._kind, method if method in _METHOD_LABELS else "other", self._status, seconds, self._sent, self._source
        )
        if self._project is not None and 0 < self._status < 400:
            metrics.project_requested(self._project)
        method, path = method.translate(_LOG_ESCAPES), self._escaped_path()
        client = self.client_address[0]
        logger.info(
            '%s "%s %s" %d %d %.1fms',
            client,
            method,
            path,
            self._status,
            self._sent,
            seconds * 1000,
            # The fields of a JSON log line (logs.JsonFormatter).
            extra={
                "request": {
                    "client": client,
                    "method": method,
                    "path": path,
                    "status": self._status,
                    "bytes": self._sent,
                    "duration_ms": round(seconds * 1000, 3),
                    "source": self._source,
                }
            },
        )

    def log_request(self, code="-", size="-") -> None:
        """Requests are logged by _log; http.server's own errors arrive here."""

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's name
        logger.info("%s %s", self.client_address[0], (format % args).translate(_LOG_ESCAPES))


def _split_target(target: str) -> tuple:
    """(path segments, percent-decoded; query string) of a request target."""
    if target.startswith("/") and "%" not in target and "#" not in target:
        path, _, query_string = target.partition("?")  # the usual request: nothing to decode
        return path.split("/")[1:], query_string
    try:
        parts = urllib.parse.urlsplit(target)  # also the absolute form (RFC 9112 3.2.2)
    except ValueError:  # e.g. "http://[x/": an unclosed IPv6 host
        raise BadRequest("the request target is not a valid URL") from None
    try:
        segments = [urllib.parse.unquote(segment, errors="strict") for segment in parts.path.split("/")[1:]]
    except UnicodeDecodeError:
        raise BadRequest("the path is not UTF-8 once percent-decoded") from None
    return segments, parts.query


def _error_headers(error: ProxpiError) -> list:
    # no-store: a front cache must not keep an error (RFC 9111 allows caching a 404
    # heuristically); the next request may well succeed.
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("X-Content-Type-Options", "nosniff"),
        ("Cache-Control", "no-store"),
    ]
    if isinstance(error, MethodNotAllowed):
        headers.append(("Allow", ", ".join(error.allowed)))
    if isinstance(error, Unauthorized):
        headers.append(("WWW-Authenticate", 'Bearer realm="proxpi-min"'))
    if isinstance(error, Overloaded):
        headers.append(("Retry-After", str(error.retry_after)))
    return headers


def _error_body(error: ProxpiError) -> bytes:
    return f"{error.status} {_REASONS[error.status]}: {error.message}\n".encode()


def refusal(error: ProxpiError) -> bytes:
    """A whole error response, closing the connection, for a connection refused
    before any request is read (the connection cap: see server.ProxyServer)."""
    body = _error_body(error)
    headers = [*_error_headers(error), ("Content-Length", str(len(body))), ("Connection", "close")]
    status_line = f"{ProxyHandler.protocol_version} {error.status} {_REASONS[error.status]}\r\n"
    head = f"{status_line}Server: {ProxyHandler.server_version}\r\nDate: {_http_date()}\r\n"
    return (head + _header_lines(headers) + "\r\n").encode("latin-1") + body


def _header_lines(headers: Iterable[tuple]) -> str:
    return "".join(f"{name}: {value}\r\n" for name, value in headers)


@functools.lru_cache(maxsize=1024)
def _page_headers(
    media: str,
    etag: str,
    cache_control: str,
    stale: bool,
    policies: str,
    encoding: Optional[str],
    length: Optional[int],
) -> str:
    """A page response's header lines, made once per page and not per request."""
    headers = [
        ("Content-Type", media + _CHARSET[media]),
        ("Vary", "Accept, Accept-Encoding"),
        ("ETag", etag),
        ("Cache-Control", cache_control),
    ]
    if stale:
        # RFC 7234 5.5.1 warn-code 110; X-Proxpi-Stale for clients that drop Warning.
        headers += [("Warning", '110 - "Response is Stale"'), ("X-Proxpi-Stale", "1")]
    if policies:
        headers.append(("X-Proxpi-Policy", policies))  # the guard rails that changed the page
    if encoding:
        headers.append(("Content-Encoding", encoding))
    if length is not None:
        headers.append(("Content-Length", str(length)))
    return _header_lines(headers)


def _reason_phrase(message: str) -> str:
    """*message* fit for a status line: one line of printable ASCII (RFC 9112 4)."""
    return "".join(c if " " <= c <= "~" else "?" for c in message)[:1000]


def _set_kernel_timeouts(conn: socket.socket, seconds: float) -> bool:
    """Make *conn* blocking, its reads and writes timed out by the kernel after
    *seconds* without progress; False where the platform refuses the options.

    A timed-out read then looks like the end of the stream to the buffered reader
    (socket.SocketIO returns None on EAGAIN), and a timed-out write raises
    BlockingIOError."""
    whole = int(seconds)
    # struct timeval; at least 1 µs, since 0 means "never". Where timeval is not two C
    # longs (32-bit builds with a 64-bit time_t), the kernel refuses the size: False.
    timeval = struct.pack("ll", whole, max(int((seconds - whole) * 1_000_000), 0 if whole else 1))
    try:
        conn.settimeout(None)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
    except (OSError, AttributeError):  # AttributeError: no SO_RCVTIMEO here
        return False
    return True


_date = (0, "")


def _http_date() -> str:
    """The Date header (RFC 9110 6.6.1), formatted once a second, not per response."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, email.utils.formatdate(now, usegmt=True))
    return _date[1]


def _etag_matches(header: Optional[str], etag: str) -> bool:
    """RFC 9110 13.1.2: If-None-Match with weak comparison."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    wanted = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == wanted for tag in header.split(","))
