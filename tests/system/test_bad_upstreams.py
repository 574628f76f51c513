"""Upstreams that break the rules on purpose: pages of 10 GiB (announced or just sent),
gzip bombs, pages trickled a byte at a time, garbage HTML for a new project, and a
disk that will not take a saved page; end to end, through a scripted upstream.

The memory test runs the proxy as a process and reads its resident size from
/proc/<pid>/status (skipped where there is no /proc).
"""

from __future__ import annotations

import glob
import hashlib
import gzip
import json
import logging
import os
import threading
import time
import zlib

import pytest

from tests.support.cache_dir import wait_for
from tests.support.proxy import ProxyProcess, assert_healthy, raw_request, raw_status
from tests.support.raw_server import Relay

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
GIB = 1024**3
BLOCK = b"<a>" * (1024 * 1024 // 3)  # a megabyte of HTML-ish junk, sent again and again
BOUND = 30.0  # "did not hang": far above any expected duration


def _endless(release, chunked: bool, announce: int | None = None):
    """A route sending BLOCKs until the client hangs up (or *release* is set): chunked,
    or raw after a Content-Length of *announce* bytes (or none: to the close)."""

    def route(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html")
        if chunked:
            handler.send_header("Transfer-Encoding", "chunked")
        elif announce is not None:
            handler.send_header("Content-Length", str(announce))
        else:
            handler.send_header("Connection", "close")
        handler.end_headers()
        piece = b"%x\r\n%s\r\n" % (len(BLOCK), BLOCK) if chunked else BLOCK
        sent = 0
        try:
            while sent < 11 * GIB and not release.is_set():
                handler.wfile.write(piece)
                sent += len(BLOCK)
        except OSError:
            pass
        handler.close_connection = True

    return route


def _json_page(name):
    document = {"meta": {"api-version": "1.1"}, "name": name, "files": []}
    return 200, {"Content-Type": JSON_TYPE}, json.dumps(document).encode()


def _resident_bytes(pid):
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


# -- size ---------------------------------------------------------------------------


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc/<pid>/status to read a process's RSS")
def test_ten_gib_pages_are_refused_and_their_memory_given_back(scripted, tmp_path):
    """Five pages of 10 GiB (four sent chunked, one announced, one to the close) each
    get a 502 once the 256 MB cap is passed; the proxy's resident size afterwards stays
    within 50 MB of what it was before them."""
    scripted.routes["/simple/small/"] = _json_page("small")
    routes = {
        "huge-a": _endless(scripted.release, chunked=True),
        "huge-b": _endless(scripted.release, chunked=True),
        "huge-c": _endless(scripted.release, chunked=False),
        "huge-d": _endless(scripted.release, chunked=False, announce=10 * GIB),
        "huge-e": _endless(scripted.release, chunked=True),
    }
    for name, route in routes.items():
        scripted.routes[f"/simple/{name}/"] = route
    args = ["--index-url", scripted.url, "--cache-dir", str(tmp_path / "cache")]
    with ProxyProcess(args) as proxy:
        assert proxy.get("/index/small/").status == 200
        before = _resident_bytes(proxy.process.pid)
        for name in routes:
            result = proxy.get(f"/index/{name}/", timeout=120)
            assert result.status == 502, (name, result)
            assert b"over" in result.body, result.body
        after = _resident_bytes(proxy.process.pid)
        assert after - before < 50 * 1024**2, f"RSS {before >> 20} MB -> {after >> 20} MB"
        assert_healthy(proxy)
        assert "over the 268435456-byte cap" in proxy.stderr  # refused without a read


def test_oversized_page_is_not_fetched_again_by_every_client(proxy, scripted, monkeypatch):
    """A refused page is remembered for the back-off: five clients, one upstream read;
    once the back-off is over, upstream is asked again."""
    from proxpi_min.index import index_cache

    scripted.routes["/simple/huge/"] = _endless(scripted.release, chunked=True)
    p = proxy(scripted.url)
    monkeypatch.setattr(index_cache, "RETRY_FIRST", 0.5)
    results = [p.get("/index/huge/", timeout=60) for _ in range(5)]
    assert [r.status for r in results] == [502] * 5
    assert all(b"over" in r.body for r in results), [r.body for r in results]
    assert scripted.hits["/simple/huge/"] == 1
    time.sleep(0.8)  # past the back-off of the first failure (RETRY_FIRST, lowered above)
    assert p.get("/index/huge/", timeout=60).status == 502
    assert scripted.hits["/simple/huge/"] == 2
    assert_healthy(p)


def test_gzip_bomb_page_is_refused(proxy, scripted, monkeypatch):
    """A small gzip body that would inflate past the cap is refused while inflating."""
    from proxpi_min.index import upstream as upstream_module

    monkeypatch.setattr(upstream_module, "MAX_PAGE_SIZE", 4 * 1024**2)
    bomb = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    body = bomb.compress(b"\0" * (64 * 1024**2)) + bomb.flush()
    scripted.routes["/simple/bomb/"] = (200, {"Content-Type": "text/html", "Content-Encoding": "gzip"}, body)
    p = proxy(scripted.url)
    result = p.get("/index/bomb/")
    assert result.status == 502 and b"over 4194304 bytes" in result.body, result
    assert_healthy(p)


# -- time ---------------------------------------------------------------------------


def _trickle(release, where):
    """A route that sends its answer one byte every 0.2 s, the slow part being the status
    line, a chunk-size line, or the body."""

    def route(handler):
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
        if where == "chunk size":
            fast, slow = head + b"Transfer-Encoding: chunked\r\n\r\n", b"0" * 1000 + b"1\r\nx\r\n0\r\n\r\n"
        elif where == "body":
            fast, slow = head + b"Content-Length: 1000\r\n\r\n", b"<" * 1000
        else:
            fast, slow = b"", head + b"Content-Length: 0\r\n\r\n"
        try:
            handler.wfile.write(fast)
            for byte in slow:
                handler.wfile.write(bytes([byte]))
                if release.wait(0.2):
                    break
        except OSError:
            pass
        handler.close_connection = True

    return route


@pytest.mark.parametrize("where", ["status line", "chunk size", "body"])
def test_trickling_page_is_cut_at_its_deadline(proxy, scripted, monkeypatch, where):
    """A page sent a byte each 0.2 s passes a 0.5 s read timeout read after read; the
    page deadline (PAGE_DEADLINE_READS read timeouts, lowered to one here) cuts it."""
    from proxpi_min.index import upstream as upstream_module

    monkeypatch.setattr(upstream_module, "PAGE_DEADLINE_READS", 1)
    scripted.routes["/simple/slow/"] = _trickle(scripted.release, where)
    p = proxy(scripted.url, read_timeout=0.5)
    started = time.monotonic()
    result = p.get("/index/slow/", timeout=BOUND)
    took = time.monotonic() - started
    scripted.release.set()
    assert result.status == 504, result
    assert b"took over 0.5 s" in result.body, result.body
    assert took < 6.0, f"cut after {took:.1f} s"
    assert_healthy(p)


def _sent_slowly(release, fast: bytes, slow: bytes, every: float):
    """A route that sends *fast*, then *slow* a byte each *every* seconds (or until
    *release* is set)."""

    def route(handler):
        try:
            handler.wfile.write(fast)
            for byte in slow:
                handler.wfile.write(bytes([byte]))
                if release.wait(every):
                    break
        except OSError:
            pass
        handler.close_connection = True

    return route


@pytest.mark.parametrize("what", ["file head", "metadata range body"])
def test_trickling_file_answers_are_cut_at_the_deadline(proxy, scripted, monkeypatch, what):
    """A file's status line and headers, and a range read for a wheel's metadata whole,
    come within the deadline pages have (PAGE_DEADLINE_READS read timeouts, lowered to
    one here), however slowly the upstream keeps sending."""
    from proxpi_min.index import upstream as upstream_module

    monkeypatch.setattr(upstream_module, "PAGE_DEADLINE_READS", 1)
    name = "slow-1.0.tar.gz" if what == "file head" else "slow-1.0-py3-none-any.whl"
    files = [{"filename": name, "url": f"/files/{name}", "hashes": {}}]
    document = {"meta": {"api-version": "1.0"}, "name": "slow", "files": files}
    scripted.routes["/simple/slow/"] = (200, {"Content-Type": JSON_TYPE}, json.dumps(document).encode())
    if what == "file head":
        fast, slow = b"", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    else:
        fast, slow = b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-99/100\r\nContent-Length: 100\r\n\r\n", b"x" * 100
    scripted.routes[f"/files/{name}"] = _sent_slowly(scripted.release, fast, slow, 0.2)
    p = proxy(scripted.url, read_timeout=0.5)
    assert p.get("/index/slow/").status == 200
    started = time.monotonic()
    result = p.get(f"/index/slow/{name}" + ("" if what == "file head" else ".metadata"), timeout=BOUND)
    took = time.monotonic() - started
    scripted.release.set()
    assert result.status == 504 and b"took over 0.5 s" in result.body, result
    assert took < 5.0, f"cut after {took:.1f} s"
    assert_healthy(p)


@pytest.mark.parametrize("what", ["file head", "metadata range body"])
def test_trickled_tls_handshake_of_a_file_host_is_cut_at_the_deadline(proxy, scripted, upstream_tls, test_ca, monkeypatch, what):
    """A file on an https host whose TLS handshake comes a byte each 0.2 s, which the
    20 s connect timeout alone would let run: a download's head, and a range read for
    a wheel's metadata, are cut at the deadline (PAGE_DEADLINE_READS read timeouts,
    lowered to one here) like an answer trickled after it."""
    from proxpi_min.index import upstream as upstream_module

    monkeypatch.setattr(upstream_module, "PAGE_DEADLINE_READS", 1)
    name = "slow-1.0.tar.gz" if what == "file head" else "slow-1.0-py3-none-any.whl"
    with Relay(upstream_tls.port, every=0.2) as relay:
        relay.trickle()
        files = [{"filename": name, "url": f"https://127.0.0.1:{relay.port}/files/{name}", "hashes": {}}]
        document = {"meta": {"api-version": "1.0"}, "name": "slow", "files": files}
        scripted.routes["/simple/slow/"] = (200, {"Content-Type": JSON_TYPE}, json.dumps(document).encode())
        p = proxy(scripted.url, read_timeout=0.5, connect_timeout=20.0, ca_bundle=str(test_ca.cert))
        assert p.get("/index/slow/").status == 200
        answers: list = []
        started = time.monotonic()
        path = f"/index/slow/{name}" + ("" if what == "file head" else ".metadata")
        asking = threading.Thread(target=lambda: answers.append(p.get(path, timeout=BOUND)), daemon=True)
        asking.start()
        asking.join(10)
        took = time.monotonic() - started
        assert answers, f"no answer after {took:.1f} s"
    assert answers[0].status == 504 and b"took over 0.5 s" in answers[0].body, answers[0]
    assert took < 5.0, f"cut after {took:.1f} s"
    assert_healthy(p)


# -- garbage for a new project ------------------------------------------------------------

GARBAGE = {
    "maintenance": b"<html><body><h1>Down for maintenance</h1><p>Back soon.</p></body></html>",
    "login": b'<html><head><title>Sign in</title></head><body><form action="/login"><input name="user"></form>'
    b"</body></html>",
    "script": b"<html><head><script>location='/portal'</script></head><body></body></html>",
    "text": b"Service Unavailable",
}


@pytest.mark.parametrize("kind", sorted(GARBAGE))
def test_garbage_html_for_a_new_project_is_not_an_empty_project(proxy, scripted, kind):
    scripted.routes["/simple/newbie/"] = (200, {"Content-Type": "text/html"}, GARBAGE[kind])
    p = proxy(scripted.url)
    result = p.get("/index/newbie/")
    assert result.status == 502, result
    assert b"not a simple-API page" in result.body, result.body
    assert f"{scripted.url}newbie/".encode() in result.body, "which index sent it"
    assert p.server.indexes.flush(10)
    assert not glob.glob(os.path.join(p.settings.cache_dir, "index", "*", "newbie.json"))
    assert_healthy(p)


EMPTY_PAGES = {
    "pep 503": b"<!DOCTYPE html>\n<html>\n  <head>\n    <title>Links for newbie</title>\n  </head>\n"
    b"  <body>\n    <h1>Links for newbie</h1>\n  </body>\n</html>\n",
    "repository-version": b'<!DOCTYPE html><html><head><meta name="pypi:repository-version" content="1.0">'
    b"</head><body></body></html>",
    "bare": b"<!DOCTYPE html><html><body></body></html>",
    "quarantined": b'<!DOCTYPE html><html><head><meta name="pypi:repository-version" content="1.4">'
    b'<meta name="pypi:project-status" content="quarantined"></head><body><h1>Links for newbie</h1></body></html>',
}


@pytest.mark.parametrize("kind", sorted(EMPTY_PAGES))
def test_real_empty_html_page_is_still_an_empty_project(proxy, scripted, kind):
    scripted.routes["/simple/newbie/"] = (200, {"Content-Type": "text/html"}, EMPTY_PAGES[kind])
    p = proxy(scripted.url)
    result = p.get("/index/newbie/", {"Accept": JSON_TYPE})
    assert result.status == 200, result
    assert json.loads(result.body)["files"] == []


# -- URLs Python's own code refuses ----------------------------------------------------------


@pytest.mark.parametrize(
    "location",
    ["http://[::1/x/", "http://127.0.0.1:99999/x/", "http://127.0.0.1:abc/x/", "/simple/\u00e9/", "http://a..b/x/"],
    ids=["unclosed-ipv6", "port-out-of-range", "port-not-a-number", "path-not-ascii", "empty-host-label"],
)
def test_a_redirect_to_a_url_that_cannot_be_asked_for_is_a_502(proxy, scripted, caplog, location):
    scripted.routes["/simple/odd/"] = (302, {"Location": location}, b"")
    p = proxy(scripted.url)
    result = p.get("/index/odd/")
    assert result.status == 502, result
    assert b"upstream" in result.body and b"URL" in result.body, result.body
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert_healthy(p)


def test_links_urljoin_refuses_are_left_out_and_a_base_it_refuses_is_a_502(proxy, scripted, caplog):
    files = [
        {"filename": "links-1.0.tar.gz", "url": "//[::1/links-1.0.tar.gz", "hashes": {}},
        {"filename": "links-2.0.tar.gz", "url": "/files/links-2.0.tar.gz", "hashes": {}},
        {"filename": "links-3.0.tar.gz", "url": "http://127.0.0.1:99999/links-3.0.tar.gz", "hashes": {}},
    ]
    document = {"meta": {"api-version": "1.0"}, "name": "links", "files": files}
    scripted.routes["/simple/links/"] = (200, {"Content-Type": JSON_TYPE}, json.dumps(document).encode())
    scripted.routes["/simple/based/"] = (
        200, {"Content-Type": "text/html"}, b'<html><head><base href="http://[::1/"></head><body>'
        b'<a href="based-1.0.tar.gz">based-1.0.tar.gz</a></body></html>',
    )
    p = proxy(scripted.url)
    page = p.get("/index/links/", {"Accept": JSON_TYPE})
    assert page.status == 200, page
    assert [f["filename"] for f in json.loads(page.body)["files"]] == ["links-2.0.tar.gz", "links-3.0.tar.gz"]
    # A URL that parses but cannot be asked for: the file, not the page, fails.
    refused = p.get("/index/links/links-3.0.tar.gz")
    assert refused.status == 502 and b"does not parse" in refused.body, refused
    based = p.get("/index/based/")
    assert based.status == 502 and b"<base href> is no URL" in based.body, based
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert_healthy(p)


def test_a_file_name_listed_twice_is_listed_and_served_once_as_first_listed(proxy, scripted):
    first, second = b"the first copy", b"the second copy"
    files = [
        {"filename": "dup-1.0.tar.gz", "url": f"/files/{n}/dup-1.0.tar.gz", "hashes": {"sha256": hashlib.sha256(d).hexdigest()}}
        for n, d in (("one", first), ("two", second))
    ]
    document = {"meta": {"api-version": "1.0"}, "name": "dup", "files": files}
    scripted.routes["/simple/dup/"] = (200, {"Content-Type": JSON_TYPE}, json.dumps(document).encode())
    scripted.routes["/files/one/dup-1.0.tar.gz"] = (200, {}, first)
    scripted.routes["/files/two/dup-1.0.tar.gz"] = (200, {}, second)
    p = proxy(scripted.url)
    listed = json.loads(p.get("/index/dup/", {"Accept": JSON_TYPE}).body)["files"]
    assert [(f["filename"], f["hashes"]) for f in listed] == [("dup-1.0.tar.gz", files[0]["hashes"])]
    assert p.get("/index/dup/dup-1.0.tar.gz").body == first
    assert scripted.hits["/files/two/dup-1.0.tar.gz"] == 0


# -- numbers in other digits ----------------------------------------------------------------


def _raw_file(status: int, headers: dict, body: bytes):
    """A route that sends *headers* as given (the scripted upstream would add its own
    Content-Length) and closes the connection after *body*."""

    def route(handler):
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(body)
        handler.close_connection = True

    return route


def test_sizes_in_digits_other_than_ascii_are_no_sizes(proxy, scripted):
    """A Content-Length or a Content-Range size written "²" (a digit to str.isdigit, not
    to int) is no number, as any other junk there: the file is read to the connection's
    close, a range answer is passed on, a 416 names no size; no 500."""
    names = ("whole-1.0.tar.gz", "ranged-1.0.tar.gz", "outside-1.0.tar.gz")
    files = [{"filename": name, "url": f"{scripted.base_url}/files/{name}", "hashes": {}} for name in names]
    document = {"meta": {"api-version": "1.0"}, "name": "odd", "files": files}
    scripted.routes["/simple/odd/"] = (200, {"Content-Type": JSON_TYPE}, json.dumps(document).encode())
    whole_file = gzip.compress(b"the whole file", mtime=0)  # no hash: it must at least end as a gzip stream does
    scripted.routes["/files/whole-1.0.tar.gz"] = _raw_file(200, {"Content-Length": "\u00b2"}, whole_file)
    scripted.routes["/files/ranged-1.0.tar.gz"] = _raw_file(206, {"Content-Range": "bytes 6-9/\u00b2"}, b"6789")
    scripted.routes["/files/outside-1.0.tar.gz"] = _raw_file(416, {"Content-Range": "bytes */\u00b2"}, b"")
    p = proxy(scripted.url)
    assert p.get("/index/odd/").status == 200

    whole = p.get("/index/odd/whole-1.0.tar.gz")
    assert (whole.status, whole.body) == (200, whole_file), whole
    assert p.get("/index/odd/whole-1.0.tar.gz").body == whole_file
    assert scripted.hits["/files/whole-1.0.tar.gz"] == 1  # stored the first time
    # Suffix ranges: probes of a zip's end, passed upstream without a download beside them.
    ranged = p.get("/index/odd/ranged-1.0.tar.gz", {"Range": "bytes=-4"})
    assert (ranged.status, ranged.body) == (206, b"6789"), ranged
    outside = p.get("/index/odd/outside-1.0.tar.gz", {"Range": "bytes=-4"})
    assert outside.status == 416, outside
    assert outside.headers["Content-Range"] == "bytes */0"
    assert_healthy(p)


def test_a_version_past_what_int_takes_does_not_break_the_page(proxy, scripted):
    """PEP 700's "versions" may hold anything: one of 5,000 digits (int() refuses over
    4,300) on a page whose newest file the cooldown hides is listed as sent."""
    now = time.time()

    def listed(name, age):
        uploaded = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - age))
        return {"filename": name, "url": f"{scripted.base_url}/files/{name}", "hashes": {}, "upload-time": uploaded}

    huge = "9" * 5000
    files = [listed("alpha-1.0.tar.gz", 30 * 86400), listed("alpha-2.0.tar.gz", 3600)]
    document = {"meta": {"api-version": "1.1"}, "name": "alpha", "versions": ["1.0", "2.0", huge], "files": files}
    scripted.routes["/simple/alpha/"] = (200, {"Content-Type": JSON_TYPE}, json.dumps(document).encode())
    p = proxy(scripted.url, min_age=7 * 86400.0)
    result = p.get("/index/alpha/", {"Accept": JSON_TYPE})
    assert result.status == 200, result
    served = json.loads(result.body)
    assert [f["filename"] for f in served["files"]] == ["alpha-1.0.tar.gz"]
    assert served["versions"] == ["1.0", huge]
    assert_healthy(p)


# -- a disk that will not take a page -----------------------------------------------------


def test_page_not_saved_on_a_full_disk_is_saved_once_space_returns(proxy, upstream_html, dists, tmp_path, monkeypatch):
    """ENOSPC is injected into the page store's writes (a read-only directory would not
    stop root): the page is served but not saved; once writes work again, its next use
    saves it, and an --offline proxy on the same cache dir then serves it."""
    from proxpi_min.index import index_cache, page_store

    real_write = page_store.write_atomically
    full = threading.Event()
    full.set()

    def write(path, data, durable=False):
        if full.is_set():
            raise OSError(28, "No space left on device", path)
        return real_write(path, data, durable)

    monkeypatch.setattr(page_store, "write_atomically", write)
    monkeypatch.setattr(index_cache, "SAVE_RETRY", 0.2)
    cache_dir = str(tmp_path / "cache")
    p = proxy(upstream_html, cache_dir=cache_dir)
    assert p.get("/index/alpha/").status == 200
    assert p.server.indexes.flush(10)
    assert not glob.glob(os.path.join(cache_dir, "index", "*", "alpha.json"))
    full.clear()
    time.sleep(0.3)
    assert p.get("/index/alpha/").status == 200
    assert p.server.indexes.flush(10)
    assert glob.glob(os.path.join(cache_dir, "index", "*", "alpha.json"))
    dist = dists.alpha_1
    assert p.get(f"/index/alpha/{dist.filename}").body == dist.content  # offline lists cached files
    p.stop()
    upstream_html.down()
    offline = proxy(upstream_html, cache_dir=cache_dir, offline=True)
    result = offline.get("/index/alpha/")
    assert result.status == 200 and dist.filename.encode() in result.body, result


# -- the request log and http.server's own refusals ------------------------------------------


def test_a_token_in_the_query_string_is_not_logged(proxy, upstream_html, caplog):
    caplog.set_level(logging.INFO, logger="proxpi_min")
    p = proxy(upstream_html)
    assert p.get("/index/alpha/?token=s3cret-value&format=text/html").status == 200
    logged = '"GET /index/alpha/?token=***&format=text/html" 200'

    def lines() -> list:
        return [record.getMessage() for record in caplog.records]

    # The request's line is logged just after its answer has gone.
    wait_for(lambda: any(logged in line for line in lines()), "the request's log line")
    assert not any("s3cret-value" in line for line in lines()), lines()


@pytest.mark.parametrize(
    "data, status",
    [
        (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /index/ HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", 431),
        (b"GET /index/ HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"GET /index/\r\n\r\n", 400),
    ],
    ids=["414", "431", "505", "400"],
)
def test_http_server_refusals_are_plain_text(proxy, upstream_html, data, status):
    """As README says of every error: one plain-text line, not http.server's HTML."""
    p = proxy(upstream_html)
    response = raw_request(p.url, data)
    head, _, body = response.partition(b"\r\n\r\n")
    assert raw_status(response) == status, response[:300]
    assert b"\r\ncontent-type: text/plain; charset=utf-8" in head.lower(), head
    assert body.startswith(b"%d " % status) and body.count(b"\n") == 1 and b"<" not in body, body
    assert_healthy(p)


@pytest.mark.parametrize("mode", ["truncate", "midway"])
def test_access_line_of_a_range_cut_short_says_what_was_sent(proxy, upstream_html, dists, caplog, mode):
    """A range passed through from upstream, which hangs up halfway: the client gets
    fewer bytes than the 206 announced, and the log line counts the bytes it got."""
    caplog.set_level(logging.INFO, logger="proxpi_min")
    dist = dists.alpha_1
    p = proxy(upstream_html)
    assert p.get("/index/alpha/").status == 200
    upstream_html.fail(f"/files/alpha/{dist.filename}", mode)
    request = f"GET /index/alpha/{dist.filename} HTTP/1.1\r\nHost: x\r\nRange: bytes=10-\r\n\r\n"
    response = raw_request(p.url, request.encode())
    assert raw_status(response) == 206
    got = len(response.partition(b"\r\n\r\n")[2])
    assert 0 < got < dist.size - 10
    lines = [r.getMessage() for r in caplog.records if f'"GET /index/alpha/{dist.filename}"' in r.getMessage()]
    assert any(f'" 206 {got} ' in line for line in lines), (got, lines)


def test_an_extra_index_that_refuses_projects_it_lacks_leaves_the_page_to_the_others(proxy, upstream_html, scripted, dists, caplog):
    # Cloud storage behind an extra index (PyTorch's) answers 403 for what it lacks.
    for path in ("/simple/alpha/", "/simple/beta/"):
        scripted.routes[path] = (403, {"Content-Type": "application/xml"}, b"<Error><Code>AccessDenied</Code></Error>")
    p = proxy(upstream_html, scripted.url)
    for project in ("alpha", "beta"):
        page = p.get(f"/index/{project}/")
        assert page.status == 200 and dists.alpha_1.filename in p.get("/index/alpha/").text, page
    assert p.get("/index/nothing-anywhere/").status == 404
    told = [r for r in caplog.records if "taken as not having it" in r.getMessage()]
    assert len(told) == 1 and told[0].levelname == "WARNING", "told once, not per project"
    assert "lapsed credential" in told[0].getMessage()
    # Counted apart from what an index has: an alert can tell a lapsed token from absence.
    metrics = p.get("/metrics").text
    refused = f'proxpi_upstream_requests_total{{index="{scripted.url}",kind="page",outcome="refused"}}'
    assert f"\n{refused} 2\n" in metrics, metrics  # alpha, beta; its 404 for the third is an ok
    status = json.loads(p.get("/", {"Accept": "application/json"}).text)
    assert any("answered 403" in str(index) for index in status["indexes"]), status["indexes"]
    # The root index's refusal is no absence: its projects must not come from elsewhere.
    refusing_root = proxy(scripted.url, upstream_html)
    assert refusing_root.get("/index/alpha/").status == 502


def test_an_extra_index_that_had_the_project_and_now_refuses_is_served_stale(proxy, upstream_html, scripted, dists):
    # A private extra index whose token lapsed: its files must not quietly leave the page.
    private = {"filename": "alpha-9.0.tar.gz", "url": "/files/alpha-9.0.tar.gz", "hashes": {"sha256": "a" * 64}}
    document = {"meta": {"api-version": "1.0"}, "name": "alpha", "files": [private]}
    scripted.routes["/simple/alpha/"] = (200, {"Content-Type": JSON_TYPE}, json.dumps(document).encode())
    p = proxy(upstream_html, (scripted.url, 0))
    assert "alpha-9.0.tar.gz" in p.get("/index/alpha/").text
    scripted.routes["/simple/alpha/"] = (401, {"Content-Type": "text/plain"}, b"token expired\n")
    page = p.get("/index/alpha/")
    assert page.status == 200 and "alpha-9.0.tar.gz" in page.text and page.headers["X-Proxpi-Stale"] == "1", page
