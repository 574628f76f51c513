"""What a front cache learns of a page's freshness: no longer than the proxy keeps it
before asking the upstream again, and an uncompressed first answer to a gzip client that
it must not keep in place of the gzip form; and what the proxy learns from its index's."""

from __future__ import annotations

import gzip
import json
import time

from tests.support.proxy import PIP_ACCEPT
from tests.support.scripted import reply

JSON_TYPE = "application/vnd.pypi.simple.v1+json"

GZIP = {"Accept": PIP_ACCEPT, "Accept-Encoding": "gzip"}


def test_a_page_kept_a_while_is_cacheable_for_what_is_left_of_its_ttl(proxy, upstream_json) -> None:
    """A front cache keeps a page until the proxy's own copy would be refreshed, so no
    page outlives the index TTL counted from the upstream's answer; a 304 says the same."""
    running = proxy((upstream_json, 3.0))
    for path in ("/index/alpha/", "/index/"):
        fetched = running.get(path, {"Accept": PIP_ACCEPT})
        assert fetched.status == 200 and fetched.headers["Cache-Control"] == "max-age=3, public", path
    time.sleep(1.2)
    for path in ("/index/alpha/", "/index/"):
        kept = running.get(path, {"Accept": PIP_ACCEPT})
        assert kept.status == 200 and kept.headers["Cache-Control"] == "max-age=2, public", path
        assert "Age" not in kept.headers  # the lifetime left says it: nginx reads no Age
        again = running.get(path, {"Accept": PIP_ACCEPT, "If-None-Match": kept.headers["ETag"]})
        assert again.status == 304 and again.headers["Cache-Control"] == kept.headers["Cache-Control"]


def _until_gzipped(running, path: str) -> object:
    """The first gzip answer for *path*, once its compression after the answer is done."""
    deadline = time.monotonic() + 10
    while True:
        answer = running.get(path, GZIP)
        if answer.headers.get("Content-Encoding") == "gzip" or time.monotonic() > deadline:
            return answer
        time.sleep(0.05)


def test_the_uncompressed_first_answer_to_a_gzip_client_is_not_kept(proxy, upstream_json) -> None:
    running = proxy(upstream_json)
    path = "/index/gamma/"  # large enough to be worth compressing
    first = running.get(path, GZIP)
    assert first.status == 200 and "Content-Encoding" not in first.headers
    assert first.headers["Cache-Control"] == "no-cache"  # RFC 9111 5.2.2.4: asked again before reuse
    later = _until_gzipped(running, path)
    assert later.headers.get("Content-Encoding") == "gzip" and later.headers["Cache-Control"] == "max-age=600, public"
    assert gzip.decompress(later.body) == first.body and later.headers["ETag"] != first.headers["ETag"]
    # A cache revalidating the identity form it kept gets the gzip form, then keeps that.
    revalidated = running.get(path, {**GZIP, "If-None-Match": first.headers["ETag"]})
    assert revalidated.status == 200 and revalidated.headers["ETag"] == later.headers["ETag"]
    again = running.get(path, {**GZIP, "If-None-Match": later.headers["ETag"]})
    assert again.status == 304 and again.headers["Cache-Control"] == "max-age=600, public"
    # An identity client's form is final: kept for the page's lifetime.
    plain = running.get(path, {"Accept": PIP_ACCEPT})
    assert plain.headers["Cache-Control"] == "max-age=600, public"


def test_a_gzip_form_kept_from_before_a_restart_is_still_good(proxy, upstream_json) -> None:
    """After a restart the first answer to a gzip client is the identity form again; a
    client that kept the gzip form (uv's cache) gets a 304, not the page twice over."""
    path = "/index/gamma/"
    kept = _until_gzipped(proxy(upstream_json), path)
    assert kept.headers.get("Content-Encoding") == "gzip"
    restarted = proxy(upstream_json)
    again = restarted.get(path, {**GZIP, "If-None-Match": kept.headers["ETag"]})
    assert again.status == 304 and again.headers["ETag"] == kept.headers["ETag"]
    assert again.headers["Cache-Control"] == "max-age=600, public"


def _revalidated_with_304s(scripted) -> None:
    """/simple/tiered/: a page with an ETag its index says not to reuse unasked, then a
    304 without Cache-Control for each revalidation."""
    page = {"meta": {"api-version": "1.0"}, "name": "tiered", "files": [
        {"filename": "tiered-1.0.tar.gz", "url": "/files/tiered-1.0.tar.gz", "hashes": {"sha256": "ab" * 32}}]}
    body = json.dumps(page).encode()

    def answer(handler) -> None:
        if handler.headers.get("If-None-Match") == '"v1"':
            reply(handler, 304, {"ETag": '"v1"'}, b"")
        else:
            reply(handler, 200, {"Content-Type": JSON_TYPE, "ETag": '"v1"', "Cache-Control": "no-cache"}, body)

    scripted.routes["/simple/tiered/"] = answer


def test_a_304_without_cache_control_keeps_the_no_cache_its_page_said(proxy, scripted) -> None:
    """RFC 9111 4.3.4: a 304 updates only the header fields it carries. A page its index
    said not to reuse unasked (a central proxpi-min with uploads) stays so when the
    index's revalidations leave Cache-Control out."""
    _revalidated_with_304s(scripted)
    running = proxy(scripted.url)
    for _ in range(3):
        assert "tiered-1.0.tar.gz" in running.get("/index/tiered/").text
    assert scripted.hits["/simple/tiered/"] == 3
    running.stop()  # the saved copy remembers it too
    restarted = proxy(scripted.url, cache_dir=running.settings.cache_dir)
    for _ in range(3):
        assert "tiered-1.0.tar.gz" in restarted.get("/index/tiered/").text
    assert scripted.hits["/simple/tiered/"] == 6


def test_a_304_that_lifts_a_no_cache_is_remembered_across_a_restart(proxy, scripted) -> None:
    """A 304 carrying Cache-Control replaces the page's (RFC 9111 4.3.4), in the saved
    copy too: after a restart (which revalidates a saved page once) the page is reused
    for its TTL, not asked again every time."""
    page = {"meta": {"api-version": "1.0"}, "name": "tiered", "files": [
        {"filename": "tiered-1.0.tar.gz", "url": "/files/tiered-1.0.tar.gz", "hashes": {"sha256": "ab" * 32}}]}
    body = json.dumps(page).encode()
    lifted = []

    def answer(handler) -> None:
        if handler.headers.get("If-None-Match") != '"v1"':
            reply(handler, 200, {"Content-Type": JSON_TYPE, "ETag": '"v1"', "Cache-Control": "no-cache"}, body)
        elif not lifted:  # the first revalidation lifts the no-cache; later 304s say nothing
            lifted.append(True)
            reply(handler, 304, {"ETag": '"v1"', "Cache-Control": "max-age=600"}, b"")
        else:
            reply(handler, 304, {"ETag": '"v1"'}, b"")

    scripted.routes["/simple/tiered/"] = answer
    running = proxy(scripted.url)
    for _ in range(3):  # asked again once (the 304), then reused
        assert "tiered-1.0.tar.gz" in running.get("/index/tiered/").text
    assert scripted.hits["/simple/tiered/"] == 2
    running.stop()
    restarted = proxy(scripted.url, cache_dir=running.settings.cache_dir)
    for _ in range(3):
        assert "tiered-1.0.tar.gz" in restarted.get("/index/tiered/").text
    assert scripted.hits["/simple/tiered/"] == 3


def test_a_page_fetched_again_unchanged_from_an_index_without_validators_keeps_its_gzip_form(proxy, scripted) -> None:
    """An index that sends no ETag nor Last-Modified answers each refresh in full: the
    same page again is kept as it was (its ETag, its compressed form), not taken as new."""
    files = [{"filename": f"plenty-1.{n}.tar.gz", "url": f"/files/plenty-1.{n}.tar.gz", "hashes": {"sha256": f"{n:064x}"}}
             for n in range(400)]  # large enough to be worth compressing
    body = json.dumps({"meta": {"api-version": "1.0"}, "name": "plenty", "files": files}).encode()
    scripted.routes["/simple/plenty/"] = (200, {"Content-Type": JSON_TYPE}, body)
    running = proxy((scripted.url, 0.0))  # every request asks the index again
    first = running.get("/index/plenty/", GZIP)
    assert first.status == 200 and "Content-Encoding" not in first.headers
    later = _until_gzipped(running, "/index/plenty/")
    assert later.headers.get("Content-Encoding") == "gzip", later.headers
    again = running.get("/index/plenty/", GZIP)
    assert again.headers.get("Content-Encoding") == "gzip" and again.headers["ETag"] == later.headers["ETag"]
    assert scripted.hits["/simple/plenty/"] >= 3  # each one asked, as the TTL of 0 says


def test_a_page_its_index_confirms_with_a_304_counts_as_sent_from_the_cache(proxy, scripted) -> None:
    """The dashboard's upstream traffic saved counts bytes by where they came from: a
    page revalidated (304), or served stale, was sent from the proxy's copy."""
    _revalidated_with_304s(scripted)
    running = proxy(scripted.url)
    sizes = [len(running.get("/index/tiered/").body) for _ in range(3)]
    assert scripted.hits["/simple/tiered/"] == 3
    metrics = running.get("/metrics").text
    assert f'\nproxpi_bytes_sent_total{{source="upstream"}} {sizes[0]}\n' in metrics, metrics
    assert f'\nproxpi_bytes_sent_total{{source="cache"}} {sizes[1] + sizes[2]}\n' in metrics
