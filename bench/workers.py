"""Warm small page under wrk: ``--workers 2`` against ``--workers 1`` (and what the
single worker's rate depends on). Standard library plus the ``wrk`` binary.

    python bench/workers.py [--seconds 5] [--reps 3] [--variants workers1,workers2,...]

A tiny upstream (http.server, loopback) serves one six-sized JSON page (30 files); each
variant starts ``python -m proxpi_min`` on a fresh cache dir, warms the page, runs
``wrk -t1 -c16`` against it, and stops. Variants are interleaved per repetition and the
median is reported, since other work on the machine moves single runs a lot.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LUA = Path(__file__).resolve().parent / "wrk_report.lua"
JSON_TYPE = "application/vnd.pypi.simple.v1+json"

# name -> (extra proxy flags, where its log goes)
VARIANTS = {
    "workers1": ([], "file"),
    "workers2": (["--workers", "2"], "file"),
    "workers1-log-devnull": ([], "devnull"),
    "workers1-log-pipe": ([], "pipe"),
}


def _page() -> bytes:
    files = [
        {
            "filename": f"six-1.{minor}.0-py2.py3-none-any.whl",
            "url": f"/files/six-1.{minor}.0-py2.py3-none-any.whl",
            "hashes": {"sha256": f"{minor:02d}" * 32},
            "size": 10_000 + minor,
            "upload-time": "2020-01-01T00:00:00.000000Z",
        }
        for minor in range(30)
    ]
    return json.dumps({"meta": {"api-version": "1.1"}, "name": "six", "files": files}).encode()


class _Upstream(http.server.BaseHTTPRequestHandler):
    body = _page()

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        found = self.path == "/simple/six/"
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", JSON_TYPE if found else "text/plain")
        self.send_header("Content-Length", str(len(self.body) if found else 0))
        self.end_headers()
        if found:
            self.wfile.write(self.body)

    def log_message(self, *args) -> None:
        pass


def _start_proxy(upstream: str, flags: list, log: str, work: Path):
    sink = {"file": open(work / "proxy.log", "wb"), "devnull": subprocess.DEVNULL, "pipe": subprocess.PIPE}[log]
    process = subprocess.Popen(
        [sys.executable, "-m", "proxpi_min", "--host", "127.0.0.1", "--port", "0",
         "--index-url", upstream, "--cache-dir", str(work / "cache"), *flags],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    # The first line says where it listens; after it, the log goes to the chosen sink.
    first = process.stderr.readline().decode()
    url = re.search(r"listening on (http://\S+)/", first).group(1)
    drain = threading.Thread(target=_copy, args=(process.stderr, sink), daemon=True)
    drain.start()
    return process, url


def _copy(stream, sink) -> None:
    for line in iter(stream.readline, b""):
        if hasattr(sink, "write"):
            sink.write(line)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of *pid* and its children still running (Linux /proc)."""
    pids = [pid]
    with open(f"/proc/{pid}/task/{pid}/children") as file:
        pids += [int(child) for child in file.read().split()]
    total = 0
    for each in pids:
        with open(f"/proc/{each}/stat") as file:
            fields = file.read().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


def _wrk(url: str, seconds: int, connections: int = 16, strict: bool = True) -> tuple:
    """(requests, req/s, wrk's report); any error raises when *strict*."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(LUA), "-H", f"Accept: {JSON_TYPE}", url],
        capture_output=True, text=True, timeout=seconds + 60,
    ).stdout
    data = json.loads(out.split("WRK_JSON ", 1)[1])
    errors = data["connect_errors"] + data["read_errors"] + data["status_errors"] + data["timeouts"]
    if errors and strict:
        raise RuntimeError(f"wrk errors: {data}")
    return data["requests"], data["requests"] / (data["duration_us"] / 1e6), data


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--variants", default="workers1,workers2")
    args = parser.parse_args(argv)
    names = args.variants.split(",")
    upstream_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=upstream_server.serve_forever, daemon=True).start()
    upstream = f"http://127.0.0.1:{upstream_server.server_address[1]}/simple/"
    rates: dict = {name: [] for name in names}
    cpus: dict = {name: [] for name in names}
    load = os.getloadavg()[0]
    for rep in range(args.reps):
        for name in names[rep % len(names):] + names[: rep % len(names)]:
            flags, log = VARIANTS[name]
            with tempfile.TemporaryDirectory(prefix="bench-workers-") as work:
                process, url = _start_proxy(upstream, flags, log, Path(work))
                try:
                    for _ in range(20):  # warm every worker's copy of the page
                        urllib.request.urlopen(url + "/index/six/").read()
                    time.sleep(0.3)
                    cpu = _cpu_seconds(process.pid)
                    requests, rate, _ = _wrk(url + "/index/six/", args.seconds)
                    rates[name].append(rate)
                    cpus[name].append((_cpu_seconds(process.pid) - cpu) / requests * 1e6)
                finally:
                    process.terminate()
                    process.wait(20)
            print(f"rep {rep + 1} {name}: {rates[name][-1]:,.0f} req/s, {cpus[name][-1]:.0f} us CPU/request", flush=True)
    print(f"\nload average at start {load:.2f}, at end {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs")
    base = statistics.median(rates[names[0]])
    for name in names:
        median = statistics.median(rates[name])
        runs = ", ".join(f"{r:,.0f}" for r in rates[name])
        print(f"{name:24} median {median:8,.0f} req/s  ({median / base:.2f}x {names[0]}; runs: {runs}), "
              f"{statistics.median(cpus[name]):.0f} us CPU/request")
    upstream_server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
