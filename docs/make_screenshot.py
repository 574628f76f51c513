"""Make docs/dashboard.png: the home page of a proxy that served some requests, in
headless Chromium (run from the repository root: python docs/make_screenshot.py).

``--width 390 --out phone.png`` draws it as a phone would instead."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.conftest import DistSet  # noqa: E402
from tests.support.proxy import ProxyProcess, http  # noqa: E402
from tests.support.upstream import Upstream  # noqa: E402

_CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
]


def _traffic(base: str, dists: DistSet) -> None:
    """Pages and files enough to fill every table, the chart and the hit ratios."""
    for name, count in (("alpha", 9), ("beta", 5), ("gamma", 3), ("delta", 2), ("zope-interface", 1)):
        for _ in range(count):
            http("GET", f"{base}/index/{name}/")
    for dist in (dists.alpha_1, dists.alpha_2, dists.beta_1, dists.gamma_2, dists.delta):
        for _ in range(2):
            http("GET", f"{base}/index/{dist.normalized}/{dist.filename}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1000, help="window width in CSS pixels (default 1000)")
    parser.add_argument("--height", type=int, default=1500, help="window height in CSS pixels (default 1500)")
    default_out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dashboard.png")
    parser.add_argument("--out", default=default_out, help="the PNG to write (default docs/dashboard.png)")
    options = parser.parse_args()

    dists = DistSet()
    root = dists.populate_root(Upstream().start())
    extra = dists.populate_extra(Upstream("json").start())
    with tempfile.TemporaryDirectory() as cache_dir:
        args = ["--index-url", root.url, "--extra-index-url", extra.url, "--extra-index-ttl", "0.5",
                "--cache-dir", cache_dir]
        with ProxyProcess(args) as proxy:
            _traffic(proxy.url, dists)
            extra.fail("/simple/alpha/", "500")  # the extra index fails: stale pages, back-off
            time.sleep(0.6)
            http("GET", f"{proxy.url}/index/alpha/")
            with tempfile.TemporaryDirectory() as profile:
                subprocess.run(
                    ["chromium", *_CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={options.out}",
                     f"--window-size={options.width},{options.height}", f"{proxy.url}/"],
                    check=True, capture_output=True, timeout=120,
                )
    root.stop()
    extra.stop()
    print(options.out)


if __name__ == "__main__":
    main()
