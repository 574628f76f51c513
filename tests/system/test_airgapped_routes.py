"""The air-gapped routes of docs/air-gapped.md, run as written: lock through a local
upstream, warm, copy and verify the cache dir, then install through an --offline proxy
with the upstream gone."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.proxy import REPO_ROOT, ProxyProcess, proxy_env, run_pip

GUIDE = REPO_ROOT / "docs" / "air-gapped.md"
DOC_INDEX_URL = "http://127.0.0.1:5000/index/"
DOC_CACHE_DIR = "/data/pypi-cache"
needs_uv = pytest.mark.skipif(shutil.which("uv") is None, reason="needs uv on PATH")
needs_tomllib = pytest.mark.skipif(sys.version_info < (3, 11), reason="TOML lock files need Python 3.11+ (tomllib)")

# The project every route locks: beta (which needs alpha) and Zope.Interface, as a
# package with a build backend, so that uv writes the project itself as "-e .".
PYPROJECT = """\
[project]
name = "demo-app"
version = "0.1"
requires-python = ">=3.9"
dependencies = ["beta", "zope.interface"]

[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"
"""
INSTALLED = ("alpha.py", "beta.py", "zope_interface.py")


def _shell_blocks(path: Path) -> str:
    """The ``sh`` code blocks of a Markdown file, joined."""
    blocks = path.read_text().split("```sh\n")[1:]
    return "\n".join(block.split("```", 1)[0] for block in blocks)


def _guide_commands() -> str:
    return _shell_blocks(GUIDE)


def _uv(args, cwd, tmp_path, check=True) -> subprocess.CompletedProcess:
    env = {
        **proxy_env(),
        "UV_CACHE_DIR": str(tmp_path / "uv-cache"),
        "UV_NO_CONFIG": "1",
        "UV_PYTHON": sys.executable,
        "UV_PYTHON_DOWNLOADS": "never",
    }
    for name in ("UV_INDEX_URL", "UV_DEFAULT_INDEX", "UV_EXTRA_INDEX_URL", "UV_INDEX", "VIRTUAL_ENV"):
        env.pop(name, None)
    result = subprocess.run(["uv", *args], cwd=str(cwd), env=env, capture_output=True, text=True, timeout=180)
    if check:
        assert result.returncode == 0, f"uv {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result


def _proxpi(args, cwd=REPO_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "proxpi_min", *args],
        cwd=str(cwd), env=proxy_env(), capture_output=True, text=True, timeout=120,
    )


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(PYPROJECT)
    return project


def _warm_copy_verify(upstream, lock: Path, tmp_path: Path) -> Path:
    """``warm`` on the connected side, the copy, ``verify`` on the air-gapped side; the
    upstream is stopped before anything is installed."""
    connected = tmp_path / "connected-cache"
    warmed = _proxpi(["warm", "--index-url", upstream.url, "--cache-dir", str(connected), str(lock)])
    assert warmed.returncode == 0, warmed.stdout + warmed.stderr
    upstream.stop()
    airgapped = tmp_path / "airgapped-cache"
    shutil.copytree(connected, airgapped)
    verified = _proxpi(["verify", "--offline", "--cache-dir", str(airgapped)])
    assert verified.returncode == 0 and "0 bad" in verified.stdout, verified.stdout + verified.stderr
    return airgapped


def _assert_installed(site: Path) -> None:
    for module in INSTALLED:
        assert (site / module).is_file(), module


def _pip_install(args, index_url, target: Path) -> None:
    result = run_pip(["install", "--target", str(target), *args], index_url)
    assert result.returncode == 0, result.stdout + result.stderr
    _assert_installed(target)


def _locked_project(index_url: str, tmp_path: Path) -> Path:
    """The project, locked by ``uv lock`` against *index_url*."""
    project = _project(tmp_path)
    _uv(["lock", "--default-index", index_url], project, tmp_path)
    return project


def _pylock_requirements(lock: Path) -> subprocess.CompletedProcess:
    """``python contrib/pylock_requirements.py LOCK``, run beside the lock."""
    script = REPO_ROOT / "contrib" / "pylock_requirements.py"
    return subprocess.run([sys.executable, str(script), lock.name], cwd=str(lock.parent),
                          capture_output=True, text=True, timeout=60)


def test_the_guide_writes_the_routes_these_tests_run():
    commands = _guide_commands()
    for command in (
        "uv pip compile --generate-hashes requirements.in -o requirements.txt",
        f"python proxpi.pyz warm --cache-dir {DOC_CACHE_DIR} requirements.txt",
        f"python proxpi.pyz verify --offline --cache-dir {DOC_CACHE_DIR}",
        f"python proxpi.pyz --offline --cache-dir {DOC_CACHE_DIR} &",
        f"pip install --require-hashes -r requirements.txt --index-url {DOC_INDEX_URL}",
        f"uv pip install -r requirements.txt --index-url {DOC_INDEX_URL}",
        f"python proxpi.pyz warm --cache-dir {DOC_CACHE_DIR} uv.lock",
        "uv export --format requirements.txt --no-emit-project -o requirements.txt",
        f"uv lock --default-index {DOC_INDEX_URL}",
        "uv sync --locked --no-install-project",
        "uv export --format pylock.toml --no-emit-project -o pylock.toml",
        f"python proxpi.pyz warm --cache-dir {DOC_CACHE_DIR} pylock.toml",
        "python contrib/pylock_requirements.py pylock.toml > requirements.txt",
        f"pip install --no-deps --require-hashes -r requirements.txt --index-url {DOC_INDEX_URL}",
    ):
        assert command in commands, command


def test_the_readme_example_is_the_guides_requirements_route():
    """README's air-gapped example runs the commands test_requirements_route runs."""
    readme = (REPO_ROOT / "README.md").read_text()
    example = readme.split("```sh\n# connected side", 1)[1].split("\n", 1)[1].split("\n```\n", 1)[0]
    commands = [line for line in example.splitlines() if line.strip() and not line.startswith("#")]
    assert len(commands) == 5
    for command in commands:
        assert command in _guide_commands(), command


@needs_uv
def test_requirements_route(upstream_factory, tmp_path):
    upstream = upstream_factory("json")
    (tmp_path / "requirements.in").write_text("beta\nZope.Interface\n")
    _uv(["pip", "compile", "--generate-hashes", "--index-url", upstream.url, "--python-version", "3.9",
         "requirements.in", "-o", "requirements.txt"], tmp_path, tmp_path)
    cache = _warm_copy_verify(upstream, tmp_path / "requirements.txt", tmp_path)
    with ProxyProcess(["--offline", "--cache-dir", str(cache)]) as offline:
        _pip_install(["--require-hashes", "-r", str(tmp_path / "requirements.txt")], offline.index_url, tmp_path / "pip")
        _uv(["pip", "install", "--target", str(tmp_path / "uv"), "-r", "requirements.txt",
             "--index-url", offline.index_url], tmp_path, tmp_path)
    _assert_installed(tmp_path / "uv")


@needs_uv
@needs_tomllib
def test_uv_lock_route_exports_without_the_project(upstream_factory, tmp_path):
    upstream = upstream_factory("json")
    project = _locked_project(upstream.url, tmp_path)
    # Without --no-emit-project the export holds the project itself as "-e .", which
    # pip refuses with --require-hashes (an editable has no single file to hash).
    _uv(["export", "--format", "requirements.txt", "-o", "with-project.txt"], project, tmp_path)
    assert "-e ." in (project / "with-project.txt").read_text().splitlines()
    _uv(["export", "--format", "requirements.txt", "--no-emit-project", "-o", "requirements.txt"], project, tmp_path)
    assert "-e ." not in (project / "requirements.txt").read_text()

    cache = _warm_copy_verify(upstream, project / "uv.lock", tmp_path)
    with ProxyProcess(["--offline", "--cache-dir", str(cache)]) as offline:
        refused = run_pip(["install", "--target", str(tmp_path / "no"), "--require-hashes", "-r",
                           "with-project.txt"], offline.index_url, cwd=project)
        assert refused.returncode != 0 and "cannot be installed when requiring hashes" in refused.stderr
        _pip_install(["--require-hashes", "-r", str(project / "requirements.txt")], offline.index_url, tmp_path / "pip")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@needs_uv
@needs_tomllib
def test_uv_lock_through_the_proxy_then_uv_sync_offline(upstream_factory, tmp_path):
    upstream = upstream_factory("json")
    project = _project(tmp_path)
    port = _free_port()
    with ProxyProcess(["--index-url", upstream.url, "--port", str(port), "--cache-dir", str(tmp_path / "online")]) as online:
        _uv(["lock", "--default-index", online.index_url], project, tmp_path)
    assert f"127.0.0.1:{port}/index/" in (project / "uv.lock").read_text()
    cache = _warm_copy_verify(upstream, project / "uv.lock", tmp_path)
    with ProxyProcess(["--offline", "--port", str(port), "--cache-dir", str(cache)]):
        _uv(["sync", "--locked", "--no-install-project"], project, tmp_path)
    _assert_installed(next((project / ".venv" / "lib").glob("python*/site-packages")))


@needs_uv
@needs_tomllib
def test_pylock_route_through_a_requirements_file(upstream_factory, tmp_path):
    upstream = upstream_factory("json")
    project = _locked_project(upstream.url, tmp_path)
    _uv(["export", "--format", "pylock.toml", "--no-emit-project", "-o", "pylock.toml"], project, tmp_path)
    cache = _warm_copy_verify(upstream, project / "pylock.toml", tmp_path)
    written = _pylock_requirements(project / "pylock.toml")
    assert written.returncode == 0, written.stderr
    (project / "requirements.txt").write_text(written.stdout)
    assert "--hash=sha256:" in written.stdout and "demo-app" not in written.stdout
    with ProxyProcess(["--offline", "--cache-dir", str(cache)]) as offline:
        _pip_install(["--no-deps", "--require-hashes", "-r", str(project / "requirements.txt")],
                     offline.index_url, tmp_path / "pip")


@needs_tomllib
def test_pylock_requirements_keeps_markers_and_names_what_it_leaves_out(tmp_path):
    lock = tmp_path / "pylock.toml"
    lock.write_text(
        'lock-version = "1.0"\ncreated-by = "tests"\n'
        '[[packages]]\nname = "alpha"\nversion = "1.0"\nmarker = "sys_platform == \'linux\'"\n'
        'wheels = [{ name = "alpha-1.0-py3-none-any.whl", hashes = { sha256 = "' + "a" * 64 + '", md5 = "' + "b" * 32 + '" } }]\n'
        'sdist = { name = "alpha-1.0.tar.gz", hashes = { sha256 = "' + "c" * 64 + '" } }\n'
        '[[packages]]\nname = "local"\ndirectory = { path = "." }\n'
    )
    result = _pylock_requirements(lock)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if not line.startswith("#")]
    assert lines == [
        "alpha==1.0 ; sys_platform == 'linux' \\",
        f"    --hash=sha256:{'a' * 64} \\",
        f"    --hash=sha256:{'c' * 64}",
    ]
    assert "local: from a directory, not an index: left out" in result.stderr

    lock.write_text('lock-version = "1.0"\ncreated-by = "tests"\n')
    empty = _pylock_requirements(lock)
    assert empty.returncode == 2 and "no package" in empty.stderr


@pytest.mark.skipif(shutil.which("poetry") is None, reason="needs poetry (and poetry-plugin-export) on PATH")
def test_poetry_route(upstream_factory, tmp_path):
    upstream = upstream_factory("json")
    project = _project(tmp_path)
    (project / "pyproject.toml").write_text(
        PYPROJECT + f'\n[[tool.poetry.source]]\nname = "local"\nurl = "{upstream.url}"\npriority = "primary"\n'
    )
    env = {**proxy_env(), "POETRY_CACHE_DIR": str(tmp_path / "poetry-cache")}
    for args in (["lock"], ["export", "-f", "requirements.txt", "-o", "requirements.txt"]):
        result = subprocess.run(["poetry", *args], cwd=str(project), env=env, capture_output=True, text=True, timeout=300)
        if args[0] == "export" and "export" in result.stderr and result.returncode != 0:
            pytest.skip("poetry has no export command (poetry-plugin-export)")
        assert result.returncode == 0, result.stdout + result.stderr
    cache = _warm_copy_verify(upstream, project / "poetry.lock", tmp_path)
    with ProxyProcess(["--offline", "--cache-dir", str(cache)]) as offline:
        _pip_install(["--require-hashes", "-r", str(project / "requirements.txt")], offline.index_url, tmp_path / "pip")
