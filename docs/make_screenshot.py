"""Make docs/dashboard.png: the home page of a proxy that served some requests, in
headless Chromium (run from the repository root: python docs/make_screenshot.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from proxpi_min.core.settings import parse_settings  # noqa: E402
from proxpi_min.web.server import ProxyServer  # noqa: E402
from tests.conftest import DistSet  # noqa: E402
from tests.support.proxy import http  # noqa: E402
from tests.support.upstream import Upstream  # noqa: E402


def main() -> None:
    dists = DistSet()
    root = dists.populate_root(Upstream().start())
    extra = dists.populate_extra(Upstream("json").start())
    with tempfile.TemporaryDirectory() as cache_dir:
        settings = parse_settings(
            {}, {"index_url": root.url, "extra_index_url": [extra.url], "extra_index_ttl": ["0.5"],
                 "port": "0", "cache_dir": cache_dir}
        )
        server = ProxyServer(settings)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        for name, count in (("alpha", 9), ("beta", 5), ("gamma", 3), ("delta", 2), ("zope-interface", 1)):
            for _ in range(count):
                http("GET", f"{base}/index/{name}/")
        for dist in (dists.alpha_1, dists.alpha_2, dists.beta_1, dists.gamma_2, dists.delta):
            for _ in range(2):
                http("GET", f"{base}/index/{dist.normalized}/{dist.filename}")
        extra.fail("/simple/alpha/", "500")
        time.sleep(0.6)
        http("GET", f"{base}/index/alpha/")
        out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dashboard.png")
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run(
                ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", f"--screenshot={out}", "--window-size=1000,1500", "--hide-scrollbars",
                 f"{base}/"],
                check=True, capture_output=True, timeout=120,
            )
        server.shutdown()
        server.server_close()
    root.stop()
    extra.stop()
    print(out)


if __name__ == "__main__":
    main()
