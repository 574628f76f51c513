"""Unit tests for proxpi_min/web/http1.py's pure helpers: what a request target looks
like in the log."""

from __future__ import annotations

import pytest

from proxpi_min.web.http1 import logged_target


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
