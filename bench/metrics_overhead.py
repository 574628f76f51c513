"""Does scraping /metrics slow page serving? Warm page rate (wrk) with and without a
scraper reading /metrics 10 times a second; runs alternate, medians compared.

    python bench/metrics_overhead.py [--seconds 5] [--reps 3]

Everything stays on 127.0.0.1: the tests' local upstream, the proxy as `python -m
proxpi_min`, wrk. Target: under 5 % slower with the scraper.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tests.conftest import DistSet  # noqa: E402
from tests.support.upstream import Upstream  # noqa: E402

PAGE = "/index/alpha/"


def wrk(url: str, seconds: float) -> float:
    out = subprocess.run(
        ["wrk", "-t2", "-c16", f"-d{int(seconds)}s", "-H", "Accept-Encoding: gzip", url],
        capture_output=True, text=True, check=True,
    ).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def scraper(port: int, stop: threading.Event, counts: list) -> None:
    """GET /metrics every 0.1 s on a kept-alive connection, as Prometheus would (faster)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    while not stop.wait(0.1):
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200 and b"proxpi_requests_total" in body
        counts.append(len(body))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")
    upstream = DistSet().populate_root(Upstream().start())
    cache = tempfile.mkdtemp(prefix="proxpi-bench-")
    proxy = subprocess.Popen(
        [sys.executable, "-m", "proxpi_min", "--port", "0", "--index-url", upstream.url, "--cache-dir", cache],
        cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )
    try:
        port = int(re.search(r"listening on http://127.0.0.1:(\d+)/", proxy.stderr.readline()).group(1))
        # The request log goes to a pipe nobody reads: drain it so the proxy never blocks.
        threading.Thread(target=lambda: [None for _ in proxy.stderr], daemon=True).start()
        url = f"http://127.0.0.1:{port}{PAGE}"
        wrk(url, 1)  # warm: the page is cached and rendered
        plain, scraped, scrapes = [], [], []
        for rep in range(args.reps):
            plain.append(wrk(url, args.seconds))
            stop = threading.Event()
            thread = threading.Thread(target=scraper, args=(port, stop, scrapes))
            thread.start()
            scraped.append(wrk(url, args.seconds))
            stop.set()
            thread.join()
            print(f"rep {rep + 1}: {plain[-1]:,.0f} req/s without, {scraped[-1]:,.0f} req/s with scraping", flush=True)
        without, with_ = statistics.median(plain), statistics.median(scraped)
        print(f"warm page {PAGE}, wrk -t2 -c16 {args.seconds:g} s, {args.reps} reps, "
              f"{len(scrapes)} scrapes of {statistics.median(scrapes):,.0f} bytes")
        print(f"median: {without:,.0f} req/s without, {with_:,.0f} req/s with /metrics 10/s: "
              f"{(1 - with_ / without) * 100:+.1f} % slower (target < 5 %)")
    finally:
        proxy.terminate()
        proxy.wait(10)
        upstream.stop()
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
