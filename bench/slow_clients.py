"""Slow and idle clients: what they cost the proxy, and what a normal client sees
meanwhile. Standard library plus ``wrk`` (for ``rate`` only).

    python bench/slow_clients.py slowloris --clients 3000 --seconds 30
    python bench/slow_clients.py idle --clients 10000 --seconds 20
    python bench/slow_clients.py rate [--root DIR] [--connections 16,256] [--reps 3]

``slowloris``: N clients each send a request head one byte a second, never ending it (a
client closed by the proxy connects again); ``idle``: N clients each fetch /health once
and keep the connection open. Meanwhile a normal client fetches a warm page in a loop,
on a new connection each time (as each pip run does): failures, p50, p99, and the
proxy's RSS and threads at the end. ``rate``: the warm page under ``wrk -t1 -cC``,
median of the repetitions, for the checkout or the proxpi_min under ``--root`` (e.g.
``git archive <commit> proxpi_min | tar -x -C DIR``), to compare before and after.
The upstream is bench/workers.py's (one six-sized JSON page, http.server on loopback).
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import resource
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workers  # noqa: E402 - bench/workers.py: the upstream, starting the proxy, wrk

HEAD = b"GET /index/six/ HTTP/1.1\r\nHost: bench\r\nX-Slow: "


def _proxy_status(pid: int) -> dict:
    with open(f"/proc/{pid}/status") as file:
        fields = dict(line.split(":", 1) for line in file)
    return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024, "threads": int(fields["Threads"])}


def _normal_client(host: str, port: int, seconds: float) -> dict:
    """Fetch the warm page on a new connection each time for *seconds*."""
    latencies, failures = [], 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            connection = http.client.HTTPConnection(host, port, timeout=10)
            connection.request("GET", "/index/six/", headers={"Accept": workers.JSON_TYPE})
            response = connection.getresponse()
            response.read()
            connection.close()
            ok = response.status == 200
        except OSError:
            ok = False
        latencies.append(time.monotonic() - started)
        failures += not ok
        time.sleep(0.01)
    latencies.sort()
    return {
        "requests": len(latencies),
        "failures": failures,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "max_ms": latencies[-1] * 1000,
    }


def _connect(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=10)
    sock.setblocking(False)
    return sock


def _slowloris(host: str, port: int, clients: int, stop: threading.Event, counts: dict) -> None:
    """Keep *clients* connections trickling a head, a byte a second each."""
    socks = [None] * clients
    while not stop.is_set():
        started = time.monotonic()
        for index in range(clients):
            sock = socks[index]
            try:
                if sock is None:
                    sock = socks[index] = _connect(host, port)
                    sock.send(HEAD)
                    counts["connects"] += 1
                else:
                    sock.send(b"a")
            except OSError:
                if sock is not None:
                    sock.close()
                socks[index] = None
                counts["dropped"] += 1
        stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))
    for sock in socks:
        if sock is not None:
            sock.close()


def _idle(host: str, port: int, clients: int) -> list:
    socks = []
    for _ in range(clients):
        sock = socket.create_connection((host, port), timeout=30)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n")
        socks.append(sock)
    for sock in socks:
        if not sock.recv(65536).startswith(b"HTTP/1.1 200"):
            raise RuntimeError("an idle client was not served")
    return socks


def _with_proxy(args, flags: list, work: Path, run) -> None:
    upstream_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), workers._Upstream)
    threading.Thread(target=upstream_server.serve_forever, daemon=True).start()
    upstream = f"http://127.0.0.1:{upstream_server.server_address[1]}/simple/"
    process, url = workers._start_proxy(upstream, flags, "file", work)
    try:
        for _ in range(5):
            urllib.request.urlopen(url + "/index/six/").read()
        host, port = url.split("//")[1].split(":")
        run(process, url, host, int(port))
    finally:
        process.terminate()
        process.wait(30)
        upstream_server.shutdown()


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("slowloris", "idle", "rate"))
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--root", help="a directory holding the proxpi_min to run (default: this checkout)")
    parser.add_argument("--connections", default="16,256", help="rate: wrk -c values")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--flags", default="", help="extra proxy flags, space-separated")
    args = parser.parse_args(argv)
    if args.root:
        workers.ROOT = Path(args.root).resolve()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    flags = args.flags.split()

    def slowloris(process, url, host, port) -> None:
        stop, counts = threading.Event(), {"connects": 0, "dropped": 0}
        attacker = threading.Thread(target=_slowloris, args=(host, port, args.clients, stop, counts))
        attacker.start()
        time.sleep(3)  # all connected and trickling
        result = _normal_client(host, port, args.seconds)
        result.update(_proxy_status(process.pid), **counts)
        stop.set()
        attacker.join()
        print(f"slowloris {args.clients}: {result}")

    def idle(process, url, host, port) -> None:
        socks = _idle(host, port, args.clients)
        time.sleep(1)
        before = _proxy_status(process.pid)
        result = _normal_client(host, port, args.seconds)
        result.update(before)
        for sock in socks:
            sock.close()
        print(f"idle {args.clients}: {result}")

    def rate(process, url, host, port) -> None:
        for connections in args.connections.split(","):
            runs = []
            for _ in range(args.reps):
                cpu = workers._cpu_seconds(process.pid)
                requests, rate, data = workers._wrk(url + "/index/six/", args.seconds, int(connections), strict=False)
                cpu_us = (workers._cpu_seconds(process.pid) - cpu) / requests * 1e6
                runs.append((rate, cpu_us, data["timeouts"], data["latency_p99_us"] / 1000))
            text = ", ".join(f"{r:,.0f} req/s {c:.0f} us CPU {t} timeouts p99 {p:.0f} ms" for r, c, t, p in runs)
            median = statistics.median(run[0] for run in runs)
            print(f"rate -c{connections} ({workers.ROOT}): median {median:,.0f} req/s; runs: {text}")

    with tempfile.TemporaryDirectory(prefix="bench-slow-") as work:
        _with_proxy(args, flags, Path(work), {"slowloris": slowloris, "idle": idle, "rate": rate}[args.mode])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
