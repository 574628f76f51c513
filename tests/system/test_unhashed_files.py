"""Files an index lists with no hash and upstream sends with no length (the body ends
when the connection closes): with nothing to check but the archive itself, one cut
short is neither served whole nor stored, and the next whole one is."""

from __future__ import annotations

import http.client
import urllib.parse

import pytest

from tests.support.cache_dir import file_path, files_tree, settled, sized_wheel, stored_content, wait_until
from tests.support.dists import Dist, make_sdist


def _serve_close_delimited(scripted, dist: Dist, bodies: list) -> None:
    """Upstream lists *dist* with no hash, and answers each GET of it with the next of
    *bodies*: an HTTP/1.0 response with no Content-Length, ended by closing."""
    scripted.routes[f"/simple/{dist.normalized}/"] = (
        200, {"Content-Type": "text/html"}, f'<a href="/files/{dist.filename}">{dist.filename}</a>'.encode())

    def answer(handler) -> None:
        handler.close_connection = True
        handler.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n" + bodies.pop(0))

    scripted.routes[f"/files/{dist.filename}"] = answer


def _download(url: str, path: str) -> tuple:
    """(status, the body, whether it ended as the response said it would)."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        try:
            return response.status, response.read(), True
        except http.client.IncompleteRead as exc:
            return response.status, exc.partial, False
    finally:
        connection.close()


@pytest.mark.parametrize(
    "dist", [sized_wheel("unhashed", "1.0", 300_000), make_sdist("unhashed", "2.0")], ids=["wheel", "sdist"]
)
def test_a_file_without_hash_or_length_cut_short_is_not_stored_then_the_whole_one_is(proxy, scripted, dist):
    cut = dist.content[: len(dist.content) * 2 // 3]
    _serve_close_delimited(scripted, dist, [cut, dist.content])
    p = proxy(scripted.url)
    assert p.get(f"/index/{dist.normalized}/").status == 200

    status, body, whole = _download(p.url, file_path(dist))
    assert (status, whole) == (200, False) and len(body) < len(cut)  # the last byte held back, then cut
    assert settled(p.settings.cache_dir) and wait_until(lambda: files_tree(p.settings.cache_dir) == {}), \
        files_tree(p.settings.cache_dir)

    assert _download(p.url, file_path(dist)) == (200, dist.content, True)
    assert wait_until(lambda: stored_content(p.settings.cache_dir, dist.filename)) == dist.content
    assert _download(p.url, file_path(dist)) == (200, dist.content, True)
    assert scripted.hits[f"/files/{dist.filename}"] == 2
