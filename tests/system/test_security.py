"""Hostile input and hostile conditions, end to end over real HTTP.

Path traversal in every spelling (sent with raw sockets, so no client library
normalises the request line), SSRF attempts, oversized and malformed requests, HTML
injection through upstream data, a cache dir that cannot be written, and the admin
token. After every bad input the server must still answer ``/health`` and still serve
what it had cached.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import html
import json
import logging
import os
import random
import re
import shutil
import socket
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support.cache_dir import settled
from tests.support.dists import make_wheel
from tests.support.pages import json_files, parse_anchors
from tests.support.proxy import PIP_ACCEPT, ProxyProcess, assert_healthy, files_named, http, raw_request, raw_status, recv_until_closed, temp_files

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
SECRET = "TOP-SECRET-" + os.urandom(8).hex()


# -- helpers ------------------------------------------------------------------------------


def _raw(target, request_target, method="GET", headers=b"", timeout=10.0):
    """(status, raw response) of one request sent byte for byte, then the connection closed."""
    if isinstance(request_target, str):
        request_target = request_target.encode("latin-1")
    data = (
        method.encode() + b" " + request_target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + headers + b"Connection: close\r\n\r\n"
    )
    response = raw_request(target.url, data, timeout=timeout)
    return raw_status(response), response


def _body(response):
    return response.partition(b"\r\n\r\n")[2]


def _tree(root, skip=None):
    """relative path -> (size, sha256) of every file under root (``skip``: a subtree)."""
    found = {}
    for directory, dirs, names in os.walk(root):
        if skip is not None:
            dirs[:] = [d for d in dirs if os.path.join(directory, d) != skip]
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as handle:
                data = handle.read()
            found[os.path.relpath(path, root)] = (len(data), hashlib.sha256(data).hexdigest())
    return found


def _proxpi_warnings(caplog):
    return [r for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("proxpi_min")]


class Scripted:
    """A minimal upstream (or would-be SSRF target) on 127.0.0.1 with fixed answers
    per path; ``hits`` counts every request it receives."""

    def __init__(self):
        self.routes = {}
        self.hits = collections.Counter()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _any(self):
                path = urllib.parse.urlsplit(self.path).path
                outer.hits[path] += 1
                status, headers, body = outer.routes.get(path, (404, {"Content-Type": "text/plain"}, b"no\n"))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.002}, daemon=True)
        self.thread.start()

    @property
    def port(self):
        return self.server.server_address[1]

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self):
        return f"{self.base_url}/simple/"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted():
    made = []

    def make():
        made.append(Scripted())
        return made[-1]

    yield make
    for upstream in made:
        upstream.stop()


class Guarded:
    """A proxy whose cache dir sits next to secret files, with alpha 1.0 cached."""

    def __init__(self, proxy, upstream, dists, tmp_path):
        self.outer = tmp_path / "outer"
        self.cache_dir = self.outer / "cache"
        self.outer.mkdir()
        for secret in (self.outer / "secret.txt", tmp_path / "secret.txt"):
            secret.write_text(SECRET)
        self.secret = str(self.outer / "secret.txt")
        self.upstream = upstream
        self.dist = dists.alpha_1
        self.proxy = proxy(upstream, cache_dir=str(self.cache_dir))
        assert self.proxy.get("/index/alpha/").status == 200
        assert self.proxy.get(self.file_path).body == self.dist.content
        assert settled(self.cache_dir)
        self.file_hits = upstream.hits(self.dist.filename)
        self.root = tmp_path
        self.outside = self.snapshot_outside()
        self.cached = files_named(self.cache_dir, self.dist.filename)
        assert len(self.cached) == 1

    @property
    def file_path(self):
        return f"/index/alpha/{self.dist.filename}"

    def snapshot_outside(self):
        return _tree(str(self.root), skip=str(self.cache_dir))

    def check_intact(self, context=""):
        """Still up, nothing outside the cache dir touched, the cached file still served
        from the cache."""
        assert_healthy(self.proxy)
        assert self.snapshot_outside() == self.outside, context
        result = self.proxy.get(self.file_path)
        assert (result.status, result.body) == (200, self.dist.content), context
        assert self.upstream.hits(self.dist.filename) == self.file_hits, context
        with open(self.cached[0], "rb") as handle:
            assert handle.read() == self.dist.content, context


@pytest.fixture
def guarded(proxy, upstream_html, dists, tmp_path):
    return Guarded(proxy, upstream_html, dists, tmp_path)


# -- path traversal ---------------------------------------------------------------------------


def _traversal_targets(secret):
    """(method, target, status) of each attempt: 400 where a path segment decodes to a name
    no project or file can have, 404 where the path has no route (a raw ``/`` splits it
    into more segments than any route has) or names a file the index does not list."""
    quoted = urllib.parse.quote(secret, safe="")
    deep = "../" * 12
    return [
        ("GET", "/index/../secret.txt", 400),
        ("GET", "/index/../../secret.txt", 400),
        ("GET", f"/index/alpha/{deep}secret.txt", 404),
        ("GET", f"/index/alpha/{deep}etc/passwd", 404),
        ("GET", "/index/%2e%2e/%2e%2e/secret.txt", 400),
        ("GET", "/index/%2E%2E%2F%2E%2E%2Fsecret.txt/", 400),
        ("GET", "/index/alpha/" + "..%2f" * 8 + "secret.txt", 400),
        ("GET", "/index/alpha/" + "%2e%2e%2f" * 8 + "secret.txt", 400),
        ("GET", "/index/alpha/" + "%2E%2E%2F" * 8 + "secret.txt", 400),
        ("GET", "/index/alpha/" + "..%5c" * 8 + "secret.txt", 400),
        ("GET", "/index/alpha/" + "%2e%2e%5c" * 8 + "secret.txt", 400),
        ("GET", "/index/alpha/" + "..\\" * 8 + "secret.txt", 400),
        ("GET", "/index/..%5c..%5csecret.txt/", 400),
        ("GET", "/index/alpha%2f..%2f..%2f/", 400),
        ("GET", "//etc/passwd", 404),
        ("GET", "//index/alpha/../../secret.txt", 404),
        ("GET", "/index//etc/passwd", 400),
        ("GET", "/index/alpha//etc/passwd", 404),
        ("GET", "/index/alpha/%2fetc%2fpasswd", 400),
        ("GET", f"/index/alpha/{quoted}", 400),
        ("GET", f"/index/alpha{quoted}", 400),
        ("GET", f"/index/{quoted}/", 400),
        ("GET", f"/index/alpha/{quoted}.metadata", 400),
        ("GET", "/index/alpha/%00", 400),
        ("GET", "/index/alpha%00/", 400),
        ("GET", "/index/alpha/alpha-1.0-py3-none-any.whl%00", 400),
        ("GET", f"/index/alpha/alpha-1.0-py3-none-any.whl%00{deep}secret.txt", 404),
        ("GET", "/index/alpha/.", 400),
        ("GET", "/index/alpha/..", 400),
        ("GET", "/index/alpha/%2e%2e", 400),
        ("GET", "/index/alpha/.secret.txt", 400),
        ("GET", "/index/alpha/~", 400),
        ("GET", "/index/%252e%252e/secret.txt", 400),
        ("GET", "/index/alpha/%252e%252e%252fsecret.txt", 400),
        ("GET", "/index/alpha/secret.txt", 404),
        ("HEAD", f"/index/alpha/{deep}secret.txt", 404),
        ("HEAD", "/index/alpha/" + "..%2f" * 8 + "secret.txt", 400),
        ("DELETE", "/cache/..%2f..%2fsecret.txt", 400),
        ("DELETE", "/cache/%2e%2e", 400),
        ("DELETE", f"/cache/{quoted}", 400),
        ("DELETE", "/cache/..%5csecret.txt", 400),
    ]


def test_path_traversal_is_refused_and_touches_nothing(guarded):
    p = guarded.proxy
    secret_bytes = SECRET.encode()
    wrong = []
    for method, target, expected in _traversal_targets(guarded.secret):
        status, response = _raw(p, target, method)
        if status != expected or secret_bytes in response:
            wrong.append((method, target, status, response[:200]))
    assert wrong == []
    # Nothing outside the cache dir was read into a response, written or created.
    guarded.check_intact()
    for path in ("/index/alpha/", "/index/"):
        assert p.get(path).status == 200
    seen = [r.path for r in guarded.upstream.requests]
    assert not [path for path in seen if re.search(r"\.\.|secret|passwd|\\|\x00", path)], seen


@pytest.mark.parametrize(
    "method, target",
    [
        ("GET", "/index/%ff/"),
        ("GET", "/index/alpha/%ff.whl"),
        ("GET", "/index/alpha/..%c0%af..%c0%afsecret.txt"),
        ("DELETE", "/cache/%c0%ae%c0%ae"),
    ],
)
def test_non_utf8_percent_escapes_are_400(guarded, method, target):
    # Not a 500 with a traceback: the request is bad, not the server.
    status, _ = _raw(guarded.proxy, target, method)
    assert status == 400
    guarded.check_intact()


# -- no SSRF ------------------------------------------------------------------------------


def test_only_listed_urls_are_fetched(guarded, scripted, dists):
    evil = scripted()
    p = guarded.proxy
    evil_host = f"127.0.0.1:{evil.port}"
    evil_file = f"http://{evil_host}/files/alpha/{dists.alpha_1.filename}"
    guarded.upstream.reset_hits()
    guarded.file_hits = 0
    # (target, extra headers, status): 400 where the file name decodes to one with a
    # slash in it, 404 for everything else: a file name the page does not list.
    attempts = [
        (f"/index/alpha/http:%2f%2f{evil_host}%2fx.whl", b"", 400),
        (f"/index/alpha/http:%2F%2F{evil_host}/x.whl", b"", 404),
        (f"/index/alpha/http://{evil_host}/x.whl", b"", 404),
        (f"/index/alpha/{urllib.parse.quote(evil_file, safe='')}", b"", 400),
        (evil_file, b"", 404),  # absolute-form request target
        (f"http://{evil_host}/index/alpha/evil-1.0-py3-none-any.whl", b"", 404),
        ("/index/alpha/evil-1.0-py3-none-any.whl", f"X-Forwarded-Host: {evil_host}\r\n".encode(), 404),
        ("/index/alpha/evil-1.0-py3-none-any.whl", f"Forwarded: host={evil_host}\r\n".encode(), 404),
        (f"/index/alpha/{dists.beta_1.filename}", b"", 404),  # a real file, of another project
        ("/index/alpha/alpha-9.9-py3-none-any.whl", b"", 404),  # not listed
        (f"/index/alpha/alpha-9.9-py3-none-any.whl?url={urllib.parse.quote(evil_file, safe='')}", b"", 404),
    ]
    for target, headers, expected in attempts:
        status, response = _raw(p, target, headers=headers)
        assert status == expected, (target, status, response[:200])
    # Host headers and queries do not redirect a legitimate download elsewhere.
    for target, headers in [
        (guarded.file_path, f"X-Forwarded-Host: {evil_host}\r\n".encode()),
        (f"{guarded.file_path}?url={urllib.parse.quote(evil_file, safe='')}", b""),
        (f"http://{evil_host}{guarded.file_path}", b""),
    ]:
        status, response = _raw(p, target, headers=headers)
        assert status == 200, (target, status)
        assert _body(response) == dists.alpha_1.content
    data = b"GET /index/alpha/evil-1.0-py3-none-any.whl HTTP/1.1\r\nHost: " + evil_host.encode() + b"\r\nConnection: close\r\n\r\n"
    assert raw_status(raw_request(p.url, data)) == 404
    assert sum(evil.hits.values()) == 0, evil.hits
    asked = {r.path for r in guarded.upstream.requests}
    assert asked <= {"/simple/alpha/"}, asked  # pages only: no unlisted file was fetched
    guarded.check_intact()


# -- malformed requests -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /index/?" + b"q" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /index/ HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", 431),
        (b"GET /index/ HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: b\r\n" % i for i in range(150)) + b"\r\n", 431),
        (b"GET /index/ HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 150 + b"\r\n", 431),
    ],
    ids=["long-path", "long-query", "long-header", "many-headers", "many-repeated-headers"],
)
def test_oversized_request_line_is_414_and_oversized_headers_431(guarded, data, expected):
    response = raw_request(guarded.proxy.url, data)
    assert raw_status(response) == expected, response[:200]
    guarded.check_intact()


@pytest.mark.parametrize(
    "range_header, expected",
    [
        ("bytes=abc", 200),
        ("bytes=5-2", 200),
        ("bytes=0-0,5-6", 200),
        ("items=0-5", 200),
        ("bytes=--5", 200),
        ("bytes=99999999-", 416),
        ("bytes=99999999999999999999999999999-", 416),
        ("bytes=-0", 416),
    ],
)
def test_unusable_range_is_ignored_and_unsatisfiable_range_is_416(guarded, range_header, expected):
    dist = guarded.dist
    status, headers, body = guarded.proxy.get(guarded.file_path, {"Range": range_header})
    assert status == expected, (status, body[:200])
    if status == 200:
        assert body == dist.content
    else:
        assert headers["Content-Range"] == f"bytes */{dist.size}"
    guarded.check_intact(range_header)


def test_non_ascii_range_is_ignored(guarded):
    status, response = _raw(guarded.proxy, guarded.file_path, headers="Range: bytes=１-２\r\n".encode())
    assert status == 200
    assert _body(response) == guarded.dist.content
    guarded.check_intact()


def test_unsatisfiable_range_on_uncached_file(guarded, dists):
    status, headers, _ = guarded.proxy.get(f"/index/alpha/{dists.alpha_2.filename}", {"Range": "bytes=99999999-"})
    assert status == 416
    assert headers["Content-Range"] == f"bytes */{dists.alpha_2.size}"
    guarded.check_intact()


@pytest.mark.parametrize(
    "method, target, allowed",
    [
        ("PUT", "/index/alpha/", {"GET", "HEAD"}),
        ("POST", "/index/alpha/alpha-1.0-py3-none-any.whl", {"GET", "HEAD"}),
        ("PATCH", "/", {"GET", "HEAD"}),
        ("OPTIONS", "/health", {"GET", "HEAD"}),
        ("TRACE", "/index/", {"GET", "HEAD"}),
        ("DELETE", "/index/alpha/", {"GET", "HEAD"}),
        ("GET", "/cache/list", {"DELETE"}),
        ("PUT", "/cache/alpha", {"DELETE"}),
    ],
)
def test_wrong_method_is_405_with_allow(guarded, method, target, allowed):
    status, response = _raw(guarded.proxy, target, method)
    assert status == 405, response[:200]
    match = re.search(rb"(?im)^allow:\s*(.*?)\s*$", response)
    assert match, response[:300]
    assert {m.strip().upper() for m in match.group(1).decode().split(",")} == allowed
    guarded.check_intact()


def test_unknown_method_is_501_and_changes_nothing(guarded):
    status, response = _raw(guarded.proxy, "/cache/alpha", "FOO")
    assert status == 501 and not re.search(rb"(?im)^allow:", response), response[:300]
    guarded.check_intact()


@pytest.mark.parametrize("method, target", [("PUT", "/index/alpha/"), ("DELETE", "/cache/list"), ("POST", "/")])
def test_request_body_is_never_a_request(guarded, method, target):
    """No route takes a body; on a kept-alive connection it must not be parsed as the
    next request (request smuggling behind a front proxy)."""
    p = guarded.proxy
    page_hits = guarded.upstream.hits("/simple/alpha/")
    smuggled = b"DELETE /cache/alpha HTTP/1.1\r\nHost: x\r\n\r\n"
    data = (
        f"{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(smuggled)}\r\n\r\n".encode()
        + smuggled
        + b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as sock:
        sock.sendall(data)
        received = recv_until_closed(sock, 10)
    # Discarding the body (two answers) or closing after the first are both fine; a third
    # would be the DELETE's.
    assert 1 <= len(re.findall(rb"HTTP/1\.1 \d{3} ", received)) <= 2, received
    assert p.get("/index/alpha/").status == 200
    assert guarded.upstream.hits("/simple/alpha/") == page_hits, "the body's DELETE was executed"
    guarded.check_intact()


# -- escaping -----------------------------------------------------------------------------------


EVIL_FILES = [
    # (anchor text, attributes as they should reach the client)
    ("evil-1.0-<script>alert(1)</script>.whl", {"data-requires-python": "<script>alert(2)</script>"}),
    ("evil-2.0-py3-none-any.whl", {"data-yanked": '"><script>alert(3)</script>'}),
    ('evil-3.0-"onmouseover=\'alert(4)\'.whl', {"data-provenance": 'https://x/"><script>alert(5)</script>'}),
    ("evil-4.0-<img src=x onerror=alert(6)>.tar.gz", {}),
]


def _evil_upstream(scripted):
    upstream = scripted()
    anchors = []
    for text, attrs in EVIL_FILES:
        href = f"/files/{urllib.parse.quote(text, safe='')}#sha256={'a' * 64}"
        rendered = "".join(f' {name}="{html.escape(value, quote=True)}"' for name, value in attrs.items())
        anchors.append(f'<a href="{html.escape(href, quote=True)}"{rendered}>{html.escape(text)}</a><br>')
    page = "<!DOCTYPE html><html><body>" + "\n".join(anchors) + "</body></html>"
    root = (
        "<!DOCTYPE html><html><body>"
        '<a href="evil/">evil</a>'
        '<a href="x/">&lt;img src=x onerror=alert(7)&gt;</a>'
        '<a href="y/">&quot;&gt;&lt;script&gt;alert(8)&lt;/script&gt;</a>'
        "</body></html>"
    )
    upstream.routes["/simple/evil/"] = (200, {"Content-Type": "text/html"}, page.encode())
    upstream.routes["/simple/"] = (200, {"Content-Type": "text/html"}, root.encode())
    return upstream


def _assert_no_markup(body):
    lowered = body.lower()
    for bad in (b"<script", b"<img", b"onmouseover='alert", b'"><'):
        assert bad not in lowered, (bad, body)


SERVABLE_EVIL = {"evil-2.0-py3-none-any.whl"}  # the others' names the file route refuses


def test_upstream_text_is_escaped_in_project_page(proxy, scripted, caplog):
    upstream = _evil_upstream(scripted)
    p = proxy(upstream.url)
    result = p.get("/index/evil/")
    assert result.status == 200 and result.content_type == "text/html"
    _assert_no_markup(result.body)
    # Attributes are escaped, not dropped: a client gets the upstream's text back.
    anchors = parse_anchors(result.body)
    assert set(anchors) == SERVABLE_EVIL
    for text, attrs in EVIL_FILES:
        for name, value in attrs.items():
            if text in SERVABLE_EVIL:
                assert anchors[text].get(name) == value, (text, name, anchors[text])
    as_json = p.get("/index/evil/", {"Accept": PIP_ACCEPT})
    assert as_json.content_type == JSON_TYPE
    assert set(json_files(as_json.body)) == SERVABLE_EVIL
    # Names that cannot be served are left out of the page, with one WARNING.
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "not safe to serve" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert_healthy(p)


def test_upstream_names_are_escaped_in_project_list(proxy, scripted):
    upstream = _evil_upstream(scripted)
    p = proxy(upstream.url)
    result = p.get("/index/")
    assert result.status == 200
    _assert_no_markup(result.body)
    assert set(parse_anchors(result.body)) >= {"evil", "<img src=x onerror=alert(7)>", '"><script>alert(8)</script>'}
    json.loads(p.get("/index/", {"Accept": PIP_ACCEPT}).body)


def test_home_page_escapes_the_cache_dir_and_index_urls(proxy, tmp_path):
    cache_dir = tmp_path / "cache-<img src=x onerror=alert(9)>"
    index = "http://127.0.0.1:9/simple/<script>alert(10)</script>/"  # never contacted here
    p = proxy(index, cache_dir=str(cache_dir))
    result = p.get("/")
    assert result.status == 200
    assert b"<img src=x" not in result.body
    assert b"<script>alert(10)" not in result.body
    assert html.escape(str(cache_dir)).encode() in result.body
    assert b"&lt;script&gt;alert(10)&lt;/script&gt;" in result.body


def test_error_messages_are_plain_text(guarded):
    for target, status in (("/index/%3Cscript%3Ealert(1)%3C%2Fscript%3E/", 400),
                           ("/%3Cscript%3Ealert(1)%3C%2Fscript%3E", 404)):
        result = guarded.proxy.get(target)
        assert result.status == status
        assert result.content_type == "text/plain"
        assert result.headers.get("X-Content-Type-Options") == "nosniff"
    guarded.check_intact()


# -- a cache dir that cannot be written ---------------------------------------------------------


def test_unusable_cache_dir_still_serves_complete_files(proxy, upstream_html, dists, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="proxpi_min")
    cache_dir = tmp_path / "cache"
    p = proxy(upstream_html, cache_dir=str(cache_dir))
    assert_healthy(p)
    # Root-proof "cannot write": regular files where directories must go.
    (cache_dir / "files" / "alpha").write_bytes(b"in the way")
    if (cache_dir / "index").exists():
        shutil.rmtree(cache_dir / "index")
    (cache_dir / "index").write_bytes(b"in the way")

    assert p.get("/index/alpha/").status == 200
    for _ in range(2):
        result = p.get(f"/index/alpha/{dists.alpha_2.filename}")
        assert (result.status, result.body) == (200, dists.alpha_2.content)
    assert p.get(f"/index/alpha/{dists.alpha_2.filename}.metadata").body == dists.alpha_2.metadata
    warnings = _proxpi_warnings(caplog)
    assert any("alpha" in r.getMessage() for r in warnings), [r.getMessage() for r in warnings]
    assert temp_files(cache_dir) == []
    assert files_named(cache_dir, dists.alpha_2.filename) == []
    assert_healthy(p)
    # Other projects are still cached normally.
    for _ in range(2):
        assert p.get(f"/index/beta/{dists.beta_1.filename}").body == dists.beta_1.content
    assert upstream_html.hits(dists.beta_1.filename) == 1


@pytest.fixture(scope="module")
def big_wheel():
    """A ~230 KB wheel that does not compress (random module data)."""
    data = random.Random(1).randbytes(200_000).hex()
    return make_wheel("bigpkg", "1.0", module_source=f"DATA = {data!r}\n")


def _limited_python(tmp_path, max_file_size):
    """An executable that runs python with RLIMIT_FSIZE set: writes past the limit fail
    with EFBIG (python ignores SIGXFSZ), like a full disk, even for root."""
    wrapper = tmp_path / "limited-python"
    wrapper.write_text(
        f"#!{sys.executable}\n"
        "import os, resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({max_file_size}, {max_file_size}))\n"
        f"os.execv({sys.executable!r}, [{sys.executable!r}] + sys.argv[1:])\n"
    )
    wrapper.chmod(0o755)
    return str(wrapper)


def _get_closing(process, path):
    """GET with Connection: close, so a short body shows at once instead of a hang."""
    try:
        result = http("GET", process.url + path, {"Connection": "close"}, timeout=10)
    except Exception as exc:  # noqa: BLE001 - IncompleteRead and friends
        return exc
    return result


def _disk_full_run(upstream, wheel, tmp_path, max_file_size):
    upstream.add(wheel)
    cache_dir = tmp_path / "cache"
    args = ["--index-url", upstream.url, "--cache-dir", str(cache_dir)]
    with ProxyProcess(args, python=_limited_python(tmp_path, max_file_size)) as process:
        assert process.get("/index/bigpkg/").status == 200
        results = [_get_closing(process, f"/index/bigpkg/{wheel.filename}") for _ in range(2)]
        assert_healthy(process)
        assert process.get("/index/bigpkg/").status == 200
    stderr = process.stderr  # complete once the process has exited (the log is batched)
    for result in results:
        assert not isinstance(result, Exception), repr(result)
        assert (result.status, len(result.body), result.body == wheel.content) == (200, wheel.size, True)
    assert temp_files(cache_dir) == []
    for path in files_named(cache_dir, wheel.filename):
        with open(path, "rb") as handle:
            assert handle.read() == wheel.content, f"partial file kept: {path}"
    assert "WARNING" in stderr


def test_disk_full_nothing_can_be_written(upstream_html, big_wheel, tmp_path):
    _disk_full_run(upstream_html, big_wheel, tmp_path, 0)


def test_disk_full_midway_through_a_file(upstream_html, big_wheel, tmp_path):
    # The disk takes the first 64 KB: a short write without an error, then EFBIG.
    _disk_full_run(upstream_html, big_wheel, tmp_path, 64 * 1024)


# -- admin token ------------------------------------------------------------------------------------


WRONG_AUTH = [None, "Bearer wrong", "Bearer s3cre", "Bearer s3cret2", "Basic czNjcmV0", "s3cret", "Bearer "]


@pytest.mark.parametrize("target, page", [("alpha", "/index/alpha/"), ("list", "/index/")])
def test_admin_token_protects_delete(proxy, upstream_html, caplog, target, page):
    caplog.set_level(logging.INFO, logger="proxpi_min")
    p = proxy(upstream_html, admin_token="s3cret")
    upstream_path = "/simple/alpha/" if target == "alpha" else "/simple/"
    assert p.get(page).status == 200
    for auth in WRONG_AUTH:
        status, headers, _ = p.request("DELETE", f"/cache/{target}", {"Authorization": auth} if auth else None)
        assert status == 401, auth
        assert headers.get("WWW-Authenticate", "").lower().startswith("bearer")
        assert p.get(page).status == 200
    assert upstream_html.hits(upstream_path) == 1  # nothing was invalidated
    status, _, _ = p.request("DELETE", f"/cache/{target}", {"Authorization": "Bearer s3cret"})
    assert status == 200
    assert p.get(page).status == 200
    assert upstream_html.hits(upstream_path) == 2
    assert "s3cret" not in p.get("/").text
    assert "s3cret" not in caplog.text
    assert_healthy(p)


def test_no_admin_token_means_open_delete(proxy, upstream_html):
    p = proxy(upstream_html)
    p.get("/index/alpha/")
    assert p.request("DELETE", "/cache/alpha").status == 200
    p.get("/index/alpha/")
    assert upstream_html.hits("/simple/alpha/") == 2


def test_admin_token_from_environment_guards_delete_and_is_not_logged(upstream_html, tmp_path):
    args = ["--index-url", upstream_html.url, "--cache-dir", str(tmp_path / "cache")]
    with ProxyProcess(args, env={"PROXPI_ADMIN_TOKEN": "s3cret"}) as process:
        assert process.get("/index/alpha/").status == 200
        assert http("DELETE", process.url + "/cache/alpha").status == 401
        assert http("DELETE", process.url + "/cache/alpha", {"Authorization": "Bearer nope"}).status == 401
        assert process.get("/index/alpha/").status == 200
        assert upstream_html.hits("/simple/alpha/") == 1
        assert http("DELETE", process.url + "/cache/alpha", {"Authorization": "Bearer s3cret"}).status == 200
        assert process.get("/index/alpha/").status == 200
        assert upstream_html.hits("/simple/alpha/") == 2
        assert "s3cret" not in process.stderr


# -- credentials in an index URL ------------------------------------------------------


@pytest.mark.parametrize("fmt", ["html", "json"])
def test_index_credentials_go_to_their_host_only_and_are_never_stored(proxy, upstream_factory, dists, fmt, caplog):
    """user:password in the index URL is sent as basic auth for the pages and for files
    on that host, and appears in no page, saved file or log line."""
    upstream = upstream_factory(fmt)
    with_credentials = upstream.url.replace("http://", "http://user:s3cret@")
    running = proxy(with_credentials)
    caplog.set_level(logging.INFO)
    dist = dists.alpha_2
    page = running.get("/index/alpha/")
    assert page.status == 200 and b"s3cret" not in page.body
    assert running.get(f"/index/alpha/{dist.filename}").body == dist.content
    expected = "Basic " + base64.b64encode(b"user:s3cret").decode()
    seen = [(path, headers.get("authorization")) for _, path, headers in upstream.requests]
    assert seen and all(auth == expected for _, auth in seen), seen
    assert any(dist.filename in path for path, _ in seen)
    assert settled(running.settings.cache_dir)
    for directory, _, names in os.walk(running.settings.cache_dir):
        for name in names:
            try:
                with open(os.path.join(directory, name), "rb") as file:
                    assert b"s3cret" not in file.read(), name
            except FileNotFoundError:  # the download's lock file, removed once it is done
                continue
    assert "s3cret" not in caplog.text
