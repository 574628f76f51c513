"""PEP 658 metadata for wheels their index lists without: advertised on pages, read from
upstream with range requests (never the whole wheel), from the cached wheel, or from a
whole download where the upstream ignores Range; broken wheels; Range and HEAD probes
that start no download."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import glob
import hashlib
import http.client
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile

import pytest

from proxpi_min.files import metadata as metadata_module
from proxpi_min.files.ledger import Ledger
from tests.support.cache_dir import files_tree, wait_for, wait_until
from tests.support.dists import Dist, make_wheel
from tests.support.markers import needs_pip_json_metadata
from tests.support.proxy import proxy_env, run_pip
from tests.support.upstream import Upstream

JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}


@pytest.fixture
def bare(upstream_factory):
    """An upstream that lists beta 1.0 (needs alpha) and alpha 1.0, without metadata."""
    upstream = upstream_factory("html", None)
    beta = make_wheel("beta", "1.0", requires=["alpha>=1.0", "gamma; extra == 'x'"])
    alpha = make_wheel("alpha", "1.0")
    upstream.add(beta, metadata=False)
    upstream.add(alpha, metadata=False)
    upstream.beta, upstream.alpha = beta, alpha
    return upstream


def _anchor(page: str, filename: str) -> str:
    return next(line for line in page.splitlines() if f">{filename}</a>" in line)


def _whole_gets(upstream: Upstream) -> list:
    """Upstream GETs of a whole wheel (no Range)."""
    return [r.path for r in upstream.requests
            if r.method == "GET" and r.path.endswith(".whl") and "range" not in r.headers]


def _ranges(upstream: Upstream) -> list:
    return [r.headers["range"] for r in upstream.requests if "range" in r.headers]


def test_metadata_read_with_ranges_and_advertised_with_its_hash(proxy, bare):
    p = proxy(bare)
    beta = bare.beta
    assert 'data-core-metadata="true"' in _anchor(p.get("/index/beta/").text, beta.filename)
    assert json.loads(p.get("/index/beta/", JSON).body)["files"][0]["core-metadata"] is True
    result = p.get(f"/index/beta/{beta.filename}.metadata")
    assert result.status == 200
    assert result.body == beta.metadata
    assert _whole_gets(bare) == [] and len(_ranges(bare)) == 1  # a small wheel: its end holds it all
    digest = hashlib.sha256(beta.metadata).hexdigest()
    anchor = _anchor(p.get("/index/beta/").text, beta.filename)
    assert f'data-core-metadata="sha256={digest}"' in anchor
    assert f'data-dist-info-metadata="sha256={digest}"' in anchor
    files = json.loads(p.get("/index/beta/", JSON).body)["files"]
    assert files[0]["core-metadata"] == {"sha256": digest}
    # Stored under the wheel's hash (after the answer): a second proxy on the cache dir asks nobody.
    stored = os.path.join(p.settings.cache_dir, "files", "beta", f"sha256-{beta.sha256}", beta.filename + ".metadata")
    wait_for(lambda: os.path.exists(stored), "the metadata stored")
    with open(stored, "rb") as file:
        assert file.read() == beta.metadata
    bare.reset_hits()
    again = proxy(bare, cache_dir=p.settings.cache_dir)
    # Its hash is on the page from the start, read from the stored copy.
    wait_for(lambda: f'data-core-metadata="sha256={digest}"' in _anchor(again.get("/index/beta/").text, beta.filename),
             "the stored metadata's hash on the page")
    assert again.get(f"/index/beta/{beta.filename}.metadata").body == beta.metadata
    assert [r.path for r in bare.requests if not r.path.startswith("/simple/")] == []
    # The first proxy wrote only the wheel anew on the pages it had: the bytes of a
    # whole render, as the second proxy made them.
    for headers in ({}, JSON):
        assert p.get("/index/beta/", headers).body == again.get("/index/beta/", headers).body


@pytest.mark.parametrize("damage", [b"", b"\x00" * 64, b"Metadata-Version: 2.1\nNam"], ids=["emptied", "zeroed", "cut"])
def test_a_damaged_stored_metadata_is_not_advertised_after_a_restart_but_read_again(proxy, bare, damage):
    """What a crash or a hand leaves of a stored metadata file (its hash was never
    recorded) is removed when a restart learns the stored hashes, not advertised."""
    p = proxy(bare)
    beta = bare.beta
    assert p.get(f"/index/beta/{beta.filename}.metadata").body == beta.metadata
    stored = os.path.join(p.settings.cache_dir, "files", "beta", f"sha256-{beta.sha256}", beta.filename + ".metadata")
    wait_for(lambda: os.path.exists(stored), "the metadata stored")
    p.stop()
    with open(stored, "wb") as file:
        file.write(damage)
    again = proxy(bare, cache_dir=p.settings.cache_dir)
    wait_for(lambda: not os.path.exists(stored), "the damaged copy removed")
    assert 'data-core-metadata="true"' in _anchor(again.get("/index/beta/").text, beta.filename)
    assert again.get(f"/index/beta/{beta.filename}.metadata").body == beta.metadata


def _advertised_sha256(p, project: str) -> str | None:
    """The metadata sha256 the JSON page gives for *project*'s only file; None for
    ``true`` (PEP 714: metadata without a hash)."""
    advertised = json.loads(p.get(f"/index/{project}/", JSON).body)["files"][0]["core-metadata"]
    return None if advertised is True else advertised["sha256"]


@needs_pip_json_metadata
def test_wheel_replaced_under_its_name_gets_the_hash_of_its_own_metadata(proxy, upstream_factory, tmp_path):
    """A private index may serve new bytes under an old file name: the metadata read
    from the old wheel is never advertised, nor served, for the new one."""
    upstream = upstream_factory("json", None)
    old = make_wheel("mutable", "1.0")
    new = make_wheel("mutable", "1.0", requires=["alpha"])
    assert old.filename == new.filename and old.sha256 != new.sha256
    upstream.add(old, metadata=False)
    p = proxy((upstream, 0))
    assert p.get(f"/index/mutable/{old.filename}.metadata").body == old.metadata
    assert _advertised_sha256(p, "mutable") == hashlib.sha256(old.metadata).hexdigest()

    upstream.add(new, metadata=False)
    files = json.loads(p.get("/index/mutable/", JSON).body)["files"]
    assert files[0]["hashes"] == {"sha256": new.sha256}
    assert files[0]["core-metadata"] is True  # not yet read from this wheel
    result = run_pip(["download", "--no-deps", "-d", str(tmp_path / "first"), "mutable==1.0"], p.index_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "first" / new.filename).read_bytes() == new.content
    served = p.get(f"/index/mutable/{new.filename}.metadata").body
    assert served == new.metadata
    assert _advertised_sha256(p, "mutable") == hashlib.sha256(served).hexdigest()
    p.stop()

    # Both stay stored, each under its wheel's hash: a restart must not learn the old one for the new wheel.
    stored = glob.glob(os.path.join(p.settings.cache_dir, "files", "mutable", "*", new.filename + ".metadata"))
    folders = {os.path.basename(os.path.dirname(path)) for path in stored}
    assert folders == {f"sha256-{old.sha256}", f"sha256-{new.sha256}"}
    again = proxy((upstream, 0), cache_dir=p.settings.cache_dir)
    advertised = wait_for(lambda: _advertised_sha256(again, "mutable"), "the stored metadata's hash on the page")
    served = again.get(f"/index/mutable/{new.filename}.metadata").body
    assert served == new.metadata
    assert advertised == hashlib.sha256(served).hexdigest()
    result = run_pip(["download", "--no-deps", "-d", str(tmp_path / "again"), "mutable==1.0"], again.index_url)
    assert result.returncode == 0, result.stdout + result.stderr


def _metadata_first(upstream: Upstream, filename: str, payload: str) -> tuple:
    """(the wheel, its METADATA) listed on *upstream*: the METADATA first, then 200 kB of
    incompressible *payload*, which puts it beyond the read of the zip's end."""
    name, version = filename.split("-")[:2]
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\n".encode()
    wheel = _wheel(filename, [(f"{name}-{version}.dist-info/METADATA", metadata), (payload, os.urandom(200_000)),
                              (f"{name}-{version}.dist-info/RECORD", b"")])
    upstream.add(wheel, metadata=False)
    return wheel, metadata


def test_large_wheel_member_read_with_a_second_range(proxy, upstream_factory):
    upstream = upstream_factory("json", None)
    wheel, metadata = _metadata_first(upstream, "big-1.0-py3-none-any.whl", "big.bin")
    p = proxy(upstream)
    assert p.get(f"/index/big/{wheel.filename}.metadata").body == metadata
    assert _whole_gets(upstream) == [] and len(_ranges(upstream)) == 2


def test_platform_wheel_start_read_beside_its_end(proxy, upstream_factory):
    upstream = upstream_factory("json", None)
    # As auditwheel and maturin write them: the dist-info first, the code after.
    wheel, metadata = _metadata_first(upstream, "fast-1.0-cp311-cp311-manylinux_2_17_x86_64.whl", "fast.so")
    p = proxy(upstream)
    assert p.get(f"/index/fast/{wheel.filename}.metadata").body == metadata
    assert _whole_gets(upstream) == []
    assert sorted(_ranges(upstream)) == ["bytes=-131072", "bytes=0-65535"]  # no third read


def test_a_small_wheel_read_whole_for_its_metadata_is_cached(proxy, bare):
    p = proxy(bare)
    alpha = bare.alpha  # well under the 128 KiB read from its end
    assert p.get(f"/index/alpha/{alpha.filename}.metadata").body == alpha.metadata
    assert _ranges(bare) == ["bytes=-131072"]
    assert p.get(f"/index/alpha/{alpha.filename}").body == alpha.content
    assert _whole_gets(bare) == []  # served from the cache, checked against its hash


def test_a_small_wheel_that_fails_its_hash_is_not_cached(proxy, upstream_factory):
    upstream = upstream_factory("json", None)
    good = make_wheel("omega", "1.0")
    upstream.add(dataclasses.replace(good, sha256="00" * 32), metadata=False)  # the index lists another hash
    p = proxy(upstream)
    assert p.get(f"/index/omega/{good.filename}.metadata").body == good.metadata
    stored = glob.glob(os.path.join(p.settings.cache_dir, "files", "omega", "*", good.filename))
    assert stored == []  # nor then by the download, which cuts the client off before the end
    with pytest.raises(http.client.IncompleteRead):
        p.get(f"/index/omega/{good.filename}")
    assert glob.glob(os.path.join(p.settings.cache_dir, "files", "omega", "*", good.filename)) == []
    assert p.get("/health").status == 200


def test_metadata_from_the_cached_wheel_asks_no_upstream(proxy, bare):
    p = proxy(bare)
    alpha = bare.alpha
    assert p.get(f"/index/alpha/{alpha.filename}").body == alpha.content
    bare.reset_hits()
    assert p.get(f"/index/alpha/{alpha.filename}.metadata").body == alpha.metadata
    assert [r.path for r in bare.requests if not r.path.startswith("/simple/")] == []


def test_upstream_ignoring_range_gets_the_wheel_stored(proxy, bare):
    bare.honour_ranges = False
    p = proxy(bare)
    beta = bare.beta
    assert p.get(f"/index/beta/{beta.filename}.metadata").body == beta.metadata
    assert _whole_gets(bare) == [f"/files/beta/{beta.filename}"]
    assert p.server.prefetch.wait(10)  # alpha's page; not its metadata: a whole wheel from this upstream
    assert _whole_gets(bare) == [f"/files/beta/{beta.filename}"]
    bare.reset_hits()
    assert p.get(f"/index/beta/{beta.filename}").body == beta.content  # stored: no upstream
    assert [r.path for r in bare.requests if not r.path.startswith("/simple/")] == []


@pytest.mark.parametrize("kind", ["html", "json"], ids=["size-unknown", "size-small"])
def test_a_host_that_ignores_range_gets_metadata_advertised_only_where_it_is_cheap(proxy, upstream_factory, kind):
    """Once a host is known to ignore Range, a wheel's metadata costs the whole wheel
    before the answer's first byte: advertised only for a wheel the page says is small
    (a large one would keep the client past its read timeout), or whose metadata is known."""
    up = upstream_factory(kind, None)
    up.honour_ranges = False
    first, other = make_wheel("first", "1.0"), make_wheel("other", "1.0")
    up.add(first, metadata=False).add(other, metadata=False)
    p = proxy(up)
    assert 'core-metadata' in p.get("/index/other/", JSON).text  # nothing known of the host yet
    assert p.get(f"/index/first/{first.filename}.metadata").body == first.metadata  # read whole
    files = json.loads(p.get("/index/other/", JSON).body)["files"]
    assert ("core-metadata" in files[0]) == (kind == "json")  # JSON pages give the size
    files = json.loads(p.get("/index/first/", JSON).body)["files"]
    assert files[0]["core-metadata"] == {"sha256": hashlib.sha256(first.metadata).hexdigest()}


def test_upstream_ignoring_range_and_a_wheel_over_the_cap_still_gives_its_metadata(proxy, bare, tmp_path):
    """Pages advertise it: the wheel is read whole beside the cache, checked, dropped."""
    bare.honour_ranges = False
    p = proxy(bare, cache_size=0)
    beta = bare.beta
    assert p.get(f"/index/beta/{beta.filename}.metadata").body == beta.metadata
    assert _whole_gets(bare) == [f"/files/beta/{beta.filename}"]
    assert [name for name in os.listdir(os.path.join(p.settings.cache_dir, "files")) if "tmp" in name] == []
    json_page = json.loads(p.get("/index/beta/", JSON).body)
    assert json_page["files"][0]["core-metadata"] == {"sha256": hashlib.sha256(beta.metadata).hexdigest()}


def test_a_wheel_over_the_cap_that_fails_its_hash_gives_no_metadata(proxy, upstream_factory):
    """Read whole beside the cache, it is checked before its METADATA is read."""
    upstream = upstream_factory("html", None)
    upstream.honour_ranges = False
    good = make_wheel("omega", "1.0")
    upstream.add(dataclasses.replace(good, sha256="00" * 32), metadata=False)  # the index lists another hash
    p = proxy(upstream, cache_size=0)
    answer = p.get(f"/index/omega/{good.filename}.metadata")
    assert answer.status == 502 and "do not match the index hash" in answer.text
    assert _whole_gets(upstream) == [f"/files/omega/{good.filename}"]
    assert glob.glob(os.path.join(p.settings.cache_dir, "files", "omega", "*", "*")) == []  # no metadata kept
    # No longer advertised (pip retries a 502 and fails with a traceback; fetching the
    # wheel itself, it tells the mismatch), nor fetched again when asked.
    assert "core-metadata" not in json.loads(p.get("/index/omega/", JSON).body)["files"][0]
    assert p.get(f"/index/omega/{good.filename}.metadata").status == 502
    assert _whole_gets(upstream) == [f"/files/omega/{good.filename}"]


@pytest.mark.parametrize("cache_size", [None, 0], ids=["stored", "spooled"])
def test_a_wheel_cut_short_when_read_whole_for_its_metadata_is_asked_for_again(proxy, upstream_factory, cache_size):
    """A transfer cut midway is the upstream's failure, not a wheel of another hash: the
    next request reads it again, and its metadata stays advertised."""
    up = upstream_factory("json", None)  # sizes on the page: advertised from a host that ignores Range
    up.honour_ranges = False
    first, wheel = make_wheel("first", "1.0"), make_wheel("omega", "1.0")
    up.add(first, metadata=False).add(wheel, metadata=False)
    p = proxy(up) if cache_size is None else proxy(up, cache_size=0)
    assert p.get(f"/index/first/{first.filename}.metadata").status == 200  # the host now known to ignore Range
    up.fail(f"/files/omega/{wheel.filename}", "truncate", times=1)
    assert p.get(f"/index/omega/{wheel.filename}.metadata").status == 502
    assert p.get(f"/index/omega/{wheel.filename}.metadata").body == wheel.metadata
    assert json.loads(p.get("/index/omega/", JSON).body)["files"][0]["core-metadata"] == {
        "sha256": hashlib.sha256(wheel.metadata).hexdigest()}


@pytest.mark.parametrize("kind", ["no zip", "no METADATA"])
def test_broken_wheel_gets_502_and_loses_its_advertised_metadata(proxy, upstream_factory, kind):
    upstream = upstream_factory("html", None)
    content = b"this is no zip file" * 10 if kind == "no zip" else _wheel("bad-1.0-py3-none-any.whl", [("bad.py", b"")]).content
    bad = _dist("bad-1.0-py3-none-any.whl", content)
    upstream.add(bad, metadata=False)
    p = proxy(upstream)
    assert "data-core-metadata" in _anchor(p.get("/index/bad/").text, bad.filename)
    result = p.get(f"/index/bad/{bad.filename}.metadata")
    assert result.status == 502
    assert ("zip" if kind == "no zip" else "METADATA") in result.text
    assert "data-core-metadata" not in _anchor(p.get("/index/bad/").text, bad.filename)
    assert "core-metadata" not in json.loads(p.get("/index/bad/", JSON).body)["files"][0]
    assert p.get(f"/index/bad/{bad.filename}.metadata").status == 502
    assert p.get(f"/index/bad/{bad.filename}").body == content  # the file itself still served
    assert b'proxpi_metadata_extracted_total{outcome="broken"}' in p.get("/metrics").body


def _ranges_of(upstream: Upstream, dist: Dist) -> list:
    return [r.headers["range"] for r in upstream.requests if "range" in r.headers and r.path.endswith(dist.filename)]


def test_a_failed_read_fails_every_client_waiting_on_it_at_once_and_is_not_kept(proxy, bare):
    """A stalled upstream: one range request, whose timeout every waiting client gets,
    rather than each asking in turn and the last waiting for all of them."""
    p = proxy(bare, read_timeout=1.0)
    beta = bare.beta
    bare.fail(beta.filename, "hang")

    def fetch(_):
        started = time.monotonic()
        result = p.get(f"/index/beta/{beta.filename}.metadata", timeout=30)
        return result.status, result.body, time.monotonic() - started

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(fetch, range(8)))
    assert {(status, body) for status, body, _ in answers} == {answers[0][:2]}
    assert answers[0][0] == 504 and b"timed out" in answers[0][1]
    assert _ranges_of(bare, beta) == ["bytes=-131072"]
    assert max(elapsed for *_, elapsed in answers) < 4.0  # one read timeout, not eight in a row
    bare.clear_faults()
    assert p.get(f"/index/beta/{beta.filename}.metadata").body == beta.metadata


def _advertised(p, project: str):
    return json.loads(p.get(f"/index/{project}/", JSON).body)["files"][0].get("core-metadata")


def test_a_range_answer_cut_short_is_an_upstream_failure_not_a_broken_wheel(proxy, bare):
    p = proxy(bare)
    beta = bare.beta
    bare.fail(beta.filename, "truncate", times=1)  # half its body, then the connection drops
    failed = p.get(f"/index/beta/{beta.filename}.metadata")
    assert failed.status == 502 and "incomplete" in failed.text
    assert _advertised(p, "beta") is True  # not taken for a broken wheel
    assert p.get(f"/index/beta/{beta.filename}.metadata").body == beta.metadata
    assert _advertised(p, "beta") == {"sha256": hashlib.sha256(beta.metadata).hexdigest()}
    assert len(_ranges_of(bare, beta)) == 2


def test_a_partial_answer_shorter_than_its_content_range_is_not_a_broken_wheel(proxy, scripted):
    """A 206 whose Content-Length and body give half of what its Content-Range names, the
    connection kept: nothing fails on the wire, only the bytes are missing."""
    wheel = make_wheel("cut", "1.0")
    path = f"/files/{wheel.filename}"
    page = {"meta": {"api-version": "1.1"}, "name": "cut", "versions": ["1.0"], "files": [
        {"filename": wheel.filename, "url": scripted.base_url + path, "hashes": {"sha256": wheel.sha256}}]}
    scripted.routes["/simple/cut/"] = (200, {"Content-Type": JSON["Accept"]}, json.dumps(page).encode())

    def whole_file_as_a_range(handler):  # the range asked for, from the end, covers it
        body = wheel.content if scripted.hits[path] > 1 else wheel.content[: wheel.size // 2]
        handler.send_response(206)
        handler.send_header("Content-Range", f"bytes 0-{wheel.size - 1}/{wheel.size}")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    scripted.routes[path] = whole_file_as_a_range
    p = proxy(scripted.url)
    failed = p.get(f"/index/cut/{wheel.filename}.metadata")
    assert failed.status == 502 and "incomplete" in failed.text
    assert _advertised(p, "cut") is True
    assert p.get(f"/index/cut/{wheel.filename}.metadata").body == wheel.metadata
    assert _advertised(p, "cut") == {"sha256": hashlib.sha256(wheel.metadata).hexdigest()}
    assert scripted.hits[path] == 2


def test_served_metadata_checked_against_the_whole_wheel(proxy, bare, caplog):
    p = proxy(bare)
    beta = bare.beta
    stored = os.path.join(p.settings.cache_dir, "files", "beta", f"sha256-{beta.sha256}", beta.filename + ".metadata")
    os.makedirs(os.path.dirname(stored))
    with open(stored, "wb") as file:  # as if a different METADATA had been served before
        file.write(b"Metadata-Version: 2.1\nName: beta\nVersion: 0.0\n\n")
    with caplog.at_level(logging.ERROR, logger="proxpi_min.files.metadata"):
        assert p.get(f"/index/beta/{beta.filename}").body == beta.content
    wrong = hashlib.sha256(b"Metadata-Version: 2.1\nName: beta\nVersion: 0.0\n\n").hexdigest()
    assert any(wrong in r.getMessage() and hashlib.sha256(beta.metadata).hexdigest() in r.getMessage()
               for r in caplog.records if r.levelno == logging.ERROR)
    assert p.get(f"/index/beta/{beta.filename}.metadata").body == beta.metadata

    def counted_as_on_disk() -> bool:  # the replaced copy counted as it is, once written
        on_disk = files_tree(p.settings.cache_dir)
        return p.server.files.stats() == (sum(on_disk.values()), len(on_disk))

    assert wait_until(counted_as_on_disk)


def test_head_of_metadata(proxy, bare):
    p = proxy(bare)
    result = p.request("HEAD", f"/index/beta/{bare.beta.filename}.metadata")
    assert result.status == 200 and result.body == b""
    assert int(result.headers["Content-Length"]) == len(bare.beta.metadata)
    assert p.get(f"/index/beta/{bare.beta.filename}.metadata").body == bare.beta.metadata


def test_metadata_off(proxy, bare):
    p = proxy(bare, metadata="off")
    assert "data-core-metadata" not in p.get("/index/beta/").text
    assert p.get(f"/index/beta/{bare.beta.filename}.metadata").status == 404


def test_offline_serves_metadata_of_cached_wheels(proxy, bare):
    online = proxy(bare)
    assert online.get(f"/index/alpha/{bare.alpha.filename}").status == 200
    online.stop()
    offline = proxy(bare, cache_dir=online.settings.cache_dir, offline=True)
    assert 'data-core-metadata="true"' in _anchor(offline.get("/index/alpha/").text, bare.alpha.filename)
    assert offline.get(f"/index/alpha/{bare.alpha.filename}.metadata").body == bare.alpha.metadata


def test_offline_reads_metadata_the_index_had_from_the_cached_wheel(proxy, upstream_html, dists):
    online = proxy(upstream_html)  # beta's metadata is on the index, never fetched here
    assert online.get(f"/index/beta/{dists.beta_1.filename}").status == 200
    online.stop()
    offline = proxy(upstream_html, cache_dir=online.settings.cache_dir, offline=True)
    assert "data-core-metadata" in _anchor(offline.get("/index/beta/").text, dists.beta_1.filename)
    assert offline.get(f"/index/beta/{dists.beta_1.filename}.metadata").body == dists.beta_1.metadata


def test_range_and_head_probes_start_no_download(proxy, bare):
    p = proxy(bare)
    beta = bare.beta
    url = f"/index/beta/{beta.filename}"
    assert p.request("HEAD", url).status == 200
    tail = p.get(url, {"Range": "bytes=-100"})
    assert tail.status == 206 and tail.body == beta.content[-100:]
    # The HTML page gives no size: the HEAD's answer told it, so this reads the end too.
    near_end = p.get(url, {"Range": f"bytes={beta.size - 50}-"})
    assert near_end.status == 206 and near_end.body == beta.content[-50:]
    assert _whole_gets(bare) == []
    assert p.server.files.downloads_in_progress() == 0
    assert p.get(url).body == beta.content  # the whole file: downloaded and stored
    assert _whole_gets(bare) == [f"/files/beta/{beta.filename}"]


@needs_pip_json_metadata
def test_pip_resolves_without_whole_wheels(proxy, bare, tmp_path):
    p = proxy(bare)
    result = run_pip(["install", "--dry-run", "--ignore-installed", "--report", str(tmp_path / "r.json"), "beta"],
                     p.index_url)
    assert result.returncode == 0, result.stdout + result.stderr
    names = {item["metadata"]["name"] for item in json.loads((tmp_path / "r.json").read_text())["install"]}
    assert names == {"alpha", "beta"}
    # Resolved from metadata: pip (before 23.3) downloads the chosen wheels even in a
    # dry run, but only once resolved, after its last page.
    paths = [r.path for r in bare.requests if r.method == "GET" and "range" not in r.headers]
    last_page = max(i for i, path in enumerate(paths) if path.startswith("/simple/"))
    assert [path for path in paths[:last_page] if path.endswith(".whl")] == []


@pytest.mark.skipif(shutil.which("uv") is None, reason="needs uv on PATH")
def test_uv_resolves_without_whole_wheels_or_probes(proxy, bare, tmp_path):
    p = proxy(bare)
    (tmp_path / "in.txt").write_text("beta\n")
    env = {**proxy_env(), "UV_CACHE_DIR": str(tmp_path / "uv-cache"), "UV_NO_CONFIG": "1",
           "UV_PYTHON": sys.executable, "UV_PYTHON_DOWNLOADS": "never"}
    for name in ("UV_INDEX_URL", "UV_DEFAULT_INDEX", "UV_EXTRA_INDEX_URL", "UV_INDEX", "VIRTUAL_ENV"):
        env.pop(name, None)
    result = subprocess.run(["uv", "pip", "compile", "--index-url", p.index_url, "in.txt"], cwd=str(tmp_path),
                            env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "alpha==1.0" in result.stdout and "beta==1.0" in result.stdout
    assert _whole_gets(bare) == []
    assert [r for r in bare.requests if r.method == "HEAD"] == []
    assert len(_ranges(bare)) == 2  # the proxy's own reads, one per wheel; none from uv


def _wheel(filename: str, entries: list) -> Dist:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return _dist(filename, buffer.getvalue())


def _dist(filename: str, content: bytes) -> Dist:
    name, version = filename.split("-")[:2]
    return Dist(filename, content, hashlib.sha256(content).hexdigest(), None, None, name, version)


@pytest.mark.parametrize("held", ["memory", "past-its-bound"])
def test_a_metadata_answer_does_not_wait_for_its_store(proxy, upstream_factory, monkeypatch, held):
    """Another process storing a file holds the cache dir's lock: that delays the stored
    copy of a metadata read, not its answer; unless the reads not yet stored already
    hold their bound of memory (here: none at all)."""
    if held == "past-its-bound":
        monkeypatch.setattr(metadata_module, "MAX_UNSTORED_BYTES", 0)
    upstream = upstream_factory("html", None)
    big = make_wheel("big", "1.0", module_source=f"DATA = {os.urandom(300_000).hex()!r}\n")
    assert big.size > 2 * 131072  # more than the proxy's first read of its end: not kept whole
    upstream.add(big, metadata=False)
    p = proxy(upstream)
    stored = os.path.join(p.settings.cache_dir, "files", "big", f"sha256-{big.sha256}", big.filename + ".metadata")
    assert p.get("/index/big/").status == 200
    other = Ledger(os.path.join(p.settings.cache_dir, "files"))
    answers: list = []
    try:
        with other.locked():
            asking = threading.Thread(target=lambda: answers.append(p.get(f"/index/big/{big.filename}.metadata")))
            asking.daemon = True
            asking.start()
            asking.join(10 if held == "memory" else 0.5)
            if held == "memory":
                assert [answer.body for answer in answers] == [big.metadata], "the answer waited for the lock"
                assert not os.path.exists(stored)
            else:
                assert answers == [], "answered before its store, past the bound"
    finally:
        other.close()
    asking.join(10)
    assert [answer.body for answer in answers] == [big.metadata]
    wait_for(lambda: os.path.exists(stored), "the metadata stored once the lock was free")
    with open(stored, "rb") as file:
        assert file.read() == big.metadata
