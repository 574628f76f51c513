"""Real pip through the proxy: download, install, yanks, requires-python, odd names.

pip runs as a subprocess with a scrubbed environment (see tests.support.proxy.run_pip):
the only place it can find anything is ``--index-url <proxy>/index/``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.proxy import pip_env, run_pip


def _ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"pip failed:\n{result.stdout}\n{result.stderr}"
    return result


def _files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in directory.iterdir() if path.is_file()}


def test_pip_downloads_the_pinned_version(proxy, upstream, dists, tmp_path):
    p = proxy(upstream)
    _ok(run_pip(["download", "--no-deps", "-d", str(tmp_path), "alpha==2.0"], p.index_url))
    assert _files(tmp_path) == {dists.alpha_2.filename: dists.alpha_2.content}


def test_pip_install_target_from_merged_indexes(proxy, upstream_factory, tmp_path):
    root = upstream_factory("html", "root")
    extra = upstream_factory("json", "extra")
    # TTL 0: pages are fetched again on every request, files never are.
    p = proxy((root, 0), (extra, 0))
    first = tmp_path / "first"
    _ok(run_pip(["install", "--target", str(first), "beta"], p.index_url))
    assert (first / "beta.py").is_file()
    # alpha 3.0 exists only in the extra index: merging worked.
    assert "__version__ = '3.0'" in (first / "alpha.py").read_text()
    assert extra.hits("alpha-3.0-py3-none-any.whl") == 1
    assert root.hits("beta-1.0-py3-none-any.whl") == 1

    root.reset_hits()
    extra.reset_hits()
    second = tmp_path / "second"
    _ok(run_pip(["install", "--target", str(second), "beta"], p.index_url))
    assert (second / "alpha.py").read_bytes() == (first / "alpha.py").read_bytes()
    requests = [(r.method, r.path) for r in root.requests + extra.requests]
    assert ("GET", "/simple/beta/") in requests
    assert [r for r in requests if not r[1].startswith("/simple/")] == []


def test_pip_skips_yanked_and_incompatible_python(proxy, upstream, dists, tmp_path):
    p = proxy(upstream)
    _ok(run_pip(["download", "--no-deps", "-d", str(tmp_path), "gamma"], p.index_url))
    assert _files(tmp_path) == {dists.gamma_2.filename: dists.gamma_2.content}


def test_pip_pinned_yanked_version_installs_with_warning(proxy, upstream, dists, tmp_path):
    p = proxy(upstream)
    result = _ok(run_pip(["download", "--no-deps", "-d", str(tmp_path), "gamma==1.0"], p.index_url))
    assert _files(tmp_path) == {dists.gamma_1.filename: dists.gamma_1.content}
    output = result.stdout + result.stderr
    assert "yanked" in output
    assert dists.GAMMA_YANK_REASON in output


def test_pip_refuses_a_pin_whose_requires_python_excludes_it(proxy, upstream_html, tmp_path):
    p = proxy(upstream_html)
    result = run_pip(["download", "--no-deps", "-d", str(tmp_path), "gamma==9.0"], p.index_url)
    assert result.returncode != 0
    assert "Requires-Python" in result.stdout + result.stderr
    assert list(tmp_path.iterdir()) == []


def test_pip_local_version_and_dotted_mixed_case_name(proxy, upstream, dists, tmp_path):
    p = proxy(upstream)
    _ok(run_pip(["download", "--no-deps", "-d", str(tmp_path), "delta", "Zope.Interface"], p.index_url))
    assert _files(tmp_path) == {
        dists.delta.filename: dists.delta.content,
        dists.zope.filename: dists.zope.content,
    }


def test_pip_install_into_venv_end_to_end(proxy, upstream_json, pip_venv, tmp_path):
    p = proxy(upstream_json)
    _ok(run_pip(["install", "beta"], p.index_url, cwd=tmp_path, python=pip_venv))
    check = subprocess.run(
        [str(pip_venv), "-c", "import alpha, beta; print(alpha.__version__, beta.__version__)"],
        cwd=str(tmp_path),
        env=pip_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr
    assert check.stdout.split() == ["2.0", "1.0"]
    listed = _ok(run_pip(["list", "--format=freeze"], p.index_url, python=pip_venv))
    assert "alpha==2.0" in listed.stdout and "beta==1.0" in listed.stdout


def test_run_pip_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("PIP_FIND_LINKS", "/somewhere")
    monkeypatch.setenv("PIP_INDEX_URL", "http://example.invalid/")
    env = pip_env()
    assert not [k for k in env if k.upper().startswith("PIP_") and k != "PIP_CONFIG_FILE"]
    assert env["PIP_CONFIG_FILE"] == os.devnull
    # pip itself sees no configuration at all.
    result = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    # Only the variable we set shows up: no find-links, index, constraint from the machine.
    assert [line for line in result.stdout.splitlines() if "config-file" not in line] == []


@pytest.mark.pypi
def test_pip_download_from_real_pypi(proxy, tmp_path):
    p = proxy("https://pypi.org/simple/", read_timeout=30.0, connect_timeout=10.0)
    _ok(run_pip(["download", "--no-deps", "-d", str(tmp_path), "six==1.16.0"], p.index_url))
    assert "six-1.16.0-py2.py3-none-any.whl" in _files(tmp_path)
