"""warm and verify: lock files of each format against a local upstream, failures,
bad input, the progress line, a flipped byte, and the air-gapped workflow with real pip."""

from __future__ import annotations

import io
import os
import pty
import select
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from proxpi_min.cli import main as cli
from proxpi_min.cli import warm
from proxpi_min.core.settings import parse_settings
from proxpi_min.core.lockfiles import Wanted
from proxpi_min.core.simple import FileEntry
from proxpi_min.cli.warm import Filters, Progress, match_files, run_verify, run_warm, wheel_fits
from tests.support.cache_dir import settled
from tests.support.markers import needs_tomllib
from tests.support.proxy import REPO_ROOT, ProxyProcess, proxy_env, run_pip

PYPI_FILES = "https://files.pythonhosted.org/packages/xx"  # lock URLs: never fetched


# -- pure parts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "filename, platforms, python, fits",
    [
        ("a-1-py3-none-any.whl", ("manylinux_2_17_x86_64",), (3, 11), True),
        ("a-1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", ("manylinux2014_x86_64",), (3, 11), True),
        ("a-1-cp311-cp311-manylinux_2_17_x86_64.whl", ("win_amd64",), None, False),
        ("a-1-cp310-cp310-win_amd64.whl", (), (3, 11), False),
        ("a-1-cp38-abi3-win_amd64.whl", (), (3, 11), True),
        ("a-1-cp312-abi3-win_amd64.whl", (), (3, 11), False),
        ("a-1-py2.py3-none-any.whl", (), (3, 9), True),
        ("a-1-1build-py3-none-any.whl", (), (3, 9), True),
        ("broken.whl", (), None, False),
    ],
)
def test_wheel_fits(filename, platforms, python, fits):
    assert wheel_fits(filename, platforms, python) is fits


def test_Filters_keeps_sdists_unless_wheels_only():
    assert Filters(python_version=(3, 11)).keeps("a-1.tar.gz")
    assert not Filters(wheels_only=True).keeps("a-1.tar.gz")
    assert Filters(wheels_only=True).keeps("a-1-py3-none-any.whl")


def entry(filename: str, digest: str, algorithm: str = "sha256") -> FileEntry:
    return FileEntry(filename, f"https://index.example/{filename}", ((algorithm, digest),))


FILES = [
    entry("a-1.0-py3-none-any.whl", "11" * 32),
    entry("a-1.0.tar.gz", "22" * 32),
    entry("a-2.0-py3-none-any.whl", "33" * 32),
    entry("a-2.0.zip", "44" * 16, "md5"),
]


@pytest.mark.parametrize(
    "want, chosen, failures",
    [
        (Wanted("a", "1.0", "a-1.0.tar.gz", (("sha256", "22" * 32),), "l"), ["a-1.0.tar.gz"], []),
        (Wanted("a", "1.0", "a-1.0.tar.gz", (("sha256", "22" * 32), ("md5", "0" * 32)), "l"), ["a-1.0.tar.gz"], []),
        (Wanted("a", "9", "a-9.tar.gz", (("sha256", "22" * 32),), "l"), [], [("a-9.tar.gz", warm.NOT_ON_INDEX)]),
        (Wanted("a", "1.0", "a-1.0.tar.gz", (("sha256", "ff" * 32),), "l"), [], [("a-1.0.tar.gz", warm.HASH_DIFFERS)]),
        (Wanted("a", "2.0", "a-2.0.zip", (("sha256", "44" * 32),), "l"), [], [("a-2.0.zip", warm.HASH_DIFFERS)]),
        (Wanted("a", "1.0", None, (("sha256", "11" * 32), ("sha256", "22" * 32)), "l"),
         ["a-1.0-py3-none-any.whl", "a-1.0.tar.gz"], []),
        (Wanted("a", "1.0", None, (("sha256", "11" * 32), ("sha256", "ee" * 32)), "l"),
         ["a-1.0-py3-none-any.whl"], [("a==1.0 sha256:eeeeeeeeeeeeeeee...", warm.NOT_ON_INDEX)]),
        (Wanted("a", "2.0", None, (), "l"), ["a-2.0-py3-none-any.whl", "a-2.0.zip"], []),
        (Wanted("a", "3.0", None, (), "l"), [], [("a==3.0", warm.NOT_ON_INDEX)]),
    ],
)
def test_match_files(want, chosen, failures):
    entries, failed = match_files([want], FILES)
    assert [e.filename for e, _ in entries] == chosen
    assert all(origin == "l" for _, origin in entries)
    assert [(f.what, f.reason) for f in failed] == failures
    assert all(f.origin == "l" for f in failed)


def test_Progress_plain_lines_and_terminal_line():
    plain = io.StringIO()
    progress = Progress(plain, "warm", 2, 2048, tty=False, clock=lambda: 1.0)
    progress.advance(1024, True, "fetched a (1.0 KiB)")
    progress.advance(1024, False)
    progress.finish()
    assert plain.getvalue() == "fetched a (1.0 KiB)\n"

    now = [0.0]
    term = io.StringIO()
    progress = Progress(term, "warm", 2, 2048, tty=True, clock=lambda: now[0])
    now[0] = 2.0
    progress.advance(1024, True)
    progress.note("warning: something")
    now[0] = 4.0
    progress.advance(1024, True)
    progress.finish()
    text = term.getvalue()
    assert "\r\x1b[Kwarm: 1/2 files, 1.0 KiB of 2.0 KiB, 512 B/s, 50%" in text
    assert "\r\x1b[Kwarning: something\n" in text
    assert text.endswith("\r\x1b[Kwarm: 2/2 files, 2.0 KiB of 2.0 KiB, 512 B/s, 100%\n")

    unknown = io.StringIO()  # no sizes from the index: no total, percent of files
    now[0] = 0.0
    progress = Progress(unknown, "verify", 4, 0, tty=True, clock=lambda: now[0])
    now[0] = 1.0
    progress.advance(3 * 1024 * 1024, True)
    assert unknown.getvalue().endswith("verify: 1/4 files, 3.0 MiB, 3.0 MiB/s, 25%")


# -- lock files of each format ------------------------------------------------------------


def _file_url(dist) -> str:
    # What a lock file written on a connected machine holds: PyPI's URL, never ours.
    return f"{PYPI_FILES}/{urllib.parse.quote(dist.filename)}"


def write_lock(kind: str, directory: Path, dists: list) -> Path:
    """A lock file of *kind* naming *dists* (real files of the local upstream)."""
    by_pin: dict = {}
    for dist in dists:
        by_pin.setdefault((dist.project, dist.version), []).append(dist)
    if kind == "requirements":
        lines = []
        for (project, version), files in by_pin.items():
            hashes = " \\\n".join(f"    --hash=sha256:{d.sha256}" for d in files)
            lines.append(f"{project}=={version} ; python_version >= '3' \\\n{hashes}\n    # via -r requirements.in")
        path = directory / "requirements.txt"
        path.write_text("# autogenerated\n" + "\n".join(lines) + "\n")
    elif kind == "pylock":
        parts = ['lock-version = "1.0"\ncreated-by = "tests"\n']
        for (project, version), files in by_pin.items():
            parts.append(f'[[packages]]\nname = "{project}"\nversion = "{version}"\n')
            for d in files:
                table = "[[packages.wheels]]" if d.is_wheel else "[packages.sdist]"
                parts.append(f'{table}\nurl = "{_file_url(d)}"\nhashes = {{sha256 = "{d.sha256}"}}\n')
        path = directory / "pylock.toml"
        path.write_text("\n".join(parts))
    elif kind == "uv":
        parts = ['version = 1\nrequires-python = ">=3.9"\n']
        for (project, version), files in by_pin.items():
            parts.append(f'[[package]]\nname = "{project}"\nversion = "{version}"\nsource = {{ registry = "https://pypi.org/simple" }}')
            wheels = [f'    {{ url = "{_file_url(d)}", hash = "sha256:{d.sha256}", size = {d.size} }},' for d in files if d.is_wheel]
            sdists = [d for d in files if not d.is_wheel]
            if sdists:
                parts.append(f'sdist = {{ url = "{_file_url(sdists[0])}", hash = "sha256:{sdists[0].sha256}" }}')
            parts.append("wheels = [\n" + "\n".join(wheels) + "\n]\n")
        path = directory / "uv.lock"
        path.write_text("\n".join(parts))
    else:
        parts = []
        for (project, version), files in by_pin.items():
            entries = ",\n".join(f'    {{file = "{d.filename}", hash = "sha256:{d.sha256}"}}' for d in files)
            parts.append(f'[[package]]\nname = "{project}"\nversion = "{version}"\noptional = false\nfiles = [\n{entries}\n]\n')
        parts.append('[metadata]\nlock-version = "2.0"\ncontent-hash = "0"\n')
        path = directory / "poetry.lock"
        path.write_text("\n".join(parts))
    return path


def lock_dists(dists) -> list:
    # A wheel and an sdist of one pin, a "+" in a file name, a dotted mixed-case name.
    return [dists.alpha_2, dists.alpha_2_sdist, dists.beta_1, dists.delta, dists.zope]


def warm_in_process(cache_dir, upstream, *args: str) -> tuple:
    out, err = io.StringIO(), io.StringIO()
    flags = {"index_url": upstream.url, "cache_dir": str(cache_dir)}
    settings = parse_settings({}, flags)
    files = [a for a in args if not a.startswith("--")]
    code = run_warm(settings, files, jobs=4, filters=Filters(wheels_only="--wheels-only" in args), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def stored(cache_dir, dist) -> Path:
    return Path(cache_dir) / "files" / dist.normalized / f"sha256-{dist.sha256}" / dist.filename


@pytest.mark.parametrize("kind", ["requirements"] + [pytest.param(k, marks=needs_tomllib) for k in ("pylock", "uv", "poetry")])
def test_warm_fetches_each_file_once_from_each_format(kind, upstream, dists, tmp_path):
    wanted = lock_dists(dists)
    lock = write_lock(kind, tmp_path, wanted)
    cache = tmp_path / "cache"
    code, out, err = warm_in_process(cache, upstream, str(lock))
    assert code == 0, out + err
    assert "5 files wanted: 5 fetched" in out and "0 already cached, 0 failed" in out
    for dist in wanted:
        assert stored(cache, dist).read_bytes() == dist.content
        assert upstream.hits(upstream.file_path(dist)) == 1
        # Found through the index, never at the URL the lock file names.
    assert not [r for r in upstream.requests if "packages/xx" in r.path]
    # Each project page was saved, for the offline proxy.
    saved = {p.name for p in (cache / "index").glob("*/*.json")}
    assert saved == {"alpha.json", "beta.json", "delta.json", "zope-interface.json"}

    upstream.reset_hits()
    code, out, err = warm_in_process(cache, upstream, str(lock))
    assert code == 0
    assert "5 files wanted: 0 fetched" in out and "5 already cached" in out
    assert not [r for r in upstream.requests if r.path.startswith("/files/")]


@needs_tomllib
def test_warm_wheels_only(upstream, dists, tmp_path):
    lock = write_lock("uv", tmp_path, [dists.alpha_2, dists.alpha_2_sdist])
    code, out, _ = warm_in_process(tmp_path / "cache", upstream, str(lock), "--wheels-only")
    assert code == 0
    assert "2 files wanted: 1 fetched" in out and "1 skipped by filters" in out
    assert upstream.hits(upstream.file_path(dists.alpha_2_sdist)) == 0


@needs_tomllib
def test_warm_names_each_failure_and_exits_1(upstream_factory, dists, tmp_path):
    upstream = upstream_factory("json")
    upstream.fail(upstream.file_path(dists.beta_1), "500")
    lock = write_lock("pylock", tmp_path, [dists.alpha_1, dists.beta_1, dists.epsilon])
    text = lock.read_text().replace(dists.alpha_1.sha256, "0" * 64)
    text += '\n[[packages]]\nname = "alpha"\n[[packages.wheels]]\nname = "alpha-7.0-py3-none-any.whl"\nhashes = {sha256 = "' + "1" * 64 + '"}\n'
    lock.write_text(text)
    code, out, _ = warm_in_process(tmp_path / "cache", upstream, str(lock))
    assert code == 1
    failed = sorted(line for line in out.splitlines() if line.startswith("failed: "))
    assert len(failed) == 4, out
    assert failed[0].startswith(f"failed: {dists.alpha_1.filename}: hash differs (lock sha256:0000")
    assert failed[1].startswith("failed: alpha-7.0-py3-none-any.whl: not on any index")
    assert failed[2].startswith(f"failed: {dists.beta_1.filename}: upstream error (")
    assert failed[3].startswith(f"failed: {dists.epsilon.filename}: not on any index")
    assert "3 files wanted" not in out and "4 failed" in out


@needs_tomllib
def test_warm_policy_refusal_is_a_failure(upstream, dists, tmp_path):
    """The server's guard rails apply: a denied version or project is named, not fetched."""
    lock = write_lock("poetry", tmp_path, [dists.alpha_2, dists.beta_1, dists.delta])
    out, err = io.StringIO(), io.StringIO()
    flags = {
        "index_url": upstream.url,
        "cache_dir": str(tmp_path / "cache"),
        "deny": [f"beta=={dists.beta_1.version}", dists.delta.normalized],
    }
    settings = parse_settings({}, flags)
    assert run_warm(settings, [str(lock)], out=out, err=err) == 1
    text = out.getvalue()
    assert f"failed: {dists.beta_1.filename}: refused by policy (" in text and "PROXPI_DENY" in text
    assert f"failed: {dists.delta.filename}: refused by policy (" in text and "deny-list entry 'delta'" in text
    assert upstream.hits(upstream.file_path(dists.beta_1)) == 0
    assert upstream.hits(upstream.file_path(dists.delta)) == 0
    assert stored(tmp_path / "cache", dists.alpha_2).read_bytes() == dists.alpha_2.content


def test_warm_names_the_pin_that_keeps_a_file_out(upstream_factory, dists, tmp_path):
    """Dependency confusion in a lock file: a file of a pinned project that the pinned
    index lacks is named with the pin (the other indices were not asked)."""
    public, internal = upstream_factory("json", None), upstream_factory("json", None)
    public.add(dists.alpha_2).add(dists.beta_1)
    internal.add(dists.alpha_1)
    lock = write_lock("requirements", tmp_path, [dists.alpha_2, dists.beta_1])
    lock.write_text(lock.read_text() + "alpha==9.9\n")  # no hash, no file anywhere
    out, err = io.StringIO(), io.StringIO()
    flags = {"index_url": public.url, "extra_index_url": [internal.url], "cache_dir": str(tmp_path / "cache"),
             "pin": [f"alpha={internal.url}"]}
    assert run_warm(parse_settings({}, flags), [str(lock)], out=out, err=err) == 1
    failed = sorted(line for line in out.getvalue().splitlines() if line.startswith("failed: "))
    assert len(failed) == 2, out.getvalue()
    pin = f"the only index asked for it (pin alpha={internal.url})"
    assert failed[0].startswith("failed: alpha==2.0 sha256:") and pin in failed[0]
    assert failed[1].startswith("failed: alpha==9.9: not on any index (") and pin in failed[1]
    assert public.hits(public.page_path("alpha")) == 0
    assert stored(tmp_path / "cache", dists.beta_1).read_bytes() == dists.beta_1.content


@needs_tomllib
def test_warm_caller_refusal_is_a_failure(upstream, dists, tmp_path):
    lock = write_lock("poetry", tmp_path, [dists.alpha_2, dists.beta_1])
    out, err = io.StringIO(), io.StringIO()
    settings = parse_settings({}, {"index_url": upstream.url, "cache_dir": str(tmp_path / "cache")})
    refuse = lambda project, entry: "denied by test" if project == "beta" else None  # noqa: E731
    assert run_warm(settings, [str(lock)], refusal=refuse, out=out, err=err) == 1
    assert f"failed: {dists.beta_1.filename}: refused by policy (denied by test)" in out.getvalue()
    assert upstream.hits(upstream.file_path(dists.beta_1)) == 0


@pytest.mark.parametrize(
    "name, content, message",
    [
        pytest.param("uv.lock", "version = \n", "uv.lock: not valid TOML", marks=needs_tomllib),
        pytest.param("pylock.toml", 'lock-version = "9"\n', "unsupported lock-version", marks=needs_tomllib),
        ("requirements.txt", "a==1 --hash=sha256:nothex\n", "requirements.txt:1: not a hash"),
        ("missing.txt", None, "missing.txt: cannot read"),
    ],
)
def test_warm_bad_input_exits_2_in_one_line(upstream_html, tmp_path, name, content, message):
    if content is not None:
        (tmp_path / name).write_text(content)
    result = subprocess.run(
        [sys.executable, "-m", "proxpi_min", "warm", "--index-url", upstream_html.url,
         "--cache-dir", str(tmp_path / "cache"), str(tmp_path / name)],
        cwd=REPO_ROOT, env=proxy_env(), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert upstream_html.requests == []


@needs_tomllib
def test_warm_upstream_trouble_on_pages_is_a_labelled_warning(upstream_factory, dists, tmp_path):
    upstream = upstream_factory("json")
    upstream.fail("/simple/beta/", "500")
    lock = write_lock("poetry", tmp_path, [dists.alpha_2, dists.beta_1])
    result = subprocess.run(
        [sys.executable, "-m", "proxpi_min", "warm", "--index-url", upstream.url,
         "--cache-dir", str(tmp_path / "cache"), str(lock)],
        cwd=REPO_ROOT, env=proxy_env(), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    warnings = [line for line in result.stderr.splitlines() if "upstream answered 500" in line]
    assert warnings and all(line.startswith("proxpi-min warm: WARNING: ") for line in warnings), result.stderr
    assert f"failed: {dists.beta_1.filename}: upstream error" in result.stdout


def test_warm_needs_a_cache_dir(upstream_html, tmp_path, capsys):
    (tmp_path / "r.txt").write_text("alpha==1.0\n")
    assert cli.main(["warm", "--index-url", upstream_html.url, str(tmp_path / "r.txt")]) == 2
    assert "--cache-dir" in capsys.readouterr().err


def test_warm_unusable_cache_dir_exits_2_in_one_line(upstream_html, tmp_path, capsys):
    (tmp_path / "r.txt").write_text("alpha==1.0 --hash=sha256:" + "ab" * 32 + "\n")
    (tmp_path / "a-file").write_text("")
    for cache_dir in (tmp_path / "a-file", tmp_path / "a-file" / "below"):
        assert cli.main(["warm", "--index-url", upstream_html.url, "--cache-dir", str(cache_dir), str(tmp_path / "r.txt")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"proxpi-min warm: error: cache dir {str(cache_dir)!r}: "), err
    assert upstream_html.requests == []


def test_warm_progress_line_on_a_terminal(upstream, dists, tmp_path):
    lock = write_lock("requirements", tmp_path, lock_dists(dists))
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "proxpi_min", "warm", "--index-url", upstream.url,
         "--cache-dir", str(tmp_path / "cache"), str(lock)],
        cwd=REPO_ROOT, env=proxy_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
    )
    os.close(slave)
    seen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    out = process.communicate(timeout=30)[0].decode()
    assert process.returncode == 0, out
    text = seen.decode()
    assert "\r\x1b[Kwarm: 5/5 files, " in text and "/s, 100%" in text
    assert "fetched " not in text  # no per-file lines on a terminal


# -- verify -------------------------------------------------------------------------------


def verify(cache_dir, *args: str) -> tuple:
    out, err = io.StringIO(), io.StringIO()
    code = run_verify(str(cache_dir), repair="--repair" in args, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@needs_tomllib
def test_verify_catches_a_flipped_byte_and_repairs(upstream, dists, tmp_path):
    lock = write_lock("uv", tmp_path, lock_dists(dists))
    cache = tmp_path / "cache"
    assert warm_in_process(cache, upstream, str(lock))[0] == 0
    code, out, _ = verify(cache)
    assert code == 0, out
    assert "verify: 5 files" in out and "0 bad" in out

    victim = stored(cache, dists.beta_1)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    page = next((cache / "index").glob("*/alpha.json"))
    page.write_text("{broken")
    code, out, _ = verify(cache)
    assert code == 1
    assert f"bad: {victim}: sha256 differs" in out
    assert f"bad: {page}: saved page does not load" in out
    assert victim.exists()  # nothing removed without --repair

    code, out, _ = verify(cache, "--repair")
    assert code == 1 and "2 bad, 2 removed" in out
    assert not victim.exists() and not page.exists()
    assert verify(cache)[0] == 0


def test_verify_checks_metadata_against_the_saved_page(proxy, upstream, dists, tmp_path):
    p = proxy(upstream)
    assert p.get(f"/index/alpha/{dists.alpha_1.filename}.metadata").status == 200
    assert settled(p.settings.cache_dir)
    cache = Path(p.settings.cache_dir)
    # The stored .metadata file, not the lock file (".lock-...metadata") of its download.
    metadata = next(p for p in (cache / "files").glob("alpha/*/*.metadata") if not p.name.startswith("."))
    p.stop()
    assert verify(cache)[0] == 0
    metadata.write_bytes(metadata.read_bytes() + b"x")
    code, out, _ = verify(cache)
    assert code == 1 and f"bad: {metadata}: sha256 differs" in out


def test_verify_not_a_cache_dir(tmp_path, capsys):
    assert cli.main(["verify", "--cache-dir", str(tmp_path)]) == 2
    assert "not a proxpi cache dir" in capsys.readouterr().err


# -- uv and the whole air-gapped workflow ----------------------------------------------------


@pytest.mark.skipif(shutil.which("uv") is None, reason="needs uv on PATH")
def test_warm_from_uv_pip_compile_generate_hashes(upstream_json, dists, tmp_path):
    (tmp_path / "requirements.in").write_text("beta\nZope.Interface\n")
    result = subprocess.run(
        ["uv", "pip", "compile", "--generate-hashes", "--index-url", upstream_json.url,
         "--python-version", "3.11", "--no-header", "-o", str(tmp_path / "requirements.txt"),
         str(tmp_path / "requirements.in")],
        env={**proxy_env(), "UV_CACHE_DIR": str(tmp_path / "uv-cache"), "UV_NO_CONFIG": "1"},
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "--hash=sha256:" in (tmp_path / "requirements.txt").read_text()
    upstream_json.reset_hits()
    code, out, err = warm_in_process(tmp_path / "cache", upstream_json, str(tmp_path / "requirements.txt"))
    assert code == 0, out + err
    # beta 1.0 and its dependency alpha (newest: 2.0, wheel and sdist), Zope.Interface
    for dist in (dists.beta_1, dists.alpha_2, dists.alpha_2_sdist, dists.zope):
        assert stored(tmp_path / "cache", dist).read_bytes() == dist.content


def test_air_gapped_workflow_with_pip_require_hashes(upstream_factory, dists, tmp_path):
    """warm, copy the dir, verify the copy, serve it --offline with the upstream gone,
    install with pip --require-hashes."""
    upstream = upstream_factory("json")
    lock = write_lock("requirements", tmp_path, [dists.alpha_2, dists.alpha_2_sdist, dists.beta_1])
    connected = tmp_path / "connected"
    result = subprocess.run(
        [sys.executable, "-m", "proxpi_min", "warm", "--index-url", upstream.url, "--cache-dir", str(connected), str(lock)],
        cwd=REPO_ROOT, env=proxy_env(), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    upstream.stop()

    airgapped = tmp_path / "airgapped"
    shutil.copytree(connected, airgapped)
    result = subprocess.run(
        [sys.executable, "-m", "proxpi_min", "verify", "--cache-dir", str(airgapped)],
        cwd=REPO_ROOT, env=proxy_env(), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0 and "0 bad" in result.stdout, result.stdout + result.stderr

    with ProxyProcess(["--offline", "--cache-dir", str(airgapped)]) as offline:
        target = tmp_path / "site"
        result = run_pip(["install", "--require-hashes", "--target", str(target), "-r", str(lock)], offline.index_url)
        assert result.returncode == 0, result.stdout + result.stderr
    assert (target / "beta.py").is_file() and "2.0" in (target / "alpha.py").read_text()
