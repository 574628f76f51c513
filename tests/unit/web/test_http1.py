"""Unit tests for proxpi_min/web/http1.py's pure helpers: what a request target looks
like in the log, and how one is split up (or refused)."""

from __future__ import annotations

import pytest

from proxpi_min.core.errors import BadRequest
from proxpi_min.web.http1 import Target, logged_target, split_target


@pytest.mark.parametrize(
    "target, logged",
    [
        ("/index/alpha/", "/index/alpha/"),
        ("/index/alpha/?format=application/vnd.pypi.simple.v1+json", "/index/alpha/?format=application/vnd.pypi.simple.v1+json"),
        ("/index/alpha/?token=s3cret", "/index/alpha/?token=***"),
        ("/index/?format=text/html&access_token=s3cret&x=", "/index/?format=text/html&access_token=***&x=***"),
        ("/index/?s3cret", "/index/?***"),
        ("/index/?a=1&&b=2", "/index/?a=***&&b=***"),
        ("/index/?", "/index/?"),
        ("/index/\x1b[31m?token=\n", "/index/\\x1b[31m?token=***"),
    ],
)
def test_logged_target_hides_query_values_but_format(target: str, logged: str) -> None:
    assert logged_target(target) == logged


@pytest.mark.parametrize(
    "target, split",
    [
        ("/index/alpha/?format=json", Target(["index", "alpha", ""], "format=json")),
        ("/index/a%20b/", Target(["index", "a b", ""], "")),
        ("http://x/health", Target(["health"], "")),  # absolute form (RFC 9112 3.2.2)
        ("http://x", Target([], "")),  # an empty path is "/"
    ],
)
def test_split_target(target: str, split: Target) -> None:
    assert split_target(target) == split


@pytest.mark.parametrize("target", ["*", "health", "index/", "x:443", "http:health"])
def test_split_target_refuses_what_is_neither_a_path_nor_an_absolute_url(target: str) -> None:
    """RFC 9112 3.2: "*" (3.2.4) is for OPTIONS, which the routes answer before splitting."""
    with pytest.raises(BadRequest, match="neither a path nor an absolute URL"):
        split_target(target)
