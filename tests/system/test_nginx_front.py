"""contrib/nginx.conf, run by real nginx in front of two proxy processes that share one
cache dir: pip installs through it, nginx caches what our headers allow and no more."""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.dists import make_wheel
from tests.support.proxy import REPO_ROOT, ProxyProcess, http, run_pip
from tests.support.uploads import basic_auth, encode_form, twine_fields

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (Debian package nginx)")
CONF = REPO_ROOT / "contrib" / "nginx.conf"
PIP_ACCEPT = "application/vnd.pypi.simple.v1+json, text/html;q=0.01"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _configure(instances: list, port: int, run_dir: Path) -> Path:
    """contrib/nginx.conf with its three marked values set, and nginx's own temp files
    in *run_dir* (the packaged paths need root)."""
    text = CONF.read_text()
    servers = "".join(f"        server {url.split('//')[1]};\n" for url in instances)
    replacements = {
        "        server 127.0.0.1:5001;\n        server 127.0.0.1:5002;\n": servers,
        "/var/cache/nginx/proxpi": str(run_dir / "cache"),
        "listen 8080;": f"listen 127.0.0.1:{port};",
        "http {\n": "http {\n" + "".join(
            f"    {kind}_temp_path {run_dir / ('tmp-' + kind)};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        ),
    }
    for old, new in replacements.items():
        assert text.count(old) == 1, f"contrib/nginx.conf no longer has {old!r} once"
        text = text.replace(old, new)
    conf = run_dir / "nginx.conf"
    conf.write_text(text)
    return conf


@pytest.fixture
def nginx_front(upstream_html, tmp_path):
    with _front(upstream_html.url, tmp_path) as front:
        yield front


@contextlib.contextmanager
def _front(index_url: str, tmp_path: Path, *args: str):
    """nginx on a free port in front of two instances (started with *args too); yields
    (nginx's URL, the instances)."""
    cache_dir = tmp_path / "proxy-cache"
    instances = [
        ProxyProcess(["--index-url", index_url, "--cache-dir", str(cache_dir), *args]) for _ in range(2)
    ]
    run_dir = tmp_path / "nginx"
    run_dir.mkdir()
    port = _free_port()
    conf = _configure([p.url for p in instances], port, run_dir)
    globals_ = f"daemon off; pid {run_dir / 'nginx.pid'};" + (" user root;" if os.geteuid() == 0 else "")
    command = [NGINX, "-p", str(run_dir), "-c", str(conf), "-e", str(run_dir / "error.log"), "-g", globals_]
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    nginx = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if http("GET", url + "/health", timeout=2).status == 200:
                    break
            except OSError:
                pass
            assert nginx.poll() is None and time.monotonic() < deadline, (run_dir / "error.log").read_text()
            time.sleep(0.05)
        yield url, instances
    finally:
        nginx.terminate()
        nginx.wait(10)
        for instance in instances:
            instance.terminate()
            instance.wait(10)


def _requests_served(instance: ProxyProcess) -> int:
    return instance.stderr.count("proxpi_min.web.routes:")


def test_pip_installs_through_nginx_in_front_of_two_instances(nginx_front, dists, tmp_path):
    url, instances = nginx_front
    result = run_pip(["install", "--target", str(tmp_path / "site"), "beta"], url + "/index/")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "beta.py").is_file() and (tmp_path / "site" / "alpha.py").is_file()
    assert all(_requests_served(instance) > 0 for instance in instances), "one instance got no request"
    # Again, from nginx's copies: no instance is asked for anything cacheable.
    before = [_requests_served(instance) for instance in instances]
    again = run_pip(["install", "--target", str(tmp_path / "site2"), "beta"], url + "/index/")
    assert again.returncode == 0, again.stdout + again.stderr
    assert [_requests_served(instance) for instance in instances] == before


def test_nginx_caches_pages_per_format_and_files_but_not_errors(nginx_front, dists):
    url, _ = nginx_front
    statuses = {}
    for accept in ("text/html", PIP_ACCEPT):
        first = http("GET", url + "/index/alpha/", {"Accept": accept})
        second = http("GET", url + "/index/alpha/", {"Accept": accept})
        assert first.status == second.status == 200 and first.body == second.body
        statuses[accept] = (first.headers["X-Cache-Status"], second.headers["X-Cache-Status"], second.content_type)
    # Vary: Accept: each format is a copy of its own, never the other's.
    assert statuses == {
        "text/html": ("MISS", "HIT", "text/html"),
        PIP_ACCEPT: ("MISS", "HIT", "application/vnd.pypi.simple.v1+json"),
    }
    path = f"/index/alpha/{dists.alpha_1.filename}"
    assert [http("GET", url + path).headers["X-Cache-Status"] for _ in range(2)] == ["MISS", "HIT"]
    assert http("GET", url + path).body == dists.alpha_1.content
    for path in ("/index/no-such-project/", "/health", "/"):
        assert [http("GET", url + path).headers.get("X-Cache-Status") for _ in range(2)] == ["MISS", "MISS"], path


def test_nginx_keeps_the_gzip_form_not_the_first_uncompressed_answer(nginx_front):
    url, _ = nginx_front
    headers = {"Accept": PIP_ACCEPT, "Accept-Encoding": "gzip"}
    first = http("GET", url + "/index/gamma/", headers)  # cold: answered before it is compressed
    answers = [(first.headers.get("Content-Encoding"), first.headers["X-Cache-Status"])]
    deadline = time.monotonic() + 10
    while answers[-1] != ("gzip", "HIT") and time.monotonic() < deadline:
        time.sleep(0.05)
        answer = http("GET", url + "/index/gamma/", headers)
        answers.append((answer.headers.get("Content-Encoding"), answer.headers["X-Cache-Status"]))
    assert answers[0] == (None, "MISS") and answers[-1] == ("gzip", "HIT"), answers
    assert gzip.decompress(answer.body) == first.body


def test_clients_revalidate_pages_ranges_and_heads_pass_through_uploads_stream(upstream_html, dists, tmp_path):
    with _front(upstream_html.url, tmp_path, "--upload-token", "t0k") as (url, _):
        # nginx sends no Age: its copy's max-age would count again in a client's.
        page = http("GET", url + "/index/alpha/", {"Accept": PIP_ACCEPT})
        assert page.headers["Cache-Control"] == "no-cache"
        path = f"/files/alpha/{dists.alpha_2.filename}"
        # uv's probe of a wheel's end and a HEAD reach the instance as they are: no whole file.
        probe = http("GET", url + f"/index/alpha/{dists.alpha_2.filename}", {"Range": "bytes=-100"})
        assert probe.status == 206 and probe.body == dists.alpha_2.content[-100:]
        head = http("HEAD", url + f"/index/alpha/{dists.alpha_2.filename}")
        assert head.status == 200 and head.headers["Content-Length"] == str(dists.alpha_2.size)
        time.sleep(0.3)  # a whole download would have started by now
        gets = [r.headers.get("range") for r in upstream_html.requests if r.path == path and r.method == "GET"]
        assert gets == ["bytes=-100"], gets  # (the HEAD asked upstream the size an HTML page lacks)
        whole = http("GET", url + f"/index/alpha/{dists.alpha_2.filename}")
        assert whole.body == dists.alpha_2.content and whole.headers["Cache-Control"].endswith("immutable")
        # An upload past nginx's default 1 MB body limit.
        big = make_wheel("bigpkg", "1.0", module_source="X = '" + os.urandom(1_500_000).hex() + "'\n")
        assert big.size > 1024 * 1024
        content_type, body = encode_form(twine_fields(big), big.filename, big.content)
        stored = http("POST", url + "/upload/", {"Content-Type": content_type, "Authorization": basic_auth("t0k")}, body)
        assert stored.status == 200, stored.body
