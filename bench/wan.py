"""Cold and warm installs with the upstream a WAN away: direct, proxpi_min, proxpi 1.3.

A relay written here sits in front of the bench's local nginx upstream and holds every
chunk it forwards for ``--wan-ms`` milliseconds, each way (25 ms each way: a 50 ms round
trip). The clients then resolve or download the bench sets three ways: straight through
the relay ("direct"), and through a proxy whose index is the relay, once with the proxy
fresh ("cold": a new cache dir) and once more through the same proxy ("warm").

    python bench/wan.py                        # 3 repetitions, 25 ms each way
    python bench/wan.py --reps 5 --wan-ms 25 --servers proxpi_min,direct
    python bench/wan.py --servers proxpi_min --flags="--prefetch off"   # a variant
    python bench/wan.py --html                 # the upstream's pages in HTML only
    python bench/wan.py --servers direct,forward,forward-whole   # forwarding alone
    python bench/wan.py --servers direct,passthrough   # pages passed through, parsed after

It needs what ``bench/run.sh --prepare-only`` prepares in ``bench/.cache`` (the venv with
pip, uv and proxpi 1.3, and the upstream tree); standard library only, loopback only.
The table of medians is printed and written to ``bench/.cache/results/wan-<time>.md``.
"""

from __future__ import annotations

import argparse
import collections
import json
import queue
import shutil
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import bench as b  # noqa: E402
import servers as srv  # noqa: E402

RUNS = (
    ("pip-dry-run", "`pip install --dry-run`, resolve-55", "pip_dry_run"),
    ("uv-compile", "`uv pip compile`, resolve-55", "uv_compile"),
    ("pip-download", "`pip download --no-deps`, download-16", "pip_download"),
)
SERVERS = ("direct", "proxpi_min", "proxpi")
# Measured once per repetition (nothing to warm): direct, and bench/forward.py, the
# floor under any threaded standard-library proxy, streaming ("forward") or reading each
# answer whole first ("forward-whole", as a proxy that parses pages must), and
# bench/passthrough.py ("passthrough": pages rewritten and parsed after the answer). On
# request: --servers direct,forward,forward-whole,passthrough,...
UNCACHED = ("direct", "forward", "forward-whole", "passthrough")
CHUNK = 64 * 1024


class Relay:
    """A TCP relay on loopback to *target* that delays every chunk by *delay* seconds
    in each direction, keeping their order (a WAN's latency without its losses)."""

    def __init__(self, target: tuple, delay: float) -> None:
        self.target = target
        self.delay = delay
        self.listener = socket.create_server((srv.LOOPBACK, 0))
        self.port = self.listener.getsockname()[1]
        self._open: set = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="relay-accept", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target)
        except OSError:
            client.close()
            return
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._open.update((client, upstream))
        for source, sink in ((client, upstream), (upstream, client)):
            held: queue.Queue = queue.Queue()
            threading.Thread(target=self._read, args=(source, held), daemon=True).start()
            threading.Thread(target=self._write, args=(sink, held), daemon=True).start()

    def _read(self, source: socket.socket, held: queue.Queue) -> None:
        while True:
            try:
                chunk = source.recv(CHUNK)
            except OSError:
                chunk = b""
            held.put((time.monotonic() + self.delay, chunk))
            if not chunk:
                return

    def _write(self, sink: socket.socket, held: queue.Queue) -> None:
        while True:
            due, chunk = held.get()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                if not chunk:
                    sink.shutdown(socket.SHUT_WR)
                    return
                sink.sendall(chunk)
            except OSError:
                return

    def close(self) -> None:
        self.listener.close()
        with self._lock:
            for sock in self._open:
                try:
                    sock.close()
                except OSError:
                    pass


class _ProxpiMin(srv.ProxpiMin):
    """proxpi_min with extra flags (a variant)."""

    def __init__(self, *args, flags: tuple = (), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.flags = flags

    def _spawn(self, cmd: list, env=None, cwd=None) -> None:
        super()._spawn([*cmd, *self.flags], env, cwd)


def _proxy(kind: str, run_dir: Path, index_url: str, tag: int, flags: tuple, pyz) -> srv.Server:
    if kind == "proxpi":
        return srv.Proxpi(run_dir, b.VENV, index_url, tag=f"-{tag}").start()
    return _ProxpiMin(run_dir, b.REPO, index_url, tag=f"-{tag}", pyz=pyz, flags=flags).start()


def measure(args: argparse.Namespace) -> dict:
    """{(run, column): [seconds...]} for every run, server and repetition."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = b.CACHE / "runs" / f"wan-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=True)
    nginx = srv.Nginx(run_dir, b.CACHE, html_only=args.html).start()
    relay = Relay((srv.LOOPBACK, nginx.upstream_port), args.wan_ms / 1000)
    index_url = f"http://{srv.LOOPBACK}:{relay.port}/simple/"
    clients = b.Clients(args.sets, run_dir)
    samples: dict = collections.defaultdict(list)
    tag = 0
    try:
        for rep in range(args.reps):
            for kind in b.rotated(list(args.servers), rep):
                for run, _, method in RUNS:
                    if run not in args.runs:
                        continue
                    client = getattr(clients, method)
                    b.log(f"rep {rep + 1}/{args.reps}: {run} {kind}")
                    if kind == "direct":
                        samples[(run, "direct")].append(client(index_url))
                        continue
                    tag += 1
                    if kind in UNCACHED:
                        upstream = (srv.LOOPBACK, relay.port)
                        if kind == "passthrough":
                            forward = srv.PassThrough(run_dir, upstream, f"-{tag}").start()
                        else:
                            forward = srv.Forward(run_dir, upstream, f"-{tag}", kind == "forward-whole").start()
                        try:
                            samples[(run, kind)].append(client(forward.base))
                        finally:
                            forward.stop()
                        continue
                    server = _proxy(kind, run_dir, index_url, tag, args.flags, args.pyz)
                    try:
                        samples[(run, f"{kind} cold")].append(client(server.base))
                        samples[(run, f"{kind} warm")].append(client(server.base))
                    finally:
                        server.stop()
                        if not args.keep:  # a cold pip download leaves ~50 MB of wheels
                            shutil.rmtree(server.cache_dir, ignore_errors=True)
    finally:
        relay.close()
        nginx.stop()
    return samples


def table(samples: dict, servers: tuple, wan_ms: float, reps: int) -> str:
    columns = [
        column for kind in servers
        for column in ((kind,) if kind in UNCACHED else (f"{kind} cold", f"{kind} warm"))
    ]
    label = {"forward": "forward only", "forward-whole": "forward whole", "passthrough": "pass-through", "proxpi_min cold": "proxpi-min, cold", "proxpi_min warm": "proxpi-min, warm",
             "proxpi cold": "proxpi 1.3, cold", "proxpi warm": "proxpi 1.3, warm"}
    lines = [
        f"Upstream {wan_ms:g} ms away each way (relay in front of the local nginx upstream), "
        f"median of {reps} runs; in brackets, against direct.",
        "",
        "| client, bench set | " + " | ".join(label.get(c, c) for c in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for run, title, _ in RUNS:
        direct = samples.get((run, "direct"))
        base = statistics.median(direct) if direct else None
        cells = []
        for column in columns:
            values = samples.get((run, column))
            if not values:
                cells.append("-")
                continue
            value = statistics.median(values)
            ratio = f" ({value / base:.2f}x)" if base and column != "direct" else ""
            cells.append(f"{value:.2f} s{ratio}")
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--wan-ms", type=float, default=25.0, help="one-way delay in ms (default 25)")
    p.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    p.add_argument("--servers", default=",".join(SERVERS), help=f"some of {','.join(SERVERS + UNCACHED[1:])}")
    p.add_argument("--runs", default=",".join(run for run, _, _ in RUNS), help="subset of the runs (default all)")
    p.add_argument("--sets", type=Path, default=BENCH / "sets", help="bench sets directory")
    p.add_argument("--pyz", type=Path, default=None, help="run proxpi_min from this zipapp")
    p.add_argument("--flags", default="", help="extra flags for proxpi_min (a variant)")
    p.add_argument("--keep", action="store_true", help="keep the proxies' cache dirs in bench/.cache/runs")
    p.add_argument("--html", action="store_true",
                   help="the upstream's project pages in HTML only (no sizes, no upload times), as devpi or Nexus")
    args = p.parse_args(argv)
    args.servers = tuple(s for s in args.servers.split(",") if s)
    args.flags = tuple(args.flags.split())
    args.runs = tuple(r for r in args.runs.split(",") if r)
    samples = measure(args)
    text = table(samples, args.servers, args.wan_ms, args.reps)
    if args.flags:
        text += f"\nproxpi-min with `{' '.join(args.flags)}`\n"
    if args.html:
        text += "\nThe upstream's project pages in HTML only (`--html`).\n"
    print(text)
    out = b.CACHE / "results" / f"wan-{time.strftime('%Y%m%d-%H%M%S')}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps({f"{k[0]}|{k[1]}": v for k, v in samples.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
