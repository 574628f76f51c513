"""Unit tests for proxpi_min/core/urls.py: the file name a URL ends in, credentials kept out of a URL shown."""

from __future__ import annotations

import pytest

from proxpi_min.core.urls import last_segment, redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://files.example/a/b/alpha-1.0-py3-none-any.whl", "alpha-1.0-py3-none-any.whl"),
        ("https://files.example/a/alpha%2B1.0.tar.gz?x=1#sha256=00", "alpha+1.0.tar.gz"),
        ("dist/alpha-1.0.tar.gz", "alpha-1.0.tar.gz"),
        ("alpha-1.0.zip", "alpha-1.0.zip"),
        ("https://files.example/dir/", ""),
        ("", ""),
    ],
)
def test_last_segment(url: str, expected: str) -> None:
    assert last_segment(url) == expected


def test_redact_url_keeps_a_url_without_credentials_as_it_is() -> None:
    assert redact_url("https://files.example/simple/") == "https://files.example/simple/"
    assert redact_url("https://user:secret@files.example/simple/") == "https://files.example/simple/"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:password@host.example/simple/", "https://host.example/simple/"),
        ("https://token@host.example/simple/", "https://host.example/simple/"),
        ("https://user:p@ss@host.example:8443/x?q=1", "https://host.example:8443/x?q=1"),
        ("https://host.example/simple/", "https://host.example/simple/"),
        ("https://host.example/a@b/", "https://host.example/a@b/"),  # "@" in the path only
        ("file:///srv/simple/", "file:///srv/simple/"),
        # Proxies are often given without a scheme (HTTPS_PROXY=user:pw@proxy:3128).
        ("user:s3cret@proxy.example:3128", "proxy.example:3128"),
        ("user:s3cret@proxy.example:bad/", "proxy.example:bad/"),
        ("proxy.example:3128", "proxy.example:3128"),
        # urlsplit refuses these (an unclosed IPv6 bracket): the credentials go all the same.
        ("https://user:p@ss@[::1/simple/", "https://[::1/simple/"),
        ("user:s3cret@[::1:3128", "[::1:3128"),
        ("http://[::1/a@b/", "http://[::1/a@b/"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected
