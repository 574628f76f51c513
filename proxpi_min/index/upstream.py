"""Talks to upstream indices: pages and files over HTTP(S) with keep-alive, or file://
(read from disk by :mod:`.local_upstream`).

The only module that imports ``http.client`` and ``socket`` for the upstream side.
Connections go direct or through an outbound HTTP proxy (CONNECT tunnels for https,
absolute-form requests for http; RFC 9110 9.3.6, RFC 9112 3.2.2). Every lower-level
failure is translated to :mod:`.errors` in one place (:func:`_translated`), including
failures while a body is being read.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import re
import socket
import ssl
import threading
import urllib.parse
import zlib
from typing import Collection, Iterable, Iterator, Optional

from .. import __version__
from ..core.proxies import ProxySettings
from ..core.urls import redact_url
from ..core.errors import (
    AnswerCut,
    Forbidden,
    NotFound,
    UpstreamError,
    UpstreamStatus,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from ..core.units import parse_decimal
from ..infra.tls import client_context
from .local_upstream import local_file, local_page
from .page_read import Deadline, read_page_body
from .resolver import Resolver
from .endpoints import Endpoint, Proxy, printable, proxy_refusal, via_proxy
from .responses import FileResponse, PageResponse

__all__ = ["FileResponse", "PageResponse", "Upstream"]

# The User-Agent of every upstream request.
USER_AGENT = f"proxpi-min/{__version__}"

logger = logging.getLogger(__name__)

# A page bigger than this is refused: PyPI's largest project pages are tens of MB and
# its JSON root list about 60 MB; anything far beyond is a broken or hostile upstream.
MAX_PAGE_SIZE = 256 * 1024**2
# A page fetch, from the request to the body's end, may take this many read timeouts
# (two minutes by default): the read timeout alone bounds each read, not the page.
PAGE_DEADLINE_READS = 6
MAX_REDIRECTS = 5
MAX_REDIRECT_BODY = 64 * 1024
# Idle connections kept per upstream host; a few per core of concurrency is plenty.
MAX_IDLE_PER_HOST = 8
# What a kept-alive connection the server closed (or reset, or, over TLS, ended) while it
# sat idle gives at its next use.
_RETRYABLE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ssl.SSLEOFError)
_REDIRECTS = {301, 302, 303, 307, 308}
_STALE_WARNING = re.compile(r"(?:^|,)\s*110\s")


def _ask_again(cache_control: str) -> bool:
    """Whether a page's Cache-Control forbids reusing it unasked (RFC 9111 5.2.2)."""
    directives = {part.strip().lower().partition("=")[0]: part.strip().partition("=")[2] for part in cache_control.split(",")}
    return "no-cache" in directives or "no-store" in directives or directives.get("max-age", "").strip() == "0"


def _served_stale(headers) -> bool:
    """Whether a page's index says it served a stale copy: the header a proxpi-min adds,
    or RFC 7234's warn-code 110 (5.5.1) in any Warning field."""
    warnings = ",".join(headers.get_all("Warning") or ())
    return headers.get("X-Proxpi-Stale") == "1" or _STALE_WARNING.search(warnings) is not None


def _first_line(body: bytes) -> str:
    """An error answer's reason ("403 Forbidden: <reason>"), as a line safe to pass on."""
    line = printable(body[:500].decode("utf-8", "replace").partition("\n")[0])
    return line.partition(": ")[2] or line or "refused"


@contextlib.contextmanager
def _translated(url: str, via: str = "") -> Iterator[None]:
    """Turn socket, TLS and HTTP-library failures into :class:`UpstreamError`; *via*:
    the forward proxy the request went through (``via_proxy``), named too."""
    shown = redact_url(url) + via
    try:
        yield
    except (socket.timeout, TimeoutError) as exc:
        raise UpstreamTimeout(f"upstream timed out: {shown}") from exc
    except ssl.SSLCertVerificationError as exc:
        host = urllib.parse.urlsplit(url).hostname
        if "mismatch" in (exc.verify_message or ""):  # a certificate for another name
            hint = "does the URL name the host its certificate is for?"
        else:
            hint = "is its CA trusted? see PROXPI_CA_BUNDLE"
        raise UpstreamError(f"upstream certificate problem for {host} ({exc.verify_message}; {hint}): {shown}") from exc
    except ssl.SSLError as exc:
        raise UpstreamError(f"upstream TLS failure ({exc.reason}): {shown}") from exc
    except OSError as exc:  # no HTTP answer: refused, reset, closed unanswered (RemoteDisconnected)
        raise UpstreamUnreachable(f"upstream unreachable ({exc.strerror or type(exc).__name__}): {shown}") from exc
    except http.client.IncompleteRead as exc:
        raise AnswerCut(f"upstream answer cut short (IncompleteRead): {shown}") from exc
    except (http.client.HTTPException, zlib.error) as exc:  # an answer, but a broken one
        raise UpstreamError(f"upstream answer broken ({type(exc).__name__}): {shown}") from exc
    except UnicodeError as exc:  # a path not in ASCII, a host name IDNA refuses
        raise UpstreamError(f"upstream URL cannot be asked for ({exc}): {shown}") from None


class _HttpFileResponse(FileResponse):
    """A file being read over an HTTP connection, which goes back to the pool once the
    body has been read to its end."""

    def __init__(self, upstream: "Upstream", url: str, key: tuple, conn, response) -> None:
        super().__init__(url, response.status, response.headers, parse_decimal(response.headers.get("Content-Length")))
        self._upstream = upstream
        self._key = key
        self._conn = conn
        self._response = response

    def read(self, size: int) -> bytes:
        """What has arrived, up to *size* bytes (waiting only when nothing has);
        b"" at the end. So clients get bytes as upstream sends them.

        :raises UpstreamError: the connection failed or timed out midway.
        """
        with _translated(self.url):
            return self._response.read1(size)

    def close(self) -> None:
        response, self._response = self._response, None
        if response is None:
            return
        if response.length == 0 and not response.isclosed():
            response.read()  # read1 leaves a fully read response open: finish it
        # Kept only when its answer came whole: one cut short left the connection dead.
        if self._conn is not None and response.isclosed() and not response.will_close and not response.length:
            self._upstream._release(self._key, self._conn)
        elif self._conn is not None:
            self._conn.close()
        response.close()


class _HTTPSConnection(http.client.HTTPSConnection):
    """An HTTPSConnection whose TLS handshake *deadline* can cut: wrapping detaches the
    plain socket the deadline watched, and the handshake alone is bounded only by the
    connect timeout (CPython gives it one deadline of the socket's timeout)."""

    def __init__(self, *args, deadline: Optional[Deadline] = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._deadline = deadline

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)  # the TCP connection, and a proxy's tunnel
        # HTTPSConnection.connect, but with the TLS socket watched before the handshake.
        self.sock = self._context.wrap_socket(
            self.sock, server_hostname=self._tunnel_host or self.host, do_handshake_on_connect=False
        )
        if self._deadline is not None:
            self._deadline.watch(self.sock)
        try:
            self.sock.do_handshake()
        except BaseException:
            self.close()
            raise


class Upstream:
    """Fetches from upstream indices, keeping idle connections per host for reuse."""

    def __init__(
        self,
        connect_timeout: float,
        read_timeout: float,
        verify_ssl: bool = True,
        index_urls: Iterable[str] = (),
        *,
        ca_bundle: Optional[str] = None,
        proxies: ProxySettings = ProxySettings(),
    ) -> None:
        """*index_urls* with ``user:password@`` give the basic auth sent to their hosts
        (for their pages and for files on the same host), so that no other URL, page
        or saved file needs to carry the credentials. Where several indices on one host
        have credentials (a GitLab project each), a URL gets those of the index whose
        path it shares most of.

        *ca_bundle* replaces the system CA store; *proxies* says which outbound proxy,
        if any, each upstream host is reached through."""
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._trust = (ca_bundle, verify_ssl)
        # Loading the system CA store takes ~20 ms: done at the first https connection.
        self._ssl_context: Optional[ssl.SSLContext] = None
        self._proxies = proxies
        self._pool_keys: dict[tuple, tuple] = {}  # (scheme, host, port) -> pool key
        self._idle: dict[tuple, list] = {}
        self._lock = threading.Lock()
        self._resolver = Resolver()
        self._credentials: dict = {}  # pool key -> [(index path, authorization)]
        for url in index_urls:
            target = Endpoint.parse(url)
            if target.authorization:
                self._credentials.setdefault(target.key, []).append((target.path, target.authorization))

    # ------------------------------------------------------------------ connections

    def _authorization_for(self, target: Endpoint) -> Optional[str]:
        candidates = self._credentials.get(target.key)
        if not candidates:
            return None
        return max(candidates, key=lambda item: len(os.path.commonprefix([item[0], target.path])))[1]

    def _pool_key(self, target: Endpoint) -> tuple:
        """(scheme, host, port, proxy or None): connections are pooled per proxy and
        target, since a CONNECT tunnel leads to one target only."""
        key = self._pool_keys.get(target.key)
        if key is None:
            proxy = self._proxies.proxy_for(*target.key)
            key = (*target.key, Proxy.parse(proxy) if proxy else None)
            self._pool_keys[target.key] = key  # a racing thread computes the same
        return key

    def _tls_context(self) -> ssl.SSLContext:
        context = self._ssl_context
        if context is None:  # threads racing here each build one; any of them serves
            context = self._ssl_context = client_context(*self._trust)
        return context

    def _new_connection(self, key: tuple, deadline: Optional[Deadline] = None):
        scheme, host, port, proxy = key
        address = (proxy.host, proxy.port) if proxy else (host, port)
        if scheme == "https":
            conn = _HTTPSConnection(
                *address, timeout=self._connect_timeout, context=self._tls_context(), deadline=deadline
            )
            if proxy:
                # CONNECT first; TLS then checks the certificate against *host*.
                conn.set_tunnel(host, port, headers=proxy.headers)
        else:
            conn = http.client.HTTPConnection(*address, timeout=self._connect_timeout)

        def open_socket(where: tuple, timeout: Optional[float], source_address=None) -> socket.socket:
            sock = self._resolver.create_connection(where, timeout, source_address)
            if deadline is not None:  # connect() goes on to read a proxy's CONNECT answer on it
                deadline.watch(sock)
            return sock

        # http.client's documented-by-source hook for opening the socket: ours caches
        # name resolution (TLS still checks the certificate against the host name) and
        # puts the socket under the deadline as soon as it exists.
        conn._create_connection = open_socket
        try:
            conn.connect()
        except ssl.SSLError:
            raise  # the target's certificate: _translated says so
        except (socket.timeout, TimeoutError) as exc:
            if proxy is None:
                raise  # a slow network: _translated says so
            raise UpstreamTimeout(f"upstream timed out connecting through proxy {proxy.shown}, for {host}:{port}") from exc
        except (OSError, http.client.HTTPException) as exc:
            if proxy is None:
                raise
            refusal = proxy_refusal(exc) if isinstance(exc, OSError) else f"answered no HTTP ({type(exc).__name__})"
            raise UpstreamError(f"proxy {proxy.shown} {refusal}, for {host}:{port}") from exc
        # The connect timeout was for connecting; from here on, each read may take
        # up to the read timeout.
        conn.sock.settimeout(self._read_timeout)
        return conn

    def _acquire(self, key: tuple, fresh: bool = False, deadline: Optional[Deadline] = None):
        """(a connection for *key*, whether it was kept alive from an earlier request);
        *fresh*: a new one, and those kept for *key* closed (they idled as long as one
        the server has just been found to have closed). *deadline* watches a new one
        while it connects."""
        with self._lock:
            idle = self._idle.pop(key, []) if fresh else self._idle.get(key)
            if idle and not fresh:
                return idle.pop(), True
        for conn in idle or ():
            conn.close()
        return self._new_connection(key, deadline), False

    def _release(self, key: tuple, conn) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < MAX_IDLE_PER_HOST:
                idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    def _request(self, method: str, url: str, headers: dict, deadline: Optional[Deadline] = None):
        """Send one request (no redirects); returns (key, conn, response).

        A kept-alive connection the server closed while idle is retried once on a
        new connection (GET and HEAD are idempotent). *deadline* watches the
        connection used, from the moment a new one's socket is made.
        """
        try:
            target = Endpoint.parse(url)
        except ValueError as exc:  # an unclosed IPv6 bracket, a port out of range
            raise UpstreamError(f"upstream URL does not parse ({exc}): {redact_url(url)}") from None
        key = self._pool_key(target)
        # Named, so that another proxpi-min (a central one) tells a proxy from its clients.
        headers = {"User-Agent": USER_AGENT, **headers}
        authorization = target.authorization or self._authorization_for(target)
        if authorization:
            headers = {**headers, "Authorization": authorization}
        path = target.path
        proxy = key[3]
        forwarded = proxy is not None and target.key[0] == "http"  # no tunnel: the proxy reads each request
        if forwarded:
            path = target.absolute
            headers = {**headers, **proxy.headers}
        for attempt in (1, 2):
            with _translated(url, via_proxy(key) if forwarded else ""):
                conn, reused = self._acquire(key, fresh=attempt == 2, deadline=deadline)
                if deadline is not None:  # a kept connection's socket, or the TLS one wrapping the socket made
                    deadline.watch(conn.sock)
                try:
                    conn.request(method, path, headers=headers)
                    response = conn.getresponse()
                    if proxy and response.status == 407:
                        conn.close()
                        raise UpstreamError(
                            f"proxy {proxy.shown} refused the request: 407 {response.reason}, "
                            f"for {redact_url(url)}"
                        )
                    return key, conn, response
                except _RETRYABLE:
                    conn.close()
                    if not reused or attempt == 2:
                        raise
                except BaseException:
                    conn.close()
                    raise
        raise AssertionError("unreachable")

    def _follow(self, method: str, url: str, headers: dict, deadline: Optional[Deadline] = None):
        """Like :meth:`_request`, following up to MAX_REDIRECTS redirects."""
        seen = {url}
        for _ in range(MAX_REDIRECTS + 1):
            key, conn, response = self._request(method, url, headers, deadline)
            if response.status not in _REDIRECTS:
                return url, key, conn, response
            location = response.headers.get("Location")
            if response.length is not None and response.length <= MAX_REDIRECT_BODY:
                with _translated(url):
                    response.read()
                self._finish(key, conn, response)
            else:  # a redirect's body is of no use: never read a big or unbounded one
                conn.close()
            if not location:
                raise UpstreamError(f"upstream redirect without Location: {redact_url(url)}")
            try:
                next_url = urllib.parse.urljoin(url, location)
                scheme = urllib.parse.urlsplit(next_url).scheme
                same_host = Endpoint.parse(next_url).key[:2] == Endpoint.parse(url).key[:2]
            except ValueError as exc:
                raise UpstreamError(f"upstream redirect to a URL that does not parse ({exc}): {redact_url(url)}") from None
            if scheme not in ("http", "https"):
                raise UpstreamError(f"upstream redirect to a non-HTTP URL: {redact_url(url)}")
            if next_url in seen:
                raise UpstreamError(f"upstream redirect loop at {redact_url(url)}")
            if not same_host:
                # Credentials stay with the host they were given for.
                next_url = redact_url(next_url)
            seen.add(next_url)
            url = next_url
        raise UpstreamError(f"upstream redirects too often: {redact_url(url)}")

    def _finish(self, key: tuple, conn, response) -> None:
        if response.will_close:
            conn.close()
        else:
            self._release(key, conn)

    # ------------------------------------------------------------------ pages

    def fetch_page(
        self,
        url: str,
        accept: str,
        etag: Optional[str] = None,
        last_modified: Optional[str] = None,
        absent: Collection[int] = (404, 410),
    ) -> PageResponse:
        """GET an index page; conditional when *etag*/*last_modified* are given.

        :returns: a 200 or 304 answer, or one of the statuses *absent* (the index has no
            such page).
        :raises UpstreamError: unreachable, timed out (UpstreamTimeout: also when the
            whole fetch takes over PAGE_DEADLINE_READS read timeouts), a 5xx or other
            unexpected status, or a body over MAX_PAGE_SIZE (BadUpstreamPage).
        """
        if url.startswith("file:"):
            return local_page(url, MAX_PAGE_SIZE)
        headers = {"Accept": accept, "Accept-Encoding": "gzip"}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        deadline = self.deadline()
        try:
            with deadline.enforced("upstream page", redact_url(url)):
                final_url, key, conn, response = self._follow("GET", url, headers, deadline)
                try:
                    with _translated(final_url, via_proxy(key) if key[0] == "http" else ""):
                        body = read_page_body(response, redact_url(final_url), MAX_PAGE_SIZE)
                    if deadline.expired:  # a cut can pass for an end (a chunk size of "00")
                        conn.close()
                except BaseException:
                    conn.close()
                    raise
        finally:
            deadline.cancel()
        self._finish(key, conn, response)
        if response.status == 403 and response.headers.get("X-Proxpi-Policy"):
            # A proxpi-min's guard rail (a central proxy's deny list): its refusal, passed
            # on, where a stale copy would hand out what it refuses.
            policy = printable(response.headers["X-Proxpi-Policy"][:40])
            raise Forbidden(f"{_first_line(body)} (by the index {redact_url(final_url)})", policy)
        # Through a forward proxy (plain http, no tunnel) a refusal may be the proxy's own:
        # never taken for the index saying it lacks the page.
        proxied_refusal = key[3] is not None and key[0] == "http" and response.status in (401, 403)
        if response.status not in (200, 304) and (response.status not in absent or proxied_refusal):
            raise UpstreamStatus(f"upstream answered {response.status}: {redact_url(final_url)}{via_proxy(key)}", response.status)
        cache_control = response.headers.get("Cache-Control")
        return PageResponse(
            response.status,
            body,
            response.headers.get("Content-Type", ""),
            final_url,
            response.headers.get("ETag"),
            response.headers.get("Last-Modified"),
            None if response.status == 304 and cache_control is None else _ask_again(cache_control or ""),
            _served_stale(response.headers),
        )

    # ------------------------------------------------------------------ files

    def deadline(self) -> Deadline:
        """A deadline for one exchange whose every read may take the read timeout: of
        PAGE_DEADLINE_READS of them (an upstream sending a byte now and then)."""
        return Deadline(PAGE_DEADLINE_READS * self._read_timeout)

    def open_file(
        self, url: str, method: str = "GET", byte_range: Optional[str] = None, deadline: Optional[Deadline] = None
    ) -> FileResponse:
        """Start reading a file (status 200, or 206 when *byte_range* was honoured).
        Its status line and headers come within :meth:`deadline`, or within *deadline*
        if given: the caller's, which watches the body too and which the caller cancels.

        :raises NotFound: upstream has no such file.
        :raises UpstreamError: unreachable, timed out (UpstreamTimeout: past the
            deadline too), or another unexpected status.
        """
        if url.startswith("file:"):
            return local_file(url, byte_range)
        headers = {"Accept-Encoding": "identity"}
        if byte_range:
            headers["Range"] = byte_range
        head_deadline = deadline or self.deadline()
        try:
            with head_deadline.enforced("upstream", redact_url(url)):
                final_url, key, conn, response = self._follow(method, url, headers, head_deadline)
                if head_deadline.expired:  # cut just as it answered: the body cannot be read
                    conn.close()
        finally:
            if deadline is None:
                head_deadline.cancel()
        if response.status in (200, 206):
            return _HttpFileResponse(self, final_url, key, conn, response)
        conn.close()
        if response.status in (404, 410):
            raise NotFound(f"upstream has no file at {redact_url(final_url)}")
        if response.status == 416:
            return _HttpFileResponse(self, final_url, key, None, response)
        raise UpstreamStatus(f"upstream answered {response.status}: {redact_url(final_url)}{via_proxy(key)}", response.status)
