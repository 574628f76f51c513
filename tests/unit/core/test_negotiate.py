"""Unit tests for proxpi_min/core/negotiate.py: media types (PEP 691) and content codings."""

from __future__ import annotations

from typing import Optional

import pytest

from proxpi_min.core.errors import NotAcceptable
from proxpi_min.core.negotiate import accepts_gzip, choose_media_type
from proxpi_min.core.simple import HTML_TYPE, JSON_TYPE, TEXT_HTML

PIP_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)
UV_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
    "text/html;q=0.01"
)
POETRY_ACCEPT = "application/vnd.pypi.simple.v1+json, */*;q=0.1"
LATEST_JSON = "application/vnd.pypi.simple.latest+json"
LATEST_HTML = "application/vnd.pypi.simple.latest+html"


# ---------------------------------------------------------------- negotiation


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        # what installers send
        (PIP_ACCEPT, JSON_TYPE),
        (UV_ACCEPT, JSON_TYPE),
        (POETRY_ACCEPT, JSON_TYPE),
        ("text/html", TEXT_HTML),  # pip before 22.2
        # no header, empty header, wildcards
        (None, TEXT_HTML),
        ("", TEXT_HTML),
        ("  ", TEXT_HTML),
        ("*/*", TEXT_HTML),
        ("text/*", TEXT_HTML),
        ("application/*", HTML_TYPE),  # v1+json and v1+html tie: HTML
        # single types
        (JSON_TYPE, JSON_TYPE),
        (HTML_TYPE, HTML_TYPE),
        (LATEST_JSON, JSON_TYPE),
        (LATEST_HTML, HTML_TYPE),
        ("APPLICATION/VND.PYPI.SIMPLE.V1+JSON", JSON_TYPE),
        ("text/html;charset=utf-8", TEXT_HTML),
        # ties go to HTML, as on PyPI
        (f"{JSON_TYPE}, {HTML_TYPE}", HTML_TYPE),
        (f"{JSON_TYPE}, text/html", TEXT_HTML),
        (f"{JSON_TYPE};q=0.5, text/html;q=0.5", TEXT_HTML),
        (f"*/*;q=0.5, {JSON_TYPE};q=0.5", TEXT_HTML),
        (f"{JSON_TYPE}, */*", TEXT_HTML),
        (f"text/html, {HTML_TYPE}", TEXT_HTML),
        # higher q wins, whatever the order
        (f"text/html;q=0.3, {JSON_TYPE};q=0.2", TEXT_HTML),
        (f"text/html;q=0.2, {JSON_TYPE};q=0.3", JSON_TYPE),
        (f"text/html;q=0.5, {HTML_TYPE};q=0.8", HTML_TYPE),
        (f"{HTML_TYPE};q=0.1, {JSON_TYPE};q=0.11", JSON_TYPE),
        (f"{JSON_TYPE};q=0.999, {HTML_TYPE};q=0.998, text/html;q=0.997", JSON_TYPE),
        # q=0 refuses a type even with a wildcard present
        (f"*/*, {JSON_TYPE};q=0", TEXT_HTML),
        ("*/*, text/html;q=0", HTML_TYPE),
        (f"*/*, text/html;q=0, {HTML_TYPE};q=0", JSON_TYPE),
        (f"{JSON_TYPE}, text/html;q=0.5, {HTML_TYPE};q=0", JSON_TYPE),
        (f"*/*;q=0.1, {JSON_TYPE};q=0", TEXT_HTML),
        # the most specific range decides (RFC 9110 12.5.1)
        (f"text/html;q=0.1, text/*;q=0.9, {JSON_TYPE};q=0.5", JSON_TYPE),
        (f"text/*;q=0.1, text/html;q=0.9, {JSON_TYPE};q=0.5", TEXT_HTML),
        ("*/*;q=0.9, application/*;q=0.1, text/html;q=0.2", TEXT_HTML),
        # unknown parts are ignored
        (f"image/png, {JSON_TYPE};q=0.4", JSON_TYPE),
        (f"application/json, {HTML_TYPE};q=0.1", HTML_TYPE),
        # a q that is no number in [0, 1] counts as 0
        (f"text/html;q=nan, {JSON_TYPE};q=0.1", JSON_TYPE),
        (f"{JSON_TYPE};q=NaN, text/html;q=0.5", TEXT_HTML),
        (f"{JSON_TYPE};q=inf, text/html;q=0.5", TEXT_HTML),
        (f"{JSON_TYPE};q=lots, text/html;q=0.5", TEXT_HTML),
        (f"{JSON_TYPE};q=7, text/html;q=0.5", JSON_TYPE),  # clamped to 1
    ],
)
def test_choose_media_type(accept: Optional[str], expected: str) -> None:
    assert choose_media_type(accept, None) == expected


@pytest.mark.parametrize(
    "accept",
    [
        "application/json",
        "text/plain",
        "image/png, application/xml",
        "*/*;q=0",
        f"{JSON_TYPE};q=0",
        f"text/html;q=0, {HTML_TYPE};q=0",
        f"{JSON_TYPE};q=0, text/html;q=0, {HTML_TYPE};q=0",
    ],
)
def test_choose_media_type_not_acceptable(accept: str) -> None:
    with pytest.raises(NotAcceptable) as info:
        choose_media_type(accept, None)
    assert info.value.status == 406


@pytest.mark.parametrize(
    ("format_param", "accept", "expected"),
    [
        (JSON_TYPE, None, JSON_TYPE),
        (JSON_TYPE, "text/html", JSON_TYPE),
        ("application/vnd.pypi.simple.v1 json", "text/html", JSON_TYPE),  # "+" form-decoded
        (" application/vnd.pypi.simple.v1 json ", None, JSON_TYPE),
        (HTML_TYPE, PIP_ACCEPT, HTML_TYPE),
        ("application/vnd.pypi.simple.v1 html", PIP_ACCEPT, HTML_TYPE),
        ("text/html", PIP_ACCEPT, TEXT_HTML),
        ("text/html", "application/json", TEXT_HTML),  # Accept alone would be a 406
        (LATEST_JSON, None, JSON_TYPE),
        ("application/vnd.pypi.simple.latest html", None, HTML_TYPE),
        ("Application/Vnd.Pypi.Simple.V1+JSON", None, JSON_TYPE),
    ],
)
def test_format_overrides_accept(format_param: str, accept: Optional[str], expected: str) -> None:
    assert choose_media_type(accept, format_param) == expected


@pytest.mark.parametrize(
    "format_param", ["json", "html", "*/*", "application/json", "text/*", "text/plain", f"{JSON_TYPE};q=1"]
)
def test_unknown_format_is_not_acceptable(format_param: str) -> None:
    with pytest.raises(NotAcceptable):
        choose_media_type(PIP_ACCEPT, format_param)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, False),
        ("", False),
        ("gzip", True),
        ("GZIP", True),
        ("x-gzip", True),
        ("gzip, deflate, zstd", True),  # uv
        ("gzip, deflate, br", True),
        ("deflate, gzip;q=0.5", True),
        ("br;q=1.0, gzip;q=0.8, *;q=0.1", True),
        ("*", True),
        ("gzip;q=0", False),
        ("gzip; q=0.0", False),
        ("gzip;q=0.001", True),
        ("deflate", False),
        ("identity", False),
        ("br, zstd", False),
        ("*;q=0", False),
        ("identity;q=1, *;q=0", False),
        ("gzip;q=0, *", False),
    ],
)
def test_accepts_gzip(header: Optional[str], expected: bool) -> None:
    assert accepts_gzip(header) is expected


@pytest.mark.parametrize(("header", "expected"), [("*;q=0, gzip", True), ("*, gzip;q=0", False)])
def test_accepts_gzip_explicit_entry_beats_wildcard(header: str, expected: bool) -> None:
    assert accepts_gzip(header) is expected
