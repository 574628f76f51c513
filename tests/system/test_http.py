"""The handler's own request parsing and framing, through raw sockets (the client
library would normalise what these tests send)."""

from __future__ import annotations

import logging
import socket
import struct
import time
import urllib.parse

import pytest

from tests.support.prometheus import parse, sample
from tests.support.proxy import narrow_link, raw_request, raw_status


@pytest.fixture
def running(proxy, upstream_json):
    return proxy(upstream_json)


@pytest.mark.parametrize(
    "request_line, status",
    [
        (b"GET /health HTTP/1.1", 200),
        (b"GET /health HTTP/1.0", 200),
        (b"garbage", 400),
        (b"GET /health", 400),  # HTTP/0.9 is not served
        (b"GET /health HTTP/x.y", 400),
        (b"GET /health HTTP/1.1.1", 400),
        (b"GET /health HTTP/\xb9.1", 400),  # a non-ASCII digit
        (b"GET /health HTTP/2.0", 505),
        (b"GET /health FTP/1.1", 400),
        (b"GET http://[x/health HTTP/1.1", 400),  # absolute form, an unclosed IPv6 host
        (b"GET http://x/health HTTP/1.1", 200),  # absolute form (RFC 9112 3.2.2)
        # RFC 9110 15.6.2: a method the server does not know is 501, not 405.
        (b"FOO /index/ HTTP/1.1", 501),
        (b"BREW /health HTTP/1.1", 501),
        (b"FOO /upload/ HTTP/1.1", 501),
        (b"get /health HTTP/1.1", 501),  # RFC 9110 9.1: methods are case-sensitive
        (b"DELETE /health HTTP/1.1", 405),
        (b"PATCH /index/ HTTP/1.1", 405),
        # RFC 9112 3.2.4: the asterisk form is for OPTIONS only; 3.2: a target is a path
        # (or an absolute URL), never a bare word.
        (b"GET * HTTP/1.1", 400),
        (b"POST * HTTP/1.1", 400),
        (b"DELETE * HTTP/1.1", 400),
        (b"GET health HTTP/1.1", 400),
        (b"OPTIONS * HTTP/1.1", 200),
    ],
)
def test_request_line(running, request_line, status) -> None:
    response = raw_request(running.url, request_line + b"\r\nHost: x\r\n\r\n")
    assert raw_status(response) == status


@pytest.mark.parametrize(
    "headers, status",
    [
        (b"Host: x\r\n", 200),
        (b"Host: x\r\nNo colon here\r\n", 400),
        (b"Host: x\r\n : empty name\r\n", 400),
        (b"Host x\r\n", 400),
        (b"X-Long: " + b"a" * 70000 + b"\r\n", 431),
        (b"".join(b"X-%d: y\r\n" % i for i in range(101)), 431),
        (b"Host: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(98)), 200),
        # RFC 9112 3.2: an HTTP/1.1 request names one host, a valid one.
        (b"", 400),
        (b"Host: a\r\nHost: b\r\n", 400),
        (b"Host: a b\r\n", 400),
        (b"Host: a, b\r\n", 400),
        (b"Host: user@a\r\n", 400),
        (b"Host: \r\n", 200),  # the empty host of a target without one
        (b"Host: [::1]:5000\r\n", 200),
        # A length past what int() takes: framing that cannot be read (RFC 9112 6.3).
        pytest.param(b"Host: x\r\nContent-Length: " + b"9" * 5000 + b"\r\n", 400, id="content-length-5000-digits"),
    ],
)
def test_header_lines(running, headers, status) -> None:
    response = raw_request(running.url, b"GET /health HTTP/1.1\r\n" + headers + b"\r\n")
    assert raw_status(response) == status
    assert raw_status(raw_request(running.url, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")) == 200


def test_an_unknown_method_gets_501_and_a_known_one_refused_405_with_allow(running) -> None:
    unknown = raw_request(running.url, b"FOO /index/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert raw_status(unknown) == 501 and b"\r\nAllow:" not in unknown
    refused = raw_request(running.url, b"PUT /index/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert raw_status(refused) == 405 and b"\r\nAllow: GET, HEAD\r\n" in refused
    # The connection stays usable after a 501: its small body was read away.
    both = b"BREW /health HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    assert [raw_status(r) for r in read_responses(running.url, both, 2)] == [501, 200]


def test_an_answered_chunked_request_closes_without_waiting_for_more_body(running) -> None:
    """A chunked body is read away before the close only if refused: answered, its end not
    looked for, the connection closes at once, its thread not held."""
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        started, received = time.monotonic(), b""
        while chunk := sock.recv(65536):
            received += chunk
        closed_after = time.monotonic() - started
    assert raw_status(received) == 200
    assert closed_after < 1.0, f"closed after {closed_after:.2f} s"  # the drain's bound is 2 s


def test_connect_says_this_is_no_outbound_proxy(running) -> None:
    """A client given the proxy as its HTTPS_PROXY sends CONNECT: told what went wrong."""
    answer = raw_request(running.url, b"CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\n")
    assert raw_status(answer) == 400 and b"not an outbound proxy" in answer


def test_options_asterisk_tells_the_methods_of_the_server(running) -> None:
    """RFC 9110 9.3.7: OPTIONS * asks about the server as a whole: 200, its methods in
    Allow, no content; any other method with the asterisk form is a bad request."""
    answer = raw_request(running.url, b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
    assert raw_status(answer) == 200
    assert b"\r\nAllow: GET, HEAD, DELETE\r\n" in answer  # POST too only with uploads on
    assert b"\r\nContent-Length: 0\r\n" in answer
    for method in ("GET", "POST", "PUT"):
        assert raw_status(raw_request(running.url, f"{method} * HTTP/1.1\r\nHost: x\r\n\r\n".encode())) == 400


def test_a_body_sent_whole_before_reading_gets_its_answer(running) -> None:
    """RFC 9112 9.6: a body no route reads (twine pointed at the index, an unknown method,
    a GET with a body) is read away before the close, so http.client, which sends it all
    before it reads, gets the answer and not a broken pipe."""
    body = b"x" * 1_500_000
    for method, path, status in (("POST", "/index/alpha/", 405), ("BREW", "/index/alpha/", 501), ("GET", "/health", 200)):
        connection = narrow_link(running.url, timeout=10)
        try:
            connection.request(method, path, body=body)
            response = connection.getresponse()
            assert response.status == status and response.getheader("Connection") == "close"
            assert response.read().startswith(b'{"status"' if status == 200 else f"{status} ".encode())
        finally:
            connection.close()
    assert running.get("/health").status == 200


def test_repeated_headers_are_joined(running) -> None:
    # Two Accept headers: together they admit JSON, which neither alone would rank first.
    request = (
        b"GET /index/alpha/ HTTP/1.1\r\nHost: x\r\n"
        b"Accept: text/html;q=0.5\r\nAccept: application/vnd.pypi.simple.v1+json\r\n\r\n"
    )
    assert b"Content-Type: application/vnd.pypi.simple.v1+json" in raw_request(running.url, request)


def read_responses(url: str, data: bytes, count: int) -> list:
    """Send *data* on one connection and read *count* responses (by Content-Length)."""
    parts = urllib.parse.urlsplit(url)
    responses = []
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.sendall(data)
        buffer = b""
        while len(responses) < count:
            head, sep, rest = buffer.partition(b"\r\n\r\n")
            if sep:
                length = next(
                    (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
                    0,
                )
                if len(rest) >= length:
                    responses.append(head)
                    buffer = rest[length:]
                    continue
            chunk = sock.recv(65536)
            if not chunk:
                break
            buffer += chunk
    return responses


def test_keep_alive_serves_pipelined_requests(running) -> None:
    one = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    responses = read_responses(running.url, one * 3, 3)
    assert [raw_status(r) for r in responses] == [200, 200, 200]


@pytest.mark.parametrize(
    "request_text, closes",
    [
        (b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", True),
        (b"GET /health HTTP/1.0\r\n\r\n", True),
        (b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", False),
        # Tokens are matched whole: "x-closed-thing" is not "close".
        (b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: x-closed-thing\r\n\r\n", False),
    ],
)
def test_connection_header(running, request_text, closes) -> None:
    parts = urllib.parse.urlsplit(running.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.sendall(request_text)
        received = b""
        while b"success" not in received:
            received += sock.recv(65536)
        # A close comes right after the answer: wait long for one that is due, briefly
        # (loopback) to see that none comes.
        sock.settimeout(5 if closes else 0.3)
        try:
            closed = sock.recv(1) == b""
        except socket.timeout:
            closed = False
    assert closed == closes


def test_expect_100_continue_where_no_body_is_read(running) -> None:
    """RFC 9110 10.1.1: no 100 where the framing says there is no content, and none for
    a body the route does not read: the answer comes at once, and the connection then
    closes (the body, if sent later, is never taken for a request)."""
    parts = urllib.parse.urlsplit(running.url)
    for head, closes in (
        (b"GET /health HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n", False),
        (b"DELETE /cache/alpha/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n", True),
        # Sent at once all the same: read away as any body, the connection kept.
        (b"DELETE /cache/alpha/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nabcde", False),
    ):
        with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
            sock.sendall(head)
            received = b""
            while b"\r\n\r\n" not in received:
                received += sock.recv(65536)
        assert received.startswith(b"HTTP/1.1 200 OK\r\n"), received[:60]
        assert (b"\r\nConnection: close\r\n" in received) is closes


def test_an_empty_line_before_the_request_is_skipped(running) -> None:
    """RFC 9112 2.2: a server SHOULD ignore at least one empty line before the request."""
    assert raw_status(raw_request(running.url, b"\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n")) == 200
    # The line after the empty one has the same length limit as a first line.
    long_line = b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n"
    assert raw_status(raw_request(running.url, b"\r\n" + long_line + b"Host: x\r\n\r\n")) == 414


def test_requests_the_heads_parsing_refuses_are_counted_and_logged(running, caplog) -> None:
    caplog.set_level(logging.INFO, logger="proxpi_min")
    assert raw_status(raw_request(running.url, b"garbage\r\n\r\n")) == 400
    assert raw_status(raw_request(running.url, b"GET /health HTTP/2.0\r\nHost: x\r\n\r\n")) == 505
    assert raw_status(raw_request(running.url, b"GET /health HTTP/1.1\r\nNo colon\r\n\r\n")) == 400
    # Counted once the answer is out: the client may have it first.
    wanted = [("other", "400"), ("other", "505"), ("GET", "400")]
    deadline = time.monotonic() + 5
    while True:
        _, samples = parse(running.get("/metrics").body.decode())
        counts = [sample(samples, "proxpi_requests_total", route="other", method=m, status=s) for m, s in wanted]
        if counts == [1, 1, 1] or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert counts == [1, 1, 1], counts
    # One line each, as for every request; the method and target where they were read.
    while caplog.text.count('" 400 ') + caplog.text.count('" 505 ') < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert caplog.text.count('"- " 400 ') == 1 and caplog.text.count('"- " 505 ') == 1, caplog.text
    assert caplog.text.count('"GET /health" 400 ') == 1, caplog.text


def test_a_request_line_too_long_after_a_kept_alive_request_logs_nothing_of_the_last(running, caplog) -> None:
    caplog.set_level(logging.INFO, logger="proxpi_min")
    first = b"GET /health?token=s3cret HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
        sock.sendall(first + b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        response = b""
        while b" 414 " not in response:  # both answers, to the close
            chunk = sock.recv(65536)
            if not chunk:
                break
            response += chunk
    assert b" 414 " in response
    deadline = time.monotonic() + 5
    while '" 414 ' not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.01)
    (line,) = [r.getMessage() for r in caplog.records if '" 414 ' in r.getMessage()]
    assert '"- " 414' in line, line


def test_control_characters_never_reach_the_log(running, caplog) -> None:
    caplog.set_level(logging.INFO, logger="proxpi_min")
    raw_request(running.url, b"\x1b[2J\x1b[31mFAKE /index/ HTTP/1.1\r\nHost: x\r\n\r\n")
    # RFC 9112 3.2: none in a target either (a redirect would echo them into Location).
    refused = raw_request(running.url, b"GET /index\x1b[0m?format=\x00\x7f HTTP/1.1\r\nHost: x\r\n\r\n")
    assert raw_status(refused) == 400 and b"control characters" in refused
    assert not any(byte in refused for byte in (b"\x1b", b"\x00", b"\x7f"))
    # The request's line is logged once its response is out: it may come just after.
    deadline = time.monotonic() + 5
    while not ("FAKE" in caplog.text and "/index\\x1b" in caplog.text) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "FAKE" in caplog.text and "/index\\x1b[0m?format=\\x00\\x7f" in caplog.text, caplog.text
    assert not any(char in caplog.text for char in "\x1b\x00\x7f")


# -- headers for a front cache (nginx proxy_cache, a CDN) ---------------------------------


def _max_age(cache_control: str) -> int:
    directives = dict(part.strip().partition("=")[::2] for part in cache_control.split(","))
    return int(directives["max-age"])


@pytest.mark.parametrize("ttl, max_age", [(1800.0, 600), (120.0, 120), (0.0, 0)])
def test_pages_cacheable_for_at_most_the_ttl_and_vary(proxy, upstream_json, ttl, max_age) -> None:
    running = proxy((upstream_json, ttl))
    for path in ("/index/alpha/", "/index/"):
        for accept in (None, "application/vnd.pypi.simple.v1+json"):
            result = running.get(path, {"Accept": accept} if accept else {})
            assert result.status == 200
            assert result.headers["Vary"] == "Accept, Accept-Encoding"
            assert "public" in result.headers["Cache-Control"]
            assert _max_age(result.headers["Cache-Control"]) == max_age <= ttl
            revalidated = running.get(path, {"If-None-Match": result.headers["ETag"], **({"Accept": accept} if accept else {})})
            assert revalidated.status == 304
            assert revalidated.headers["Vary"] == "Accept, Accept-Encoding"
            assert revalidated.headers["Cache-Control"] == result.headers["Cache-Control"]


def test_files_are_immutable(running, dists) -> None:
    path = f"/index/alpha/{dists.alpha_1.filename}"
    for _ in range(2):  # streamed from upstream, then from the cache dir
        result = running.get(path)
        assert result.status == 200
        assert result.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert running.get(path, {"Range": "bytes=0-9"}).headers["Cache-Control"].endswith("immutable")


@pytest.mark.parametrize("cached", [False, True], ids=["cold", "cached"])
def test_if_range_gives_the_range_only_for_the_same_bytes(running, dists, cached) -> None:
    """RFC 9110 13.1.5: a client resuming with If-Range gets its range only if it holds
    these very bytes (the strong ETag); a date (no Last-Modified is sent) or a weak or
    other tag gets the whole file."""
    path = f"/index/alpha/{dists.alpha_1.filename}"
    if cached:
        running.get(path)
    etag = running.request("HEAD", path).headers["ETag"]
    whole = dists.alpha_1.content
    ranged = running.get(path, {"Range": "bytes=0-9", "If-Range": etag})
    assert (ranged.status, ranged.body) == (206, whole[:10])
    for other in ('"0123456789abcdef"', "W/" + etag, "Sat, 01 Jan 2000 00:00:00 GMT"):
        answer = running.get(path, {"Range": "bytes=0-9", "If-Range": other})
        assert (answer.status, answer.body) == (200, whole), other
        assert "Content-Range" not in answer.headers
    # 13.2.2: If-Range is judged before the range, which may then be past the end.
    past_the_end = {"Range": f"bytes={len(whole) + 10}-"}
    assert running.get(path, {**past_the_end, "If-Range": '"0123456789abcdef"'}).body == whole
    assert running.get(path, {**past_the_end, "If-Range": etag}).status == 416


@pytest.mark.parametrize("cached", [False, True], ids=["cold", "cached"])
def test_head_ignores_range(running, dists, cached) -> None:
    """RFC 9110 14.2: Range is defined for GET only; a HEAD tells the whole file."""
    path = f"/index/alpha/{dists.alpha_1.filename}"
    if cached:
        running.get(path)
    answer = running.request("HEAD", path, {"Range": "bytes=0-9"})
    assert answer.status == 200 and "Content-Range" not in answer.headers
    assert answer.headers["Content-Length"] == str(len(dists.alpha_1.content))


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("GET", "/index/no-such-project/", 404),
        ("GET", "/index/alpha/no-such-file.whl", 404),
        ("GET", "/nowhere", 404),
        ("POST", "/index/alpha/", 405),
        ("GET", "/index/alpha/bad%20name.whl", 400),
        ("GET", "/", 200),
        ("GET", "/health", 200),
        ("HEAD", "/health", 200),
        ("GET", "/metrics", 200),
    ],
)
def test_errors_home_and_health_are_not_stored(running, method, path, status) -> None:
    result = running.request(method, path)
    assert result.status == status
    assert result.headers["Cache-Control"] == "no-store"


def test_range_not_satisfiable_is_not_stored(running, dists) -> None:
    result = running.get(f"/index/alpha/{dists.alpha_1.filename}", {"Range": "bytes=99999999-"})
    assert result.status == 416
    assert result.headers["Cache-Control"] == "no-store"


def test_stale_page_is_not_stored(proxy, upstream_json) -> None:
    running = proxy((upstream_json, 0.0))
    fresh = running.get("/index/alpha/")
    assert fresh.status == 200 and "X-Proxpi-Stale" not in fresh.headers
    upstream_json.down()
    stale = running.get("/index/alpha/")
    assert stale.status == 200 and stale.headers["X-Proxpi-Stale"] == "1"
    assert stale.headers["Cache-Control"] == "no-store"
    assert stale.headers["Vary"] == "Accept, Accept-Encoding"
    # A front cache revalidating its copy gets the whole stale page, never a 304 that
    # would leave its copy fresh for another max-age.
    revalidated = running.get("/index/alpha/", {"If-None-Match": fresh.headers["ETag"]})
    assert revalidated.status == 200 and revalidated.headers["Cache-Control"] == "no-store"


def test_favicon_is_a_small_icon_kept_a_week(running) -> None:
    result = running.get("/favicon.ico")
    assert result.status == 200
    assert result.headers["Content-Type"] == "image/x-icon"
    assert result.headers["Cache-Control"] == "public, max-age=604800"
    icon = result.body
    # ICONDIR (reserved 0, type 1 = icon, one image), then its entry: 16x16, size, offset.
    assert icon[:6] == b"\x00\x00\x01\x00\x01\x00" and icon[6:8] == b"\x10\x10"
    size, offset = struct.unpack("<II", icon[14:22])
    assert offset == 22 and offset + size == len(icon) < 1024
    assert running.request("HEAD", "/favicon.ico").status == 200
    assert running.request("DELETE", "/favicon.ico").status == 405


@pytest.mark.parametrize(
    "lengths",
    [[b"0", b"5"], [b"5", b"5"], [b"+5"], [b"-1"], [b"0x5"], [b"1_0"], [b"5 5"]],
    ids=["two", "twice", "plus", "negative", "hex", "underscore", "space"],
)
def test_a_content_length_that_is_not_one_number_is_a_400_that_closes(running, lengths) -> None:
    """RFC 9112 6.3: framing that cannot be trusted (a request smuggled past a front
    proxy that reads it otherwise) is refused, and the connection ends."""
    head = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"Content-Length: " + n + b"\r\n" for n in lengths)
    answer = raw_request(running.url, head + b"\r\nhello")
    assert raw_status(answer) == 400 and b"not one number" in answer, answer[:200]
    assert b"\r\nConnection: close" in answer.partition(b"\r\n\r\n")[0]
    assert raw_status(raw_request(running.url, b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")) == 200
