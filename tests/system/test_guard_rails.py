"""Guard rails end to end: a "public" and an "internal" upstream, the proxy, real pip.

The public index plays PyPI: it has the internal project's name at a higher version
(dependency confusion), a release uploaded an hour ago next to one a month old, and a
project to deny. Upload times are set by the test upstream's JSON pages (PEP 700).
"""

from __future__ import annotations

import datetime
import json
import logging
import subprocess
from pathlib import Path

import pytest

from tests.support.dists import make_wheel
from tests.support.pages import parse_anchors
from tests.support.proxy import PIP_ACCEPT, run_pip
from tests.support.upstream import Upstream
from tests.support.prometheus import parse as parse_metrics
from tests.support.prometheus import sample as metric

DAY = 86400.0
WEEK = 7 * DAY


def ago(seconds: float) -> str:
    """A PEP 700 upload-time, *seconds* before now."""
    moment = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Wheels:
    """Built once: the internal acme-lib, the public impostor, alpha old and new, evil."""

    def __init__(self) -> None:
        self.acme_internal = make_wheel("acme-lib", "1.0")
        self.acme_impostor = make_wheel("acme-lib", "99.0", module_source="raise SystemExit('pwned')\n")
        self.alpha_old = make_wheel("alpha", "1.0")
        self.alpha_new = make_wheel("alpha", "2.0")
        self.evil = make_wheel("evil", "1.0")
        self.plain = make_wheel("plain", "1.0")  # only on the HTML index: no upload time


@pytest.fixture(scope="module")
def wheels() -> Wheels:
    return Wheels()


@pytest.fixture
def public(upstream_factory, wheels) -> Upstream:
    upstream = upstream_factory("json", None)
    upstream.add(wheels.acme_impostor, upload_time=ago(30 * DAY))
    upstream.add(wheels.alpha_old, upload_time=ago(30 * DAY))
    upstream.add(wheels.alpha_new, upload_time=ago(3600))
    upstream.add(wheels.evil, upload_time=ago(30 * DAY))
    return upstream


@pytest.fixture
def internal(upstream_factory, wheels) -> Upstream:
    upstream = upstream_factory("json", None)
    upstream.add(wheels.acme_internal, upload_time=ago(60 * DAY))
    return upstream


def download(p, requirement: str, target: Path) -> "tuple[subprocess.CompletedProcess, list]":
    """pip download --no-deps; (result, names of the files it got)."""
    target.mkdir(exist_ok=True)
    result = run_pip(["download", "--no-deps", "-d", str(target), requirement], p.index_url)
    return result, sorted(path.name for path in target.iterdir())


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


# ---------------------------------------------------------------- dependency confusion


@pytest.mark.parametrize(
    ("policy", "expected"),
    [({}, "99.0"), ({"pins": "internal"}, "1.0")],
    ids=["merge-control", "pin"],
)
def test_pin_blocks_dependency_confusion(proxy, public, internal, policy, expected, tmp_path) -> None:
    pins = (("acme-*", internal.url),) if policy else ()
    p = proxy(public, internal, pins=pins)
    result, got = download(p, "acme-lib", tmp_path)
    assert result.returncode == 0, output(result)
    assert got == [f"acme_lib-{expected}-py3-none-any.whl"]
    if policy:
        assert public.hits("/simple/acme-lib/") == 0  # never even asked
        refused = p.get("/index/acme-lib/acme_lib-99.0-py3-none-any.whl")
        assert refused.status == 404
        assert f"the only index asked for it (pin acme-*={internal.url})" in refused.text
        assert p.get("/index/acme-lib/", {"Accept": PIP_ACCEPT}).headers["X-Proxpi-Policy"] == "pin"
        assert p.server.policy.counts() == {("refused", "pin"): 1}
        _, samples = parse_metrics(p.get("/metrics").text)
        assert metric(samples, "proxpi_policy_refused_total", policy="pin") == 1


def test_policy_counts_reach_metrics(proxy, public, tmp_path) -> None:
    p = proxy(public, min_age=WEEK, deny=(("beta", None),))
    assert p.get("/index/alpha/").headers["X-Proxpi-Policy"] == "cooldown"
    assert p.get("/index/beta/").status == 403
    types, samples = parse_metrics(p.get("/metrics").text)
    assert types["proxpi_policy_hidden_files_total"] == types["proxpi_policy_refused_total"] == "counter"
    assert metric(samples, "proxpi_policy_hidden_files_total", policy="cooldown") >= 1
    assert metric(samples, "proxpi_policy_refused_total", policy="deny") == 1


@pytest.mark.parametrize(("strategy", "expected"), [("merge", "99.0"), ("first-index", "1.0")])
def test_first_index_blocks_dependency_confusion(proxy, public, internal, strategy, expected, tmp_path) -> None:
    p = proxy(internal, public, index_strategy=strategy)  # the internal index first
    result, got = download(p, "acme-lib", tmp_path / "acme")
    assert result.returncode == 0, output(result)
    assert got == [f"acme_lib-{expected}-py3-none-any.whl"]
    # A project only the public index has still comes from there.
    result, got = download(p, "alpha==1.0", tmp_path / "alpha")
    assert result.returncode == 0, output(result)
    assert public.hits("/simple/acme-lib/") == (0 if strategy == "first-index" else 1)


# ---------------------------------------------------------------- cooldown


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, "2.0"),
        ({"min_age": WEEK}, "1.0"),
        ({"min_age": 1800.0}, "2.0"),  # an hour old is old enough for half an hour
        ({"min_age": WEEK, "min_age_exempt": ("alpha",)}, "2.0"),
        ({"min_age": WEEK, "min_age_exempt": ("alp*",)}, "2.0"),
        ({"min_age": WEEK, "min_age_exempt": ("beta",)}, "1.0"),
    ],
    ids=["no-policy", "cooldown", "short-cooldown", "exempt", "exempt-pattern", "exempt-other"],
)
def test_cooldown_chooses_the_older_version(proxy, public, settings, expected, tmp_path) -> None:
    p = proxy(public, **settings)
    result, got = download(p, "alpha", tmp_path)
    assert result.returncode == 0, output(result)
    assert got == [f"alpha-{expected}-py3-none-any.whl"]


def test_cooldown_refuses_the_new_file_in_every_format(proxy, public, wheels, tmp_path, caplog) -> None:
    p = proxy(public, min_age=WEEK)
    new = wheels.alpha_new.filename

    html_page = p.get("/index/alpha/")
    assert html_page.status == 200 and html_page.headers["X-Proxpi-Policy"] == "cooldown"
    assert [name.split("#")[0] for name in parse_anchors(html_page.body)] == [wheels.alpha_old.filename]
    json_page = p.get("/index/alpha/", {"Accept": PIP_ACCEPT})
    assert json_page.headers["X-Proxpi-Policy"] == "cooldown"
    document = json.loads(json_page.body)
    assert [f["filename"] for f in document["files"]] == [wheels.alpha_old.filename]
    assert document["versions"] == ["1.0"]  # PEP 700: only versions that keep a file

    with caplog.at_level(logging.INFO, logger="proxpi_min.index.catalog"):
        for method, path in [("GET", new), ("HEAD", new), ("GET", new + ".metadata")]:
            refused = p.request(method, f"/index/alpha/{path}")
            assert refused.status == 403, (method, path)
            if method == "GET":
                assert "was uploaded 1.0h ago; the minimum age is 1w, so it becomes available at" in refused.text
    refusals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused ")]
    assert len(refusals) == 3 and all(f"alpha/{new}" in line for line in refusals)
    assert not public.hits(f"/files/alpha/{new}")

    # pip given the file's URL shows our reason (it shows the HTTP reason phrase).
    result = run_pip(["download", "--no-deps", "-d", str(tmp_path), f"{p.index_url}alpha/{new}"], p.index_url)
    assert result.returncode != 0
    assert "so it becomes available at" in output(result)
    # pip asked for the hidden version says only what it found.
    result, _ = download(p, "alpha==2.0", tmp_path)
    assert result.returncode != 0 and "(from versions: 1.0)" in output(result)
    counts = p.server.policy.counts()
    assert counts[("refused", "cooldown")] == 4 and counts[("hidden", "cooldown")] >= 1


def test_a_page_is_cacheable_no_longer_than_until_a_hidden_file_comes_out(proxy, public) -> None:
    """alpha 2.0 was uploaded an hour ago; with a cooldown of an hour and a minute, it
    comes out in about a minute: a front cache must not keep the page without it for the
    index TTL (600 s)."""
    p = proxy(public, min_age=3660)
    page = p.get("/index/alpha/")
    assert page.headers["X-Proxpi-Policy"] == "cooldown"
    max_age = int(page.headers["Cache-Control"].partition("max-age=")[2].partition(",")[0])
    assert 0 < max_age <= 60, page.headers["Cache-Control"]


@pytest.mark.parametrize(("unknown", "installs"), [("allow", True), ("deny", False)])
def test_cooldown_and_files_without_upload_time(
    proxy, public, upstream_factory, wheels, unknown, installs, tmp_path, caplog
) -> None:
    html_index = upstream_factory("html", None)
    html_index.add(wheels.plain)  # HTML pages carry no upload time
    p = proxy(public, html_index, min_age=WEEK, min_age_unknown_deny=unknown == "deny")
    with caplog.at_level(logging.WARNING, logger="proxpi_min.core.policy"):
        result, got = download(p, "plain", tmp_path)
        p.get("/index/plain/", {"Accept": PIP_ACCEPT})
    assert (result.returncode == 0) is installs, output(result)
    assert got == ([wheels.plain.filename] if installs else [])
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings  # once per index, not per page or request
    assert html_index.url in warnings[0] and "cooldown cannot apply" in warnings[0]
    direct = p.get(f"/index/plain/{wheels.plain.filename}")
    if installs:
        assert direct.status == 200
    else:
        assert direct.status == 403 and "no upload time" in direct.text


# ---------------------------------------------------------------- deny and allow lists


def test_deny_list_refuses_projects_and_versions(proxy, public, wheels, tmp_path) -> None:
    p = proxy(public, deny=(("evil", None), ("alpha", "2.0")))
    page = p.get("/index/evil/", {"Accept": PIP_ACCEPT})
    assert page.status == 403
    assert page.text == "403 Forbidden: project 'evil' is denied by the deny-list entry 'evil' (PROXPI_DENY)\n"
    assert public.hits("/simple/evil/") == 0
    result, got = download(p, "evil", tmp_path / "evil")
    assert result.returncode != 0 and got == []
    assert "(from versions: none)" in output(result)
    # pip -vv shows the reason it got with the 403 page.
    verbose = run_pip(["download", "--no-deps", "-vv", "-d", str(tmp_path / "evil"), "evil"], p.index_url)
    assert "denied by the deny-list entry 'evil'" in output(verbose)

    result, got = download(p, "alpha", tmp_path / "alpha")
    assert got == [wheels.alpha_old.filename], output(result)
    refused = p.get(f"/index/alpha/{wheels.alpha_new.filename}")
    assert refused.status == 403 and "deny-list entry 'alpha==2.0'" in refused.text
    assert p.get("/index/alpha/").headers["X-Proxpi-Policy"] == "deny"


def test_allow_list_serves_only_matching_projects(proxy, public, internal, wheels, tmp_path) -> None:
    p = proxy(public, internal, allow=("alpha", "acme-*"))
    result, got = download(p, "alpha==1.0", tmp_path / "alpha")
    assert got == [wheels.alpha_old.filename], output(result)
    assert p.get("/index/acme-lib/").status == 200
    refused = p.get("/index/evil/")
    assert refused.status == 403 and "project 'evil' is not in the allow list (PROXPI_ALLOW)" in refused.text
    assert p.get(f"/index/evil/{wheels.evil.filename}").status == 403
    result, got = download(p, "evil", tmp_path / "evil")
    assert result.returncode != 0 and got == []
    assert p.server.policy.counts()[("refused", "allow")] >= 3
    # The project list offers only what is served, in both formats.
    listed = parse_anchors(p.get("/index/").body)
    assert "alpha" in listed and "acme-lib" in listed and "evil" not in listed
    names = [item["name"] for item in json.loads(p.get("/index/", {"Accept": PIP_ACCEPT}).body)["projects"]]
    assert "evil" not in names and "alpha" in names


def test_deny_list_leaves_denied_projects_out_of_the_project_list(proxy, public) -> None:
    p = proxy(public, deny=(("evil*", None),))
    listed = p.get("/index/", {"Accept": PIP_ACCEPT})
    names = [item["name"] for item in json.loads(listed.body)["projects"]]
    assert "alpha" in names and not [name for name in names if name.startswith("evil")]
    assert listed.headers["X-Proxpi-Policy"] == "deny"  # a page a policy changed says so
    assert "X-Proxpi-Policy" not in proxy(public).get("/index/").headers


def test_home_page_lists_the_policies(proxy, public, internal) -> None:
    p = proxy(public, internal, pins=(("acme-*", internal.url),), min_age=WEEK, deny=(("evil", None),))
    home = p.get("/").text
    assert "Policies in force" in home
    assert f"pin acme-* to {internal.url}" in home
    assert "files younger than 1w are left out" in home and "deny evil" in home


# ---------------------------------------------------------------- offline


def test_offline_applies_the_same_policies(proxy, public, wheels, tmp_path) -> None:
    cache_dir = str(tmp_path / "cache")
    online = proxy(public, cache_dir=cache_dir)
    for requirement in ("alpha==1.0", "alpha==2.0", "evil"):
        result, _ = download(online, requirement, tmp_path / "fill")
        assert result.returncode == 0, output(result)
    online.stop()
    public.stop()  # nothing is asked upstream from here on

    offline = proxy(public, cache_dir=cache_dir, offline=True, min_age=WEEK, deny=(("evil", None),))
    result, got = download(offline, "alpha", tmp_path / "offline")
    assert got == [wheels.alpha_old.filename], output(result)
    assert offline.get(f"/index/alpha/{wheels.alpha_new.filename}").status == 403
    assert offline.get("/index/alpha/", {"Accept": PIP_ACCEPT}).headers["X-Proxpi-Policy"] == "cooldown"
    assert offline.get("/index/evil/").status == 403
    assert offline.get(f"/index/evil/{wheels.evil.filename}").status == 403


def test_a_deny_on_a_central_proxy_reaches_a_regional_one_that_held_the_project(proxy, upstream_html, scripted):
    # Incident response on the central: the regional must not keep handing the project
    # out from its stale copy. What a central with --deny answers, the scripted index
    # answers once it has served the page.
    central = proxy(upstream_html, deny=(("alpha", None),))
    refusal = central.get("/index/alpha/")
    assert refusal.status == 403 and refusal.headers["X-Proxpi-Policy"] == "deny"
    scripted.routes["/index/alpha/"] = (200, {"Content-Type": "text/html"}, b'<a href="alpha-1.0.tar.gz">alpha-1.0.tar.gz</a>')
    regional = proxy((scripted.base_url + "/index/", 0))
    assert "alpha-1.0.tar.gz" in regional.get("/index/alpha/").text
    scripted.routes["/index/alpha/"] = (403, {"Content-Type": "text/plain", "X-Proxpi-Policy": "deny"}, refusal.body)
    refused = regional.get("/index/alpha/")
    assert refused.status == 403 and "deny-list entry 'alpha'" in refused.text and "X-Proxpi-Stale" not in refused.headers
    assert refused.text.count("403 Forbidden") == 1, refused.text
    # The central down later (a restart with its new deny list): the copy is gone for good.
    scripted.routes["/index/alpha/"] = (503, {"Content-Type": "text/plain"}, b"restarting\n")
    assert regional.get("/index/alpha/").status != 200


def test_a_central_proxys_allow_list_as_an_extra_index_is_its_own(proxy, upstream_html, dists):
    # As an extra index, a central that serves only its own projects lacks the others.
    central = proxy(upstream_html, allow=("acme-*",))
    regional = proxy(upstream_html, (central.url + "/index/", 0))
    page = regional.get("/index/alpha/")
    assert page.status == 200 and dists.alpha_1.filename in page.text, page.text
