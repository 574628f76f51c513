"""Unit tests for proxpi_min/core/multipart.py: forms split into parts, fed in any chunks."""

from __future__ import annotations

import pytest

from proxpi_min.core.errors import BadRequest
from proxpi_min.core.multipart import END, MultipartParser, PartHead, boundary_of
from tests.support.dists import make_wheel
from tests.support.uploads import encode_form, twine_fields


def _parse(body: bytes, boundary: bytes, chunk: int) -> list:
    """(field, file name, bytes) of every part, feeding *chunk* bytes at a time."""
    parser = MultipartParser(boundary)
    parts, current = [], None
    for start in range(0, len(body), chunk):
        for piece in parser.feed(body[start : start + chunk]):
            if isinstance(piece, PartHead):
                current = [piece.name, piece.filename, b""]
            elif piece is END:
                parts.append(tuple(current))
                current = None
            else:
                assert current is not None
                current[2] += piece
    parser.close()
    return parts


@pytest.mark.parametrize("chunk", [1, 2, 7, 64, 1000, 1 << 20])
def test_a_twine_form_parses_the_same_in_any_chunks(chunk):
    dist = make_wheel("acme-lib", "1.0")
    fields = twine_fields(dist)
    content_type, body = encode_form(fields, dist.filename, dist.content)
    parts = _parse(body, boundary_of(content_type), chunk)
    assert parts[:-1] == [(name, None, value.encode()) for name, value in fields]
    assert parts[-1] == ("content", dist.filename, dist.content)


def test_content_holding_boundary_lookalikes_is_kept_whole():
    boundary = "b0undary"
    content = b"--b0undary\r\n--b0undar\r\n\r\n-b0undaryX\r\n--b0undarX" + bytes(range(256)) * 4
    content_type, body = encode_form([("name", "x")], "x-1.0.tar.gz", content, boundary)
    # "\r\n--b0undary" inside content would end the part: not there, so kept whole.
    assert _parse(body, boundary_of(content_type), 5)[-1] == ("content", "x-1.0.tar.gz", content)


def test_preamble_epilogue_and_padding_are_ignored():
    body = b"preamble\r\n--B  \r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--B--\r\nepilogue"
    assert _parse(body, b"B", 3) == [("a", None, b"1")]


def test_a_quoted_boundary_and_a_utf8_field():
    boundary = boundary_of('multipart/form-data; boundary="a b:c"')
    assert boundary == b"a b:c"
    body = '--a b:c\r\nContent-Disposition: form-data; name="s"\r\n\r\nénergie\r\n--a b:c--\r\n'.encode()
    assert _parse(body, boundary, 4) == [("s", None, "énergie".encode())]


@pytest.mark.parametrize(
    "content_type",
    [None, "application/json", "multipart/form-data", "multipart/form-data; boundary=", "multipart/mixed; boundary=x",
     "multipart/form-data; boundary=" + "x" * 71],
)
def test_not_a_form_type(content_type):
    with pytest.raises(BadRequest):
        boundary_of(content_type)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"--B\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n", "ended before"),
        (b"--B\r\nContent-Disposition: attachment; name=a\r\n\r\n1\r\n--B--", "form-data"),
        (b"--B\r\nContent-Disposition: form-data\r\n\r\n1\r\n--B--", "field name"),
        (b"--B\r\nX-A: " + b"a" * 20000 + b"\r\n\r\n1\r\n--B--", "headers pass"),
        (b"--Bjunk\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--B--", "other text"),
        (b"", "ended before"),
    ],
)
def test_malformed_bodies_are_refused(body, why):
    with pytest.raises(BadRequest, match=why):
        _parse(body, b"B", 11) if body else MultipartParser(b"B").close()


def test_too_many_parts_are_refused():
    body = b"".join(b"--B\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n" for _ in range(1001)) + b"--B--\r\n"
    with pytest.raises(BadRequest, match="more than 1000 parts"):
        _parse(body, b"B", 4096)
