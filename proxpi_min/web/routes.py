"""The URL table: each request's route, its answer from the application object, every
error mapped to a response in one place, and the request's metrics and log line.

The application (:class:`App`) is all the routes know of the proxy; ``app.application``
implements it.
"""

from __future__ import annotations

import functools
import hmac
import logging
import time
import urllib.parse
from typing import Optional, Protocol

from ..core.byteranges import ByteRange, parse_range
from ..core.errors import (
    BadRequest,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    ProxpiError,
    RangeNotSatisfiable,
    Unauthorized,
    UnknownMethod,
)
from ..core.home_style import FAVICON
from ..core.names import NormalizedName, check_filename, parse_project_name
from ..core.negotiate import accepts_gzip, choose_media_type, wants_json
from ..core.render import gzip_etag
from ..core.settings import Settings
from ..files.bodies import FileBody, content_type_for
from ..index.catalog import PageAnswer
from ..infra.metrics import Metrics
from ..infra.prometheus import CONTENT_TYPE as METRICS_TYPE
from .caching import FILE_CACHE_CONTROL, ICON_CACHE_CONTROL, REPLACEABLE_CACHE_CONTROL, page_headers, page_lifetime
from .http1 import (
    CLIENT_GONE,
    LOG_ESCAPES,
    Connections,
    Http1Handler,
    error_body,
    error_headers,
    etag_matches,
    reason_phrase,
    split_target,
)
from .probes import SUCCESS
from .upload import Uploads

__all__ = ["App", "Host", "ProxyHandler"]

logger = logging.getLogger(__name__)

_PAGE_METHODS = ("GET", "HEAD")
_CACHE_METHODS = ("DELETE",)
_LOCAL_METHODS = ("POST", "DELETE")  # yank, delete an uploaded file
_METADATA_SUFFIX = ".metadata"  # PEP 658: a file's metadata is at the file's URL plus this
# The methods this server knows (RFC 9110 9.3, and PATCH of RFC 5789): any other is 501
# (RFC 9110 15.6.2), and metrics label it "other", so made-up ones cannot grow the time series.
_KNOWN_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"))


class App(Protocol):
    """What the routes ask of the proxy."""

    settings: Settings
    metrics: Metrics  # each request is counted here
    page_max_age: Optional[int]  # a fresh page's lifetime in seconds; None: checked on each use
    uploads: Optional[Uploads]  # POST /upload/ and /local/ (None: no upload token set)

    def project_list(self, media: str, compress: bool) -> PageAnswer:
        """The root page in *media*, gzipped if *compress*."""

    def project_page(self, project: NormalizedName, media: str, compress: bool, client: str = "") -> PageAnswer:
        """A project's page in *media*, gzipped if *compress*; *client* as in :meth:`open_file`."""

    def open_file(
        self,
        project: NormalizedName,
        filename: str,
        metadata: bool,
        head: bool,
        byte_range: Optional[ByteRange],
        client: str = "",
    ) -> FileBody:
        """The body of a project's file *filename* (with *metadata*, of its metadata
        file); the caller closes it. *client* tells one client from another (its
        address and User-Agent)."""

    def home(self, index_url: str, as_json: bool) -> bytes:
        """The home page: the status document, as JSON or as the dashboard's HTML."""

    def metrics_text(self) -> bytes:
        """The Prometheus text of the whole proxy."""

    def invalidate(self, project: Optional[NormalizedName]) -> None:
        """Forget a project's page, or with None the project list."""

    def close(self) -> None:
        """Release everything, once the server has stopped."""


class Host(Connections, Protocol):
    """What :class:`ProxyHandler` reads of the server that runs it (server.Server)."""

    app: App
    address_text: str  # the listening address as host:port, when a request has no Host


class ProxyHandler(Http1Handler):
    """Routes one request; see README.md for the URL layout."""

    server: Host

    # ------------------------------------------------------------------ dispatch

    def __getattr__(self, name: str):
        # http.server calls do_<METHOD> and answers 501 where there is none. Every
        # method goes to _handle instead, so that each is counted and logged: _route
        # answers an unknown one 501, and a known one a route refuses gets 405 with Allow.
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
        in_flight = self.server.in_flight
        in_flight.started()
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
            in_flight.finished()
            if in_flight.stopping:
                self.close_connection = True
            self._done()

    # The usual methods, found without a call to __getattr__.
    do_GET = do_HEAD = do_DELETE = do_POST = _handle

    def send_error(self, code: int, message: Optional[str] = None, explain: Optional[str] = None) -> None:
        """A request the head's parsing refused (400, 414, 431, 505), counted and logged
        as every answered request is."""
        self._started = time.monotonic()
        self._kind, self._source, self._project = "other", None, None
        if not self.command:  # the request line was refused (None, or "" for a 414): nothing of it to log
            self.command, self.path = "-", ""
        super().send_error(code, message, explain)
        self._done()

    def _route(self) -> None:
        if self.command not in _KNOWN_METHODS:
            self._discard_body()
            raise UnknownMethod(f"{self.command[:40]!r} is not a method this server knows")
        if self.path.partition("?")[0] in ("/upload", "/upload/"):
            return self._upload(self.server.app)  # the one route that reads its body
        self._discard_body()
        if self.path == "*" and self.command == "OPTIONS":
            return self._options()  # any other method with "*" is refused by split_target
        if self.command == "CONNECT":  # a client that took this server for its outbound proxy
            raise BadRequest("this is a package index, not an outbound proxy: give its URL as the index URL")
        segments, query_string = split_target(self.path)
        query = dict(urllib.parse.parse_qsl(query_string, keep_blank_values=True)) if query_string else {}
        app: App = self.server.app
        if segments in ([""], []):
            self._allow(_PAGE_METHODS)
            self._home(app)
        elif segments == ["metrics"]:
            # Not behind the admin token: scrapers read it (README, "Monitoring").
            self._allow(_PAGE_METHODS)
            self._send(200, [("Content-Type", METRICS_TYPE), ("Cache-Control", "no-store")], app.metrics_text())
        elif segments == ["health"]:
            self._allow(_PAGE_METHODS)
            self._send(200, [("Content-Type", "application/json"), ("Cache-Control", "no-store")], SUCCESS)
        elif segments == ["favicon.ico"]:
            # Browsers ask for it with every page of the dashboard.
            self._allow(_PAGE_METHODS)
            self._send(200, [("Content-Type", "image/x-icon"), ("Cache-Control", ICON_CACHE_CONTROL)], FAVICON)
        elif segments[0] == "index":
            self._allow(_PAGE_METHODS)
            self._index(app, segments[1:], query, query_string)
        elif segments[0] == "local" and len(segments) == 3 and segments[2] == "":
            self._allow(("DELETE",))
            uploads = self._uploads(app)
            grant = uploads.authorize(self.headers.get("authorization"), self.client_address[0])
            message = uploads.release(grant, parse_project_name(segments[1]))
            self._send(200, [("Content-Type", "text/plain; charset=utf-8")], message.encode() + b"\n")
        elif segments[0] == "local" and len(segments) == 3:
            self._allow(_LOCAL_METHODS)
            self._local(app, parse_project_name(segments[1]), check_filename(segments[2]), query)
        elif segments[0] == "cache" and len(segments) in (2, 3) and segments[2:] in ([], [""]):
            self._allow(_CACHE_METHODS)
            self._invalidate(app, segments[1])
        else:
            raise NotFound(f"no such page: {self._escaped_path()}{self._upload_hint()}")

    def _allow(self, methods: tuple) -> None:
        if self.command not in methods:
            raise MethodNotAllowed(f"{self.command} is not allowed here{self._upload_hint()}", methods)

    def _upload_hint(self) -> str:
        # twine and uv publish print the reason: a publish URL of another server's shape
        # (pypiserver's "/", "/legacy/") then says where uploads go.
        return "; uploads go to /upload/" if self.command == "POST" else ""

    def _options(self) -> None:
        """OPTIONS * asks about the server as a whole (RFC 9110 9.3.7): the methods some
        resource here takes, in Allow, and no content."""
        methods = ("GET", "HEAD", "POST", "DELETE") if self.server.app.uploads else ("GET", "HEAD", "DELETE")
        self._send(200, [("Allow", ", ".join(methods))], b"")

    # ------------------------------------------------------------------ routes

    def _index(self, app: App, segments: list, query: dict, query_string: str) -> None:
        suffix = f"?{query_string}" if query_string else ""
        self._kind = "list"
        if not segments:  # "/index"
            return self._redirect(f"/index/{suffix}")
        if segments == [""]:
            media = self._media(query)
            return self._page(app, media, app.project_list(media, self._gzip()))
        self._kind = "page"
        project = parse_project_name(segments[0])
        self._project = project
        if len(segments) == 1 or (segments[1] == "" and project != segments[0]):
            # PEP 503: pages end in "/" and use the normalised name.
            return self._redirect(f"/index/{project}/{suffix}")
        if segments[1] == "" and len(segments) == 2:
            media = self._media(query)
            return self._page(app, media, app.project_page(project, media, self._gzip(), self._client()))
        if len(segments) == 2:
            return self._file(app, project, check_filename(segments[1]))
        raise NotFound(f"no such page: {self._escaped_path()}")

    def _client(self) -> str:
        """One client told from another: its address and User-Agent."""
        return f"{self.client_address[0]} {self.headers.get('user-agent', '')}"

    def _media(self, query: dict) -> str:
        return choose_media_type(self.headers.get("accept"), query.get("format"))

    def _gzip(self) -> bool:
        return accepts_gzip(self.headers.get("accept-encoding"))

    def _page(self, app: App, media: str, answer: PageAnswer) -> None:
        page, stale, policies = answer.rendered, answer.stale, answer.policies
        self._source = "upstream" if answer.fetched else "cache"
        if stale:
            # A stale copy (upstream failing) must not outlive the outage in a front cache.
            final_control = "no-store"
        elif app.page_max_age is None:
            final_control = REPLACEABLE_CACHE_CONTROL
        else:
            final_control = f"max-age={page_lifetime(app.page_max_age, answer.fresh_for)}, public"
        etag, cache_control = page.etag, final_control
        if answer.interim and not stale:
            # A gzip client's identity form, answered before the gzip one is made, is
            # asked for again before reuse: its ETag is not the gzip form's (RFC 9111 5.2.2.4).
            cache_control = REPLACEABLE_CACHE_CONTROL
            if etag_matches(self.headers.get("if-none-match"), gzip_etag(etag)):
                # The gzip form a client kept from before (a restart of the proxy) is still this page.
                etag, cache_control = gzip_etag(etag), final_control
        # A stale page is sent whole: a 304 would leave a front cache's copy as it was,
        # fresh again (nginx applies no 304's headers to it, RFC 9111 4.3.4 aside).
        if not stale and etag_matches(self.headers.get("if-none-match"), etag):
            headers = page_headers(media, etag, stale, policies, None, None)
            return self._send(304, headers + f"Cache-Control: {cache_control}\r\n", b"")
        headers = page_headers(media, page.etag, stale, policies, page.encoding, len(page.body))
        headers += f"Cache-Control: {cache_control}\r\n"  # a max-age counting down: not in the cached lines
        self._send(200, headers, page.body)

    def _file(self, app: App, project: NormalizedName, filename: str) -> None:
        metadata = filename.endswith(_METADATA_SUFFIX)
        self._kind = "metadata" if metadata else "file"
        head = self.command == "HEAD"
        # RFC 9110 14.2: Range applies to GET only; 13.1.5: If-Range with a date never
        # matches here (no Last-Modified is sent), a weak tag never does.
        byte_range = None if head else parse_range(self.headers.get("range"))
        if_range = self.headers.get("if-range")
        if byte_range is not None and if_range is not None and not if_range.startswith('"'):
            byte_range = None
        distribution = filename[: -len(_METADATA_SUFFIX)] if metadata else filename
        content_type = content_type_for(filename, app.settings.binary_file_mime_type)
        try:
            open_file = functools.partial(app.open_file, project, distribution, metadata, head)
            body = self._open_ranged(open_file, byte_range, if_range)
        except RangeNotSatisfiable as exc:
            if self.headers.get("if-none-match"):  # RFC 9110 13.2.2: judged before the range
                whole = open_file(None, self._client())
                try:
                    if whole.etag and etag_matches(self.headers["if-none-match"], whole.etag):
                        self._source = whole.source
                        return self._send_file(whole, content_type, head)
                finally:
                    whole.close()
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
            self._send_file(body, content_type, head)
        finally:
            body.close()

    def _open_ranged(self, open_file, byte_range: Optional[ByteRange], if_range: Optional[str]) -> FileBody:
        """``open_file(byte_range, client)``, or the whole file where *if_range* names
        other bytes than these (RFC 9110 13.1.5), judged before the range (13.2.2)."""
        try:
            body = open_file(byte_range, self._client())
        except RangeNotSatisfiable:
            if byte_range is None or if_range is None:
                raise
            whole = open_file(None, self._client())
            if whole.etag == if_range:  # these very bytes: the range stands unsatisfiable
                whole.close()
                raise
            return whole
        if byte_range is not None and if_range is not None and if_range != body.etag:
            body.close()  # the client holds other bytes than these: the whole file
            return open_file(None, self._client())
        return body

    def _send_file(self, body: FileBody, content_type: str, head: bool) -> None:
        cache_control = FILE_CACHE_CONTROL if body.immutable else REPLACEABLE_CACHE_CONTROL
        headers = [("Content-Type", content_type), ("Accept-Ranges", "bytes"), ("Cache-Control", cache_control)]
        if body.etag:
            headers.append(("ETag", body.etag))
            if etag_matches(self.headers.get("if-none-match"), body.etag):
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
            self.wfile.write(self._head(body.status, headers))
            return
        if self._kernel_timeouts:
            # socket.sendfile waits without end on a blocking socket whose send timed
            # out in the kernel: file bodies are sent under a Python timeout instead.
            self.connection.settimeout(self.server.client_timeout)
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

    def _home(self, app: App) -> None:
        # The absolute URL to give pip: as this client reached us (https when serving TLS).
        host = self.headers.get("host") or self.server.address_text
        as_json = wants_json(self.headers.get("accept"))
        body = app.home(f"{app.settings.scheme}://{host}/index/", as_json)
        content_type = "application/json" if as_json else "text/html; charset=utf-8"
        self._send(200, [("Content-Type", content_type), ("Cache-Control", "no-store"), ("Vary", "Accept")], body)

    def _invalidate(self, app: App, target: str) -> None:
        token = app.settings.admin_token
        if token is not None:
            given = self.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                raise Unauthorized("DELETE needs the admin token (Authorization: Bearer <token>)")
        if target == "list":
            app.invalidate(None)
            message = "invalidated the project list"
        else:
            project = parse_project_name(target)
            app.invalidate(project)
            message = f"invalidated project {project}"
        logger.info("%s", message)
        self._send(200, [("Content-Type", "application/json"), ("Cache-Control", "no-store")], SUCCESS)

    def _uploads(self, app: App) -> Uploads:
        self._kind = "upload"  # refusals carry their reason in the status line, as PyPI's
        if app.uploads is None:
            raise NotFound("uploads are off: the proxy has no upload token (PROXPI_UPLOAD_TOKEN)")
        return app.uploads

    def _upload(self, app: App) -> None:
        try:
            self._allow(("POST",))
            uploads = self._uploads(app)
            grant = uploads.authorize(self.headers.get("authorization"), self.client_address[0])
            message = uploads.receive(self.rfile, self.headers, grant, self.client_address[0], self.go_ahead)
        except BaseException:
            self.close_connection = True  # the body may be partly unread
            raise
        self._send(200, [("Content-Type", "text/plain; charset=utf-8")], message.encode() + b"\n")

    def _local(self, app: App, project: NormalizedName, filename: str, query: dict) -> None:
        uploads = self._uploads(app)
        grant = uploads.authorize(self.headers.get("authorization"), self.client_address[0])
        if self.command == "DELETE":
            message = uploads.delete(grant, project, filename)
        elif "yank" in query:
            message = uploads.yank(grant, project, filename, query["yank"])
        elif "unyank" in query:
            message = uploads.yank(grant, project, filename, None)
        else:
            raise BadRequest("POST /local/<project>/<file> takes ?yank=<reason> or ?unyank")
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
        refusal = isinstance(error, Forbidden) or (self._kind == "upload" and error.status < 500)
        reason = reason_phrase(error.message) if refusal else None
        self._send(error.status, error_headers(error), error_body(error), reason)

    # ------------------------------------------------------------------ logging

    def _done(self) -> None:
        """Count the request in the metrics and write its log line."""
        seconds = time.monotonic() - self._started
        method = str(self.command)
        metrics = self.server.app.metrics
        metrics.request(
            self._kind, method if method in _KNOWN_METHODS else "other", self._status, seconds, self._sent, self._source
        )
        if self._project is not None and 0 < self._status < 400:
            metrics.project_requested(self._project)
        method, path = method.translate(LOG_ESCAPES), self._escaped_path()
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
