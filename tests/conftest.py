"""Shared fixtures: real distributions, fake upstream indexes, the proxy under test.

pyproject.toml says where the tests are (``testpaths``); the rest of the pytest
configuration is here: the ``pypi`` marker for opt-in tests against the real PyPI,
skipped unless ``--run-pypi`` is given.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.support import proxy as support_proxy
from tests.support.certs import OPENSSL, ServerCert, TestCA
from tests.support.dists import Dist, make_sdist, make_wheel
from tests.support.proxy import RunningProxy, make_venv, start_proxy
from tests.support.scripted import Scripted
from tests.support.upstream import Upstream


# -- pytest configuration ----------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-pypi",
        action="store_true",
        default=False,
        help="also run tests marked 'pypi', which go through the proxy to the real PyPI",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "pypi: talks to the real PyPI; skipped unless --run-pypi is given"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    if config.getoption("--run-pypi"):
        return
    skip = pytest.mark.skip(reason="needs the real PyPI; run with --run-pypi")
    for item in items:
        if "pypi" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _no_proxy_variables() -> Iterator[None]:
    """Keep loopback traffic off any HTTP proxy the machine may configure."""
    patch = pytest.MonkeyPatch()
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        patch.delenv(name, raising=False)
    patch.setenv("NO_PROXY", "127.0.0.1,localhost")
    patch.setenv("no_proxy", "127.0.0.1,localhost")
    yield
    patch.undo()


@pytest.fixture(scope="session", autouse=True)
def _compiled_modules_of_proxy_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A temp dir for the modules ``python -m proxpi_min`` processes compile (see proxy_env)."""
    patch = pytest.MonkeyPatch()
    patch.setattr(support_proxy, "PYCACHE_PREFIX", str(tmp_path_factory.mktemp("pycache")))
    yield
    patch.undo()


# -- distributions -------------------------------------------------------------


class DistSet:
    """The distributions the tests share (built once per session).

    Root index: alpha 1.0/2.0 (+ 2.0 sdist), beta 1.0 (needs alpha>=1.0),
    gamma 1.0 (yanked with a reason), 1.1 (yanked, no reason), 2.0 (requires
    Python ``>=3.8, <4``), 9.0 (requires Python ``>=99``), Zope.Interface 5.0
    (no advertised metadata), delta 1.0+local.1 (``+`` in the filename).
    Extra index: alpha 2.0 (same filename, different bytes), alpha 3.0, epsilon 1.0.
    """

    def __init__(self) -> None:
        self.alpha_1 = make_wheel("alpha", "1.0")
        self.alpha_2 = make_wheel("alpha", "2.0")
        self.alpha_2_sdist = make_sdist("alpha", "2.0")
        self.beta_1 = make_wheel("beta", "1.0", requires=["alpha>=1.0"])
        self.gamma_1 = make_wheel("gamma", "1.0")
        self.gamma_1_1 = make_wheel("gamma", "1.1")
        self.gamma_2 = make_wheel("gamma", "2.0", requires_python=">=3.8, <4")
        self.gamma_9 = make_wheel("gamma", "9.0", requires_python=">=99")
        self.zope = make_wheel("Zope.Interface", "5.0")
        self.delta = make_wheel("delta", "1.0+local.1")
        # Only in the extra index.
        self.alpha_2_other = make_wheel(
            "alpha", "2.0", module_source="# the extra index's different build of alpha 2.0\n"
        )
        self.alpha_3 = make_wheel("alpha", "3.0")
        self.epsilon = make_wheel("epsilon", "1.0")

    GAMMA_YANK_REASON = "broken build: use 2.0 <b>&</b>"
    UPLOAD_TIMES = {
        "alpha-1.0-py3-none-any.whl": "2024-01-01T10:00:00.000000Z",
        "alpha-2.0-py3-none-any.whl": "2024-02-01T10:00:00.123456Z",
        "alpha-2.0.tar.gz": "2024-02-01T10:00:01Z",
    }

    @property
    def root(self) -> list[Dist]:
        return [
            self.alpha_1, self.alpha_2, self.alpha_2_sdist, self.beta_1, self.gamma_1,
            self.gamma_1_1, self.gamma_2, self.gamma_9, self.zope, self.delta,
        ]

    @property
    def extra(self) -> list[Dist]:
        return [self.alpha_2_other, self.alpha_3, self.epsilon]

    def populate_root(self, upstream: Upstream) -> Upstream:
        for dist in self.root:
            upstream.add(
                dist,
                yanked={"gamma-1.0-py3-none-any.whl": self.GAMMA_YANK_REASON,
                        "gamma-1.1-py3-none-any.whl": True}.get(dist.filename),
                metadata=dist is not self.zope,
                upload_time=self.UPLOAD_TIMES.get(dist.filename),
            )
        return upstream

    def populate_extra(self, upstream: Upstream) -> Upstream:
        for dist in self.extra:
            upstream.add(dist, upload_time="2025-05-05T05:05:05Z")
        return upstream


@pytest.fixture(scope="session")
def dists() -> DistSet:
    return DistSet()


# -- upstreams -----------------------------------------------------------------


UpstreamFactory = Callable[..., Upstream]


@pytest.fixture
def upstream_factory(dists: DistSet) -> Iterator[UpstreamFactory]:
    """``make(fmt="html", content="root"|"extra"|None)``: a started Upstream,
    stopped at teardown."""
    made: list[Upstream] = []

    def make(fmt: str = "html", content: str | None = "root") -> Upstream:
        upstream = Upstream(fmt=fmt).start()
        made.append(upstream)
        if content == "root":
            dists.populate_root(upstream)
        elif content == "extra":
            dists.populate_extra(upstream)
        elif content is not None:
            raise ValueError(f"unknown content {content!r}")
        return upstream

    yield make
    for upstream in made:
        upstream.stop()


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """A private CA made with openssl (skips without it)."""
    if OPENSSL is None:
        pytest.skip("needs the openssl command to make a test CA")
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="session")
def server_cert(test_ca: TestCA) -> ServerCert:
    """A certificate for 127.0.0.1 and localhost from ``test_ca``."""
    return test_ca.issue("server")


@pytest.fixture
def upstream_tls(dists: DistSet, server_cert: ServerCert) -> Iterator[Upstream]:
    """The root content over HTTPS, with a certificate from ``test_ca``."""
    upstream = dists.populate_root(Upstream(tls=server_cert.context()).start())
    yield upstream
    upstream.stop()


@pytest.fixture
def upstream_html(upstream_factory: UpstreamFactory) -> Upstream:
    return upstream_factory("html")


@pytest.fixture
def upstream_json(upstream_factory: UpstreamFactory) -> Upstream:
    return upstream_factory("json")


@pytest.fixture(params=["html", "json"])
def upstream(request: pytest.FixtureRequest, upstream_factory: UpstreamFactory) -> Upstream:
    """The root content, once per upstream format."""
    return upstream_factory(request.param)


# -- the proxy under test ------------------------------------------------------


ProxyFactory = Callable[..., RunningProxy]


@pytest.fixture
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyFactory]:
    """``proxy(*indexes, **settings)``: an in-process proxy, stopped at teardown.

    Each index is an Upstream, a URL, a ``(upstream_or_url, ttl)`` pair or an
    ``IndexSettings``; the first is the root index. ``cache_dir`` defaults to a
    fresh temporary directory (``running.settings.cache_dir`` tells which).
    """
    started: list[RunningProxy] = []
    counter = itertools.count()

    def make(*indexes: Any, **overrides: Any) -> RunningProxy:
        if not indexes:
            raise TypeError("proxy() needs at least one index")
        if "cache_dir" not in overrides:
            overrides["cache_dir"] = str(tmp_path_factory.mktemp(f"proxy-cache-{next(counter)}"))
        running = start_proxy(indexes=indexes, **overrides)
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    """An upstream whose every answer the test writes byte by byte (see support/scripted.py)."""
    upstream = Scripted()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="session")
def pip_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One venv (without pip: run_pip drives it with this interpreter's) for
    end-to-end installs; returns its python. Prefer ``pip install --target`` where possible."""
    return make_venv(tmp_path_factory.mktemp("venv") / "env")
