"""The proxy end to end over loopback HTTP: an in-process ProxyServer in front of fake upstreams."""

from __future__ import annotations

import contextlib
import hashlib
import html
import http.client as http_client
import json
import os
import re
import threading
import time
import urllib.parse

import pytest

from tests.support.dists import canonicalize, make_wheel
from tests.support.pages import json_files, parse_anchors, resolve, split_href
from tests.support.proxy import PIP_ACCEPT, assert_healthy, http, raw_request, raw_status

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
V1_HTML_TYPE = "application/vnd.pypi.simple.v1+html"
ROOT_PROJECTS = {"alpha", "beta", "gamma", "zope-interface", "delta"}


@pytest.fixture(params=[("html", "json"), ("json", "html")], ids=["root-html", "root-json"])
def merged(request, upstream_factory):
    """(root, extra) upstreams: the shared root content, and the extra index's."""
    root_fmt, extra_fmt = request.param
    return upstream_factory(root_fmt, "root"), upstream_factory(extra_fmt, "extra")


def _html_page(proxy, path):
    result = proxy.get(path)
    assert result.status == 200, result
    assert result.content_type in ("text/html", V1_HTML_TYPE)
    return result, parse_anchors(result.body)


def _json_page(proxy, path):
    result = proxy.get(path, {"Accept": PIP_ACCEPT})
    assert result.status == 200, result
    assert result.content_type == JSON_TYPE
    return result, json.loads(result.body)


def _stored_dist_files(cache_dir, dists):
    """Files under cache_dir that hold (or are named as) one of the distributions:
    the file cache's copies, not saved index pages."""
    known = {d.sha256 for d in dists.root + dists.extra}
    names = {d.filename for d in dists.root + dists.extra}
    found = {}
    for directory, _, files in os.walk(cache_dir):
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.isfile(path) or os.path.islink(path):
                continue
            try:  # a temp file may be renamed or removed while we look
                with open(path, "rb") as handle:
                    content = handle.read()
            except FileNotFoundError:
                continue
            if hashlib.sha256(content).hexdigest() in known or name in names:
                found[path] = len(content)
    return found


# -- project list ---------------------------------------------------------------


def test_root_list_html_lists_each_project_of_both_indexes_once(proxy, merged):
    root, extra = merged
    p = proxy(root, extra)
    result, anchors = _html_page(p, "/index/")
    by_name = {canonicalize(text): attrs for text, attrs in anchors.items()}
    assert set(by_name) == ROOT_PROJECTS | {"epsilon"}
    assert len(anchors) == len(by_name)  # alpha is in both indexes, listed once
    # Every link leads to the project's page (possibly via one redirect).
    for name, attrs in by_name.items():
        url = resolve(p.index_url, attrs["href"])
        status, headers, _ = http("GET", url)
        if status == 301:
            url = urllib.parse.urljoin(url, headers["Location"])
            status, headers, _ = http("GET", url)
        assert status == 200, (name, url)
        assert urllib.parse.urlsplit(url).path == f"/index/{name}/"


def test_root_list_json_names_the_projects_of_both_indexes(proxy, merged):
    p = proxy(*merged)
    _, document = _json_page(p, "/index/")
    assert document["meta"]["api-version"].startswith("1.")
    names = [canonicalize(item["name"]) for item in document["projects"]]
    assert sorted(names) == sorted(ROOT_PROJECTS | {"epsilon"})


# -- project pages: HTML ----------------------------------------------------------


def test_project_page_html_merged_first_index_wins(proxy, merged, dists):
    root, extra = merged
    p = proxy(root, extra)
    _, anchors = _html_page(p, "/index/alpha/")
    expected = [dists.alpha_1, dists.alpha_2, dists.alpha_2_sdist, dists.alpha_3]
    assert set(anchors) == {d.filename for d in expected}
    assert split_href(anchors[dists.alpha_2.filename]["href"])[1] == f"sha256={dists.alpha_2.sha256}"
    assert dists.alpha_2_other.sha256 not in json.dumps(anchors)
    for dist in expected:
        url = resolve(p.index_url + "alpha/", anchors[dist.filename]["href"])
        result = http("GET", url)
        assert result.status == 200 and result.body == dist.content, dist.filename


def test_project_page_html_links_are_relative_and_encoded(proxy, upstream, dists):
    p = proxy(upstream)
    page_url = p.index_url + "delta/"
    _, anchors = _html_page(p, "/index/delta/")
    href = anchors[dists.delta.filename]["href"]
    url, fragment = split_href(href)
    assert url == "delta-1.0%2Blocal.1-py3-none-any.whl"
    assert fragment == f"sha256={dists.delta.sha256}"
    assert http("GET", resolve(page_url, href)).body == dists.delta.content
    _, anchors = _html_page(p, "/index/alpha/")
    for dist in (dists.alpha_1, dists.alpha_2, dists.alpha_2_sdist):
        assert split_href(anchors[dist.filename]["href"])[0] == dist.filename


def test_project_page_html_keeps_attributes(proxy, upstream, dists):
    p = proxy(upstream)
    result, anchors = _html_page(p, "/index/gamma/")
    assert set(anchors) == {d.filename for d in (dists.gamma_1, dists.gamma_1_1, dists.gamma_2, dists.gamma_9)}
    assert anchors[dists.gamma_1.filename]["data-yanked"] == dists.GAMMA_YANK_REASON
    assert anchors[dists.gamma_1_1.filename].get("data-yanked", "missing") in ("", None)
    assert "data-yanked" not in anchors[dists.gamma_2.filename]
    assert anchors[dists.gamma_2.filename]["data-requires-python"] == ">=3.8, <4"
    assert anchors[dists.gamma_9.filename]["data-requires-python"] == ">=99"
    assert "data-requires-python" not in anchors[dists.gamma_1.filename]
    # PEP 503: < and > in attribute values are escaped.
    assert b"&gt;=3.8, &lt;4" in result.body
    for dist in (dists.gamma_1, dists.gamma_2):
        value = f"sha256={dist.metadata_sha256}"
        assert anchors[dist.filename]["data-core-metadata"] == value
        assert anchors[dist.filename]["data-dist-info-metadata"] == value


def test_project_page_html_metadata_only_when_advertised(proxy, upstream, dists):
    p = proxy(upstream, metadata="off")  # else the proxy advertises zope's own (test_metadata.py)
    zope_page, anchors = _html_page(p, "/index/zope-interface/")
    assert "data-core-metadata" not in anchors[dists.zope.filename]
    assert "data-dist-info-metadata" not in anchors[dists.zope.filename]
    alpha_page, anchors = _html_page(p, "/index/alpha/")
    assert "data-core-metadata" not in anchors[dists.alpha_2_sdist.filename]
    assert "data-core-metadata" in anchors[dists.alpha_2.filename]
    for body in (zope_page.body, alpha_page.body):
        assert not re.search(rb'data-(core|dist-info)-metadata="?false', body)


def test_metadata_file_served_and_matches_advertised_hash(proxy, upstream, dists):
    p = proxy(upstream)
    page_url = p.index_url + "beta/"
    _, anchors = _html_page(p, "/index/beta/")
    attrs = anchors[dists.beta_1.filename]
    result = http("GET", resolve(page_url, attrs["href"]) + ".metadata")
    assert result.status == 200
    assert result.body == dists.beta_1.metadata
    assert attrs["data-core-metadata"] == "sha256=" + hashlib.sha256(result.body).hexdigest()


def test_metadata_file_not_advertised_is_404(proxy, upstream_html, dists):
    p = proxy(upstream_html, metadata="off")
    assert p.get(f"/index/zope-interface/{dists.zope.filename}.metadata").status == 404


# -- project pages: JSON ------------------------------------------------------------


def test_json_project_page_gives_hashes_sizes_metadata_and_proxy_urls(proxy, upstream, dists):
    p = proxy(upstream)
    result, document = _json_page(p, "/index/alpha/")
    assert document["meta"]["api-version"].startswith("1.")
    assert document["name"] == "alpha"
    files = json_files(result.body)
    assert set(files) == {dists.alpha_1.filename, dists.alpha_2.filename, dists.alpha_2_sdist.filename}
    page_url = p.index_url + "alpha/"
    for dist in (dists.alpha_1, dists.alpha_2, dists.alpha_2_sdist):
        item = files[dist.filename]
        assert item["hashes"] == {"sha256": dist.sha256}
        assert "dist-info-metadata" not in item
        url = resolve(page_url, item["url"])
        assert urllib.parse.urlsplit(url).netloc == f"127.0.0.1:{p.port}", url
        assert http("GET", url).body == dist.content
        if "size" in item or upstream.fmt == "json":
            assert item["size"] == dist.size
        if upstream.fmt == "json":
            assert item["upload-time"] == dists.UPLOAD_TIMES[dist.filename]
    assert files[dists.alpha_2.filename]["core-metadata"] == {"sha256": dists.alpha_2.metadata_sha256}
    assert not files[dists.alpha_2_sdist.filename].get("core-metadata")
    if upstream.fmt == "json" or document["meta"]["api-version"] != "1.0":
        assert set(document["versions"]) >= {"1.0", "2.0"}


def test_project_page_json_yank_requires_python_metadata(proxy, upstream, dists):
    p = proxy(upstream)
    result, _ = _json_page(p, "/index/gamma/")
    files = json_files(result.body)
    assert files[dists.gamma_1.filename]["yanked"] == dists.GAMMA_YANK_REASON
    assert files[dists.gamma_1_1.filename]["yanked"] is True
    assert files[dists.gamma_2.filename].get("yanked", False) is False
    assert files[dists.gamma_2.filename]["requires-python"] == ">=3.8, <4"
    assert files[dists.gamma_1.filename].get("requires-python") is None
    assert files[dists.gamma_2.filename]["core-metadata"] == {"sha256": dists.gamma_2.metadata_sha256}
    zope = json_files(_json_page(p, "/index/zope-interface/")[0].body)[dists.zope.filename]
    assert zope.get("core-metadata") is True  # not from upstream: the proxy's own, hash unknown yet
    assert b'"dist-info-metadata"' not in result.body


def test_project_page_json_merged_first_index_wins(proxy, merged, dists):
    p = proxy(*merged)
    result, _ = _json_page(p, "/index/alpha/")
    files = json_files(result.body)
    assert set(files) == {d.filename for d in (dists.alpha_1, dists.alpha_2, dists.alpha_2_sdist, dists.alpha_3)}
    assert files[dists.alpha_2.filename]["hashes"]["sha256"] == dists.alpha_2.sha256
    url = resolve(p.index_url + "alpha/", files[dists.alpha_2.filename]["url"])
    assert http("GET", url).body == dists.alpha_2.content


def test_project_only_in_extra_index_is_listed_and_downloads(proxy, merged, dists):
    p = proxy(*merged)
    _, anchors = _html_page(p, "/index/epsilon/")
    assert set(anchors) == {dists.epsilon.filename}
    result = p.get(f"/index/epsilon/{dists.epsilon.filename}")
    assert result.status == 200 and result.body == dists.epsilon.content
    result = p.get(f"/index/alpha/{dists.alpha_3.filename}")
    assert result.status == 200 and result.body == dists.alpha_3.content


# -- names and paths -------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, location",
    [
        ("/index/Zope_Interface/", "/index/zope-interface/"),
        ("/index/ZOPE.INTERFACE/", "/index/zope-interface/"),
        ("/index/zope-interface", "/index/zope-interface/"),
        ("/index/Zope.Interface", "/index/zope-interface/"),
        ("/index/alpha", "/index/alpha/"),
    ],
)
def test_non_normalized_or_slashless_names_redirect(proxy, upstream_html, path, location):
    p = proxy(upstream_html)
    status, headers, _ = p.get(path)
    assert status == 301
    target = urllib.parse.urljoin(p.url + path, headers["Location"])
    assert urllib.parse.urlsplit(target).path == location
    assert http("GET", target).status == 200


def test_unknown_project_is_404_with_short_message(proxy, upstream_html):
    p = proxy(upstream_html)
    result = p.get("/index/no-such-project/")
    assert result.status == 404
    assert result.content_type.startswith("text/")
    assert 0 < len(result.body) < 2000


@pytest.mark.parametrize(
    "path, expected",
    # 400: a segment decodes to a name no project or file can have; 404: raw "/" splits
    # the path into more segments than any route has.
    [
        ("/index/../", 400),
        ("/index/%2e%2e/", 400),
        ("/index/%2E%2E/%2E%2E/etc/passwd", 400),
        ("/index/a%2fb/", 400),
        ("/index/alpha%2f..%2f..%2f/", 400),
        ("/index/a\\b/", 400),
        ("/index/a%5cb/", 400),
        ("/index/a%00b/", 400),
        ("/index/-bad-/", 400),
        ("/index/bad name/".replace(" ", "%20"), 400),
        ("/index/alpha/..%2f..%2fconfig.py", 400),
        ("/index/alpha/%2e%2e%2f%2e%2e%2fetc%2fpasswd", 400),
        ("/index/alpha/..%5c..%5cwin.ini", 400),
        ("/index/alpha/alpha-1.0%00.whl", 400),
        ("/index/alpha/../../etc/passwd", 404),
        ("/cache/%2e%2e", 400),
    ],
)
def test_invalid_names_and_traversal_are_rejected(proxy, upstream_html, path, expected):
    p = proxy(upstream_html)
    method = "DELETE" if path.startswith("/cache/") else "GET"
    assert p.request(method, path).status == expected
    assert not any(".." in r.path or "\\" in r.path or "\0" in r.path for r in upstream_html.requests)
    assert_healthy(p)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /index/ HTTP/1.1 extra\r\nHost: x\r\n\r\n",
        b"GET /index/\x00/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /index/\xff\xfe/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://evil.example/index/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /index/ HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n",
        b"GET /index/ HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
    ],
    ids=["garbage", "extra-word", "nul", "non-utf8", "absolute-form", "long-url", "many-headers", "bad-length"],
)
def test_malformed_requests_never_500(proxy, upstream_html, request_bytes):
    p = proxy(upstream_html)
    response = raw_request(p.url, request_bytes, timeout=5)
    assert response, "no answer at all"
    status = raw_status(response)
    # None: http.server answers a request line it cannot parse HTTP/0.9-style, without
    # a status line. Anything else must not blame the server.
    assert status is None or 200 <= status < 500, response[:200]
    assert not any(r.path.startswith("http") for r in upstream_html.requests)
    assert_healthy(p)


# -- content negotiation (PEP 691) ----------------------------------------------------


@pytest.mark.parametrize("path", ["/index/", "/index/alpha/"])
@pytest.mark.parametrize(
    "accept, expected",
    [
        (None, "text/html"),
        (PIP_ACCEPT, JSON_TYPE),
        (JSON_TYPE, JSON_TYPE),
        (V1_HTML_TYPE, V1_HTML_TYPE),
        ("text/html", "text/html"),
        ("application/json", 406),
    ],
)
def test_accept_header_picks_json_html_or_406_and_pages_vary_on_accept(proxy, upstream, path, accept, expected):
    p = proxy(upstream)
    result = p.get(path, {"Accept": accept} if accept else None)
    if expected == 406:
        assert result.status == 406
        return
    assert result.status == 200
    assert result.content_type == expected
    assert "accept" in (result.headers.get("Vary") or "").lower()
    if expected == JSON_TYPE:
        json.loads(result.body)
    else:
        assert b"<a " in result.body


@pytest.mark.parametrize("path", ["/index/", "/index/alpha/"])
def test_each_media_type_has_its_own_etag(proxy, upstream_html, path):
    """RFC 9110 8.8.1: text/html and v1+html are sent with the same bytes, but are two
    representations, so their strong ETags differ, and one's does not revalidate the other."""
    p = proxy(upstream_html)
    tags = {}
    for media in ("text/html", V1_HTML_TYPE, JSON_TYPE):
        result = p.get(path, {"Accept": media})
        assert result.status == 200 and result.content_type == media, result
        tags[media] = result.headers["ETag"]
    assert len(set(tags.values())) == 3, tags
    other = p.get(path, {"Accept": V1_HTML_TYPE, "If-None-Match": tags["text/html"]})
    assert other.status == 200 and other.headers["ETag"] == tags[V1_HTML_TYPE]
    assert p.get(path, {"Accept": "text/html", "If-None-Match": tags["text/html"]}).status == 304


@pytest.mark.parametrize(
    "query",
    [
        "format=application/vnd.pypi.simple.v1%2Bjson",
        "format=application/vnd.pypi.simple.v1+json",  # '+' arrives as a space once form-decoded
    ],
)
def test_format_query_overrides_accept(proxy, upstream_html, query):
    p = proxy(upstream_html)
    result = p.get("/index/alpha/?" + query, {"Accept": "text/html"})
    assert result.status == 200
    assert result.content_type == JSON_TYPE
    assert json.loads(result.body)["name"] == "alpha"
    result = p.get("/index/alpha/?format=text/html", {"Accept": JSON_TYPE})
    assert result.content_type == "text/html"


# -- files ----------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["alpha_1", "alpha_2", "alpha_2_sdist", "zope", "beta_1"])
def test_file_download_has_the_exact_bytes_and_length(proxy, upstream, dists, which):
    dist = getattr(dists, which)
    p = proxy(upstream)
    result = p.get(f"/index/{dist.normalized}/{urllib.parse.quote(dist.filename)}")
    assert result.status == 200
    assert result.body == dist.content
    assert int(result.headers["Content-Length"]) == dist.size


@pytest.mark.parametrize("spelling", ["delta-1.0%2Blocal.1-py3-none-any.whl", "delta-1.0+local.1-py3-none-any.whl"])
def test_file_with_plus_in_name_downloads_in_each_spelling(proxy, upstream_html, dists, spelling):
    p = proxy(upstream_html)
    result = p.get(f"/index/delta/{spelling}")
    assert result.status == 200 and result.body == dists.delta.content


def test_file_not_listed_is_404(proxy, upstream_html, dists):
    p = proxy(upstream_html)
    assert p.get("/index/alpha/alpha-9.9-py3-none-any.whl").status == 404
    # Served by the upstream, but listed under another project: not a file of alpha.
    assert p.get(f"/index/alpha/{dists.beta_1.filename}").status == 404
    assert p.get("/index/no-such-project/x-1.0-py3-none-any.whl").status == 404
    assert upstream_html.hits("/files/beta/" + dists.beta_1.filename) == 0


def test_file_head_has_the_length_and_no_body(proxy, upstream_html, dists):
    p = proxy(upstream_html)
    status, headers, body = p.request("HEAD", f"/index/alpha/{dists.alpha_2.filename}")
    assert (status, body) == (200, b"")
    assert int(headers["Content-Length"]) == dists.alpha_2.size


def test_page_head_has_the_get_content_type_and_no_body(proxy, upstream_html):
    p = proxy(upstream_html)
    get = p.get("/index/alpha/")
    status, headers, body = p.request("HEAD", "/index/alpha/")
    assert (status, body) == (200, b"")
    assert headers["Content-Type"] == get.headers["Content-Type"]


def test_file_range_request_is_206_with_those_bytes(proxy, upstream_html, dists):
    p = proxy(upstream_html)
    path = f"/index/alpha/{dists.alpha_2.filename}"
    p.get(path)  # cached now
    status, headers, body = p.get(path, {"Range": "bytes=100-199"})
    assert status == 206
    assert body == dists.alpha_2.content[100:200]
    assert headers["Content-Range"] == f"bytes 100-199/{dists.alpha_2.size}"


def test_file_is_fetched_from_upstream_once(proxy, upstream, dists):
    p = proxy(upstream)
    path = f"/index/alpha/{dists.alpha_1.filename}"
    assert p.get(path).body == dists.alpha_1.content
    assert p.get(path).body == dists.alpha_1.content
    assert upstream.hits(dists.alpha_1.filename) == 1


def test_concurrent_downloads_of_one_file_fetch_once(proxy, upstream_html, dists):
    dist = dists.alpha_2
    upstream_html.throttle(max(1, dist.size // 6), 0.1)
    p = proxy(upstream_html)
    p.get("/index/alpha/")
    results = []

    def download():
        results.append(p.get(f"/index/alpha/{dist.filename}", timeout=30))

    threads = [threading.Thread(target=download) for _ in range(4)]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    for thread in threads:
        thread.join(30)
    assert [(r.status, r.body == dist.content) for r in results] == [(200, True)] * 4
    assert upstream_html.hits(dist.filename) == 1


def test_slow_download_is_streamed_not_redirected(proxy, upstream_html, dists):
    dist = dists.alpha_2
    upstream_html.throttle(max(1, dist.size // 8), 0.2)  # about 1.4 s in all
    p = proxy(upstream_html)
    status, headers, body = p.get(f"/index/alpha/{dist.filename}", timeout=30)
    assert status == 200 and body == dist.content
    assert "Location" not in headers


@pytest.mark.parametrize("mode", ["corrupt", "truncate", "midway"])
def test_bad_upstream_file_is_not_served_as_good_nor_cached(proxy, upstream_html, dists, mode):
    dist = dists.alpha_2
    p = proxy(upstream_html)
    path = f"/index/alpha/{dist.filename}"
    p.get("/index/alpha/")
    upstream_html.fail(dist.filename, mode, times=1)
    try:
        status, _, body = p.get(path)
    except (http_client.HTTPException, ConnectionError):
        pass  # the proxy hung up: acceptable
    else:
        # Never a complete 200 with the wrong bytes.
        assert not (status == 200 and body != dist.content), (status, len(body))
    result = p.get(path)
    assert result.status == 200 and result.body == dist.content
    assert p.get(path).body == dist.content


def test_a_link_fragment_of_several_hashes_guards_the_file(proxy, scripted):
    """pip reads a fragment of several "name=hexdigest" pairs ("#md5=...&sha256=...")
    and refuses a file that does not match: through the proxy, so must the file route,
    and both pages must carry the hashes."""
    good = make_wheel("omega", "1.0")
    tampered = make_wheel("omega", "1.0", module_source="# not what the index lists\n")
    md5 = hashlib.md5(good.content).hexdigest()
    link = f'<a href="/files/{good.filename}#md5={md5}&amp;sha256={good.sha256}&amp;egg=omega">{good.filename}</a>'
    scripted.routes["/simple/omega/"] = (200, {"Content-Type": "text/html"}, link.encode())
    scripted.routes[f"/files/{good.filename}"] = (200, {"Content-Type": "application/octet-stream"}, tampered.content)
    p = proxy(scripted.url)
    _, document = _json_page(p, "/index/omega/")
    assert document["files"][0]["hashes"] == {"md5": md5, "sha256": good.sha256}
    _, anchors = _html_page(p, "/index/omega/")
    assert split_href(anchors[good.filename]["href"])[1] == f"sha256={good.sha256}"
    for _ in range(2):  # refused, and not stored to be served the next time
        try:
            result = p.get(f"/index/omega/{good.filename}")
        except (http_client.HTTPException, ConnectionError):
            pass  # cut before its last byte: the bytes are checked as they stream
        else:
            assert result.status == 502 and "do not match the index hash" in result.text, result
    for directory, _, names in os.walk(p.settings.cache_dir):
        for name in names:  # a temp file may be removed while we look
            with contextlib.suppress(FileNotFoundError), open(os.path.join(directory, name), "rb") as file:
                assert file.read() != tampered.content, name
    assert_healthy(p)


# -- cache invalidation and TTL ------------------------------------------------------------


def test_page_is_fetched_once_within_ttl_for_html_and_json(proxy, upstream):
    p = proxy(upstream)
    for _ in range(3):
        assert p.get("/index/alpha/").status == 200
        assert p.get("/index/alpha/", {"Accept": PIP_ACCEPT}).status == 200
    assert upstream.hits("/simple/alpha/") == 1


def test_delete_cache_project_refetches(proxy, upstream_html):
    p = proxy(upstream_html)
    p.get("/index/alpha/")
    p.get("/index/beta/")
    status, _, body = p.request("DELETE", "/cache/alpha")
    # As proxpi answers: scripts written for it read the status.
    assert (status, json.loads(body)) == (200, {"status": "success", "data": None})
    p.get("/index/alpha/")
    p.get("/index/beta/")
    assert upstream_html.hits("/simple/alpha/") == 2
    assert upstream_html.hits("/simple/beta/") == 1


@pytest.mark.parametrize(
    "spelling, project",
    [("Alpha", "alpha"), ("ALPHA", "alpha"), ("Zope_Interface", "zope-interface"), ("zope.interface", "zope-interface")],
)
def test_delete_cache_project_name_is_normalised(proxy, upstream_html, spelling, project):
    p = proxy(upstream_html)
    p.get(f"/index/{project}/")
    assert p.request("DELETE", f"/cache/{spelling}").status == 200
    p.get(f"/index/{project}/")
    assert upstream_html.hits(f"/simple/{project}/") == 2


def test_delete_cache_project_sees_upstream_changes(proxy, upstream_html, dists):
    p = proxy(upstream_html)
    assert dists.alpha_3.filename not in _html_page(p, "/index/alpha/")[1]
    upstream_html.add(dists.alpha_3)
    assert dists.alpha_3.filename not in _html_page(p, "/index/alpha/")[1]  # still cached
    p.request("DELETE", "/cache/alpha")
    assert dists.alpha_3.filename in _html_page(p, "/index/alpha/")[1]


def test_delete_cache_list_refetches_list(proxy, upstream_html):
    p = proxy(upstream_html)
    p.get("/index/")
    p.get("/index/")
    assert upstream_html.hits("/simple/") == 1
    status, _, body = p.request("DELETE", "/cache/list")
    assert (status, json.loads(body)) == (200, {"status": "success", "data": None})
    _, anchors = _html_page(p, "/index/")
    assert upstream_html.hits("/simple/") == 2
    assert "alpha" in {canonicalize(a) for a in anchors}


def test_page_is_fetched_again_after_ttl(proxy, upstream_html):
    p = proxy((upstream_html, 0.5))
    started = time.monotonic()
    p.get("/index/alpha/")
    p.get("/index/alpha/")
    if time.monotonic() - started < 0.4:  # a very slow machine may outlive the TTL here
        assert upstream_html.hits("/simple/alpha/") == 1
    time.sleep(0.7)
    upstream_html.reset_hits()
    p.get("/index/alpha/")
    assert upstream_html.hits("/simple/alpha/") == 1


def test_ttl_zero_disables_page_cache(proxy, upstream_html, dists):
    p = proxy((upstream_html, 0))
    for _ in range(3):
        p.get("/index/alpha/")
    assert upstream_html.hits("/simple/alpha/") == 3
    upstream_html.add(dists.alpha_3)
    assert dists.alpha_3.filename in _html_page(p, "/index/alpha/")[1]


def test_extra_index_has_its_own_ttl(proxy, upstream_factory):
    root = upstream_factory("html", "root")
    extra = upstream_factory("html", "extra")
    p = proxy((root, 1800), (extra, 0))
    p.get("/index/alpha/")
    p.get("/index/alpha/")
    assert root.hits("/simple/alpha/") == 1
    assert extra.hits("/simple/alpha/") == 2


# -- other endpoints -------------------------------------------------------------------------


def test_home_page_names_the_indexes_and_the_cache_dir(proxy, merged, tmp_path):
    root, extra = merged
    cache_dir = str(tmp_path / "home-cache")
    p = proxy(root, extra, cache_dir=cache_dir)
    result = p.get("/")
    assert result.status == 200 and result.content_type == "text/html"
    text = html.unescape(result.text)
    assert root.url in text and extra.url in text
    assert cache_dir in text


def test_health_answers_200_ok(proxy, upstream_html):
    assert_healthy(proxy(upstream_html))


def test_unknown_path_is_404(proxy, upstream_html):
    p = proxy(upstream_html)
    assert p.get("/nope").status == 404
    assert p.get("/index/alpha/x/y/z").status == 404
    assert p.request("DELETE", "/nope").status == 404


@pytest.mark.parametrize("method, path", [("POST", "/index/"), ("PUT", "/index/alpha/"), ("POST", "/cache/list")])
def test_wrong_method_is_405_with_allow(proxy, upstream_html, method, path):
    p = proxy(upstream_html)
    status, headers, _ = p.request(method, path, body=b"x")
    assert status == 405
    assert headers.get("Allow")
    allowed = {m.strip().upper() for m in headers["Allow"].split(",")}
    assert method not in allowed


# -- upstream failures ---------------------------------------------------------------------------


def test_upstream_down_nothing_cached_is_502(proxy, upstream_html):
    p = proxy(upstream_html)
    upstream_html.down()
    assert p.get("/index/alpha/").status == 502
    assert p.get("/index/alpha/alpha-1.0-py3-none-any.whl").status == 502
    assert_healthy(p)


def test_upstream_hanging_is_504(proxy, upstream_html):
    p = proxy(upstream_html, read_timeout=0.5)
    upstream_html.fail("/simple/alpha/", "hang")
    started = time.monotonic()
    status = p.get("/index/alpha/", timeout=20).status
    assert status == 504
    assert time.monotonic() - started < 8
    assert_healthy(p)
    assert p.get("/index/beta/").status == 200


@pytest.mark.parametrize("mode", ["500", "503", "close"])
def test_upstream_error_nothing_cached_is_502(proxy, upstream_html, mode):
    p = proxy(upstream_html)
    upstream_html.fail("/simple/alpha/", mode)
    assert p.get("/index/alpha/").status == 502
    assert_healthy(p)


def test_page_is_served_again_once_upstream_recovers(proxy, upstream_html):
    p = proxy((upstream_html, 0))
    upstream_html.down()
    assert p.get("/index/alpha/").status == 502
    upstream_html.up()
    assert p.get("/index/alpha/").status == 200


# -- file cache size -------------------------------------------------------------------------------


def test_file_cache_stays_under_its_cap_and_files_still_download(proxy, upstream_html, dists):
    chosen = [dists.alpha_1, dists.alpha_2, dists.beta_1]
    sizes = sorted(d.size for d in chosen)
    cap = sizes[-1] + sizes[-2] + 16  # a bit over two files, less than three
    assert cap < sum(sizes)
    p = proxy(upstream_html, cache_size=cap)
    for dist in chosen:
        result = p.get(f"/index/{dist.normalized}/{dist.filename}")
        assert result.status == 200 and result.body == dist.content
    stored = _stored_dist_files(p.settings.cache_dir, dists)
    assert stored, "nothing was stored in the file cache"
    assert sum(stored.values()) <= cap
    # Evicted or not, every file still downloads correctly.
    for dist in chosen:
        assert p.get(f"/index/{dist.normalized}/{dist.filename}").body == dist.content
    assert sum(_stored_dist_files(p.settings.cache_dir, dists).values()) <= cap


def test_file_cache_size_zero_stores_nothing(proxy, upstream_html, dists):
    p = proxy(upstream_html, cache_size=0)
    path = f"/index/alpha/{dists.alpha_2.filename}"
    assert p.get(path).body == dists.alpha_2.content
    assert p.get(path).body == dists.alpha_2.content
    assert _stored_dist_files(p.settings.cache_dir, dists) == {}
    assert upstream_html.hits(dists.alpha_2.filename) == 2


def test_delete_cache_project_wins_over_a_page_fetch_under_way(proxy, scripted):
    """A page fetch begun before DELETE /cache/<project> and answered after it serves
    the client that was waiting, but is not kept as fresh: the next GET asks upstream
    again and lists the release added meanwhile."""
    releases = ["omega-1.0.tar.gz"]
    asked, answer = threading.Event(), threading.Event()
    answer.set()

    def page(handler):
        body = "".join(f'<a href="/files/{name}">{name}</a>\n' for name in releases).encode()
        asked.set()
        answer.wait(10)  # the page as it was when asked, sent once the test allows
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    scripted.routes["/simple/omega/"] = page
    p = proxy(scripted.url)
    assert set(_html_page(p, "/index/omega/")[1]) == {"omega-1.0.tar.gz"}
    assert p.request("DELETE", "/cache/omega").status == 200  # the next GET refreshes the page
    asked.clear()
    answer.clear()
    held = threading.Thread(target=p.get, args=("/index/omega/",))
    held.start()
    assert asked.wait(10)
    assert p.request("DELETE", "/cache/omega").status == 200
    releases.append("omega-2.0.tar.gz")
    answer.set()
    held.join(10)
    assert set(_html_page(p, "/index/omega/")[1]) == {"omega-1.0.tar.gz", "omega-2.0.tar.gz"}
    assert scripted.hits["/simple/omega/"] == 3
