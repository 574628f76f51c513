"""Download ahead: once a client downloads a wheel after reading metadata, the other
wheels it read the metadata of are fetched before it asks; a client that only
resolves makes the proxy fetch no whole wheel."""

from __future__ import annotations

import os
import threading

import pytest

from tests.support.cache_dir import wait_for
from tests.support.dists import make_wheel
from tests.support.markers import needs_pip_json_metadata
from tests.support.prometheus import parse, sample
from tests.support.proxy import run_pip

PIP = {"User-Agent": "pip/26.0 test"}


def _large(name: str, version: str, **kwargs):
    # Past the 128 KiB a metadata read takes from a wheel's end: a smaller wheel comes
    # whole with it, and is cached then.
    return make_wheel(name, version, module_source=f"# {os.urandom(200_000).hex()}\n", **kwargs)


def _bare(upstream_factory, fmt: str):
    upstream = upstream_factory(fmt, None)
    upstream.app = _large("app", "1.0", requires=["lib"])
    upstream.lib_1 = _large("lib", "1.0")
    upstream.lib_2 = _large("lib", "2.0")
    upstream.other = _large("other", "1.0")
    for dist in (upstream.app, upstream.lib_1, upstream.lib_2, upstream.other):
        upstream.add(dist, metadata=False)
    return upstream


@pytest.fixture
def bare(upstream_factory):
    """app 1.0 needs lib; lib 1.0 and 2.0; other 1.0: no metadata upstream, no sizes."""
    return _bare(upstream_factory, "html")


@pytest.fixture
def bare_sized(upstream_factory):
    """The same, from a JSON index that gives the sizes (PEP 700)."""
    return _bare(upstream_factory, "json")


def _whole_gets(upstream) -> list:
    return [r.path.rpartition("/")[2] for r in upstream.requests
            if r.method == "GET" and r.path.endswith(".whl") and "range" not in r.headers]


def _read_metadata(p, upstream, *dists, headers=PIP) -> None:
    for dist in dists:
        assert p.get(f"/index/{dist.project}/{dist.filename}.metadata", headers).status == 200


def test_another_proxpi_min_in_front_gets_no_download_ahead(proxy, bare):
    # A regional proxy's metadata reads are its many clients' (and its own guesses):
    # it downloads ahead for its clients itself.
    regional = {"User-Agent": "proxpi-min/0.9"}
    p = proxy(bare)
    _read_metadata(p, bare, bare.app, bare.lib_2, bare.other, headers=regional)
    assert p.get(f"/index/app/{bare.app.filename}", regional).body == bare.app.content
    assert p.server.download_ahead.wait(10)
    assert _whole_gets(bare) == [bare.app.filename]
    # This proxy names itself so to its own index, a central proxpi-min maybe.
    assert all(r.headers["user-agent"].startswith("proxpi-min/") for r in bare.requests)


def test_first_download_fetches_the_rest_of_the_resolution(proxy, bare):
    p = proxy(bare)
    _read_metadata(p, bare, bare.app, bare.lib_2, bare.other)
    assert _whole_gets(bare) == []  # resolving fetches no whole wheel
    assert p.get(f"/index/app/{bare.app.filename}", PIP).body == bare.app.content
    assert p.server.download_ahead.wait(10)
    assert sorted(_whole_gets(bare)) == sorted([bare.app.filename, bare.lib_2.filename, bare.other.filename])
    for dist in (bare.lib_2, bare.other):
        assert p.get(f"/index/{dist.project}/{dist.filename}", PIP).body == dist.content
    assert len(_whole_gets(bare)) == 3  # the client's downloads were hits
    samples = parse(p.get("/metrics").text)[1]
    assert sample(samples, "proxpi_prefetch_total", kind="file", outcome="fetched") == 2
    assert sample(samples, "proxpi_prefetch_used_total", kind="file") == 2


def test_only_the_last_version_read_of_a_project_is_fetched(proxy, bare):
    p = proxy(bare)
    _read_metadata(p, bare, bare.app, bare.lib_2, bare.lib_1)  # a resolver backtracking to lib 1.0
    assert p.get(f"/index/app/{bare.app.filename}", PIP).status == 200
    assert p.server.download_ahead.wait(10)
    assert sorted(_whole_gets(bare)) == sorted([bare.app.filename, bare.lib_1.filename])


def test_another_clients_download_fetches_nothing_ahead(proxy, bare):
    p = proxy(bare)
    _read_metadata(p, bare, bare.app, bare.lib_2)
    assert p.get(f"/index/other/{bare.other.filename}", {"User-Agent": "uv/0.9 test"}).status == 200
    assert p.server.download_ahead.wait(10)
    assert _whole_gets(bare) == [bare.other.filename]
    # Nor does a probe of the zip's end or a HEAD from the resolving client itself.
    assert p.get(f"/index/app/{bare.app.filename}", {**PIP, "Range": "bytes=-100"}).status == 206
    assert p.request("HEAD", f"/index/app/{bare.app.filename}", PIP).status == 200
    assert p.server.download_ahead.wait(10)
    assert _whole_gets(bare) == [bare.other.filename]


def test_a_failing_file_is_counted_and_the_proxy_goes_on(proxy, bare):
    p = proxy(bare)
    _read_metadata(p, bare, bare.app, bare.lib_2)
    bare.fail(bare.file_url(bare.lib_2).partition(bare.base_url)[2], "500")
    assert p.get(f"/index/app/{bare.app.filename}", PIP).status == 200
    assert p.server.download_ahead.wait(10)
    samples = parse(p.get("/metrics").text)[1]
    assert sample(samples, "proxpi_prefetch_total", kind="file", outcome="error") == 1
    assert p.get(f"/index/lib/{bare.lib_2.filename}", PIP).status == 502
    assert p.get("/health").status == 200


def test_a_file_the_client_asks_for_while_queued_is_no_use(proxy, bare_sized):
    """The client fetches it itself then; once its fetch ahead began, the client joins
    that, and it is a use. (Their sizes known, both are queued at once.)"""
    bare = bare_sized
    p = proxy(bare, prefetch_jobs=1)  # one at a time: other waits behind lib 2.0
    _read_metadata(p, bare, bare.app, bare.lib_2, bare.other)
    hold = bare.hold(bare.lib_2)
    assert p.get(f"/index/app/{bare.app.filename}", PIP).status == 200
    assert hold.sent_first.wait(10)  # lib 2.0 is being fetched ahead, other is queued
    assert p.get(f"/index/other/{bare.other.filename}", PIP).body == bare.other.content
    assert sample(parse(p.get("/metrics").text)[1], "proxpi_prefetch_used_total", kind="file") == 0
    got = []
    client = threading.Thread(target=lambda: got.append(p.get(f"/index/lib/{bare.lib_2.filename}", PIP)))
    client.start()
    # The client's request for lib 2.0 reaches the proxy (and joins the fetch) before
    # the hold opens: it asks upstream for nothing more.
    wait_for(lambda: sample(parse(p.get("/metrics").text)[1], "proxpi_prefetch_used_total", kind="file") == 1,
             "the request for lib 2.0 counted")
    hold.open()
    client.join(10)
    assert got and got[0].body == bare.lib_2.content
    assert p.server.download_ahead.wait(10)
    assert sorted(_whole_gets(bare)) == sorted([bare.app.filename, bare.lib_2.filename, bare.other.filename])
    samples = parse(p.get("/metrics").text)[1]
    assert sample(samples, "proxpi_prefetch_total", kind="file", outcome="fetched") == 1
    assert sample(samples, "proxpi_prefetch_total", kind="file", outcome="fresh") == 1  # other, stored by then
    assert sample(samples, "proxpi_prefetch_used_total", kind="file") == 1


def test_no_download_ahead_when_prefetch_is_off_or_offline(proxy, bare):
    off = proxy(bare, prefetch="off")
    assert off.server.download_ahead is None
    _read_metadata(off, bare, bare.app, bare.lib_2)
    assert off.get(f"/index/app/{bare.app.filename}", PIP).status == 200
    assert _whole_gets(bare) == [bare.app.filename]
    off.stop()
    offline = proxy(bare, cache_dir=off.settings.cache_dir, offline=True)
    assert offline.server.download_ahead is None


@needs_pip_json_metadata
def test_pip_download_gets_each_wheel_from_upstream_once(proxy, bare, tmp_path):
    p = proxy(bare)
    result = run_pip(["download", "--dest", str(tmp_path), "app", "other"], p.index_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        [bare.app.filename, bare.lib_2.filename, bare.other.filename])
    assert p.server.download_ahead.wait(10)
    assert sorted(_whole_gets(bare)) == sorted([bare.app.filename, bare.lib_2.filename, bare.other.filename])
    # pip downloads one wheel after the other: the first fetched the other two ahead.
    assert sample(parse(p.get("/metrics").text)[1], "proxpi_prefetch_used_total", kind="file") == 2


@pytest.mark.parametrize("fmt", ["html", "json"])  # HTML gives no sizes, JSON does (PEP 700)
def test_a_small_cap_never_makes_a_wheel_fetched_twice(proxy, upstream_factory, fmt):
    """Eight wheels of about 230 kB under a cap of 1.2 MB: fetched all at once, they
    would evict one another before the client asks for them."""
    upstream = upstream_factory(fmt, None)
    wheels = [_large(f"lib{n}", "1.0") for n in range(8)]
    for dist in wheels:
        upstream.add(dist, metadata=False)
    p = proxy(upstream, cache_size=1_200_000)
    _read_metadata(p, upstream, *wheels)
    for dist in wheels:  # pip downloads one after the other
        assert p.get(f"/index/{dist.project}/{dist.filename}", PIP).body == dist.content
    assert p.server.download_ahead.wait(10)
    assert sorted(_whole_gets(upstream)) == sorted(dist.filename for dist in wheels)
    assert sample(parse(p.get("/metrics").text)[1], "proxpi_prefetch_used_total", kind="file") >= 1
