"""What the guard rails cost on a warm page: no policy against every policy at once.

Standard library only; everything on 127.0.0.1. A synthetic upstream serves two PEP 691
JSON pages with PEP 700 upload times (a small one of 10 files and a large one of 5,000,
a tenth of each uploaded an hour ago); two proxies (``python -m proxpi_min``) run in
front of it, one without policies and one with a pin, first-index, a 7-day cooldown with
an exempt list, a denied version and an allow list. After a warm-up request, one
keep-alive client asks each proxy for the page ``--requests`` times per round (as pip
does: JSON, gzip), the proxies taking turns; the medians of ``--rounds`` rounds are
printed. Run: ``python bench/policy_cost.py`` (about a minute).

``--in-process`` times the merged view alone (``Catalog.rendered_project`` on a warm
page, no sockets): the part the policies add to, steadier on a busy machine.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ACCEPT = "application/vnd.pypi.simple.v1+json"
POLICIES = [
    "--pin", "acme-*={index}", "--index-strategy", "first-index",
    "--min-age", "7d", "--min-age-exempt", "urgent-*",
    "--deny", "small==0.3", "--deny", "evil-*", "--allow", "small", "--allow", "large", "--allow", "acme-*",
]


def _page(name: str, count: int) -> bytes:
    now = time.time()
    files = []
    for number in range(count):
        uploaded = now - (3600 if number % 10 == 9 else 90 * 86400)
        filename = f"{name}-0.{number}-py3-none-any.whl"
        files.append({
            "filename": filename,
            "url": f"/files/{filename}",
            "hashes": {"sha256": f"{number:064x}"},
            "requires-python": ">=3.8",
            "size": 1000 + number,
            "upload-time": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(uploaded)),
        })
    return json.dumps({"meta": {"api-version": "1.1"}, "name": name, "files": files}).encode()


def _upstream(pages: dict) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = pages.get(self.path.strip("/").split("/")[-1])
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", ACCEPT)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _proxy(args: list) -> tuple:
    process = subprocess.Popen(
        [sys.executable, "-m", "proxpi_min", "--host", "127.0.0.1", "--port", "0", *args],
        cwd=str(REPO), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    for line in process.stderr:
        match = re.search(rb"listening on http://127\.0\.0\.1:(\d+)/", line)
        if match:
            # Keep reading the log (one line per request) so the pipe never fills.
            threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()
            return process, int(match.group(1))
    raise SystemExit(f"proxy did not start: {args}")


def _round(port: int, path: str, requests: int) -> float:
    connection = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"Accept": ACCEPT, "Accept-Encoding": "gzip"}
    started = time.perf_counter()
    for _ in range(requests):
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        assert response.status == 200, response.status
    elapsed = time.perf_counter() - started
    connection.close()
    return requests / elapsed


def _in_process(rounds: int, requests: int) -> None:
    sys.path.insert(0, str(REPO))
    from proxpi_min.core.settings import IndexSettings
    from proxpi_min.index.index_cache import IndexCache
    from proxpi_min.index.catalog import Catalog
    from proxpi_min.core.names import NormalizedName
    from proxpi_min.core.policy import Policy
    from proxpi_min.index.upstream import PageResponse

    index = "http://upstream.invalid/simple/"
    pages = {"small": _page("small", 10), "large": _page("large", 5000)}

    class Upstream:
        def fetch_page(self, url, accept, etag=None, last_modified=None):
            return PageResponse(200, pages[url.strip("/").split("/")[-1]], ACCEPT, url, None, None)

    every = Policy(
        [index], pins=[("acme-*", index)], first_index=True, min_age=7 * 86400.0,
        min_age_exempt=["urgent-*"], deny=[("small", "0.3"), ("evil-*", None)],
        allow=["small", "large", "acme-*"],
    )
    print("| page | no policy | all policies | cost |\n|---|---|---|---|")
    for page in pages:
        name = NormalizedName(page)
        results = {}
        for label, policy in (("no policy", None), ("all policies", every)):
            indexes = Catalog([IndexCache(IndexSettings(index, 3600.0), Upstream(), None)], 1 << 28, policy=policy)
            indexes.rendered_project(name, ACCEPT, True)  # warm
            times = []
            for _ in range(rounds):
                started = time.perf_counter()
                for _ in range(requests):
                    indexes.rendered_project(name, ACCEPT, True)
                times.append((time.perf_counter() - started) / requests * 1e6)
            results[label] = statistics.median(times)
        plain, guarded = results.values()
        print(f"| /index/{page}/ | {plain:.1f} us | {guarded:.1f} us | {guarded - plain:+.1f} us a request |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--in-process", action="store_true", help="time the merged view alone")
    options = parser.parse_args()
    if options.in_process:
        return _in_process(options.rounds, options.requests * 10)
    upstream = _upstream({"small": _page("small", 10), "large": _page("large", 5000)})
    index = f"http://127.0.0.1:{upstream.server_address[1]}/simple/"
    servers = {
        "no policy": _proxy(["--index-url", index]),
        "all policies": _proxy(["--index-url", index, *[a.format(index=index) for a in POLICIES]]),
    }
    try:
        print("| page | no policy | all policies | cost |\n|---|---|---|---|")
        for page, requests in (("small", options.requests), ("large", options.requests // 4)):
            path = f"/index/{page}/"
            results = {name: [] for name in servers}
            for name, (_, port) in servers.items():
                _round(port, path, 10)  # warm: fetched, filtered, rendered once
            for number in range(options.rounds):
                order = list(servers.items())
                for name, (_, port) in order[::-1] if number % 2 else order:  # take turns going first
                    results[name].append(_round(port, path, requests))
            plain, guarded = (statistics.median(results[name]) for name in servers)
            print(f"| {path} ({'10' if page == 'small' else '5,000'} files) | {plain:,.0f} req/s "
                  f"| {guarded:,.0f} req/s | {(plain / guarded - 1) * 100:+.1f}% |")
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(10)
        upstream.shutdown()


if __name__ == "__main__":
    main()
