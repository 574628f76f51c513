"""Benchmark driver: proxpi_min against proxpi 1.3, nginx (static copy) and no proxy.

Run through ``bench/run.sh`` (which prepares the venv and the Debian packages); this
file uses the standard library only. Every server is started here, on 127.0.0.1, and
stopped before the end. Load (wrk) is only ever aimed at loopback.

Servers ("columns"):
  proxpi      proxpi 1.3.1 under gunicorn, as its Docker image runs it
  proxpi_min  this repository's proxy
  nginx       nginx serving a static copy of the pages and files, in a proxy's layout
  direct      no proxy: the upstream itself (the local upstream, or PyPI with --pypi)

Each figure is measured ``--reps`` times, the order of the servers rotating from one
repetition to the next, and the table shows medians. All samples go to
``bench/.cache/results/<time>.json`` next to the table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import servers as srv  # noqa: E402
import upstream as ups  # noqa: E402

REPO = BENCH.parent
CACHE = BENCH / ".cache"
VENV = CACHE / "venv"
PYPI = "https://pypi.org/simple/"
WHEEL = "numpy-2.1.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
HTML = {"Accept": "text/html"}  # proxpi answers 406 to a request without Accept
SERVERS = ("proxpi", "proxpi_min", "nginx", "direct")
LABELS = {
    "proxpi": "proxpi 1.3",
    "proxpi_min": "proxpi_min",
    "nginx": "nginx, static copy",
    "direct": "direct",
    # a reference that is another row's value (metric:server)
    "warm.pip:proxpi_min": "`pip download` via a cold proxpi_min",
}
CASES = ("small", "small-c256", "large", "large-gzip", "wheel", "root-list", "unknown", "download",
         "uv-compile", "pip-dry-run", "warm")


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- results


class Results:
    """Samples per (metric, server), errors beside them, and free-form notes."""

    def __init__(self):
        self.samples: dict[str, dict[str, list]] = {}
        self.errors: dict[str, dict[str, list]] = {}
        self.notes: list[str] = []

    def add(self, metric: str, server: str, value) -> None:
        self.samples.setdefault(metric, {}).setdefault(server, []).append(value)

    def fail(self, metric: str, server: str, message: str) -> None:
        message = " ".join(str(message).split())[:300]
        log(f"  ERROR {metric} {server}: {message}")
        self.errors.setdefault(metric, {}).setdefault(server, []).append(message)

    def median(self, metric: str, server: str) -> Optional[float]:
        values = self.samples.get(metric, {}).get(server)
        return statistics.median(values) if values else None

    def to_json(self) -> dict:
        return {"samples": self.samples, "errors": self.errors, "notes": self.notes}


def rotated(items: list, rep: int) -> list:
    """*items* starting at position *rep*: each server leads in turn."""
    if not items:
        return items
    k = rep % len(items)
    return items[k:] + items[:k]


# --------------------------------------------------------------------------- clients


def client_env(tmp: Path) -> dict:
    """The environment of every pip/uv run: no PIP_*/UV_* settings, no config files."""
    drop = ("PIP_", "UV_", "PYTHON", "VIRTUAL_ENV", "CONDA")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(drop) and not k.lower().endswith("_proxy")}
    env.update(
        PIP_CONFIG_FILE=os.devnull,  # pip then reads no configuration file at all
        UV_NO_CONFIG="1",
        HOME=str(tmp),
        XDG_CONFIG_HOME=str(tmp / "config"),
        XDG_CACHE_HOME=str(tmp / "cache"),
        NO_PROXY="127.0.0.1,localhost",
    )
    return env


def _pip(*args: str) -> list:
    return [str(VENV / "bin" / "pip"), *args, "--isolated", "--no-cache-dir",
            "--disable-pip-version-check", "-q", "--progress-bar", "off"]


def timed(cmd: list, env: dict, timeout: float = 600) -> float:
    """Seconds *cmd* took; raises with the tail of its output if it failed."""
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - t0
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"exit {r.returncode}: {' | '.join(tail)}")
    return elapsed


class Clients:
    """pip and uv as the bench runs them: scrubbed env, no caches, one index URL."""

    def __init__(self, sets: Path, work: Path):
        self.sets = sets
        self.work = work

    def _tmp(self) -> Path:
        return Path(tempfile.mkdtemp(prefix="client-", dir=self.work))

    def pip_download(self, index: str, set_name: str = "download-16.txt") -> float:
        """``pip download`` of a pinned set's wheels (--no-deps) into an empty directory."""
        tmp = self._tmp()
        try:
            dest = tmp / "dl"
            cmd = _pip("download", "--no-deps", "--only-binary", ":all:",
                       "--index-url", index, "-d", str(dest),
                       "-r", str(self.sets / set_name))
            t = timed(cmd, client_env(tmp))
            got = len(list(dest.iterdir()))
            want = len(ups.read_set(self.sets / set_name))
            if got != want:
                raise RuntimeError(f"downloaded {got} files, expected {want}")
            return t
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def warm(self, index: str, hashed: Path, pyz: Optional[Path]) -> float:
        """``proxpi.pyz warm`` of the same set (hashed requirements) into a new cache dir."""
        tmp = self._tmp()
        try:
            cache = tmp / "cache"
            target = [str(pyz)] if pyz else ["-m", "proxpi_min"]
            cmd = [sys.executable, *target, "warm", "--index-url", index,
                   "--cache-dir", str(cache), str(hashed)]
            env = dict(client_env(tmp), PYTHONPATH=str(REPO))
            t = timed(cmd, env)
            # The stored files, not the bookkeeping the cache dir's processes share
            # (.ledger, .journal, .users, lock and temp files all start with a dot).
            got = len([f for f in (cache / "files").rglob("*") if f.is_file() and not f.name.startswith(".")])
            want = len(hashed.read_text().splitlines())
            if got != want:
                raise RuntimeError(f"warmed {got} files, expected {want}")
            return t
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def uv_compile(self, index: str) -> float:
        tmp = self._tmp()
        try:
            out = tmp / "out.txt"
            cmd = [str(VENV / "bin" / "uv"), "pip", "compile", "--no-config", "--no-cache",
                   "--quiet", "--no-header", "--index-url", index,
                   "--python", str(VENV / "bin" / "python"), "-o", str(out),
                   str(self.sets / "resolve-55.txt")]
            t = timed(cmd, client_env(tmp))
            pins = [ln for ln in out.read_text().splitlines() if "==" in ln]
            want = len(ups.read_set(self.sets / "resolve-55.txt"))
            if len(pins) != want:
                raise RuntimeError(f"resolved {len(pins)} packages, expected {want}")
            return t
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def pip_dry_run(self, index: str) -> float:
        tmp = self._tmp()
        try:
            report = tmp / "report.json"
            cmd = _pip("install", "--dry-run", "--ignore-installed", "--index-url", index,
                       "--report", str(report), "-r", str(self.sets / "resolve-55.txt"))
            t = timed(cmd, client_env(tmp))
            got = len(json.loads(report.read_text()).get("install", []))
            want = len(ups.read_set(self.sets / "resolve-55.txt"))
            if got != want:
                raise RuntimeError(f"resolved {got} packages, expected {want}")
            return t
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- wrk


def wrk(url: str, threads: int, conns: int, seconds: float, headers: dict) -> dict:
    seconds = max(1, round(seconds))  # wrk takes whole seconds only
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--timeout", "30s",
           "-s", str(BENCH / "wrk_report.lua")]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    cmd.append(url)
    if not url.startswith(f"http://{srv.LOOPBACK}:"):
        raise RuntimeError(f"refusing to aim load at {url}: loopback only")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    for line in r.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            data = json.loads(line[len("WRK_JSON "):])
            data["seconds"] = data["duration_us"] / 1e6
            return data
    raise RuntimeError(f"wrk said: {(r.stdout + r.stderr).strip()[-300:]}")


# --------------------------------------------------------------------------- bench


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.reps = args.reps
        self.results = Results()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.run_dir = CACHE / "runs" / stamp
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.stamp = stamp
        self.clients = Clients(args.sets, self.run_dir)
        self.nginx: Optional[srv.Nginx] = None
        self.live: list[srv.Server] = []
        self.tags = 0
        self.pm_ok, self.pm_why = srv.proxpi_min_available(REPO)
        if args.pyz:
            self.pm_ok = args.pyz.exists()
            self.pm_why = "" if self.pm_ok else f"{args.pyz} does not exist"
        self.proxies = [s for s in ("proxpi", "proxpi_min") if s in args.servers]
        if "proxpi_min" in self.proxies and not self.pm_ok:
            self.proxies.remove("proxpi_min")
            self.results.notes.append(
                "proxpi_min not measured: `python -m proxpi_min --help` failed: "
                + (self.pm_why.splitlines() or ["?"])[-1][:200])

    # servers ---------------------------------------------------------------

    @property
    def index_url(self) -> str:
        return PYPI if self.args.pypi else self.nginx.upstream

    def start_proxy(self, kind: str) -> srv.Server:
        self.tags += 1
        tag = f"-{self.tags}"
        if kind == "proxpi":
            server = srv.Proxpi(self.run_dir, VENV, self.index_url, tag=tag)
        else:
            server = srv.ProxpiMin(self.run_dir, REPO, self.index_url, tag=tag,
                                   pyz=self.args.pyz)
        self.live.append(server)
        try:
            server.start()
        except Exception:
            self.stop(server)
            raise
        return server

    def stop(self, server: srv.Server) -> None:
        server.stop()
        if server in self.live:
            self.live.remove(server)
        cache_dir = getattr(server, "cache_dir", None)
        if cache_dir is not None and not self.args.keep:
            shutil.rmtree(cache_dir, ignore_errors=True)

    def index_of(self, kind: str, proxies: dict) -> str:
        if kind == "nginx":
            return self.nginx.base
        if kind == "direct":
            return self.index_url
        return proxies[kind].base

    def pypi_limited(self, kind: str) -> bool:
        """Whether a run of *kind* here would reach PyPI (then only --pypi-reps runs)."""
        return self.args.pypi and kind == "direct"

    # cases -----------------------------------------------------------------

    def run(self) -> None:
        self.nginx = srv.Nginx(self.run_dir, CACHE, root_json=self.args.root_json)
        self.nginx.start()
        log(f"nginx: upstream {self.nginx.upstream}, static copy {self.nginx.base}")
        log(f"upstream for the proxies: {self.index_url}")
        cases = [c for c in CASES if c in self.args.cases]
        wrk_cases = ("small", "small-c256", "large", "large-gzip", "wheel")
        if any(c in cases for c in wrk_cases):
            self.case_wrk([c for c in cases if c in wrk_cases])
        if "root-list" in cases:
            self.case_root_list()
        if "unknown" in cases:
            self.case_unknown()
        if "download" in cases:
            self.case_download()
        warm = [c for c in cases if c in ("uv-compile", "pip-dry-run")]
        if warm:
            self.case_resolve(warm)
        if "warm" in cases:
            self.case_warm()

    def _each_rep(self, name: str, reps: Optional[int] = None):
        reps = self.reps if reps is None else reps
        for rep in range(reps):
            log(f"{name}: repetition {rep + 1}/{reps}")
            yield rep

    def case_wrk(self, cases: list) -> None:
        specs = {
            "small": ("six/", {}, 2, 16, "rps"),
            "small-c256": ("six/", {}, 2, 256, "rps"),  # a fleet's many connections at once
            "large": ("botocore/", {}, 2, 16, "rps"),
            "large-gzip": ("botocore/", {"Accept-Encoding": "gzip"}, 2, 16, "rps"),
            "wheel": (f"numpy/{WHEEL}", {}, 2, 4, "mibps"),
        }
        kinds = [k for k in ("proxpi", "proxpi_min", "nginx") if k in self.args.servers
                 and (k == "nginx" or k in self.proxies)]
        proxies = {}
        try:
            for kind in list(kinds):
                if kind == "nginx":
                    continue
                try:
                    proxies[kind] = self.start_proxy(kind)
                except Exception as e:
                    kinds.remove(kind)
                    for case in cases:
                        self.results.fail(case, kind, e)
            for case in cases:
                path, extra, threads, conns, unit = specs[case]
                headers = dict(HTML, **extra)
                ready = []
                for kind in kinds:
                    url = self.index_of(kind, proxies) + path
                    try:
                        self._check_response(case, kind, url, headers)
                        wrk(url, threads, conns, 1, headers)  # warm-up, not recorded
                        ready.append(kind)
                    except Exception as e:
                        self.results.fail(case, kind, e)
                for rep in self._each_rep(case):
                    for kind in rotated(ready, rep):
                        url = self.index_of(kind, proxies) + path
                        try:
                            r = wrk(url, threads, conns, self.args.duration, headers)
                            errors = r["status_errors"] + r["read_errors"] + r["timeouts"]
                            if r["requests"] == 0 or errors > r["requests"] * 0.01:
                                raise RuntimeError(f"wrk: {r}")
                            value = (r["requests"] / r["seconds"] if unit == "rps"
                                     else r["bytes"] / r["seconds"] / 2**20)
                            self.results.add(case, kind, value)
                            log(f"  {kind:11s} {value:12,.1f} {unit}")
                        except Exception as e:
                            self.results.fail(case, kind, e)
        finally:
            for server in proxies.values():
                self.stop(server)

    def _check_response(self, case: str, kind: str, url: str, headers: dict) -> None:
        """One GET before the load: it must succeed; its size goes into the notes."""
        for _ in range(2):  # the first GET of a proxy may be the one that fills its cache
            status, hdrs, body = srv.http_get(url, headers)
        if status != 200:
            raise RuntimeError(f"GET {url} answered {status}")
        enc = hdrs.get("Content-Encoding") or "identity"
        if case == "wheel" and len(body) != (CACHE / "pypi" / "files" / WHEEL).stat().st_size:
            raise RuntimeError(f"wheel of {len(body)} bytes, not the file's size")
        self.results.add(f"{case}.bytes", kind, len(body))
        self.results.add(f"{case}.encoding", kind, enc)

    def case_root_list(self) -> None:
        url_path = ""
        kinds = [k for k in self.proxies] + (["nginx"] if "nginx" in self.args.servers else [])
        reps = min(self.reps, self.args.slow_reps)
        if self.args.pypi:
            reps = min(reps, self.args.pypi_reps)
        for rep in self._each_rep("root-list", reps):
            for kind in rotated(kinds, rep):
                server = None
                try:
                    if kind == "nginx":
                        url = self.nginx.base + url_path
                        t0 = time.perf_counter()
                        status, _, body = srv.http_get(url, HTML)
                        warm = time.perf_counter() - t0
                        self.results.add("root.warm", kind, warm)
                        self.results.add("root.bytes", kind, len(body))
                        continue
                    server = self.start_proxy(kind)
                    url = server.base + url_path
                    t0 = time.perf_counter()
                    status, _, body = srv.http_get(url, HTML, timeout=600)
                    cold = time.perf_counter() - t0
                    if status != 200:
                        raise RuntimeError(f"GET /index/ answered {status}")
                    t0 = time.perf_counter()
                    status, _, body = srv.http_get(url, HTML, timeout=600)
                    warm = time.perf_counter() - t0
                    if status != 200:
                        raise RuntimeError(f"second GET /index/ answered {status}")
                    mem = server.memory()
                    self.results.add("root.cold", kind, cold)
                    self.results.add("root.warm", kind, warm)
                    self.results.add("root.rss", kind, mem["hwm_mb"])
                    self.results.add("root.bytes", kind, len(body))
                    log(f"  {kind:11s} cold {cold:.2f} s, warm {warm:.2f} s, "
                        f"peak RSS {mem['hwm_mb']:.0f} MB, {len(body):,} bytes")
                except Exception as e:
                    self.results.fail("root.cold", kind, e)
                finally:
                    if server is not None:
                        self.stop(server)

    def case_unknown(self) -> None:
        reps = min(self.reps, self.args.slow_reps)
        if self.args.pypi:
            reps = min(reps, self.args.pypi_reps)
        for rep in self._each_rep("unknown", reps):
            for kind in rotated(list(self.proxies), rep):
                server = None
                try:
                    offset = self.nginx.log_offset()
                    server = self.start_proxy(kind)
                    url = server.base + ups.UNKNOWN_PROJECT + "/"
                    t0 = time.perf_counter()
                    status, _, _ = srv.http_get(url, HTML, timeout=600)
                    elapsed = time.perf_counter() - t0
                    mem = server.memory()
                    if status != 404:
                        raise RuntimeError(f"answered {status}, not 404")
                    self.results.add("unknown.time", kind, elapsed)
                    self.results.add("unknown.rss", kind, mem["hwm_mb"])
                    fetched = "?"
                    if not self.args.pypi:
                        lines = self.nginx.upstream_requests(offset)
                        roots = [ln for ln in lines
                                 if ln.split(" ", 1)[1].split("?")[0] in ("/simple/", "/simple")]
                        fetched = len(roots)
                        self.results.add("unknown.root_fetches", kind, fetched)
                        self.results.add("unknown.upstream_requests", kind, len(lines))
                    log(f"  {kind:11s} {elapsed:.2f} s, peak RSS {mem['hwm_mb']:.0f} MB, "
                        f"root-list fetches: {fetched}")
                except Exception as e:
                    self.results.fail("unknown.time", kind, e)
                finally:
                    if server is not None:
                        self.stop(server)

    def case_download(self) -> None:
        kinds = [k for k in SERVERS if k in self.args.servers
                 and (k in ("nginx", "direct") or k in self.proxies)]
        for rep in self._each_rep("download"):
            for kind in rotated(kinds, rep):
                if rep >= self.args.pypi_reps and (self.pypi_limited(kind) or (
                        self.args.pypi and kind in self.proxies)):
                    continue  # cold runs against PyPI are few
                server = None
                try:
                    if kind in ("nginx", "direct"):
                        t = self.clients.pip_download(self.index_of(kind, {}))
                        metric = "download.warm" if kind == "nginx" else "download.cold"
                        self.results.add(metric, kind, t)
                        log(f"  {kind:11s} {t:.2f} s")
                        continue
                    server = self.start_proxy(kind)
                    cold = self.clients.pip_download(server.base)
                    self.results.add("download.cold", kind, cold)
                    warm = self.clients.pip_download(server.base)
                    self.results.add("download.warm", kind, warm)
                    log(f"  {kind:11s} cold {cold:.2f} s, warm {warm:.2f} s")
                except Exception as e:
                    self.results.fail("download.cold", kind, e)
                finally:
                    if server is not None:
                        self.stop(server)

    def case_resolve(self, cases: list) -> None:
        kinds = [k for k in SERVERS if k in self.args.servers
                 and (k in ("nginx", "direct") or k in self.proxies)]
        run = {"uv-compile": self.clients.uv_compile, "pip-dry-run": self.clients.pip_dry_run}
        proxies = {}
        try:
            ready = {case: [] for case in cases}
            for kind in kinds:
                try:
                    if kind in ("proxpi", "proxpi_min"):
                        proxies[kind] = self.start_proxy(kind)
                except Exception as e:
                    for case in cases:
                        self.results.fail(case, kind, e)
                    continue
                for case in cases:
                    if kind == "direct" and self.args.pypi:
                        ready[case].append(kind)  # no warm-up run against PyPI
                        continue
                    try:
                        run[case](self.index_of(kind, proxies))  # warm-up, not recorded
                        ready[case].append(kind)
                    except Exception as e:
                        self.results.fail(case, kind, e)
            for case in cases:
                for rep in self._each_rep(case):
                    for kind in rotated(ready[case], rep):
                        if self.pypi_limited(kind) and rep >= self.args.pypi_reps:
                            continue
                        try:
                            t = run[case](self.index_of(kind, proxies))
                            self.results.add(case, kind, t)
                            log(f"  {kind:11s} {t:.2f} s")
                        except Exception as e:
                            self.results.fail(case, kind, e)
        finally:
            for server in proxies.values():
                self.stop(server)

    def case_warm(self) -> None:
        """`warm` from the set's hashed requirements against `pip download` of the same
        wheels through a cold proxy: both start with nothing cached."""
        hashed = ups.hashed_set(CACHE, self.args.sets)
        for rep in self._each_rep("warm"):
            for kind in rotated(list(self.proxies) + ["warm"], rep):
                server = None
                try:
                    if kind == "warm":
                        if "proxpi_min" not in self.proxies:
                            continue
                        t = self.clients.warm(self.index_url, hashed, self.args.pyz)
                        self.results.add("warm.warm", "proxpi_min", t)
                        log(f"  {'warm':11s} {t:.2f} s")
                        continue
                    server = self.start_proxy(kind)
                    t = self.clients.pip_download(server.base, "resolve-55.txt")
                    self.results.add("warm.pip", kind, t)
                    log(f"  {kind:11s} pip download, cold: {t:.2f} s")
                except Exception as e:
                    self.results.fail("warm.warm" if kind == "warm" else "warm.pip",
                                      "proxpi_min" if kind == "warm" else kind, e)
                finally:
                    if server is not None:
                        self.stop(server)

    def close(self) -> None:
        for server in list(self.live):
            self.stop(server)
        if self.nginx is not None:
            self.nginx.stop()
        if not self.args.keep:
            shutil.rmtree(self.run_dir, ignore_errors=True)


# --------------------------------------------------------------------------- table

# metric, work, unit, which way is better, target (kind, reference, factor) or None
ROWS = [
    ("small", "warm small page `/index/six/`, wrk -t2 -c16", "req/s", "ratio_min", "proxpi", 8),
    ("small-c256", "same, wrk -t2 -c256", "req/s", "ratio_min", "proxpi", 8),
    ("large", "warm large page `/index/botocore/`", "req/s", "ratio_min", "proxpi", 50),
    ("large-gzip", "same, `Accept-Encoding: gzip`", "req/s", "ratio_min", "proxpi", 100),
    ("wheel", "cached 16 MB wheel, wrk -t2 -c4", "MiB/s", "ratio_min", "nginx", 0.9),
    ("root.cold", "`GET /index/` (930k projects), cold", "s", "abs_max", None, 10),
    ("root.warm", "`GET /index/`, warm", "s", "abs_max", None, 0.3),
    ("root.rss", "`GET /index/`, peak RSS", "MB", "abs_max", None, 200),
    ("unknown.time", "unknown project on a fresh server", "s", "abs_max", None, 1),
    ("unknown.rss", "unknown project, peak RSS", "MB", None, None, None),
    ("unknown.root_fetches", "unknown project, root-list fetches upstream", "", "abs_max", None, 0),
    ("download.cold", "`pip download` 16 pinned wheels, cold proxy", "s", "ratio_max", "direct", 1.15),
    ("download.warm", "same, warm proxy", "s", "ratio_max", "nginx", 1.1),
    ("uv-compile", "`uv pip compile`, 55-package set, warm proxy", "s", "ratio_max", "nginx", 1.3),
    ("pip-dry-run", "`pip install --dry-run`, same set, warm proxy", "s", "ratio_max", "nginx", 1.1),
    ("warm.pip", "`pip download` of the set's 55 wheels, cold proxy", "s", None, None, None),
    ("warm.warm", "`proxpi.pyz warm` of the same wheels (hashed requirements), empty cache",
     "s", "ratio_max", "warm.pip:proxpi_min", 1.0),
]


def fmt(value: Optional[float], unit: str) -> str:
    if value is None:
        return ""
    if unit in ("req/s", "MiB/s"):
        return f"{value:,.0f} {unit}" if value >= 100 else f"{value:,.1f} {unit}"
    if unit == "s":
        if value < 0.1:
            return f"{value * 1000:.1f} ms"
        return f"{value:.2f} s" if value < 100 else f"{value:.0f} s"
    if unit == "MB":
        return f"{value:,.0f} MB"
    return f"{value:g}"


def target_text(kind, ref, factor) -> str:
    if kind == "ratio_min":
        return f"≥ {factor:g}x {LABELS[ref]}"
    if kind == "ratio_max":
        return f"≤ {factor:g}x {LABELS[ref]}"
    if kind == "abs_max":
        return f"≤ {factor:g}" if factor else "0"
    return ""


def table(results: Results, shown: list) -> str:
    head = ["work"] + [LABELS[s] for s in shown] + ["target", "proxpi_min: ratio", "met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for metric, work, unit, kind, ref, factor in ROWS:
        if metric not in results.samples and metric not in results.errors:
            continue
        cells = [work]
        for s in shown:
            value = results.median(metric, s)
            errs = results.errors.get(metric, {}).get(s)
            cell = fmt(value, unit)
            if errs and value is None:
                cell = "failed"
            elif errs:
                cell += f" ({len(errs)} failed)"
            n = len(results.samples.get(metric, {}).get(s, []))
            if cell and n and metric != "unknown.root_fetches":
                cell += f" <sub>n={n}</sub>"
            cells.append(cell)
        mine = results.median(metric, "proxpi_min")
        ratio, met = "", ""
        if kind in ("ratio_min", "ratio_max"):
            other = results.median(*ref.split(":")) if ":" in ref else results.median(metric, ref)
            if mine is not None and other:
                r = mine / other
                ratio = f"{r:,.0f}x {LABELS[ref]}" if r >= 100 else f"{r:.2f}x {LABELS[ref]}"
                met = "yes" if (r >= factor if kind == "ratio_min" else r <= factor) else "no"
        elif kind == "abs_max" and mine is not None:
            px = results.median(metric, "proxpi")
            if px and mine and unit == "s":
                r = px / mine
                ratio = (f"{r:,.0f}x" if r >= 100 else f"{r:.1f}x") + " faster than proxpi"
            met = "yes" if mine <= factor else "no"
        cells += [target_text(kind, ref, factor) + (f" {unit}" if kind == "abs_max" and unit else ""),
                  ratio, met]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return (f"{os.cpu_count()} cores ({cpu}), {mem} RAM, Linux {platform.release()}, "
            f"Python {platform.python_version()}")


def versions() -> str:
    def out(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"
    pip = out([str(VENV / "bin" / "pip"), "--version"]).split(" from ")[0]
    uv = out([str(VENV / "bin" / "uv"), "--version"])
    nginx = out(["nginx", "-v"]).replace("nginx version: ", "")
    wrkv = out(["wrk", "--version"]).split(" [")[0]
    gun = out([str(VENV / "bin" / "gunicorn"), "--version"])
    commit = out(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    return f"{pip}, {uv}, {nginx}, {wrkv}, {gun}; repo at {commit}"


def response_sizes(results: Results, shown: list) -> list:
    out = []
    for metric, what in (("small.bytes", "six page"), ("large.bytes", "botocore page"),
                         ("large-gzip.bytes", "botocore page, gzip"),
                         ("root.bytes", "`/index/`")):
        per = results.samples.get(metric, {})
        cells = []
        for s in shown:
            if per.get(s):
                enc = results.samples.get(metric.replace(".bytes", ".encoding"), {}).get(s)
                plain = " (not gzipped)" if metric == "large-gzip.bytes" and enc and enc[0] != "gzip" else ""
                cells.append(f"{LABELS[s]} {per[s][-1]:,}{plain}")
        if cells:
            out.append(f"{what}: " + ", ".join(cells))
    return out


def details(results: Results) -> str:
    lines = []
    for metric in sorted(set(results.samples) | set(results.errors)):
        for s, values in sorted(results.samples.get(metric, {}).items()):
            shown = ", ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in values)
            lines.append(f"- {metric} / {s}: {shown}")
        for s, errs in sorted(results.errors.get(metric, {}).items()):
            lines.append(f"- {metric} / {s}: FAILED {len(errs)}x: {errs[0]}")
    return "\n".join(lines)


def report(bench: Bench, started: str, load: tuple) -> str:
    args = bench.args
    shown = [s for s in SERVERS if s in args.servers]
    LABELS["direct"] = "PyPI direct" if args.pypi else "direct (local upstream)"
    upstream = "PyPI (--pypi)" if args.pypi else "local upstream (nginx on loopback)"
    parts = [
        f"Measured {started} on {machine()}.",
        f"Upstream: {upstream}. "
        + (f"Medians of {args.reps} repetitions" if args.reps > 1 else "One repetition")
        + (f" ({min(args.reps, args.slow_reps)} for the root-list and unknown-project rows)"
           if args.slow_reps < args.reps else "")
        + (f" ({args.pypi_reps} for runs that reach PyPI)" if args.pypi else "")
        + f", wrk for {args.duration:g} s a run. Load average at start/end: "
        f"{load[0]:.2f}/{load[1]:.2f}.",
        f"Tools: {versions()}.",
        "",
        table(bench.results, shown),
    ]
    sizes = response_sizes(bench.results, shown)
    if sizes:
        parts += ["", "Bytes per response (what each server sent for the same request): "
                  + "; ".join(sizes) + "."]
    if bench.results.notes:
        parts += [""] + [f"Note: {n}" for n in bench.results.notes]
    return "\n".join(parts)


def write_readme(text: str) -> None:
    readme = BENCH / "README.md"
    start, end = "<!-- bench:latest:start -->", "<!-- bench:latest:end -->"
    body = readme.read_text()
    if start not in body or end not in body:
        raise SystemExit(f"{readme} has no {start} ... {end} section")
    head, rest = body.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{text}\n{end}{tail}")


# --------------------------------------------------------------------------- main


def default_sets() -> Path:
    for cand in (os.environ.get("BENCH_SETS"), REPO.parent / "shared" / "bench-sets",
                 "/work/shared/bench-sets", BENCH / "sets"):
        if cand and (Path(cand) / "resolve-55.txt").exists():
            return Path(cand)
    return BENCH / "sets"


def parse_args(argv: list) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run.sh", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="1 repetition, wrk for 3 s: a smoke test, not figures")
    p.add_argument("--reps", type=int, default=None, help="repetitions (default 5)")
    p.add_argument("--slow-reps", type=int, default=3,
                   help="at most this many repetitions of the fresh-server cases of the "
                        "whole index (root-list, unknown: ~45 s a run for proxpi; default 3)")
    p.add_argument("--duration", type=int, default=None,
                   help="seconds of each wrk run (default 8, --quick 3)")
    p.add_argument("--pypi", action="store_true",
                   help="proxies and 'direct' use the real PyPI as upstream")
    p.add_argument("--root-json", action="store_true",
                   help="the local upstream answers its root list in JSON when asked "
                        "(PyPI as reached here sends HTML only)")
    p.add_argument("--pypi-reps", type=int, default=1,
                   help="with --pypi: repetitions of runs that reach PyPI (default 1)")
    p.add_argument("--cases", default=",".join(CASES),
                   help=f"comma-separated subset of: {','.join(CASES)}")
    p.add_argument("--servers", default=",".join(SERVERS),
                   help=f"comma-separated subset of: {','.join(SERVERS)}")
    p.add_argument("--pyz", type=Path, default=None,
                   help="run proxpi_min from this zipapp instead of the source tree")
    p.add_argument("--sets", type=Path, default=None, help="bench sets directory")
    p.add_argument("--keep", action="store_true", help="keep logs and caches of the run")
    p.add_argument("--write-readme", action="store_true",
                   help="put the table into bench/README.md")
    p.add_argument("--prepare-only", action="store_true",
                   help="fetch and build the data, then stop")
    args = p.parse_args(argv)
    args.reps = args.reps or (1 if args.quick else 5)
    args.duration = args.duration or (3 if args.quick else 8)
    args.sets = (args.sets or default_sets()).resolve()
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    for c in args.cases:
        if c not in CASES:
            p.error(f"unknown case {c!r}")
    for s in args.servers:
        if s not in SERVERS:
            p.error(f"unknown server {s!r}")
    if args.pyz:
        args.pyz = args.pyz.resolve()
    return args


def prepare(args: argparse.Namespace) -> dict:
    for tool in ("pip", "uv", "gunicorn", "python"):
        if not (VENV / "bin" / tool).exists():
            raise SystemExit(f"{VENV}/bin/{tool} missing: run bench/run.sh")
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} missing: run bench/run.sh (apt-get install {tool})")
    tmp = Path(tempfile.mkdtemp(prefix="fetch-", dir=CACHE))
    try:
        pip = [str(VENV / "bin" / "pip"), "--isolated", "--no-cache-dir",
               "--disable-pip-version-check"]
        ups.fetch(CACHE, args.sets, pip, client_env(tmp), log=log)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ups.build(CACHE, args.sets, log=log)


def main(argv: list) -> int:
    args = parse_args(argv)
    CACHE.mkdir(parents=True, exist_ok=True)
    facts = prepare(args)
    if args.prepare_only:
        return 0

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    started = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    load0 = os.getloadavg()[0]
    bench = Bench(args)
    log(f"sets: {args.sets}; proxpi_min: {'yes' if bench.pm_ok else 'not runnable'}; "
        f"{facts['root_names']} names in the root list")
    try:
        bench.run()
    finally:
        bench.close()
    text = report(bench, started, (load0, os.getloadavg()[0]))
    out = CACHE / "results"
    out.mkdir(exist_ok=True)
    (out / f"{bench.stamp}.md").write_text(text + "\n\nSamples:\n" + details(bench.results) + "\n")
    (out / f"{bench.stamp}.json").write_text(json.dumps(
        {"started": started, "args": {k: str(v) for k, v in vars(args).items()},
         **bench.results.to_json()}, indent=1))
    print(text)
    print("\nSamples:\n" + details(bench.results))
    log(f"saved {out / bench.stamp}.md and .json")
    if args.write_readme:
        write_readme(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
