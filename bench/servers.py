"""Servers under test, each a child process on 127.0.0.1 that the bench starts and stops.

* ``Nginx``: one nginx master with two sites: the local upstream (PyPI's layout, under
  ``/simple/`` and ``/files/``) and the static copy (a proxy's layout, under ``/index/``).
* ``Proxpi``: proxpi 1.3 under gunicorn, started as its Docker image starts it.
* ``ProxpiMin``: this repository's proxy, ``python -m proxpi_min`` (or the zipapp).
* ``Forward``: ``bench/forward.py``, a proxy that only forwards (no cache, no parsing).

Every server answers ``base`` (its index URL, ending in ``/``) and ``rss()``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

LOOPBACK = "127.0.0.1"

# PEP 691 negotiation in nginx: JSON when the Accept header names the v1 (or latest)
# JSON type with a non-zero quality, else HTML. pip, uv and proxpi all send JSON first.
_NGINX_CONF = r"""
worker_processes 2;
error_log {run}/nginx-error.log warn;
pid {run}/nginx.pid;
{user}
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {run}/tmp-body;
    proxy_temp_path {run}/tmp-proxy;
    fastcgi_temp_path {run}/tmp-fastcgi;
    uwsgi_temp_path {run}/tmp-uwsgi;
    scgi_temp_path {run}/tmp-scgi;
    default_type application/octet-stream;
    types {{ }}
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 100000;
    open_file_cache max=2000 inactive=60s;
    gzip off;
    gzip_static on;
    gzip_vary on;
    server_tokens off;
    log_format bench '$msec $status $body_bytes_sent "$request" "$http_accept"';
    map $http_accept $simple_page {{
        default index.html;
        "~*application/vnd\.pypi\.simple\.(v1|latest)\+json(?!\s*;\s*q=0(\.0*)?\s*(,|$))" index.v1.json;
    }}

    # the local upstream: PyPI's layout
    server {{
        listen {host}:{upstream_port} reuseport;
        root {cache}/upstream;
        access_log {run}/upstream-access.log bench;
        # "/simple/x" redirects to "/simple/x/" on the origin the client used: an absolute
        # redirect would name this port and lead a client round bench/wan.py's relay.
        absolute_redirect off;
        location = /simple/ {{
            types {{ text/html html; application/vnd.pypi.simple.v1+json json; }}
            add_header Vary Accept;
            try_files /simple/{root_page} =404;
        }}
        location /simple/ {{
            location ~ /$ {{
                types {{ text/html html; application/vnd.pypi.simple.v1+json json; }}
                add_header Vary Accept;
                try_files ${{uri}}{project_page} =404;
            }}
        }}
        location /files/ {{ }}
    }}

    # the static copy: the pages and files as a proxy serves them
    server {{
        listen {host}:{static_port} reuseport;
        root {cache}/static;
        access_log off;
        location /index/ {{
            location ~ /$ {{
                types {{ text/html html; application/vnd.pypi.simple.v1+json json; }}
                add_header Vary Accept;
                try_files $uri$simple_page =404;
            }}
        }}
    }}
}}
"""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def process_tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_memory(pid: int) -> dict:
    """Memory of a process tree in MB: the largest peak (VmHWM) of any one process, and
    the sum of current VmRSS (which counts pages shared after a fork twice)."""
    pids = process_tree(pid)
    return {
        "hwm_mb": max((_status_kb(p, "VmHWM") for p in pids), default=0) / 1024,
        "rss_sum_mb": sum(_status_kb(p, "VmRSS") for p in pids) / 1024,
    }


def http_get(url: str, headers: Optional[dict] = None, timeout: float = 300) -> tuple:
    """(status, headers, body) of a GET on loopback; HTTP errors are answers, not raised."""
    req = urllib.request.Request(url, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


class Server:
    """A child process with a log file; ``stop`` ends it and everything it started."""

    name = "server"
    label = "server"
    proc: Optional[subprocess.Popen] = None

    def __init__(self, run_dir: Path, tag: str = ""):
        self.run_dir = run_dir
        self.name = f"{self.name}{tag}"  # one log (and cache dir) per server started
        self.log_path = run_dir / f"{self.name}.log"

    def _spawn(self, cmd: list, env: Optional[dict] = None, cwd: Optional[Path] = None):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=cwd, start_new_session=True,
        )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.proc.pid

    def memory(self) -> dict:
        return tree_memory(self.proc.pid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _wait_http(self, url: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited: see {self.log_path}")
            try:
                status, _, _ = http_get(url, timeout=5)
                if status < 500:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not answering at {url} after {timeout} s")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            # The child leads its own process group (start_new_session), so this ends it
            # and its workers, and nothing else.
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)
        self.proc = None
        self.log.close()


class Nginx(Server):
    name = "nginx"
    label = "nginx static copy"

    def __init__(self, run_dir: Path, cache: Path, root_json: bool = False, html_only: bool = False):
        super().__init__(run_dir)
        self.cache = cache
        self.root_json = root_json
        self.html_only = html_only  # project pages in HTML whatever is asked (no sizes, no upload times)
        self.upstream_port = free_port()
        self.static_port = free_port()
        self.upstream = f"http://{LOOPBACK}:{self.upstream_port}/simple/"
        self.base = f"http://{LOOPBACK}:{self.static_port}/index/"
        self.access_log = run_dir / "upstream-access.log"

    def start(self) -> "Nginx":
        conf = self.run_dir / "nginx.conf"
        conf.write_text(_NGINX_CONF.format(
            run=self.run_dir, cache=self.cache.resolve(), host=LOOPBACK,
            upstream_port=self.upstream_port, static_port=self.static_port,
            root_page="$simple_page" if self.root_json else "index.html",
            project_page="index.html" if self.html_only else "$simple_page",
            user="user root;" if os.geteuid() == 0 else "",
        ))  # fmt: skip
        self._spawn(["nginx", "-p", str(self.run_dir), "-c", str(conf),
                     "-e", str(self.run_dir / "nginx-error.log"), "-g", "daemon off;"])
        self._wait_http(self.upstream + "six/")
        self._wait_http(self.base + "six/")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGQUIT)  # graceful: the master ends its workers
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        super().stop()

    def log_offset(self) -> int:
        try:
            return self.access_log.stat().st_size
        except FileNotFoundError:
            return 0

    def upstream_requests(self, since: int) -> list[str]:
        """Request lines the upstream logged after byte *since* of its access log."""
        time.sleep(0.1)  # nginx writes its log line after the response
        with open(self.access_log, "rb") as f:
            f.seek(since)
            lines = f.read().decode(errors="replace").splitlines()
        out = []
        for line in lines:
            m = re.search(r'"([A-Z]+ \S+) HTTP', line)
            if m:
                out.append(m.group(1))
        return out


class Proxpi(Server):
    """proxpi 1.3 under gunicorn, with the Docker image's command line."""

    name = "proxpi"
    label = "proxpi 1.3"

    def __init__(self, run_dir: Path, venv: Path, index_url: str, tag: str = ""):
        super().__init__(run_dir, tag)
        self.venv = venv
        self.index_url = index_url
        self.port = free_port()
        self.base = f"http://{LOOPBACK}:{self.port}/index/"
        self.cache_dir = run_dir / f"{self.name}-cache"

    def start(self) -> "Proxpi":
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROXPI_")}
        env.update(PROXPI_INDEX_URL=self.index_url, PROXPI_CACHE_DIR=str(self.cache_dir))
        # ENTRYPOINT + CMD of proxpi 1.3.1's Dockerfile, bound to loopback instead of
        # 0.0.0.0:5000; the access log goes to the log file as it goes to docker's.
        cmd = [
            str(self.venv / "bin" / "gunicorn"), "--preload",
            "--access-logfile", "-",
            "--access-logformat", '%(h)s "%(r)s" %(s)s %(b)s %(M)dms',
            "--logger-class", "proxpi.server._GunicornLogger",
            "proxpi.server:app",
            "--bind", f"{LOOPBACK}:{self.port}", "--threads", "2", "--no-control-socket",
        ]  # fmt: skip
        self._spawn(cmd, env=env, cwd=self.run_dir)
        self._wait_http(f"http://{LOOPBACK}:{self.port}/health")
        return self


class ProxpiMin(Server):
    """This repository's proxy, from its source tree or from the zipapp."""

    name = "proxpi_min"
    label = "proxpi_min"

    def __init__(self, run_dir: Path, repo: Path, index_url: str, tag: str = "",
                 pyz: Optional[Path] = None, python: str = sys.executable):
        super().__init__(run_dir, tag)
        self.repo = repo
        self.pyz = pyz
        self.python = python
        self.index_url = index_url
        self.port = free_port()
        self.base = f"http://{LOOPBACK}:{self.port}/index/"
        self.cache_dir = run_dir / f"{self.name}-cache"

    def start(self) -> "ProxpiMin":
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PROXPI_", "PYTHON"))}
        target = [str(self.pyz)] if self.pyz else ["-m", "proxpi_min"]
        cmd = [self.python, *target, "--host", LOOPBACK, "--port", str(self.port),
               "--index-url", self.index_url, "--cache-dir", str(self.cache_dir)]
        self._spawn(cmd, env=env, cwd=self.repo)
        self._wait_listening()
        return self

    def _wait_listening(self, timeout: float = 60) -> None:
        want = f"listening on http://{LOOPBACK}:{self.port}/"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if want in self.log_path.read_text(errors="replace"):
                self._wait_http(self.base.rsplit("/index/", 1)[0] + "/")
                return
            if not self.alive():
                raise RuntimeError(f"{self.name} exited: see {self.log_path}")
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not log {want!r} within {timeout} s")


class Forward(Server):
    """``bench/forward.py`` in front of *upstream* (host, port), streaming or, *whole*,
    reading each answer whole first; its index URL is the upstream's path, the links of
    the upstream's pages lead back to it."""

    name = "forward"
    label = "forward"
    script = "forward.py"

    def __init__(self, run_dir: Path, upstream: tuple, tag: str = "", whole: bool = False):
        super().__init__(run_dir, tag)
        self.upstream = upstream
        self.whole = whole
        self.port = free_port()
        self.base = f"http://{LOOPBACK}:{self.port}/simple/"

    def start(self) -> "Forward":
        script = Path(__file__).with_name(self.script)
        upstream = f"{self.upstream[0]}:{self.upstream[1]}"
        flags = ["--whole"] if self.whole else []
        self._spawn([sys.executable, str(script), "--port", str(self.port), "--upstream", upstream, *flags])
        self._wait_http(self.base)
        return self


class PassThrough(Forward):
    """``bench/passthrough.py`` in front of *upstream*: JSON pages passed through
    rewritten and parsed after the answer, metadata read with ranges."""

    name = "passthrough"
    label = "passthrough"
    script = "passthrough.py"


def proxpi_min_available(repo: Path, python: str = sys.executable) -> tuple[bool, str]:
    """Whether ``python -m proxpi_min --help`` works in *repo*, and what it said."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROXPI_", "PYTHON"))}
    try:
        r = subprocess.run([python, "-m", "proxpi_min", "--help"], cwd=repo, env=env,
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    return r.returncode == 0, (r.stdout + r.stderr).strip()
