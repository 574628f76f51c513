"""The benchmark's data: fetched once from PyPI, then laid out as two static trees.

``fetch`` (the only step that leaves the machine) keeps, under ``bench/.cache/pypi/``:

* ``pages/<name>.json``: the PEP 691 JSON project page of every project named in the
  bench sets, as PyPI answers it here;
* ``files/<filename>``: the wheels ``pip download`` picks for the sets on this machine.

``build`` turns that into two trees that nginx serves on loopback:

* ``upstream/``: a simple index in PyPI's own layout, used as the proxies' upstream.
  ``/simple/`` (the root list), ``/simple/<name>/`` (project pages, HTML and JSON) and
  ``/files/<filename>``. Every file of every project is listed, with its URL rewritten to
  ``/files/<filename>``; only the files fetched above exist, the others answer 404 (no
  client of the bench asks for them).
* ``static/``: "nginx serving a static copy": the same pages and files in the layout a
  proxy serves them, ``/index/`` and ``/index/<name>/`` with file links relative to the
  page and ``/index/<name>/<filename>`` for the files.

Both trees hold every page as ``index.html`` and ``index.v1.json`` (chosen by the
request's Accept header, see servers.py), each with a ``.gz`` twin for gzip_static.

The root list is synthetic: ~930k made-up names (PyPI's size) plus the real projects,
so the "whole index" rows cost what they cost against PyPI without fetching PyPI's.
PyPI, as our machines reach it, answers the root list in HTML only (even to an Accept
that prefers JSON) while project pages come as JSON; the local upstream does the same
unless the bench runs with --root-json.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import json
import os
import random
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Iterable

PYPI_SIMPLE = "https://pypi.org/simple/"
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
ROOT_LIST_SIZE = 930_000
# A well-formed name that is neither in the root list nor on the upstream (build checks).
UNKNOWN_PROJECT = "bench-no-such-project-7f3a"
# Bumped whenever the layout of the built trees changes, so stale trees get rebuilt.
BUILD_VERSION = "4"
_REQ_LINE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(==\s*(\S+))?")


def normalize(name: str) -> str:
    """PEP 503 normalized form of a project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_set(path: Path) -> list[tuple[str, str | None]]:
    """(name, pinned version or None) for each requirement line of a bench set."""
    out = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = _REQ_LINE.match(line)
        if m:
            out.append((m.group(1), m.group(4)))
    return out


def set_projects(sets_dir: Path) -> list[str]:
    """Normalized names of every project in the bench sets, sorted."""
    names = set()
    for fname in ("download-16.txt", "resolve-55.txt", "resolve-top.in"):
        names.update(normalize(n) for n, _ in read_set(sets_dir / fname))
    return sorted(names)


# ---------------------------------------------------------------------------- fetch


def fetch(cache: Path, sets_dir: Path, pip: list[str], pip_env: dict, log=print) -> None:
    """Download pages and wheels from PyPI once; a second call does nothing."""
    pypi = cache / "pypi"
    marker = pypi / "fetched.json"
    projects = set_projects(sets_dir)
    if marker.exists() and json.loads(marker.read_text()).get("projects") == projects:
        return
    pages = pypi / "pages"
    files = pypi / "files"
    pages.mkdir(parents=True, exist_ok=True)
    files.mkdir(parents=True, exist_ok=True)
    for name in projects:
        target = pages / f"{name}.json"
        if target.exists():
            continue
        log(f"fetch: page {name}")
        req = urllib.request.Request(PYPI_SIMPLE + name + "/", headers={"Accept": JSON_TYPE})
        with urllib.request.urlopen(req, timeout=60) as resp:
            ctype = resp.headers.get("Content-Type", "")
            body = resp.read()
        if not ctype.startswith(JSON_TYPE):
            raise RuntimeError(f"{name}: PyPI answered {ctype!r}, not JSON")
        json.loads(body)  # fail here, not later, on a broken page
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(body)
        tmp.replace(target)
    log("fetch: pip download of the bench sets (wheels for this Python and platform)")
    cmd = pip + [
        "download", "--no-deps", "--only-binary", ":all:", "--index-url", PYPI_SIMPLE,
        "-d", str(files), "-q", "--progress-bar", "off",
        "-r", str(sets_dir / "download-16.txt"), "-r", str(sets_dir / "resolve-55.txt"),
    ]  # fmt: skip
    subprocess.run(cmd, env=pip_env, check=True)
    marker.write_text(json.dumps({"projects": projects}))


# ---------------------------------------------------------------------------- build


def _write(path: Path, body: bytes, gz: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    if gz:
        # Level 9 once at build time: nginx's gzip_static then only sends bytes.
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(body, 9, mtime=0))


def _attr(value: str) -> str:
    return html.escape(value, quote=True)


def _file_anchor(href: str, f: dict) -> str:
    hashes = f.get("hashes") or {}
    if "sha256" in hashes:
        href += "#sha256=" + hashes["sha256"]
    parts = [f'<a href="{_attr(href)}"']
    if f.get("requires-python"):
        parts.append(f' data-requires-python="{_attr(f["requires-python"])}"')
    yanked = f.get("yanked")
    if yanked:
        reason = yanked if isinstance(yanked, str) else ""
        parts.append(f' data-yanked="{_attr(reason)}"')
    return "".join(parts) + f">{html.escape(f['filename'])}</a><br />"


def _project_html(name: str, anchors: Iterable[str], version: str) -> bytes:
    head = (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        f'    <meta name="pypi:repository-version" content="{version}">\n'
        f"    <title>Links for {html.escape(name)}</title>\n  </head>\n  <body>\n"
        f"    <h1>Links for {html.escape(name)}</h1>\n"
    )
    return (head + "\n".join(anchors) + "\n  </body>\n</html>\n").encode()


def _project_json(page: dict, url_of) -> bytes:
    out = dict(page)
    out["meta"] = dict(page.get("meta") or {"api-version": "1.1"})
    out["files"] = [dict(f, url=url_of(f["filename"])) for f in page["files"]]
    return json.dumps(out, separators=(",", ":")).encode()


_SYLLABLES = (
    "ab ac ad al am an ap ar as at ax ba be bi bo bu ca ce ci co cu da de di do du "
    "el em en er es ex fa fe fi fo fu ga ge gi go gu ha he hi ho hu id il im in io "
    "is it ja jo ka ke ki ko la le li lo lu ma me mi mo mu na ne ni no nu ob od ol "
    "om on op or os pa pe pi po pu py qu ra re ri ro ru sa se si so su ta te ti to "
    "tu ul um un up ur us va ve vi vo xa xe yo za ze zo"
).split()
_SUFFIXES = ("", "", "", "", "-py", "-sdk", "-client", "-tools", "-utils", "-api",
             "-plugin", "-cli", "-lib", "-core", "2", "3", "-extension", "-django")
_PREFIXES = ("", "", "", "", "", "py", "django-", "flask-", "pytest-", "types-",
             "azure-", "mkdocs-", "odoo-addon-", "sphinx-", "jupyter-")


def root_names(real: Iterable[str], count: int = ROOT_LIST_SIZE) -> list[str]:
    """*count* distinct display names: the real ones plus deterministic made-up ones.

    Lengths and prefixes roughly follow PyPI's list (median name ~12 characters), so
    the list weighs what PyPI's does (~40 MB of HTML for ~930k names).
    """
    rng = random.Random(930_000)
    names = list(real)
    seen = {normalize(n) for n in names}
    while len(names) < count:
        stem = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 5)))
        if rng.random() < 0.25:
            stem += rng.choice("-_.") + "".join(
                rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 3)))
        name = rng.choice(_PREFIXES) + stem + rng.choice(_SUFFIXES)
        if rng.random() < 0.1:
            name = name.title()
        key = normalize(name)
        if key in seen:
            continue
        seen.add(key)
        names.append(name)
    names.sort(key=str.lower)
    return names


def _root_pages(names: list[str], href_of, api_version: str, serial: bool):
    # The bare form PyPI's root list has as our machines reach it (no head, one line a
    # name): ~43 bytes a project, ~40 MB in all.
    anchors = "\n".join(f'<a href="{href_of(normalize(n))}">{html.escape(n)}</a>' for n in names)
    body_html = ("<!DOCTYPE html><html><body>\n" + anchors + "\n</body></html>\n").encode()
    if serial:
        projects = [{"name": n, "_last-serial": 1000 + i} for i, n in enumerate(names)]
    else:
        projects = [{"name": n} for n in names]
    body_json = json.dumps(
        {"meta": {"api-version": api_version}, "projects": projects}, separators=(",", ":")
    ).encode()
    return body_html, body_json


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    os.symlink(os.path.relpath(src, dst.parent), dst)


def build(cache: Path, sets_dir: Path, log=print) -> dict:
    """(Re)build ``upstream/`` and ``static/`` from ``pypi/``; returns facts about them."""
    pypi = cache / "pypi"
    stamp = cache / "built.json"
    projects = set_projects(sets_dir)
    if stamp.exists():
        facts = json.loads(stamp.read_text())
        if facts.get("version") == BUILD_VERSION and facts.get("projects") == projects:
            return facts
    log("build: laying out the local upstream and the static copy")
    for sub in ("upstream", "static"):
        shutil.rmtree(cache / sub, ignore_errors=True)
    up = cache / "upstream"
    st = cache / "static"
    have = {p.name for p in (pypi / "files").iterdir()}
    display = {}
    sizes = {}
    for name in projects:
        page = json.loads((pypi / "pages" / f"{name}.json").read_bytes())
        display[name] = page.get("name", name)
        version = (page.get("meta") or {}).get("api-version", "1.1")
        # upstream: PyPI's layout, file URLs on this server
        anchors = [_file_anchor(f"/files/{f['filename']}", f) for f in page["files"]]
        _write(up / "simple" / name / "index.html", _project_html(name, anchors, version))
        _write(up / "simple" / name / "index.v1.json",
               _project_json(page, lambda fn: f"/files/{fn}"))
        # static copy: a proxy's layout, links relative to the page
        anchors = [_file_anchor(f["filename"], f) for f in page["files"]]
        body = _project_html(name, anchors, "1.1")
        sizes[name] = len(body)
        _write(st / "index" / name / "index.html", body)
        _write(st / "index" / name / "index.v1.json", _project_json(page, lambda fn: fn))
        for f in page["files"]:
            if f["filename"] in have:
                _link(pypi / "files" / f["filename"], up / "files" / f["filename"])
                _link(pypi / "files" / f["filename"], st / "index" / name / f["filename"])
    missing = sorted(have - {p.name for p in (up / "files").iterdir()})
    if missing:
        raise RuntimeError(f"downloaded files not on any page: {missing}")
    log(f"build: root list of {ROOT_LIST_SIZE} names")
    names = root_names(display[n] for n in projects)
    if UNKNOWN_PROJECT in {normalize(n) for n in names}:
        raise RuntimeError(f"{UNKNOWN_PROJECT} is in the synthetic root list")
    h, j = _root_pages(names, lambda n: f"{n}/", "1.1", serial=True)
    _write(up / "simple" / "index.html", h)
    _write(up / "simple" / "index.v1.json", j)
    root_sizes = {"upstream_html": len(h), "upstream_json": len(j)}
    h, j = _root_pages(names, lambda n: f"{n}/", "1.0", serial=False)
    _write(st / "index" / "index.html", h)
    _write(st / "index" / "index.v1.json", j)
    root_sizes.update(static_html=len(h), static_json=len(j))
    wheels = sorted(have)
    facts = {
        "version": BUILD_VERSION,
        "projects": projects,
        "files": wheels,
        "page_html_bytes": sizes,
        "root": root_sizes,
        "root_names": len(names),
    }
    stamp.write_text(json.dumps(facts, indent=1))
    return facts


def hashed_set(cache: Path, sets_dir: Path, name: str = "resolve-55.txt") -> Path:
    """The bench set *name* as a hashed requirements file (``pip-compile
    --generate-hashes`` style) naming the wheels fetched for it, for ``proxpi.pyz warm``."""
    files = sorted((cache / "pypi" / "files").iterdir())
    lines = []
    for project, version in read_set(sets_dir / name):
        # PEP 427: "<name>-<version>-...", the name with "_" for "-"
        mine = [f for f in files if normalize(f.name.split("-")[0]) == normalize(project)
                and f.name.split("-")[1] == version]
        if not mine:
            raise RuntimeError(f"no wheel fetched for {project}=={version}")
        hashes = " ".join(f"--hash=sha256:{hashlib.sha256(f.read_bytes()).hexdigest()}" for f in mine)
        lines.append(f"{project}=={version} {hashes}\n")
    out = cache / f"{Path(name).stem}-hashes.txt"
    out.write_text("".join(lines))
    return out




if __name__ == "__main__":  # pragma: no cover - manual use: python upstream.py CACHE SETS
    print(json.dumps(build(Path(sys.argv[1]), Path(sys.argv[2])), indent=1)[:2000])
