"""HTTP/1.1 on the wire: the request parser and handler, the response head every answer
goes out with, error responses, and the header rules (Date, ETag, targets)."""

from __future__ import annotations

import email.utils
import http.server
import itertools
import logging
import re
import socket
import ssl
import threading
import time
import types
import urllib.parse
from http import HTTPStatus
from typing import Iterable, List, NamedTuple, Optional, Protocol, Union

from .. import __version__
from ..core.errors import BadRequest, Forbidden, MethodNotAllowed, Overloaded, ProxpiError, Unauthorized
from ..core.units import parse_decimal
from .connection import Connection, Writer

__all__ = [
    "CLIENT_GONE",
    "LOG_ESCAPES",
    "Connections",
    "Http1Handler",
    "InFlight",
    "Target",
    "address_text",
    "error_body",
    "error_headers",
    "etag_matches",
    "header_lines",
    "http_date",
    "overloaded_response",
    "reason_phrase",
    "response_head",
    "split_target",
    "closing_response",
]

logger = logging.getLogger(__name__)

PROTOCOL = "HTTP/1.1"  # keep-alive: every response has a length or is chunked
SERVER = f"proxpi-min/{__version__}"
_REASONS = {status.value: status.phrase for status in HTTPStatus}
MAX_DISCARDED_BODY = 64 * 1024  # no route takes a body; bigger ones close the connection
# RFC 9112 9.6: a close with body bytes unread resets, which can destroy the answer unread;
# so the rest is read away first, within these bounds (past them the reset is accepted).
DRAIN_BYTES = 4 * 1024 * 1024
DRAIN_SECONDS = 2.0  # or the client timeout, if shorter
_NO_HEADERS = types.MappingProxyType({})  # a request whose head did not parse
# Control characters are escaped in the log, so request text cannot forge log lines.
LOG_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F)}
_CONTROL = re.compile("[\x00-\x1f\x7f]")
# The query parameters whose values reach the log; any other value (a token a client
# put in the URL) is logged as "***".
LOGGED_PARAMETERS = frozenset({"format"})
# A client that went away or stopped reading (a BlockingIOError is a send that timed out
# in the kernel; over TLS it is an SSLError).
# socket.timeout is TimeoutError from Python 3.10 on; named for 3.9.
CLIENT_GONE = (ConnectionError, TimeoutError, socket.timeout, BlockingIOError, ssl.SSLError)
# http.client's limits for a header line and a header count (431 past them).
_MAX_HEADER_LINE = 65536
_MAX_HEADERS = 100
# The versions clients send, by minor version; others are parsed in full.
_MINOR_VERSIONS = {"HTTP/1.1": 1, "HTTP/1.0": 0}
# What a Host value (RFC 3986 3.2.2 host, then an optional port) never holds.
_BAD_HOST = re.compile(r"[\s/?#@\\,\x00-\x1f\x7f]")


class InFlight:
    """Requests being answered, counted so that a stopping server can wait for them;
    once it stops, every answer closes its connection."""

    def __init__(self) -> None:
        self.stopping = False
        self._count = 0
        # Counted per request under the plain lock (cheaper to take than the
        # condition, a Python object); drain() waits on the condition built on it.
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    def started(self) -> None:
        with self._lock:
            self._count += 1

    def finished(self) -> None:
        with self._lock:
            self._count -= 1
            if self.stopping:  # only drain() waits
                self._changed.notify_all()

    def drain(self, timeout: float) -> bool:
        """Stop, and wait up to *timeout* seconds for requests in flight; True if none is left."""
        self.stopping = True
        with self._changed:
            return self._changed.wait_for(lambda: self._count == 0, timeout)


class Connections(Protocol):
    """What :class:`Http1Handler` reads of the server that runs it."""

    client_timeout: float  # seconds a client may take to send or read anything
    in_flight: InFlight

    linger_seconds: float  # how long a request thread waits for the next request

    def linger(self) -> float:
        """Seconds a request thread waits for the connection's next request before it
        hands the connection back to the selector: linger_seconds, or 0."""


class Http1Handler(http.server.BaseHTTPRequestHandler):
    """One connection's requests: parsed without the email package, answered through
    :meth:`_head` (and :meth:`_send` for a whole response)."""

    server: Connections
    protocol_version = PROTOCOL
    server_version = SERVER
    # A malformed request line gets a proper HTTP/1.0 error, not an HTTP/0.9 one.
    default_request_version = "HTTP/1.0"
    # Set by each response: its status, body bytes sent, and whether its head is out.
    _status: int
    _sent: int
    _headers_done: bool

    def parse_request(self) -> bool:
        """Parse the request line and headers, as http.server does (same limits and
        errors: 400, 414 earlier, 431, 505; keep-alive and Expect: 100-continue) but
        without the email package, the costliest part of a request for a cached page.
        ``self.headers`` becomes a plain dict keyed by lowercase name, repeated fields
        joined with ", " (RFC 9110 5.3)."""
        self.command = None
        self.path = ""  # not the last request's, for the log line of a refusal
        self.request_version = self.default_request_version
        self.close_connection = True
        self.expects_continue = False
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
        if _CONTROL.search(path):  # RFC 9112 3.2, RFC 3986 2: a target has none
            self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request target: control characters in {logged_target(path)}")
            return False
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
            if key == "host" and (key in headers or _BAD_HOST.search(value)):
                # RFC 9112 3.2: which host is meant must not be in doubt.
                self.send_error(HTTPStatus.BAD_REQUEST, "more than one Host, or a Host that is no host[:port]")
                return False
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        if minor >= 1 and "host" not in headers:
            self.send_error(HTTPStatus.BAD_REQUEST, "an HTTP/1.1 request needs a Host header (RFC 9112 3.2)")
            return False
        length = headers.get("content-length")
        if length is not None and "transfer-encoding" not in headers and parse_decimal(length.strip()) is None:
            # RFC 9112 6.3: framing that cannot be trusted ends the connection, with a 400.
            self.send_error(HTTPStatus.BAD_REQUEST, "the Content-Length is not one number (RFC 9112 6.3)")
            return False
        self.headers = headers  # type: ignore[assignment]
        connection = headers.get("connection")
        tokens = {token.strip() for token in connection.lower().split(",")} if connection else ()
        # RFC 9112 9.3: HTTP/1.1 persists unless told to close; HTTP/1.0 only if asked.
        self.close_connection = "close" in tokens or (minor == 0 and "keep-alive" not in tokens)
        # The 100 waits for a route that reads the body, and for its checks of the head
        # (an upload's token and size): a refusal then costs the client no body.
        self.expects_continue = minor >= 1 and headers.get("expect", "").lower() == "100-continue"
        return True

    def go_ahead(self) -> None:
        """Tell a client waiting for it (``Expect: 100-continue``) to send its body."""
        if self.expects_continue:
            self.expects_continue = False
            self.handle_expect_100()

    def setup(self) -> None:
        # The server hands over a Connection whose head is buffered (see .connections):
        # the parser reads from it, answers go straight to the socket.
        self._connection = connection = self.request
        self.request = self.connection = connection.sock
        connection.blocking(self.server.client_timeout, self.server.linger_seconds)
        self._kernel_timeouts = connection.kernel_timeouts
        self.rfile = connection
        self.wfile = Writer(connection.sock)

    def handle(self) -> None:
        """Answer requests while their heads are already in (pipelined, or sent within
        the server's linger); then the connection goes back to the server's selector,
        kept (``keep``) unless it is to close."""
        connection = self._connection
        while True:
            self.headers = _NO_HEADERS  # type: ignore[assignment]  # not the last request's
            body_read = connection.body_read
            self.handle_one_request()
            connection.keep = not self.close_connection
            if not connection.keep:
                return self._drain_body(connection, connection.body_read - body_read)
            if not connection.next_ready(self.server.linger()):
                return

    def finish(self) -> None:
        """Nothing to flush or close: the connection outlives this request."""

    def _drain_body(self, connection: Connection, read: int) -> None:
        """Before the connection closes, read away what is left of the body of a request
        answered (*read*: bytes of it read already), within DRAIN_BYTES and DRAIN_SECONDS."""
        length = _body_length(self.headers)
        if length == 0:
            return  # no body: nothing to wait for
        if ("transfer-encoding" in self.headers and self._status < 400) or self._status in (0, 408):
            # An answered chunked body's end is not looked for (it would cost the bounds
            # each time); no answer to save (0: the client is gone); a client too slow.
            return
        # An end not known ahead: read to the bounds or the close.
        left = DRAIN_BYTES if length is None else min(length - read, DRAIN_BYTES)
        if left <= 0:
            return
        try:
            connection.discard(left, min(DRAIN_SECONDS, self.server.client_timeout))
        except OSError:  # a reset, a TLS error: the client is gone
            pass

    def _discard_body(self) -> None:
        """Read away a request body nobody needs, so that on a kept-alive connection it
        is never taken for the next request; a large or chunked one closes instead.
        The body has one client timeout in all: a client sending it a byte at a time
        holds the thread no longer."""
        length = _body_length(self.headers)
        if length == 0:
            return  # the usual GET: no body
        # A client that waits for a 100 sends its body only after a second or so, unless
        # it sent it at once (already here: read away as any other).
        waits = self.expects_continue and len(self._connection.buffer) - self._connection.pos < (length or 0)
        if length is None or length > MAX_DISCARDED_BODY or waits:
            self.close_connection = True
        elif length and len(self.rfile.read(length, self.server.client_timeout)) < length:
            # Closed or timed out mid-body: the request is not whole, so nothing is done.
            raise ConnectionError("the request body stopped short")

    # ------------------------------------------------------------------ responses

    def _head(self, status: int, headers: Union[str, Iterable[tuple]], reason: Optional[str] = None) -> bytes:
        """The head of this request's response (*headers*: pairs, or lines already
        made), as bytes; marks the headers as sent."""
        self._status = status
        self._headers_done = True
        if self.server.in_flight.stopping:
            self.close_connection = True
        lines = headers if isinstance(headers, str) else header_lines(headers)
        return response_head(status, lines, self.close_connection, reason)

    def _send(self, status: int, headers: Union[str, list], body: bytes, reason: Optional[str] = None) -> None:
        """Send a whole response in one write (head and body together). *headers*: pairs,
        Content-Length added from *body*; or lines already made, carrying their own."""
        no_body = self.command == "HEAD" or status == 304
        if status != 304 and not isinstance(headers, str):
            headers = [*headers, ("Content-Length", str(len(body)))]
        self.wfile.write(self._head(status, headers, reason) + (b"" if no_body else body))
        self._sent = 0 if no_body else len(body)

    # ------------------------------------------------------------------ logging

    def _escaped_path(self) -> str:
        return logged_target(self.path)

    def send_error(self, code: int, message: Optional[str] = None, explain: Optional[str] = None) -> None:
        """http.server's own refusals (400, 414, 431, 505) as one plain-text line, like
        every other error, instead of its HTML page; the connection is closed."""
        self.close_connection = True
        body = f"{code} {_REASONS.get(code, 'Error')}: {message or _REASONS.get(code, 'Error')}\n".encode()
        headers = [*error_headers(ProxpiError(message or "")), ("Content-Length", str(len(body)))]
        self.wfile.write(self._head(code, headers) + (b"" if self.command == "HEAD" else body))
        self._sent = 0 if self.command == "HEAD" else len(body)

    def log_request(self, code="-", size="-") -> None:
        """Requests are logged once answered (the routes' ``_done``); http.server's own
        errors arrive at :meth:`log_message`."""

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's name
        logger.info("%s %s", self.client_address[0], (format % args).translate(LOG_ESCAPES))


class Target(NamedTuple):
    """A request target split up (RFC 9112 3.2)."""

    segments: List[str]  # the path's segments after the first "/", percent-decoded
    query: str  # the query string, as sent


def split_target(target: str) -> Target:
    """The path segments and query string of a request target (origin or absolute form)."""
    if target.startswith("/") and "%" not in target and "#" not in target:
        path, _, query_string = target.partition("?")  # the usual request: nothing to decode
        return Target(path.split("/")[1:], query_string)
    try:
        parts = urllib.parse.urlsplit(target)  # also the absolute form (RFC 9112 3.2.2)
    except ValueError:  # e.g. "http://[x/": an unclosed IPv6 host
        raise BadRequest("the request target is not a valid URL") from None
    if not parts.netloc and not target.startswith("/"):
        # RFC 9112 3.2: a path or an absolute URL; "*" (3.2.4) is for OPTIONS alone.
        raise BadRequest("the request target is neither a path nor an absolute URL")
    try:
        segments = [urllib.parse.unquote(segment, errors="strict") for segment in parts.path.split("/")[1:]]
    except UnicodeDecodeError:
        raise BadRequest("the path is not UTF-8 once percent-decoded") from None
    return Target(segments, parts.query)


def logged_target(target: str) -> str:
    """A request target as the log shows it: control characters escaped, and the
    values of query parameters other than LOGGED_PARAMETERS replaced by "***"."""
    path, question, query = target.partition("?")
    if question:
        pairs = []
        for pair in query.split("&"):
            name, equals, _ = pair.partition("=")
            if not pair or (equals and urllib.parse.unquote_plus(name) in LOGGED_PARAMETERS):
                pairs.append(pair)
            else:
                pairs.append(f"{name}=***" if equals else "***")
        path = f"{path}?{'&'.join(pairs)}"
    return path.translate(LOG_ESCAPES)


def _body_length(headers) -> Optional[int]:
    """A request body's length as its head announces it (RFC 9112 6.3): 0 for no body,
    None for an end not known ahead (chunked, or a length past parsing)."""
    if "transfer-encoding" in headers:
        return None
    length = headers.get("content-length")
    return 0 if length is None else parse_decimal(length.strip())


def response_head(status: int, lines: str, close: bool, reason: Optional[str] = None) -> bytes:
    """The head of a response (RFC 9112 4, 5): status line, Server, Date, *lines* (each
    ending CRLF), ``Connection: close`` when *close*, and the empty line."""
    closing = "Connection: close\r\n" if close else ""
    status_line = f"{PROTOCOL} {status} {reason or _REASONS[status]}"
    return f"{status_line}\r\nServer: {SERVER}\r\nDate: {http_date()}\r\n{lines}{closing}\r\n".encode("latin-1")


def header_lines(headers: Iterable[tuple]) -> str:
    return "".join(f"{name}: {value}\r\n" for name, value in headers)


def error_headers(error: ProxpiError) -> list:
    """The headers of *error*'s response, without Content-Length."""
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
        headers.append(("WWW-Authenticate", error.challenge))
    if isinstance(error, Overloaded):
        headers.append(("Retry-After", str(error.retry_after)))
    if isinstance(error, Forbidden) and error.policy:  # a proxy in front passes the refusal on
        headers.append(("X-Proxpi-Policy", error.policy))
    return headers


def error_body(error: ProxpiError) -> bytes:
    return f"{error.status} {_REASONS[error.status]}: {error.message}\n".encode()


def overloaded_response(message: str = "too many connections; retry in a second") -> bytes:
    """The whole 503 a connection past the cap gets, closing it, before any request is
    read (see server.Server), or a request that waited too long for a thread."""
    error = Overloaded(message)
    body = error_body(error)
    headers = [*error_headers(error), ("Content-Length", str(len(body)))]
    return response_head(error.status, header_lines(headers), close=True) + body


def closing_response(status: int, message: str) -> bytes:
    """The whole answer, closing the connection, to a request the selector refuses
    before any thread reads it: 408 (RFC 9110 15.5.9), 414, 431."""
    body = f"{status} {_REASONS[status]}: {message}\n".encode()
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    return response_head(status, header_lines(headers), close=True) + body


def reason_phrase(message: str) -> str:
    """*message* fit for a status line: one line of printable ASCII (RFC 9112 4)."""
    return "".join(c if " " <= c <= "~" else "?" for c in message)[:1000]


def address_text(address: tuple) -> str:
    """A socket address as ``host:port`` (an IPv6 host in brackets, RFC 3986 3.2.2)."""
    host, port = address[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


_date = (0, "")


def http_date() -> str:
    """The Date header (RFC 9110 6.6.1), formatted once a second, not per response."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, email.utils.formatdate(now, usegmt=True))
    return _date[1]


def etag_matches(header: Optional[str], etag: str) -> bool:
    """RFC 9110 13.1.2: If-None-Match with weak comparison."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    wanted = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == wanted for tag in header.split(","))
