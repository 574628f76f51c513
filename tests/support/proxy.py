"""Run the proxy under test (in-process or as a subprocess), pip, and raw HTTP clients.

Nothing here imports ``proxpi_min`` at import time, so the support code and its
own tests work before the runtime package exists.

Every pip subprocess runs with a scrubbed environment: no ``PIP_*`` variable,
``PIP_CONFIG_FILE=os.devnull`` (pip then reads no config file at all, so the
machine's find-links, extra index and constraints cannot leak in), no proxy
variables, and ``--index-url <proxy>/index/`` as the only source.
"""

from __future__ import annotations

import http.client as http_client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from stat import S_ISREG
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

__all__ = [
    "REPO_ROOT",
    "HTTPResult",
    "assert_healthy",
    "ProxyProcess",
    "RunningProxy",
    "http",
    "cache_dir_bytes",
    "make_venv",
    "pip_env",
    "proxy_env",
    "raw_request",
    "raw_status",
    "recv_until_closed",
    "run_pip",
    "start_proxy",
    "to_index_settings",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
LISTENING_RE = re.compile(r"listening on (https?://\S+)")
PIP_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, "
    "application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"
)
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
# Where proxy processes keep the modules they compile when PYTHONDONTWRITEBYTECODE keeps
# them from beside the sources (set by conftest.py): else each start compiles them all again.
PYCACHE_PREFIX: str | None = None

# Timeouts the in-process proxy gets unless a test overrides them: long enough
# for a loaded CI machine, short enough that a hang fails a test instead of CI.
DEFAULT_CONNECT_TIMEOUT = 3.0
DEFAULT_READ_TIMEOUT = 10.0


# -- plain HTTP -------------------------------------------------------------


class HTTPResult(NamedTuple):
    """A response; unpacks as ``status, headers, body``. ``headers`` is
    case-insensitive (``http.client.HTTPMessage``)."""

    status: int
    headers: http_client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def content_type(self) -> str:
        """The media type without parameters, lowercased."""
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()


def http(
    method: str,
    url: str,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 15.0,
) -> HTTPResult:
    """One request with ``http.client`` (redirects are not followed)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost"):
        raise ValueError(f"tests only talk to 127.0.0.1 over http, not {url!r}")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    connection = http_client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request(method, target, body=body, headers=dict(headers or {}))
        response = connection.getresponse()
        data = response.read()
        return HTTPResult(response.status, response.headers, data)
    finally:
        connection.close()


def narrow_link(url: str, timeout: float = 30.0) -> http_client.HTTPConnection:
    """An http.client connection to the host and port of *url*, its send buffer as small
    as a real link keeps it: loopback buffers take megabytes, so a client would otherwise
    hand a whole body to the kernel before the server reads a byte of it."""
    parts = urllib.parse.urlsplit(url)
    connection = http_client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    connection.connect()
    connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    return connection


def raw_request(url: str, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` as-is to the host and port of ``url``; return what comes back.

    Reading stops at EOF, at the end of the first response when its
    Content-Length is known, or at the timeout (returning what arrived).
    """
    parts = urllib.parse.urlsplit(url)
    received = b""
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(data)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
            if _complete_response(received):
                break
    return received


def _complete_response(data: bytes) -> bool:
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    match = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    return match is not None and len(rest) >= int(match.group(1))


def recv_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes (a reset counts as a close); raises
    socket.timeout if it keeps the connection open past *timeout*."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def raw_status(response: bytes) -> int | None:
    """The status code of a raw HTTP response, or None if there is no status line."""
    match = re.match(rb"HTTP/\d(?:\.\d)? (\d{3})", response)
    return int(match.group(1)) if match else None


# -- in-process proxy ----------------------------------------------------------


def to_index_settings(spec: Any, ttl: float) -> Any:
    """An ``IndexSettings`` from an Upstream, a URL, a ``(url_or_upstream, ttl)``
    pair, or an ``IndexSettings`` (returned unchanged)."""
    from proxpi_min.core.settings import IndexSettings

    if isinstance(spec, IndexSettings):
        return spec
    if isinstance(spec, tuple):
        spec, ttl = spec
    url = spec if isinstance(spec, str) else spec.url
    return IndexSettings(url=url, ttl=float(ttl))


class RunningProxy:
    """A ``ProxyServer`` serving from a daemon thread."""

    def __init__(self, server: Any, settings: Any) -> None:
        self.server = server
        self.settings = settings
        self.port: int = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever,
            name=f"proxy-{self.port}",
            daemon=True,
        )
        self._thread.start()
        self._stopped = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def index_url(self) -> str:
        return f"{self.url}/index/"

    def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        timeout: float = 15.0,
    ) -> HTTPResult:
        """``http()`` against this proxy; ``path`` starts with ``/``."""
        return http(method, self.url + path, headers, body, timeout)

    def get(self, path: str, headers: Mapping[str, str] | None = None, **kwargs: Any) -> HTTPResult:
        return self.request("GET", path, headers, **kwargs)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)

    def __enter__(self) -> RunningProxy:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


def assert_healthy(target: Any) -> None:
    """The proxy *target* (a RunningProxy or ProxyProcess) answers ``/health`` with 200, as proxpi."""
    result = target.get("/health")
    assert (result.status, json.loads(result.body)) == (200, {"status": "success", "data": None})


def start_proxy(*, indexes: Sequence[Any], **overrides: Any) -> RunningProxy:
    """Build ``Settings`` (127.0.0.1, port 0, short timeouts, pages-only prefetch
    unless overridden),
    bind a ``ProxyServer`` and serve it in a daemon thread.

    ``indexes``: the first is the root index (default TTL 1800 s), the rest are
    extras (default TTL 180 s); each as accepted by ``to_index_settings``.
    """
    from proxpi_min.core.settings import Settings
    from proxpi_min.app.serve import ProxyServer

    index_settings = tuple(
        to_index_settings(spec, 1800.0 if position == 0 else 180.0)
        for position, spec in enumerate(indexes)
    )
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "connect_timeout": DEFAULT_CONNECT_TIMEOUT,
        "read_timeout": DEFAULT_READ_TIMEOUT,
        # Tests count the upstream reads a request makes: the default prefetch's
        # metadata guesses would add reads when their jobs happen to run first. The
        # guesses have their tests (test_prefetch.py, prefetch="metadata"); a proxy
        # run as a process (ProxyProcess) keeps the default.
        "prefetch": "pages",
    }
    values.update(overrides)
    settings = Settings(indexes=index_settings, **values)
    server = ProxyServer(settings)
    return RunningProxy(server, settings)


# -- environments ------------------------------------------------------------


def _scrubbed(prefixes: Iterable[str], base: Mapping[str, str] | None) -> dict[str, str]:
    source = dict(os.environ if base is None else base)
    drop = tuple(prefixes)
    env = {
        key: value
        for key, value in source.items()
        if not key.upper().startswith(drop) and key.lower() not in _PROXY_VARS
    }
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def pip_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for pip: no PIP_* variables, no config file, no proxies."""
    env = _scrubbed(("PIP_",), base)
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PYTHONNOUSERSITE"] = "1"
    return env


def proxy_env(extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """The environment for ``python -m proxpi_min``: no PROXPI_*/PIP_* variables
    from the machine, compiled modules kept in PYCACHE_PREFIX (if set) rather than not at
    all, then ``extra`` on top (a None value removes a key)."""
    env = _scrubbed(("PROXPI_", "PIP_"), None)
    env["PYTHONUNBUFFERED"] = "1"
    if PYCACHE_PREFIX is not None and env.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
        env["PYTHONPYCACHEPREFIX"] = PYCACHE_PREFIX
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


# -- pip ---------------------------------------------------------------------


def run_pip(
    args: Sequence[str],
    index_url: str,
    cwd: str | os.PathLike | None = None,
    python: str | os.PathLike = sys.executable,
    timeout: float = 120.0,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """``python -m pip ARGS`` against ``index_url`` only, with the scrubbed
    environment (plus ``env``, e.g. the CA pip trusts); output is captured as text
    and never raises on failure. Another *python* (a venv's) is driven by this
    interpreter's pip (``--python``), so it needs no pip of its own."""
    target = [] if str(python) == sys.executable else ["--python", str(python)]
    command = [
        sys.executable, "-m", "pip", *target, *args,
        "--index-url", index_url,
        "--disable-pip-version-check",
        "--no-cache-dir",
        "--no-input",
        "--timeout", "15",
        "--retries", "0",
    ]
    return subprocess.run(
        command,
        cwd=str(cwd) if cwd is not None else None,
        env={**pip_env(), **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        timeout=timeout,
    )


def make_venv(path: str | os.PathLike, python: str | os.PathLike = sys.executable) -> Path:
    """Create a venv without pip (``run_pip(python=...)`` drives it with this
    interpreter's pip: installing pip into it takes seconds) and return its python."""
    subprocess.run(
        [str(python), "-m", "venv", "--without-pip", str(path)],
        env=pip_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        check=True,
        timeout=180,
    )
    bin_dir = "Scripts" if os.name == "nt" else "bin"
    return Path(path) / bin_dir / ("python.exe" if os.name == "nt" else "python")


# -- subprocess proxy --------------------------------------------------------


class ProxyProcess:
    """``python -m proxpi_min --host 127.0.0.1 --port 0 ARGS`` from the repo root.

    The constructor waits (``startup_timeout``) for a stderr line matching
    ``listening on (http://...)`` and fails with the captured output otherwise.
    ``env`` is added on top of a copy of the environment without PROXPI_*/PIP_*.
    """

    def __init__(
        self,
        args: Sequence[str] = (),
        env: Mapping[str, str | None] | None = None,
        *,
        startup_timeout: float = 20.0,
        python: str | os.PathLike = sys.executable,
    ) -> None:
        self.args = [str(python), "-m", "proxpi_min", "--host", "127.0.0.1", "--port", "0", *args]
        self._stderr: list[str] = []
        self._stdout: list[str] = []
        self._listening = threading.Event()
        self._url: str | None = None
        self.process = subprocess.Popen(
            self.args,
            cwd=str(REPO_ROOT),
            env=proxy_env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stderr, self._stderr, True), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stdout, self._stdout, False), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        deadline = time.monotonic() + startup_timeout
        while not self._listening.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                exited = self.process.poll()
                self.kill()
                self._join_readers()
                raise AssertionError(
                    f"proxy did not report 'listening on http://...' "
                    f"({'exited with ' + str(exited) if exited is not None else 'timed out'});\n"
                    f"command: {self.args}\nstderr:\n{self.stderr}\nstdout:\n{self.stdout}"
                )

    def _read(self, stream: Any, sink: list, watch: bool) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace")
            sink.append(line)
            if watch and self._url is None:
                match = LISTENING_RE.search(line)
                if match:
                    self._url = match.group(1).rstrip("/")
                    self._listening.set()
        stream.close()

    def _join_readers(self) -> None:
        for reader in self._readers:
            reader.join(5)

    @property
    def url(self) -> str:
        assert self._url is not None
        return self._url

    @property
    def index_url(self) -> str:
        return f"{self.url}/index/"

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    @property
    def stdout(self) -> str:
        return "".join(self._stdout)

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def get(self, path: str, headers: Mapping[str, str] | None = None, **kwargs: Any) -> HTTPResult:
        return http("GET", self.url + path, headers, **kwargs)

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()

    def kill(self) -> None:
        """SIGKILL, no chance to clean up."""
        if self.process.poll() is None:
            self.process.kill()

    def wait(self, timeout: float = 10.0) -> int:
        code = self.process.wait(timeout)
        self._join_readers()
        return code

    def __enter__(self) -> ProxyProcess:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.terminate()
        try:
            self.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()
            self.wait(10)


# -- files -------------------------------------------------------------------


def cache_dir_bytes(path: str | os.PathLike, exclude: Callable[[str], bool] | None = None) -> int:
    """Total size of the regular files under ``path`` (``exclude(relpath)`` skips some)."""
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            full = os.path.join(directory, name)
            relative = os.path.relpath(full, path)
            if exclude is not None and exclude(relative):
                continue
            try:  # a temp file may be renamed or removed while we look
                stat = os.lstat(full)
            except FileNotFoundError:
                continue
            if S_ISREG(stat.st_mode):
                total += stat.st_size
    return total


def temp_files(cache_dir: str | os.PathLike) -> list:
    """Paths of the proxy's temp files anywhere under *cache_dir*."""
    return [
        os.path.join(directory, name)
        for directory, _, names in os.walk(str(cache_dir))
        for name in names
        if name.startswith(".tmp")
    ]


def files_named(cache_dir: str | os.PathLike, filename: str) -> list:
    """Paths of the files called *filename* anywhere under *cache_dir*."""
    return [
        os.path.join(directory, name)
        for directory, _, names in os.walk(str(cache_dir))
        for name in names
        if name == filename
    ]
