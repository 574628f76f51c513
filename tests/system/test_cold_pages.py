"""A cold page answers the bytes and headers the same page answers warm, and after a
restart from its saved copy (kept as the index sent it)."""

from __future__ import annotations

import glob
import gzip
import os

import pytest

from proxpi_min.index.index_cache import UPSTREAM_ACCEPT
from tests.support.proxy import PIP_ACCEPT, http

HTML = "text/html"
# The headers that describe the page itself; Date and the connection's differ by nature.
PAGE_HEADERS = ("Content-Type", "Cache-Control", "Vary", "X-Proxpi-Policy")


def _answers(p) -> dict:
    """{(Accept, gzip?): (status, page headers, body decoded, ETag without coding)}."""
    out = {}
    for accept in (PIP_ACCEPT, HTML):
        for coding in ("gzip", "identity"):
            result = p.get("/index/beta/", {"Accept": accept, "Accept-Encoding": coding})
            body = result.body
            if result.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            etag = (result.headers.get("ETag") or "").replace("-gzip", "")
            out[(accept, coding)] = (
                result.status, [(name, result.headers.get(name)) for name in PAGE_HEADERS], body, etag)
    return out


@pytest.mark.parametrize("fmt", ["json", "html"])
def test_cold_warm_and_restarted_answers_are_the_same(proxy, upstream_factory, fmt):
    upstream = upstream_factory(fmt)
    first = proxy(upstream)
    cold = _answers(first)
    assert all(status == 200 for status, *_ in cold.values())
    assert _answers(first) == cold  # warm: from memory, gzipped once compressed
    first.stop()  # its pages saved
    [saved] = glob.glob(os.path.join(first.settings.cache_dir, "index", "*", "beta.json"))
    with open(saved, "rb") as file:
        head, _, body = file.read().partition(b"\n")
    sent = http("GET", f"{upstream.base_url}/simple/beta/", {"Accept": UPSTREAM_ACCEPT}).body
    assert b'"format":2' in head and body == sent  # as the index sent it
    upstream.reset_hits()
    again = proxy(upstream, cache_dir=first.settings.cache_dir)
    assert _answers(again) == cold  # read back from the saved copy, which upstream confirmed
    assert [r.headers.get("if-none-match") is not None for r in upstream.requests] == [True]
