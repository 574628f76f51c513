"""local_upstream: a file:// index's pages and files, answered as an HTTP index would."""

from __future__ import annotations

import pytest

from proxpi_min.core.errors import BadUpstreamPage, NotFound
from proxpi_min.core.simple import JSON_TYPE
from proxpi_min.index.local_upstream import local_file, local_page
from proxpi_min.index.upstream import Upstream

CONTENT = bytes(range(256)) * 4  # 1024 bytes


@pytest.fixture
def wheel(tmp_path):
    path = tmp_path / "alpha-1.0-py3-none-any.whl"
    path.write_bytes(CONTENT)
    return path.as_uri()


def _read_all(response) -> bytes:
    pieces = []
    while True:
        piece = response.read(100)
        if not piece:
            return b"".join(pieces)
        pieces.append(piece)


@pytest.mark.parametrize("header", [None, "", "bytes=0-", "items=5-", "bytes=5-1", "bytes=1-2,4-5"])
def test_local_file_whole(wheel: str, header) -> None:
    with local_file(wheel, header) as response:
        assert (response.status, response.length, response.headers.get("Content-Range")) == (200, 1024, None)
        assert _read_all(response) == CONTENT


@pytest.mark.parametrize(
    ("header", "start", "stop"),
    [("bytes=1000-", 1000, 1024), ("bytes=10-19", 10, 20), ("bytes=-24", 1000, 1024), ("bytes=1000-5000", 1000, 1024)],
)
def test_local_file_range(wheel: str, header: str, start: int, stop: int) -> None:
    with local_file(wheel, header) as response:
        assert response.status == 206
        assert response.length == stop - start
        assert response.headers["Content-Range"] == f"bytes {start}-{stop - 1}/1024"
        assert _read_all(response) == CONTENT[start:stop]


def test_local_file_range_past_the_end_is_416(wheel: str) -> None:
    with local_file(wheel, "bytes=1024-") as response:
        assert (response.status, response.length, response.headers["Content-Range"]) == (416, 0, "bytes */1024")
        assert response.read(100) == b""


def test_local_file_missing_is_not_found(tmp_path) -> None:
    with pytest.raises(NotFound):
        local_file((tmp_path / "nope.whl").as_uri(), None)


def test_local_page_prefers_index_json(tmp_path) -> None:
    (tmp_path / "alpha").mkdir()
    (tmp_path / "alpha" / "index.html").write_bytes(b"<html></html>")
    (tmp_path / "alpha" / "index.json").write_bytes(b"{}")
    page = local_page((tmp_path / "alpha").as_uri() + "/", 1024)
    assert (page.status, page.body, page.content_type) == (200, b"{}", JSON_TYPE)
    assert local_page((tmp_path / "beta").as_uri() + "/", 1024).status == 404
    with pytest.raises(BadUpstreamPage):
        local_page((tmp_path / "alpha").as_uri() + "/", 1)


def test_Upstream_open_file_reads_file_urls(wheel: str) -> None:
    with Upstream(1.0, 1.0).open_file(wheel, byte_range="bytes=1020-") as response:
        assert (response.status, _read_all(response)) == (206, CONTENT[1020:])
