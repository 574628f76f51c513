"""The fake upstream index behaves like a simple-API server (checked with http.client and pip).

These tests need no proxpi_min: they make sure the harness itself is right.
"""

from __future__ import annotations

import hashlib
import http.client as http_client
import json
import re
import socket
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

from tests.support.proxy import PIP_ACCEPT, http, raw_request, raw_status, run_pip
from tests.support.upstream import Upstream
from tests.support.upstream_render import negotiate_json
from tests.support.upstream_state import path_matches

JSON_TYPE = "application/vnd.pypi.simple.v1+json"


def _anchors(body: bytes) -> dict[str, dict[str, str]]:
    """filename (anchor text) -> raw attribute text, keyed by attribute name."""
    result = {}
    for attrs, text in re.findall(r"<a ([^>]*)>([^<]*)</a>", body.decode("utf-8")):
        result[text] = dict(re.findall(r'([\w-]+)="([^"]*)"', attrs))
    return result


# -- pages --------------------------------------------------------------------


def test_root_page_html_lists_projects_with_relative_links(upstream_html):
    status, headers, body = http("GET", upstream_html.url)
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    text = body.decode()
    assert '<a href="alpha/">alpha</a>' in text
    assert '<a href="zope-interface/">Zope.Interface</a>' in text


def test_project_page_html_attributes(upstream_html, dists):
    status, headers, body = http("GET", upstream_html.url + "gamma/")
    assert status == 200
    anchors = _anchors(body)
    assert set(anchors) == {d.filename for d in (dists.gamma_1, dists.gamma_1_1, dists.gamma_2, dists.gamma_9)}
    yanked = anchors["gamma-1.0-py3-none-any.whl"]
    assert yanked["data-yanked"] == "broken build: use 2.0 &lt;b&gt;&amp;&lt;/b&gt;"
    assert anchors["gamma-1.1-py3-none-any.whl"]["data-yanked"] == ""
    assert "data-yanked" not in anchors["gamma-2.0-py3-none-any.whl"]
    assert anchors["gamma-2.0-py3-none-any.whl"]["data-requires-python"] == "&gt;=3.8, &lt;4"
    expected_meta = f"sha256={dists.gamma_2.metadata_sha256}"
    assert anchors["gamma-2.0-py3-none-any.whl"]["data-core-metadata"] == expected_meta
    assert anchors["gamma-2.0-py3-none-any.whl"]["data-dist-info-metadata"] == expected_meta


def test_project_page_html_links_are_relative_and_resolve_to_files(upstream_html, dists):
    page_url = upstream_html.url + "delta/"
    anchors = _anchors(http("GET", page_url).body)
    href = anchors[dists.delta.filename]["href"]
    assert href.startswith("../../files/delta/")
    assert "%2B" in href and "+" not in href
    url, _, fragment = urllib.parse.urljoin(page_url, href).partition("#")
    assert fragment == f"sha256={dists.delta.sha256}"
    status, _, body = http("GET", url)
    assert status == 200 and body == dists.delta.content


def test_project_page_html_no_metadata_attributes_when_not_advertised(upstream_html, dists):
    anchors = _anchors(http("GET", upstream_html.url + "zope-interface/").body)
    assert "data-core-metadata" not in anchors[dists.zope.filename]
    anchors = _anchors(http("GET", upstream_html.url + "alpha/").body)
    assert "data-core-metadata" not in anchors[dists.alpha_2_sdist.filename]
    assert "data-core-metadata" in anchors[dists.alpha_2.filename]


def test_html_upstream_ignores_json_accept(upstream_html):
    result = http("GET", upstream_html.url + "alpha/", {"Accept": PIP_ACCEPT})
    assert result.content_type == "text/html"


@pytest.mark.parametrize("path", ["alpha", "Alpha/", "ALPHA", "Zope_Interface/"])
def test_project_page_redirects_to_normalized_slashed_form(upstream_html, path):
    status, headers, _ = http("GET", upstream_html.url + path)
    assert status == 301
    expected = "/simple/" + re.sub(r"[-_.]+", "-", path.rstrip("/")).lower() + "/"
    assert headers["Location"] == expected


def test_simple_without_slash_redirects(upstream_html):
    status, headers, _ = http("GET", upstream_html.base_url + "/simple")
    assert (status, headers["Location"]) == (301, "/simple/")


def test_unknown_project_and_path_are_404(upstream_html):
    assert http("GET", upstream_html.url + "nope/").status == 404
    assert http("GET", upstream_html.base_url + "/elsewhere").status == 404
    assert http("GET", upstream_html.base_url + "/files/alpha/nope.whl").status == 404


def test_add_project_remove_and_replace(upstream_factory, dists):
    upstream = upstream_factory("html", content=None)
    upstream.add_project("Empty.Project")
    status, _, body = http("GET", upstream.url + "empty-project/")
    assert status == 200 and _anchors(body) == {}
    upstream.add(dists.alpha_1).add(dists.alpha_2)
    upstream.remove("alpha", dists.alpha_1.filename)
    assert set(_anchors(http("GET", upstream.url + "alpha/").body)) == {dists.alpha_2.filename}
    upstream.remove("ALPHA")
    assert http("GET", upstream.url + "alpha/").status == 404


# -- JSON ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "accept, wants_json",
    [
        (None, False),
        ("*/*", False),
        ("text/html", False),
        (PIP_ACCEPT, True),
        (JSON_TYPE, True),
        ("application/vnd.pypi.simple.latest+json", True),
        (f"{JSON_TYPE}, text/html", False),  # a tie goes to HTML, like PyPI
        (f"{JSON_TYPE};q=0.5, text/html;q=0.4", True),
        ("application/json", False),
    ],
)
def test_negotiate_json(accept, wants_json):
    assert negotiate_json(accept) is wants_json


def test_json_upstream_negotiates_and_sets_vary(upstream_json):
    html_result = http("GET", upstream_json.url + "alpha/")
    assert html_result.headers["Content-Type"] == "text/html; charset=utf-8"
    json_result = http("GET", upstream_json.url + "alpha/", {"Accept": PIP_ACCEPT})
    assert json_result.headers["Content-Type"] == f"{JSON_TYPE}; charset=utf-8"
    assert "Accept" in json_result.headers["Vary"]
    assert json_result.headers["ETag"] != html_result.headers["ETag"]


def test_json_project_page_content(upstream_json, dists):
    body = http("GET", upstream_json.url + "alpha/", {"Accept": JSON_TYPE}).body
    document = json.loads(body)
    assert document["meta"]["api-version"] == "1.1"
    assert document["name"] == "alpha"
    assert document["versions"] == ["1.0", "2.0"]
    files = {f["filename"]: f for f in document["files"]}
    wheel = files[dists.alpha_2.filename]
    assert wheel["url"] == upstream_json.file_url(dists.alpha_2)
    assert wheel["url"].startswith("http://127.0.0.1:")
    assert wheel["hashes"] == {"sha256": dists.alpha_2.sha256}
    assert wheel["size"] == dists.alpha_2.size
    assert wheel["core-metadata"] == {"sha256": dists.alpha_2.metadata_sha256}
    assert wheel["upload-time"] == "2024-02-01T10:00:00.123456Z"
    assert wheel["yanked"] is False and wheel["requires-python"] is None
    assert files[dists.alpha_2_sdist.filename]["core-metadata"] is False


def test_json_yank_and_requires_python(upstream_json, dists):
    document = json.loads(http("GET", upstream_json.url + "gamma/", {"Accept": JSON_TYPE}).body)
    files = {f["filename"]: f for f in document["files"]}
    assert files[dists.gamma_1.filename]["yanked"] == dists.GAMMA_YANK_REASON
    assert files[dists.gamma_1_1.filename]["yanked"] is True
    assert files[dists.gamma_2.filename]["requires-python"] == ">=3.8, <4"
    assert "upload-time" not in files[dists.gamma_2.filename]


def test_json_root_page(upstream_json):
    result = http("GET", upstream_json.url, {"Accept": JSON_TYPE})
    document = json.loads(result.body)
    assert {"name": "Zope.Interface"} in document["projects"]
    assert document["meta"]["api-version"] == "1.1"


# -- files ----------------------------------------------------------------------


def test_file_download_exact_bytes_and_headers(upstream_html, dists):
    status, headers, body = http("GET", upstream_html.file_url(dists.alpha_2))
    assert status == 200
    assert body == dists.alpha_2.content
    assert int(headers["Content-Length"]) == dists.alpha_2.size
    assert headers["Accept-Ranges"] == "bytes"


def test_file_url_with_literal_plus_also_works(upstream_html, dists):
    result = http("GET", f"{upstream_html.base_url}/files/delta/{dists.delta.filename}")
    assert result.status == 200 and result.body == dists.delta.content


def test_metadata_file(upstream_html, dists):
    status, _, body = http("GET", upstream_html.file_url(dists.beta_1) + ".metadata")
    assert status == 200 and body == dists.beta_1.metadata
    assert hashlib.sha256(body).hexdigest() == dists.beta_1.metadata_sha256
    assert http("GET", upstream_html.file_url(dists.zope) + ".metadata").status == 404
    assert http("GET", upstream_html.file_url(dists.alpha_2_sdist) + ".metadata").status == 404


def test_head_has_headers_and_no_body(upstream_html, dists):
    status, headers, body = http("HEAD", upstream_html.file_url(dists.alpha_1))
    assert status == 200 and body == b""
    assert int(headers["Content-Length"]) == dists.alpha_1.size
    assert upstream_html.hits(dists.alpha_1.filename, method="HEAD") == 1
    assert upstream_html.hits(dists.alpha_1.filename) == 0


@pytest.mark.parametrize("kind", ["page", "file"])
def test_etag_conditional_get(upstream_html, dists, kind):
    url = upstream_html.url + "alpha/" if kind == "page" else upstream_html.file_url(dists.alpha_1)
    first = http("GET", url)
    etag = first.headers["ETag"]
    assert etag
    status, headers, body = http("GET", url, {"If-None-Match": etag})
    assert (status, body, headers["ETag"]) == (304, b"", etag)
    assert http("GET", url, {"If-None-Match": '"other"'}).status == 200


def test_range_requests(upstream_html, dists):
    url = upstream_html.file_url(dists.alpha_2)
    size = dists.alpha_2.size
    status, headers, body = http("GET", url, {"Range": "bytes=10-19"})
    assert (status, body) == (206, dists.alpha_2.content[10:20])
    assert headers["Content-Range"] == f"bytes 10-19/{size}"
    status, headers, body = http("GET", url, {"Range": "bytes=-22"})
    assert (status, body) == (206, dists.alpha_2.content[-22:])
    assert headers["Content-Range"] == f"bytes {size - 22}-{size - 1}/{size}"
    status, headers, _ = http("GET", url, {"Range": f"bytes={size}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{size}"
    assert http("GET", url, {"Range": "bytes=0-1,5-6"}).status == 200  # multi-range: ignored


# -- accounting ------------------------------------------------------------------


def test_hits_and_requests_are_recorded(upstream_html):
    http("GET", upstream_html.url + "alpha/", {"Accept": "text/html"})
    http("GET", upstream_html.url + "alpha/")
    http("GET", upstream_html.url + "beta/")
    assert upstream_html.hits("/simple/alpha/") == 2
    assert upstream_html.hits("alpha/") == 2
    assert upstream_html.hits("pha/") == 0
    assert upstream_html.hits("simple/") == 0  # the root page was never asked for
    assert upstream_html.hits("*") == 3
    method, path, headers = upstream_html.requests[0]
    assert (method, path, headers["accept"]) == ("GET", "/simple/alpha/", "text/html")
    upstream_html.reset_hits()
    assert upstream_html.hits("*") == 0 and upstream_html.requests == []


@pytest.mark.parametrize(
    "path, pattern, expected",
    [
        ("/simple/alpha/", "alpha/", True),
        ("/simple/alpha/", "/simple/alpha/", True),
        ("/simple/alpha/", "pha/", False),
        ("/simple/alpha/", "simple/", False),
        ("/simple/", "simple/", True),
        ("/files/a/a-1.whl", "a-1.whl", True),
        ("/files/a/a-1.whl.metadata", "a-1.whl", False),
        ("/anything", "*", True),
    ],
)
def test_path_matches(path, pattern, expected):
    assert path_matches(path, pattern) is expected


def test_hits_are_thread_safe(upstream_html):
    def fetch():
        for _ in range(10):
            http("GET", upstream_html.url + "alpha/")

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert upstream_html.hits("alpha/") == 40


# -- faults ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["500", "503"])
def test_fail_status(upstream_html, mode):
    upstream_html.fail("alpha/", mode)
    assert http("GET", upstream_html.url + "alpha/").status == int(mode)
    assert http("GET", upstream_html.url + "beta/").status == 200
    upstream_html.clear_faults()
    assert http("GET", upstream_html.url + "alpha/").status == 200


def test_fail_everything_and_times(upstream_html):
    upstream_html.fail(None, "503", times=2)
    assert http("GET", upstream_html.url + "alpha/").status == 503
    assert http("GET", upstream_html.url).status == 503
    assert http("GET", upstream_html.url + "alpha/").status == 200


def test_fail_close(upstream_html):
    upstream_html.fail("alpha/", "close")
    with pytest.raises((http_client.RemoteDisconnected, ConnectionError)):
        http("GET", upstream_html.url + "alpha/")
    assert upstream_html.hits("alpha/") == 1


def test_fail_truncate(upstream_html, dists):
    upstream_html.fail(dists.alpha_2.filename, "truncate")
    with pytest.raises(http_client.IncompleteRead) as caught:
        http("GET", upstream_html.file_url(dists.alpha_2))
    assert len(caught.value.partial) == dists.alpha_2.size // 2


def test_fail_corrupt(upstream_html, dists):
    upstream_html.fail(dists.alpha_2.filename, "corrupt")
    status, headers, body = http("GET", upstream_html.file_url(dists.alpha_2))
    assert status == 200 and len(body) == dists.alpha_2.size
    assert hashlib.sha256(body).hexdigest() != dists.alpha_2.sha256
    assert sum(a != b for a, b in zip(body, dists.alpha_2.content)) == 1


def test_fail_midway(upstream_html, dists):
    upstream_html.fail(dists.alpha_2.filename, "midway")
    started = time.monotonic()
    with pytest.raises(http_client.IncompleteRead) as caught:
        http("GET", upstream_html.file_url(dists.alpha_2))
    assert 0 < len(caught.value.partial) < dists.alpha_2.size
    assert time.monotonic() - started >= 0.1


def test_fail_hang_then_stop_releases(upstream_factory):
    upstream = upstream_factory("html")
    upstream.fail("alpha/", "hang")
    started = time.monotonic()
    with pytest.raises(socket.timeout):
        http("GET", upstream.url + "alpha/", timeout=0.3)
    assert time.monotonic() - started < 2
    # The hanging handler is released by stop(), quickly.
    started = time.monotonic()
    upstream.stop()
    assert time.monotonic() - started < 3


def test_fail_rejects_unknown_mode(upstream_html):
    with pytest.raises(ValueError):
        upstream_html.fail("alpha/", "explode")


def test_throttle_streams_slowly(upstream_html, dists):
    upstream_html.throttle(dists.alpha_2.size // 4 + 1, 0.1)
    started = time.monotonic()
    result = http("GET", upstream_html.file_url(dists.alpha_2))
    elapsed = time.monotonic() - started
    assert result.body == dists.alpha_2.content
    assert elapsed >= 0.3
    upstream_html.throttle(None)
    started = time.monotonic()
    http("GET", upstream_html.file_url(dists.alpha_2))
    assert time.monotonic() - started < 0.3


def test_down_refuses_and_up_uses_same_port(upstream_html):
    port = upstream_html.port
    upstream_html.down()
    with pytest.raises(ConnectionRefusedError):
        http("GET", upstream_html.url + "alpha/")
    upstream_html.up()
    assert upstream_html.port == port
    assert http("GET", upstream_html.url + "alpha/").status == 200


def test_down_cuts_keep_alive_connections(upstream_html):
    connection = http_client.HTTPConnection("127.0.0.1", upstream_html.port, timeout=5)
    connection.request("GET", "/simple/alpha/")
    assert connection.getresponse().read()
    upstream_html.down()
    with pytest.raises((http_client.HTTPException, ConnectionError, OSError)):
        connection.request("GET", "/simple/alpha/")
        connection.getresponse().read()
    connection.close()


def test_raw_request_helper(upstream_html):
    response = raw_request(upstream_html.url, b"GET /simple/alpha/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert raw_status(response) == 200
    assert b"alpha-1.0-py3-none-any.whl" in response
    too_many_headers = b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n"
    assert raw_status(raw_request(upstream_html.url, too_many_headers)) == 431
    # http.server answers a malformed request line HTTP/0.9-style: no status line.
    assert raw_status(raw_request(upstream_html.url, b"GET / HTTP/1.1 extra\r\n\r\n")) is None


def test_http_helper_refuses_non_loopback():
    with pytest.raises(ValueError):
        http("GET", "http://example.com/")


def test_context_manager_starts_and_stops(dists):
    with Upstream("json") as upstream:
        upstream.add(dists.alpha_1)
        assert http("GET", upstream.url + "alpha/").status == 200
        url = upstream.url
    with pytest.raises(ConnectionRefusedError):
        http("GET", url)


# -- real pip against the fake upstream (no proxy) ---------------------------------


@pytest.mark.parametrize("fmt", ["html", "json"])
def test_pip_installs_from_fake_upstream(upstream_factory, tmp_path: Path, fmt):
    upstream = upstream_factory(fmt)
    target = tmp_path / "target"
    result = run_pip(["install", "--target", str(target), "beta"], upstream.url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (target / "beta.py").is_file() and (target / "alpha.py").is_file()
    assert "__version__ = '2.0'" in (target / "alpha.py").read_text()
    accepts = {r.headers.get("accept") for r in upstream.requests if r.path == "/simple/beta/"}
    assert any(a and "application/vnd.pypi.simple.v1+json" in a for a in accepts)
    # How often pip reads .metadata and wheels depends on its version; it read the wheels.
    assert upstream.hits("beta-1.0-py3-none-any.whl") >= 1
    assert upstream.hits("alpha-2.0-py3-none-any.whl") >= 1


def test_pip_skips_yanked_and_incompatible_python(upstream_html, tmp_path: Path):
    result = run_pip(["download", "--no-deps", "-d", str(tmp_path), "gamma"], upstream_html.url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["gamma-2.0-py3-none-any.whl"]
