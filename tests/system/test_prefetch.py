"""Prefetch: a served .metadata's dependencies' pages fetched before the client asks,
through the one flight per page, within the guard rails, never offline; its metrics."""

from __future__ import annotations

import json
import threading
import time
import types

import pytest

from proxpi_min.index import prefetch as prefetch_module
from tests.support.cache_dir import sized_wheel, stored_paths
from tests.support.dists import make_wheel
from tests.support.markers import needs_pip_json_metadata
from tests.support.prometheus import parse, sample
from tests.support.proxy import run_pip

PIP = {"User-Agent": "pip/26.0 test"}


@pytest.fixture
def index(upstream_factory):
    """beta needs alpha (and gamma only with an extra); no metadata upstream."""
    upstream = upstream_factory("html", None)
    upstream.beta = make_wheel("beta", "1.0", requires=["alpha>=1.0", "gamma; extra == 'x'"])
    for dist in (upstream.beta, make_wheel("alpha", "1.0"), make_wheel("gamma", "1.0")):
        upstream.add(dist, metadata=False)
    return upstream


def _metrics(p) -> dict:
    return parse(p.get("/metrics").text)[1]


def _pages(upstream) -> list:
    return [r.path for r in upstream.requests if r.path.startswith("/simple/")]


def test_dependency_pages_fetched_before_the_client_asks(proxy, index):
    p = proxy(index, prefetch="pages")
    assert p.get(f"/index/beta/{index.beta.filename}.metadata").status == 200
    assert p.server.prefetch.wait(10)
    assert _pages(index) == ["/simple/beta/", "/simple/alpha/"]  # gamma: only with an extra
    assert p.get("/index/alpha/").status == 200
    assert _pages(index) == ["/simple/beta/", "/simple/alpha/"]  # answered from memory
    samples = _metrics(p)
    assert sample(samples, "proxpi_prefetch_total", kind="page", outcome="fetched") == 1
    assert sample(samples, "proxpi_prefetch_used_total", kind="page") == 1
    assert sample(samples, "proxpi_cache_hits_total", kind="page") == 1
    assert json.loads(p.get("/", {"Accept": "application/json"}).body)["prefetch"] == {"fetched": 1, "used": 1}
    assert "fetched ahead, then asked for" in p.get("/").text


def test_upstream_metadata_drives_prefetch_too(proxy, upstream_factory, dists):
    upstream = upstream_factory("json", "root")  # beta 1.0 needs alpha; metadata upstream
    p = proxy(upstream)
    assert p.get(f"/index/beta/{dists.beta_1.filename}.metadata").body == dists.beta_1.metadata
    assert p.server.prefetch.wait(10)
    assert "/simple/alpha/" in _pages(upstream)
    # Cached now: served again from the cache dir, it prefetches again (the page is fresh).
    assert p.get(f"/index/beta/{dists.beta_1.filename}.metadata").status == 200
    assert p.server.prefetch.wait(10)
    assert sample(_metrics(p), "proxpi_prefetch_total", kind="page", outcome="fresh") == 1


def test_client_joins_the_prefetch_of_a_page(proxy, index):
    p = proxy(index)
    upstream = p.server.upstream
    fetch, release, calls = upstream.fetch_page, threading.Event(), []

    def held_fetch(url, *args, **kwargs):
        if url.endswith("/alpha/"):
            calls.append(url)
            release.wait(10)
        return fetch(url, *args, **kwargs)

    upstream.fetch_page = held_fetch
    assert p.get(f"/index/beta/{index.beta.filename}.metadata").status == 200
    got = []
    client = threading.Thread(target=lambda: got.append(p.get("/index/alpha/")))
    client.start()
    time.sleep(0.3)  # sequencing only: the client's request is waiting on the prefetch's fetch
    release.set()
    client.join(10)
    assert got and got[0].status == 200 and "alpha-1.0" in got[0].text
    assert len(calls) == 1
    assert _pages(index).count("/simple/alpha/") == 1


def test_prefetch_obeys_the_deny_list(proxy, index):
    p = proxy(index, deny=(("alpha", None),))
    assert p.get(f"/index/beta/{index.beta.filename}.metadata").status == 200
    assert p.server.prefetch.wait(10)
    assert "/simple/alpha/" not in _pages(index)
    assert sample(_metrics(p), "proxpi_prefetch_total", kind="page", outcome="refused") == 1


@pytest.mark.parametrize("policy", ["deny", "allow"])
def test_a_refused_prefetch_is_no_refusal_of_a_request(proxy, index, policy):
    """No client asked for alpha: proxpi_policy_refused_total counts only what clients ask."""
    p = proxy(index, **({"deny": (("alpha", None),)} if policy == "deny" else {"allow": ("beta",)}))
    assert p.get(f"/index/beta/{index.beta.filename}.metadata").status == 200
    assert p.server.prefetch.wait(10)
    samples = _metrics(p)
    assert sample(samples, "proxpi_prefetch_total", kind="page", outcome="refused") == 1
    assert sample(samples, "proxpi_policy_refused_total", policy=policy) == 0
    assert p.get("/index/alpha/").status == 403  # a client's request still counts
    assert sample(_metrics(p), "proxpi_policy_refused_total", policy=policy) == 1


def test_a_prefetch_whose_refresh_failed_is_an_error(proxy, index):
    """The stale copy kept is no page fetched ahead, and a client reading it no use of one."""
    p = proxy((index, 0))  # TTL 0: every page is expired at once, no waiting
    assert p.get("/index/alpha/").status == 200
    index.fail(index.page_path("alpha"), "500")
    assert p.get(f"/index/beta/{index.beta.filename}.metadata").status == 200
    assert p.server.prefetch.wait(10)
    samples = _metrics(p)
    assert sample(samples, "proxpi_upstream_requests_total", index=index.url, kind="page", outcome="error") == 1
    assert sample(samples, "proxpi_prefetch_total", kind="page", outcome="error") == 1
    assert sample(samples, "proxpi_prefetch_total", kind="page", outcome="fetched") == 0
    stale = p.get("/index/alpha/")  # in the refresh's back-off: the stale copy, upstream not asked
    assert stale.status == 200 and stale.headers.get("X-Proxpi-Stale") == "1"
    assert sample(_metrics(p), "proxpi_prefetch_used_total", kind="page") == 0


def test_a_metadata_prefetch_asks_for_each_page_once_with_no_ttl(proxy, index):
    """TTL 0: every page is stale as soon as it is fetched, so the guess must take its
    wheel from the page its own job fetched, not ask the index for that page again."""
    p = proxy((index, 0), prefetch="metadata")
    assert p.get(f"/index/beta/{index.beta.filename}.metadata", PIP).status == 200
    assert p.server.prefetch.wait(10)
    assert _pages(index) == ["/simple/beta/", "/simple/alpha/"]
    assert [r.path for r in index.requests if "range" in r.headers] == [
        f"/files/beta/{index.beta.filename}", "/files/alpha/alpha-1.0-py3-none-any.whl"]
    assert sample(_metrics(p), "proxpi_prefetch_total", kind="metadata", outcome="fetched") == 1


def test_no_prefetch_when_off_or_offline(proxy, index):
    off = proxy(index, prefetch="off")
    assert off.server.prefetch is None
    assert off.get(f"/index/beta/{index.beta.filename}.metadata").status == 200
    assert off.get(f"/index/beta/{index.beta.filename}").status == 200
    assert _pages(index) == ["/simple/beta/"]
    off.stop()
    offline = proxy(index, cache_dir=off.settings.cache_dir, offline=True)
    assert offline.server.prefetch is None
    assert offline.get(f"/index/beta/{index.beta.filename}.metadata").status == 200
    assert _pages(index) == ["/simple/beta/"]


def test_metadata_mode_prefetches_the_wheel_the_client_picks(proxy, upstream_factory):
    upstream = upstream_factory("json", None)
    app = make_wheel("app", "1.0", requires=["lib"])
    newest = make_wheel("lib", "2.0")
    for dist in (app, make_wheel("lib", "1.0"), newest, make_wheel("lib", "3.0rc1")):
        upstream.add(dist, metadata=False)
    p = proxy(upstream, prefetch="metadata")
    assert p.get(f"/index/app/{app.filename}.metadata").status == 200
    assert p.server.prefetch.wait(10)
    assert [r.path for r in upstream.requests if "range" in r.headers] == [
        f"/files/app/{app.filename}", f"/files/lib/{newest.filename}"]
    assert p.get("/index/lib/").status == 200
    assert p.get(f"/index/lib/{newest.filename}.metadata").body == newest.metadata
    assert len([r for r in upstream.requests if not r.path.startswith("/simple/")]) == 2  # nothing more
    samples = _metrics(p)
    assert sample(samples, "proxpi_prefetch_total", kind="metadata", outcome="fetched") == 1
    assert sample(samples, "proxpi_prefetch_used_total", kind="metadata") == 1
    assert sample(samples, "proxpi_prefetch_used_total", kind="page") == 1


def test_a_guess_passes_over_wheels_whose_requires_python_the_client_lacks(proxy, upstream_factory):
    """pip and uv pass over a version whose Requires-Python their Python does not
    satisfy: so does the guess, read from the Python the client's User-Agent names."""
    upstream = upstream_factory("json", None)
    app = make_wheel("app", "1.0", requires=["lib"])
    usable = make_wheel("lib", "1.0", requires_python=">=3.8")
    for dist in (app, usable, make_wheel("lib", "2.0", requires_python=">=3.99")):
        upstream.add(dist, metadata=False)
    p = proxy(upstream, prefetch="metadata")
    agent = {"User-Agent": 'pip/26.0 {"python":"3.11.4","implementation":{"name":"CPython","version":"3.11.4"}}'}
    assert p.get(f"/index/app/{app.filename}.metadata", agent).status == 200
    assert p.server.prefetch.wait(10)
    assert [r.path for r in upstream.requests if "range" in r.headers] == [
        f"/files/app/{app.filename}", f"/files/lib/{usable.filename}"]


def test_metadata_mode_fetches_the_index_own_metadata(proxy, upstream_factory, dists):
    upstream = upstream_factory("html", "root")  # beta needs alpha; metadata upstream
    p = proxy(upstream, prefetch="metadata")
    assert p.get(f"/index/beta/{dists.beta_1.filename}.metadata").status == 200
    assert p.server.prefetch.wait(10)
    assert upstream.hits(f"{dists.alpha_2.filename}.metadata") == 1
    assert p.get(f"/index/alpha/{dists.alpha_2.filename}.metadata").body == dists.alpha_2.metadata
    assert upstream.hits(f"{dists.alpha_2.filename}.metadata") == 1


@pytest.mark.parametrize("how", ["index-own", "whole-wheel"])
def test_upstream_requests_for_metadata_are_counted_under_their_index(proxy, upstream_factory, dists, how):
    """Never under index="": the prefetch of an index's own .metadata, and the whole
    wheel read for its metadata from an index that ignores Range."""
    upstream = upstream_factory("html", "root" if how == "index-own" else None)
    if how == "index-own":  # beta needs alpha: alpha 2.0's .metadata, prefetched
        p = proxy(upstream, prefetch="metadata")
        assert p.get(f"/index/beta/{dists.beta_1.filename}.metadata").status == 200
        assert p.server.prefetch.wait(10)
        assert upstream.hits(f"{dists.alpha_2.filename}.metadata") == 1
    else:
        wheel = sized_wheel("alpha", "1.0", 300_000)  # past what one ranged read takes
        upstream.add(wheel, metadata=False)
        upstream.honour_ranges = False
        p = proxy(upstream)
        assert p.get(f"/index/alpha/{wheel.filename}.metadata").body == wheel.metadata
        assert upstream.hits(f"/files/alpha/{wheel.filename}") == 2  # the range asked, then the whole wheel
    files = len([r for r in upstream.requests if r.path.startswith("/files/")])
    samples = _metrics(p)
    assert sample(samples, "proxpi_upstream_requests_total", index=upstream.url, kind="file", outcome="ok") == files
    assert not [key for key in samples if key[0] == "proxpi_upstream_requests_total" and ("index", "") in key[1]]


def test_a_guess_never_reads_a_whole_wheel(proxy, upstream_factory):
    """Also the first time the proxy finds that the index ignores Range: beta's metadata
    came from its cached wheel, so alpha's guess is the first ranged read."""
    upstream = upstream_factory("html", None)
    upstream.honour_ranges = False
    beta = make_wheel("beta", "1.0", requires=["alpha"])
    alpha = sized_wheel("alpha", "1.0", 300_000)  # past what one ranged read takes
    for dist in (beta, alpha):
        upstream.add(dist, metadata=False)
    p = proxy(upstream, prefetch="metadata")
    assert p.get(f"/index/beta/{beta.filename}").status == 200
    assert p.get(f"/index/beta/{beta.filename}.metadata").body == beta.metadata
    assert p.server.prefetch.wait(10)
    alpha_gets = [r for r in upstream.requests if r.path.endswith(alpha.filename)]
    assert [r.headers.get("range") is not None for r in alpha_gets] == [True]  # the guess, and no more
    assert stored_paths(p.settings.cache_dir, alpha.filename) == []
    assert sample(_metrics(p), "proxpi_prefetch_total", kind="metadata", outcome="fetched") == 0
    # A client asking is no guess: it gets the metadata, from the whole wheel.
    assert p.get(f"/index/alpha/{alpha.filename}.metadata").body == alpha.metadata


def test_a_closed_prefetcher_queues_nothing(proxy, index):
    """At shutdown the prefetcher stops first, so no fetch writes to closed caches."""
    p = proxy(index)
    p.server.prefetch.close(5)
    assert p.get(f"/index/beta/{index.beta.filename}.metadata").status == 200
    assert p.server.prefetch.wait(5)
    assert _pages(index) == ["/simple/beta/"]
    assert sample(_metrics(p), "proxpi_prefetch_total", kind="page", outcome="fetched") == 0


@pytest.fixture
def dated(upstream_factory):
    """JSON pages with upload times, no metadata upstream: app 1.0 (June 2024, needs lib)
    and 2.0 (2025); lib 1.0 (2023), 1.5 (March 2024) and 2.0 (March 2025); tool 1.0 (May
    2024) and 2.0 (December 2024). A client pinned to app 1.0 locked between June 2024
    and 2025: its lib is 1.5."""
    upstream = upstream_factory("json", None)
    upstream.app = make_wheel("app", "1.0", requires=["lib"])
    upstream.lib_15 = make_wheel("lib", "1.5")
    upstream.lib_2 = make_wheel("lib", "2.0")
    upstream.tool_1 = make_wheel("tool", "1.0")
    upstream.tool_2 = make_wheel("tool", "2.0")
    for dist, uploaded in (
        (upstream.app, "2024-06-01T10:00:00.000001Z"),
        (make_wheel("app", "2.0", requires=["lib"]), "2025-01-01T10:00:00Z"),
        (make_wheel("lib", "1.0"), "2023-01-01T10:00:00Z"),
        (upstream.lib_15, "2024-03-01T10:00:00Z"),
        (upstream.lib_2, "2025-03-01T10:00:00Z"),
        (upstream.tool_1, "2024-05-01T10:00:00Z"),
        (upstream.tool_2, "2024-12-01T10:00:00Z"),
    ):
        upstream.add(dist, metadata=False, upload_time=uploaded)
    return upstream


def _ranged(upstream) -> list:
    return [r.path.rpartition("/")[2] for r in upstream.requests if "range" in r.headers]


def test_a_dependency_metadata_guessed_from_when_the_client_pinned(proxy, dated):
    p = proxy(dated, prefetch="metadata")
    assert p.get(f"/index/app/{dated.app.filename}.metadata", PIP).status == 200
    assert p.server.prefetch.wait(10)
    # app 1.0 came out in June 2024 and 2.0 in 2025: lib 1.5, not the newest.
    assert _ranged(dated) == [dated.app.filename, dated.lib_15.filename]
    assert p.get("/index/lib/", PIP).status == 200
    assert p.get(f"/index/lib/{dated.lib_15.filename}.metadata", PIP).body == dated.lib_15.metadata
    assert p.server.prefetch.wait(10)
    assert _ranged(dated) == [dated.app.filename, dated.lib_15.filename]  # nothing more asked
    samples = _metrics(p)
    assert sample(samples, "proxpi_prefetch_used_total", kind="metadata") == 1


def test_a_dependency_page_in_memory_still_has_its_metadata_guessed(proxy, dated):
    """Another client had the page (a job for another interpreter, say): this client's
    wheel of it may still be unread."""
    p = proxy(dated, prefetch="metadata")
    assert p.get("/index/lib/", {"User-Agent": "uv/0.9 test"}).status == 200
    assert p.get(f"/index/app/{dated.app.filename}.metadata", PIP).status == 200
    assert p.server.prefetch.wait(10)
    assert _ranged(dated) == [dated.app.filename, dated.lib_15.filename]


def test_a_page_the_client_asks_has_its_guessed_metadata_fetched_at_once(proxy, dated):
    p = proxy(dated, prefetch="metadata")
    # Before any pick, a page is only a page: nothing says which version comes next.
    assert p.get("/index/tool/", PIP).status == 200
    assert p.server.prefetch.wait(10)
    assert _ranged(dated) == []
    # tool 1.0 (May 2024; 2.0 came in December): app 1.0 is the app of that time.
    assert p.get(f"/index/tool/{dated.tool_1.filename}.metadata", PIP).status == 200
    assert p.get("/index/app/", PIP).status == 200
    assert p.server.prefetch.wait(10)
    assert _ranged(dated) == [dated.tool_1.filename, dated.app.filename]
    # Another client has picked nothing: its pages are only pages.
    assert p.get("/index/lib/", {"User-Agent": "uv/0.9 test"}).status == 200
    assert p.server.prefetch.wait(10)
    assert _ranged(dated) == [dated.tool_1.filename, dated.app.filename]


def test_a_page_the_client_asks_is_not_fetched_again_for_its_guess_with_no_ttl(proxy, dated):
    p = proxy((dated, 0), prefetch="metadata")
    assert p.get(f"/index/tool/{dated.tool_1.filename}.metadata", PIP).status == 200
    assert p.get("/index/app/", PIP).status == 200
    assert p.server.prefetch.wait(10)
    assert _ranged(dated) == [dated.tool_1.filename, dated.app.filename]
    assert _pages(dated) == ["/simple/tool/", "/simple/app/"]  # the guess used the client's fetch


def test_a_client_that_asks_in_parallel_gets_no_guesses_for_a_while(proxy, dated):
    """uv asks for its pages at once, then for each page's metadata at once: a guess has
    no time to win there, and takes CPU time from the pages being answered."""
    uv = {"User-Agent": "uv/0.9 test"}
    p = proxy(dated, prefetch="metadata")
    now = [1000.0]
    p.server.prefetch._clock = lambda: now[0]  # the minute, without waiting a minute
    upstream = p.server.upstream
    fetch, asked, release = upstream.fetch_page, threading.Event(), threading.Event()

    def held_fetch(url, *args, **kwargs):
        if url.endswith("/tool/"):
            asked.set()
            release.wait(10)
        return fetch(url, *args, **kwargs)

    upstream.fetch_page = held_fetch
    first = []
    thread = threading.Thread(target=lambda: first.append(p.get("/index/tool/", uv)))
    thread.start()
    assert asked.wait(10)
    assert p.get("/index/lib/", uv).status == 200  # while its tool page is under way
    release.set()
    thread.join(10)
    assert first and first[0].status == 200
    assert p.get(f"/index/app/{dated.app.filename}.metadata", uv).status == 200
    assert p.get("/index/tool/", uv).status == 200
    assert p.server.prefetch.wait(10)
    assert _ranged(dated) == [dated.app.filename]  # no guess: neither lib's metadata nor tool's
    # Still in parallel just under a minute after its pages overlapped; then one at a time.
    now[0] += prefetch_module.PARALLEL_MEMORY - 1
    assert p.get(f"/index/app/{dated.app.filename}.metadata", uv).status == 200
    assert p.server.prefetch.wait(10)
    assert _ranged(dated) == [dated.app.filename]
    now[0] += 2
    assert p.get(f"/index/app/{dated.app.filename}.metadata", uv).status == 200
    assert p.server.prefetch.wait(10)
    assert _ranged(dated) == [dated.app.filename, dated.lib_15.filename]


def _joined(p, project: str, filename: str) -> None:
    """Wait until a client's request for *filename*'s metadata reached the prefetcher
    (it then waits on the fetch under way; the prefetcher's own map, looked into)."""
    deadline = time.monotonic() + 10
    while (project, filename) not in p.server.prefetch._readers and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # sequencing only: from there to the wait on the fetch is a few calls


@pytest.mark.parametrize("index_metadata", [False, True], ids=["extracted", "index-own"])
def test_a_client_joining_the_fetch_of_its_guess_drives_the_next_level(proxy, upstream_factory, index_metadata):
    dated = upstream_factory("json", None)
    dated.add(make_wheel("tool", "1.0"), metadata=index_metadata, upload_time="2024-05-01T10:00:00Z")
    dated.add(make_wheel("tool", "2.0"), metadata=index_metadata, upload_time="2024-12-01T10:00:00Z")
    app = make_wheel("app", "1.0", requires=["lib"])
    dated.add(app, metadata=index_metadata, upload_time="2024-06-01T10:00:00Z")
    dated.add(make_wheel("lib", "1.0"), metadata=index_metadata, upload_time="2024-03-01T10:00:00Z")
    p = proxy(dated, prefetch="metadata")
    assert p.get("/index/tool/tool-1.0-py3-none-any.whl.metadata", PIP).status == 200
    if index_metadata:
        hold = dated.hold(types.SimpleNamespace(filename=app.filename + ".metadata", size=1), first=0)
    else:
        hold = dated.hold(app, first=0, ranged=True)
    assert p.get("/index/app/", PIP).status == 200  # the guess, app 1.0's metadata, is held upstream
    assert hold.sent_first.wait(10)
    got = []
    client = threading.Thread(target=lambda: got.append(p.get(f"/index/app/{app.filename}.metadata", PIP)))
    client.start()
    _joined(p, "app", app.filename)
    hold.open()
    client.join(10)
    assert got and got[0].body == app.metadata
    assert p.server.prefetch.wait(10)
    assert "/simple/lib/" in _pages(dated)  # app needs lib: the client's metadata drove that
    assert dated.hits(f"{app.filename}.metadata") + _ranged(dated).count(app.filename) == 1


def test_any_user_agent_is_only_a_hint(proxy, dated):
    p = proxy(dated, prefetch="metadata")
    for agent in (
        'pip/26.0 {"implementation":{"name":"CPython","version":"3.11"},"system":{"name":"Linux"},'
        '"cpu":"x86_64","distro":"x"}',
        'pip/26.0 {"implementation":{"name":"CPython","version":"3.\u00b2"},"system":{"name":"Linux"},'
        '"cpu":"x86_64","distro":{"libc":["glibc"]}}',
        "pip/26.0 " + "[" * 5000,
        "pip/26.0 {" * 100,
    ):
        assert p.get(f"/index/tool/{dated.tool_1.filename}.metadata", {"User-Agent": agent}).status == 200
        assert p.get("/index/app/", {"User-Agent": agent}).status == 200
        assert p.server.prefetch.wait(10)
    assert p.get("/health").status == 200


@needs_pip_json_metadata
def test_pip_reads_the_guessed_metadata_without_another_upstream_read(proxy, dated, tmp_path):
    p = proxy(dated, prefetch="metadata")
    result = run_pip(["download", "--no-deps", "--dest", str(tmp_path), "app==1.0", "lib==1.5"], p.index_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert p.server.prefetch.wait(10)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([dated.app.filename, dated.lib_15.filename])
    # app 1.0 said "pinned mid-2024": the proxy fetched lib 1.5's metadata before pip
    # asked (or pip joined that fetch); lib 2.0's was never read.
    assert sorted(_ranged(dated)) == sorted([dated.app.filename, dated.lib_15.filename])
