"""Unit tests for proxpi_min/index/page_read.py: a page body read within its cap, from a
fake http.client response (no sockets)."""

from __future__ import annotations

import gzip

import pytest

from proxpi_min.core.errors import BadUpstreamPage, UpstreamError
from proxpi_min.index.page_read import read_page_body


class FakeResponse:
    """What read_page_body uses of an http.client response: length, headers, read1
    (ending silently where the body stops short, as http.client does) and read."""

    def __init__(self, body: bytes, length: int | None = None, encoding: str | None = None, piece: int = 7) -> None:
        self._body = body
        self.length = length
        self.headers = {"Content-Encoding": encoding} if encoding else {}
        self._piece = piece
        self.reads = 0
        self.finished = False

    def read1(self, size: int) -> bytes:
        self.reads += 1
        piece, self._body = self._body[: min(size, self._piece)], self._body[min(size, self._piece):]
        if self.length is not None:
            self.length -= len(piece)
        return piece

    def read(self) -> bytes:
        self.finished = True
        return b""


def test_a_body_within_the_cap_is_read_whole_and_the_response_finished() -> None:
    response = FakeResponse(b"<a>x</a>" * 10, length=80)
    assert read_page_body(response, "u", 80) == b"<a>x</a>" * 10
    assert response.finished


def test_a_body_announced_over_the_cap_is_refused_unread() -> None:
    response = FakeResponse(b"x" * 100, length=10 * 1024**3)
    with pytest.raises(BadUpstreamPage, match="of 10737418240 bytes is over the 50-byte cap"):
        read_page_body(response, "u", 50)
    assert response.reads == 0


def test_a_body_sent_over_the_cap_is_refused_once_past_it() -> None:
    response = FakeResponse(b"x" * 1000, piece=10)
    with pytest.raises(BadUpstreamPage, match="over 50 bytes: u"):
        read_page_body(response, "u", 50)
    assert response.reads == 6  # 60 bytes read, not 1000


def test_a_gzip_body_is_inflated_and_a_bomb_refused_while_inflating() -> None:
    small = gzip.compress(b"<a>x</a>" * 5)
    assert read_page_body(FakeResponse(small, encoding="gzip"), "u", 40) == b"<a>x</a>" * 5
    bomb = gzip.compress(b"\0" * 10_000_000)
    with pytest.raises(BadUpstreamPage, match="over 4096 bytes"):
        read_page_body(FakeResponse(bomb, encoding="GZIP", piece=1024), "u", 4096)


@pytest.mark.parametrize("piece", [1, 7, 1000], ids=["byte-by-byte", "pieces", "whole"])
def test_a_gzip_body_of_several_members_is_inflated_whole(piece: int) -> None:
    # RFC 1952 2.2; bytes after the last member that start none are ignored, as before.
    body = gzip.compress(b"<a>1</a>") + gzip.compress(b"<a>2</a>") + gzip.compress(b"") + b"\0\0"
    assert read_page_body(FakeResponse(body, encoding="gzip", piece=piece), "u", 100) == b"<a>1</a><a>2</a>"
    bombs = gzip.compress(b"x" * 30) * 5
    with pytest.raises(BadUpstreamPage, match="over 100 bytes"):
        read_page_body(FakeResponse(bombs, encoding="gzip", piece=piece), "u", 100)
    with pytest.raises(UpstreamError, match="cut short"):
        read_page_body(FakeResponse(body[:-30], encoding="gzip", piece=piece), "u", 100)


@pytest.mark.parametrize(
    "response",
    [
        FakeResponse(b"x" * 10, length=20),  # Content-Length promised more
        FakeResponse(gzip.compress(b"<a>x</a>" * 50)[:-12], encoding="gzip"),  # no gzip end
    ],
    ids=["length", "gzip"],
)
def test_a_body_cut_short_is_an_upstream_error(response) -> None:
    with pytest.raises(UpstreamError, match="cut short"):
        read_page_body(response, "u", 1000)


def test_an_empty_gzip_answer_is_empty() -> None:
    """A 304 may carry Content-Encoding: gzip and no body."""
    assert read_page_body(FakeResponse(b"", length=0, encoding="gzip"), "u", 10) == b""
