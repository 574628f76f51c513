"""``python -m proxpi_min`` as a process: flags, PROXPI_* variables, bad values, restarts."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import pytest

from tests.support.cache_dir import wait_for
from tests.support.proxy import REPO_ROOT, ProxyProcess, http, proxy_env, temp_files

FLAGS = (
    "--index-url", "--index-ttl", "--extra-index-url", "--extra-index-ttl", "--cache-size",
    "--cache-dir", "--host", "--port", "--offline", "--connect-timeout", "--read-timeout",
    "--workers", "--max-connections",
    "--upstream-proxy", "--ca-bundle", "--tls-cert", "--tls-key", "--pin", "--index-strategy", "--min-age",
    "--min-age-exempt", "--min-age-unknown", "--deny", "--allow",
)


def _run(args, env=None, timeout=15.0):
    return subprocess.run(
        [sys.executable, "-m", "proxpi_min", *args],
        cwd=str(REPO_ROOT),
        env=proxy_env(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        timeout=timeout,
    )


def _alpha_page(process):
    result = process.get("/index/alpha/")
    assert result.status == 200, result
    return result.text


def test_help_lists_every_flag():
    result = _run(["--help"])
    assert result.returncode == 0
    for flag in FLAGS:
        assert flag in result.stdout, flag

    assert "warm" in result.stdout and "verify" in result.stdout  # the commands are named


SERVE_ONLY = ("--host", "--port", "--tls-cert", "--tls-key", "--admin-token", "--workers", "--max-connections",
              "--log-format", "--client-timeout", "--check-config", "--offline", "--page-memory")


def test_help_lists_the_commands_first():
    text = _run(["--help"]).stdout
    assert text.startswith("usage: python proxpi.pyz [serve]")
    commands = text.index("commands:")
    assert all(commands < text.index(f"    {name} ") < text.index("--host") for name in ("serve", "warm", "verify"))


@pytest.mark.parametrize(
    "command, flags, absent",
    [
        ("serve", FLAGS + ("--check-config",), ("--jobs", "--wheels-only", "--repair")),
        ("warm", tuple(f for f in FLAGS if f not in SERVE_ONLY) + ("--jobs", "--wheels-only", "--platform",
                                                                   "--python-version", "FILE"), SERVE_ONLY),
        # verify's --offline: check the dir as an offline proxy will serve it.
        ("verify", ("--cache-dir", "--repair", "--offline", "--jobs"),
         tuple(f for f in SERVE_ONLY if f != "--offline") + ("--index-url",)),
    ],
)
def test_command_help_shows_its_own_flags_only(command, flags, absent):
    result = _run([command, "--help"])
    assert result.returncode == 0
    assert result.stdout.startswith(f"usage: python proxpi.pyz {'[serve]' if command == 'serve' else command} ")
    for flag in flags:
        assert flag in result.stdout, flag
    for flag in absent:
        assert f"{flag} " not in result.stdout, flag
    assert "temp dir" not in result.stdout or command == "serve"  # warm and verify need a cache dir


def _help_defaults(parser):
    """(dest, the default its help gives) of each flag of *parser* whose help says one."""
    found = []
    for action in parser._actions:
        match = re.search(r"default (\S+?)(?: each)?[),]", action.help or "")
        if match and action.dest != "help":
            found.append((action.dest, match.group(1)))
    return found


def test_help_defaults_are_the_settings_defaults():
    """Each default the help gives, passed as the flag, changes nothing: it is the
    default parse_settings takes (from the same constants)."""
    from proxpi_min.cli.options import command_line
    from proxpi_min.cli.progress import DEFAULT_JOBS
    from proxpi_min.core.settings import parse_settings

    parser = command_line()
    subcommands = parser._subparsers._group_actions[0].choices
    defaults = parse_settings({}, {})
    checked = set()
    for dest, shown in _help_defaults(parser) + _help_defaults(subcommands["warm"]):
        flags = {dest: [shown] if dest == "extra_index_ttl" else shown}
        if dest == "extra_index_ttl":
            flags["extra_index_url"] = ["https://extra.example/"]
            assert parse_settings({}, flags).indexes[1].ttl == parse_settings(
                {}, {"extra_index_url": ["https://extra.example/"]}).indexes[1].ttl
        else:
            assert parse_settings({}, flags) == defaults, (dest, shown)
        checked.add(dest)
    assert {"port", "host", "index_url", "index_ttl", "extra_index_ttl", "cache_size", "connect_timeout",
            "read_timeout", "client_timeout", "page_memory", "log_format", "workers", "max_connections",
            "index_strategy", "min_age_unknown"} <= checked
    for command in ("warm", "verify"):
        jobs = next(a for a in subcommands[command]._actions if a.dest == "jobs")
        assert jobs.default == DEFAULT_JOBS and f"(default {DEFAULT_JOBS})" in jobs.help % {"default": jobs.default}


@pytest.mark.parametrize(
    "args, named",
    [
        (["warm", "--jobs", "0", "x.txt"], "--jobs"),
        (["warm", "--python-version", "three", "x.txt"], "--python-version"),
        (["warm", "--cache-dir", "/tmp/x", "--cache-size", "lots", "x.txt"], "--cache-size"),
        (["warm", "--cache-dir", "/tmp/x"], "FILE"),
        (["warm", "--check-config", "--cache-dir", "/tmp/x", "x.txt"], "--check-config"),
        (["warm", "--port", "abc", "--cache-dir", "/tmp/x", "x.txt"], "--port"),
        (["--port", "0", "warm", "--cache-dir", "/tmp/x", "x.txt"], "come after it"),
        (["verify"], "--cache-dir"),
        (["verify", "--index-url", "http://x/", "--cache-dir", "/tmp/x"], "--index-url"),
    ],
)
def test_command_bad_arguments_exit_2(args, named):
    result = _run(args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and named in result.stderr, result.stderr


DEAD = "http://127.0.0.1:9/simple/"


@pytest.mark.parametrize(
    "args, env, named",
    [
        ([], {"PROXPI_CACHE_SIZE": "lots"}, ["PROXPI_CACHE_SIZE", "lots"]),
        (["--cache-size", "lots"], {}, ["--cache-size", "lots"]),
        ([], {"PROXPI_INDEX_TTL": "-1"}, ["PROXPI_INDEX_TTL", "-1"]),
        ([], {"PROXPI_INDEX_TTL": "soon"}, ["PROXPI_INDEX_TTL", "soon"]),
        (
            [],
            {"PROXPI_EXTRA_INDEX_URLS": f"{DEAD},http://127.0.0.1:10/simple/", "PROXPI_EXTRA_INDEX_TTLS": "60"},
            ["PROXPI_EXTRA_INDEX_TTLS", "60"],
        ),
        (["--index-url", "ftp://x/"], {}, ["--index-url", "ftp://x/"]),
        ([], {"PROXPI_INDEX_URL": "ftp://x/"}, ["PROXPI_INDEX_URL", "ftp://x/"]),
        ([], {"PROXPI_READ_TIMEOUT": "never"}, ["PROXPI_READ_TIMEOUT", "never"]),
        # urlsplit refuses an unclosed IPv6 bracket: still a bad setting, not a traceback.
        (["--index-url", "http://[::1"], {}, ["--index-url", "http://[::1"]),
        (["--extra-index-url", "http://[x/simple/"], {}, ["--extra-index-url"]),
        ([], {"HTTPS_PROXY": "http://[bad"}, ["HTTPS_PROXY", "http://[bad"]),
        (["--extra-index-url", DEAD, "--extra-index-ttl", "inf"], {}, ["--extra-index-ttl", "finite"]),
        (["--cache-dir", "/proc/no-such-dir"], {}, ["--cache-dir", "cannot be made"]),
        (
            [],
            {"PROXPI_EXTRA_INDEX_URLS": DEAD, "PROXPI_EXTRA_INDEX_TTL": "0", "PROXPI_EXTRA_INDEX_TTLS": "60"},
            ["PROXPI_EXTRA_INDEX_TTL='0' differs from PROXPI_EXTRA_INDEX_TTLS='60'"],
        ),
        ([], {"PROXPI_LOGGING_LEVEL": "loud"}, ["PROXPI_LOGGING_LEVEL='loud' must be one of: DEBUG, INFO, WARNING"]),
        (["--logging-level", "loud"], {}, ["--logging-level='loud'"]),
        ([], {"PROXPI_OFFLINE": "y"}, ["PROXPI_OFFLINE='y' must be 1, true, yes, on (on) or 0, false, no, off"]),
        (["--upload-token", "s3cret"], {}, ["--upload-token needs PROXPI_CACHE_DIR", "temp dir", "removed at exit"]),
        ([], {"PROXPI_UPLOAD_TOKENS": "/etc/tokens"}, ["PROXPI_UPLOAD_TOKENS needs PROXPI_CACHE_DIR"]),
    ],
    ids=["size-env", "size-flag", "ttl-negative", "ttl-text", "ttl-count", "url-flag", "url-env", "read-timeout",
         "url-ipv6", "extra-url-ipv6", "proxy-ipv6", "extra-ttl-inf", "cache-dir", "old-ttl-name-differs",
         "logging-level-env", "logging-level-flag", "boolean", "upload-token-temp-dir", "upload-tokens-temp-dir"],
)
def test_bad_setting_exits_2_with_one_line(args, env, named):
    result = _run(["--host", "127.0.0.1", "--port", "0", *args], env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for text in named:
        assert text in lines[0], (text, lines[0])


def test_serves_with_flags(upstream_factory, dists, tmp_path):
    root = upstream_factory("html", "root")
    extra = upstream_factory("json", "extra")
    cache_dir = tmp_path / "cache"
    args = [
        "--index-url", root.url, "--extra-index-url", extra.url,
        "--cache-dir", str(cache_dir), "--cache-size", "500M",
    ]
    with ProxyProcess(args) as process:
        assert process.url.startswith("http://127.0.0.1:")
        health = process.get("/health")
        assert (health.status, json.loads(health.body)) == (200, {"status": "success", "data": None})
        page = _alpha_page(process)
        assert dists.alpha_1.filename in page and dists.alpha_3.filename in page
        assert dists.epsilon.filename in process.get("/index/epsilon/").text
        download = process.get(f"/index/alpha/{dists.alpha_2.filename}")
        assert download.body == dists.alpha_2.content
        assert str(cache_dir) in process.get("/").text
        process.terminate()
        assert process.wait(15) == 0
    assert "listening on" in process.stderr


def test_env_variables_configure_indexes_and_ttls(upstream_factory, dists, tmp_path):
    root = upstream_factory("html", "root")
    extra = upstream_factory("html", "extra")
    env = {
        "PROXPI_INDEX_URL": root.url,
        "PROXPI_INDEX_TTL": "0",
        "PROXPI_EXTRA_INDEX_URLS": extra.url,
        "PROXPI_EXTRA_INDEX_TTLS": "1800",
        "PROXPI_CACHE_DIR": str(tmp_path / "cache"),
        "PROXPI_CACHE_SIZE": "1M",
    }
    with ProxyProcess([], env) as process:
        _alpha_page(process)
        page = _alpha_page(process)
        assert dists.alpha_3.filename in page
    assert root.hits("/simple/alpha/") == 2  # TTL 0
    assert extra.hits("/simple/alpha/") == 1  # TTL 1800


def test_proxpis_older_extra_index_ttl_name_sets_the_ttl(upstream_factory):
    """PROXPI_EXTRA_INDEX_TTL, all proxpi read before 1.2.1 (and reads still): not ignored."""
    root = upstream_factory("html", "root")
    extra = upstream_factory("html", "extra")
    env = {"PROXPI_INDEX_URL": root.url, "PROXPI_EXTRA_INDEX_URLS": extra.url, "PROXPI_EXTRA_INDEX_TTL": "0"}
    with ProxyProcess([], env) as process:
        _alpha_page(process)
        _alpha_page(process)
    assert extra.hits("/simple/alpha/") == 2  # TTL 0, not the default 180


@pytest.mark.parametrize("workers", ["1", "2"])
def test_logging_level_applies_to_every_process(upstream_html, workers):
    """PROXPI_LOGGING_LEVEL=warning (proxpi's variable): no INFO line from the process, the
    supervisor or any worker, request lines included; warnings are still written."""
    from tests.support.forward_proxy import free_port

    port = free_port()
    # More connections than descriptors: a warning at start.
    args = [sys.executable, "-m", "proxpi_min", "--host", "127.0.0.1", "--port", str(port), "--index-url",
            upstream_html.url, "--workers", workers, "--max-connections", "1000000000"]
    with subprocess.Popen(args, cwd=str(REPO_ROOT), env=proxy_env({"PROXPI_LOGGING_LEVEL": "warning"}),
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as served:
        try:
            deadline = time.monotonic() + 15
            while True:  # no start-up line at this level: ask until it answers
                try:
                    http("GET", f"http://127.0.0.1:{port}/health", timeout=1)
                    break
                except OSError:
                    assert served.poll() is None and time.monotonic() < deadline
                    time.sleep(0.05)
            for _ in range(4):
                assert http("GET", f"http://127.0.0.1:{port}/index/alpha/").status == 200
        finally:
            served.terminate()
        stderr = served.communicate(timeout=15)[1]
    assert served.returncode == 0, stderr
    assert "WARNING proxpi_min: " in stderr and "descriptors allowed" in stderr, stderr
    assert not [line for line in stderr.splitlines() if " INFO " in line], stderr


def test_flags_win_over_env(upstream_html):
    with ProxyProcess(["--index-url", upstream_html.url], {"PROXPI_INDEX_URL": DEAD}) as process:
        _alpha_page(process)
    assert upstream_html.hits("/simple/alpha/") == 1


def test_repeated_extra_index_flags_pair_with_ttls(upstream_factory):
    root = upstream_factory("html", "root")
    first = upstream_factory("html", "extra")
    second = upstream_factory("json", "extra")
    args = [
        "--index-url", root.url,
        "--extra-index-url", first.url, "--extra-index-ttl", "0",
        "--extra-index-url", second.url, "--extra-index-ttl", "1800",
    ]
    with ProxyProcess(args) as process:
        _alpha_page(process)
        _alpha_page(process)
    assert first.hits("/simple/alpha/") == 2
    assert second.hits("/simple/alpha/") == 1


def test_sigkill_mid_download_then_restart_serves_good_file(upstream_html, dists, tmp_path):
    dist = dists.alpha_2
    cache_dir = tmp_path / "cache"
    args = ["--index-url", upstream_html.url, "--cache-dir", str(cache_dir)]
    hold = upstream_html.hold(dist)  # half the file goes out, the rest only after the kill
    with ProxyProcess(args) as first:
        _alpha_page(first)
        outcome = []

        def download():
            try:
                outcome.append(first.get(f"/index/alpha/{dist.filename}", timeout=20))
            except Exception as exc:  # the proxy dies under it: expected
                outcome.append(exc)

        thread = threading.Thread(target=download)
        thread.start()
        assert hold.sent_first.wait(10)
        wait_for(lambda: any(os.path.getsize(t) for t in temp_files(cache_dir) if os.path.exists(t)),
                 "part of the file in a temp file", 10)
        first.kill()
        first.wait(10)
        thread.join(20)
        hold.open()
    assert outcome and not (hasattr(outcome[0], "body") and outcome[0].body == dist.content)

    with ProxyProcess(args) as second:
        result = second.get(f"/index/alpha/{dist.filename}")
        assert result.status == 200 and result.body == dist.content
    for directory, _, files in os.walk(cache_dir):
        for name in files:
            if name == dist.filename:
                with open(os.path.join(directory, name), "rb") as handle:
                    assert handle.read() == dist.content


def test_offline_restart_serves_cache_dir(upstream_html, dists, tmp_path):
    cache_dir = tmp_path / "cache"
    path = f"/index/alpha/{dists.alpha_1.filename}"
    with ProxyProcess(["--index-url", upstream_html.url, "--cache-dir", str(cache_dir)]) as online:
        _alpha_page(online)
        assert online.get(path).body == dists.alpha_1.content
    upstream_html.down()
    args = ["--index-url", upstream_html.url, "--cache-dir", str(cache_dir), "--offline"]
    with ProxyProcess(args) as offline:
        assert dists.alpha_1.filename in _alpha_page(offline)
        assert offline.get(path).body == dists.alpha_1.content
        unknown = offline.get("/index/never-seen/")
        assert unknown.status == 404 and b"not in the offline cache" in unknown.body


def test_startup_failure_is_reported_with_output(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache dir should be")
    with pytest.raises(AssertionError) as caught:
        ProxyProcess(["--index-url", DEAD, "--cache-dir", str(blocker / "sub")], startup_timeout=15)
    assert "did not report" in str(caught.value)


@pytest.mark.parametrize("via", ["flag", "env"])
def test_unusable_cache_dir_exits_2_with_one_line(tmp_path, via):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache dir should be")
    path = str(blocker / "sub")
    if via == "flag":
        result = _run(["--index-url", DEAD, "--port", "0", "--cache-dir", path])
        named = f"--cache-dir={path!r} cannot be made"
    else:
        result = _run(["--index-url", DEAD, "--port", "0"], {"PROXPI_CACHE_DIR": path})
        named = f"PROXPI_CACHE_DIR={path!r} cannot be made"
    assert result.returncode == 2
    assert result.stderr.strip() == f"proxpi-min: error: {named} (Not a directory)", result.stderr


NOBODY = 65534  # the uid a test run as root drops to, so that permissions bind


def _main_as_a_user(args):
    """``main(args)`` in a forked child that is not root (root, for whom permissions do not
    bind, becomes nobody there), without PROXPI_* variables: (exit status, stderr)."""
    from proxpi_min.cli import main as cli

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: it never returns into pytest
        status, stderr = 70, io.StringIO()
        try:
            for name in [name for name in os.environ if name.startswith("PROXPI_")]:
                del os.environ[name]
            if os.geteuid() == 0:
                with contextlib.redirect_stdout(io.StringIO()):
                    cli.main(["--check-config"])  # its lazy imports, from a Python nobody may not read
                try:
                    os.setgroups([])
                    os.setgid(NOBODY)
                    os.setuid(NOBODY)
                except OSError as exc:
                    status = 77
                    raise SystemExit(f"cannot become uid {NOBODY}: {exc}")
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
                status = cli.main(args)
        except BaseException:
            stderr.write(traceback.format_exc())
        finally:
            os.write(write_end, stderr.getvalue().encode())
            os._exit(status)
    os.close(write_end)
    with open(read_end, "rb") as pipe:
        text = pipe.read().decode()
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if status == 77:
        pytest.skip(f"running as root, and {text.strip().splitlines()[-1]}")
    return status, text


@pytest.mark.parametrize(
    "modes", [{".": 0o555}, {".": 0o777, "files": 0o555}], ids=["the-cache-dir", "its-files-folder"]
)
def test_a_cache_dir_this_user_cannot_write_is_named_not_writable(modes):
    """An existing cache dir (a docker volume that another image's root filled) that this user may not
    write in: not writable, said at start, not 'cannot be made' nor each download failing."""
    cache_dir = tempfile.mkdtemp()  # not pytest's tmp_path: that is the test user's alone
    try:
        for name, mode in modes.items():
            os.makedirs(os.path.join(cache_dir, name), exist_ok=True)
            os.chmod(os.path.join(cache_dir, name), mode)
        before = sorted(os.listdir(cache_dir))
        status, stderr = _main_as_a_user(["--check-config", "--cache-dir", cache_dir])
        uid = NOBODY if os.geteuid() == 0 else os.geteuid()
        assert status == 2, stderr
        assert stderr == f"proxpi-min: error: --cache-dir={cache_dir!r} is not writable by this user (uid {uid})\n"
        assert sorted(os.listdir(cache_dir)) == before
        # Offline nothing is written: a read-only copy (a USB disk) is served as it is.
        if "files" in modes:
            status, stderr = _main_as_a_user(["--check-config", "--offline", "--cache-dir", cache_dir])
            assert status == 0, stderr
    finally:
        for directory, _, _ in os.walk(cache_dir):
            os.chmod(directory, 0o755)
        shutil.rmtree(cache_dir)


def test_serve_subcommand_serves_and_removes_its_temp_cache_dir(upstream_html):
    with ProxyProcess(["serve", "--index-url", upstream_html.url]) as process:
        _alpha_page(process)
        cache_dir = re.search(r"cache dir (\S+),", process.stderr).group(1)
        assert os.path.isdir(cache_dir) and os.path.basename(cache_dir).startswith("proxpi-")
        process.terminate()
        assert process.wait(15) == 0
    assert not os.path.exists(cache_dir)


def test_process_url_answers_http(upstream_html):
    with ProxyProcess(["--index-url", upstream_html.url]) as process:
        status, _, _ = http("GET", process.index_url)
        assert status == 200


# -- operators: JSON logs, --check-config, contrib/ ------------------------------------

CONTRIB = REPO_ROOT / "contrib"


def test_json_log_format_gives_one_object_per_line(upstream_html):
    with ProxyProcess(["--index-url", upstream_html.url, "--log-format", "json"]) as process:
        assert process.get("/index/alpha/").status == 200
        process.terminate()
        assert process.wait(15) == 0
    lines = [json.loads(line) for line in process.stderr.splitlines()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert any(line["message"].startswith("listening on http://") for line in lines)
    request = next(line for line in lines if line.get("path") == "/index/alpha/")
    assert (request["method"], request["status"], request["source"]) == ("GET", 200, "upstream")
    assert request["bytes"] > 0 and request["client"] == "127.0.0.1"


def test_check_config_validates_and_exits():
    ok = _run(["--check-config", "--cache-size", "2G", "--log-format", "json"])
    assert ok.returncode == 0, ok.stderr
    assert "configuration ok" in ok.stdout
    # It says what the start-up line would, and the policies in force.
    ok = _run(["--check-config", "--workers", "2", "--min-age", "7d", "--deny", "evil"])
    assert ok.returncode == 0, ok.stderr
    assert "(online, 2 workers)" in ok.stdout and "upstream CAs from" in ok.stdout
    assert "proxpi-min: policy: deny evil" in ok.stdout and "files younger than 1w" in ok.stdout
    assert "http://[::1]:5000/" in _run(["--check-config", "--host", "::1"]).stdout
    bad = _run(["--check-config"], {"PROXPI_LOG_FORMAT": "xml"})
    assert bad.returncode == 2
    assert bad.stderr.strip() == "proxpi-min: error: PROXPI_LOG_FORMAT='xml' must be one of: text, json"
    ok = _run(["serve", "--check-config", "--port", "5001"])
    assert ok.returncode == 0 and "http://127.0.0.1:5001/" in ok.stdout, ok.stderr
    # Repeatable flags before "serve" and after it add up.
    both = _run(["--deny", "evil", "--extra-index-url", DEAD, "serve", "--deny", "bad", "--check-config",
                 "--extra-index-url", "http://127.0.0.1:10/simple/"])
    assert both.returncode == 0, both.stderr
    assert "policy: deny evil" in both.stdout and "policy: deny bad" in both.stdout
    assert DEAD in both.stdout and "http://127.0.0.1:10/simple/" in both.stdout
    # A cache dir the start could not make fails the check too; one it could is left as it was.
    bad = _run(["--check-config", "--cache-dir", "/proc/no-such-dir"])
    assert bad.returncode == 2 and "cannot be made" in bad.stderr
    fresh = os.path.join(tempfile.mkdtemp(), "not", "yet")
    assert _run(["--check-config", "--cache-dir", fresh]).returncode == 0
    assert os.listdir(os.path.dirname(os.path.dirname(fresh))) == []


def _unit_settings(text):
    """Key -> list of values of a systemd unit file (keys may repeat)."""
    settings = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_systemd_unit_flags_pass_check_config():
    unit = _unit_settings((CONTRIB / "proxpi-min.service").read_text())
    (exec_start,) = unit["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[0].endswith("python3") and argv[1].endswith("/proxpi.pyz")
    checked = _run([*argv[2:], "--check-config"])
    assert checked.returncode == 0, checked.stderr
    assert "/var/cache/proxpi-min" in checked.stdout
    # The cache dir it names is the one systemd makes for the service.
    assert unit["CacheDirectory"] == ["proxpi-min"]
    assert unit["RestartPreventExitStatus"] == ["2"]  # a bad setting does not loop


def _dockerfile(text):
    """(instruction, arguments) pairs, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
        for line in joined.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_dockerfile_copies_the_zipapp_and_runs_it_as_configured(tmp_path):
    steps = _dockerfile((CONTRIB / "Dockerfile").read_text())
    by_kind = {}
    for kind, value in steps:
        by_kind.setdefault(kind, []).append(value)
    assert by_kind["FROM"][0].startswith("python:") and by_kind["FROM"][0].endswith("-slim")
    # It copies exactly what ./zipapp.sh builds (by default, proxpi.pyz at the root).
    copies = [value.split() for value in by_kind["COPY"]]
    assert [source for *sources, _ in copies for source in sources] == ["proxpi.pyz"]
    assert 'out=${1:-"$here/proxpi.pyz"}' in (REPO_ROOT / "zipapp.sh").read_text()
    destination = copies[0][-1]
    entrypoint = json.loads(by_kind["ENTRYPOINT"][0])
    assert entrypoint == ["python", destination]
    assert by_kind["USER"] not in ([], ["root"], ["0"])
    env = dict(re.findall(r"(PROXPI_\w+)=(\S+)", " ".join(by_kind["ENV"])))
    assert by_kind["VOLUME"] == [env["PROXPI_CACHE_DIR"]]
    health = by_kind["HEALTHCHECK"][0]
    assert '"python"' in health and "/health" in health and "curl" not in health
    # The image's settings, checked by the very file it copies.
    built = subprocess.run(["sh", str(REPO_ROOT / "zipapp.sh"), str(tmp_path / "proxpi.pyz")],
                           capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    checked = subprocess.run(
        [sys.executable, str(tmp_path / "proxpi.pyz"), "--check-config"],
        env=proxy_env(env), capture_output=True, text=True, timeout=30,
    )
    assert checked.returncode == 0, checked.stderr
    assert "0.0.0.0:5000" in checked.stdout


def test_dockerfile_healthcheck_probes_health(proxy, upstream_html):
    """The HEALTHCHECK command, run as Docker would, against a live proxy."""
    steps = dict(_dockerfile((CONTRIB / "Dockerfile").read_text()))
    command = json.loads(steps["HEALTHCHECK"].split("CMD", 1)[1])
    assert command[0] == "python"
    p = proxy(upstream_html)
    env = {"PROXPI_PORT": str(p.port), "HTTP_PROXY": "http://127.0.0.1:9/"}
    healthy = subprocess.run([sys.executable, *command[1:]], env=proxy_env(env), capture_output=True, timeout=30)
    assert healthy.returncode == 0, healthy.stderr
    p.stop()
    down = subprocess.run([sys.executable, *command[1:]], env=proxy_env(env), capture_output=True, timeout=30)
    assert down.returncode != 0


def test_dockerfile_healthcheck_probes_health_over_tls(proxy, upstream_html, server_cert):
    """With PROXPI_TLS_CERT set (docker run -e), the probe speaks HTTPS: a container
    serving HTTPS is healthy, not marked unhealthy by a failed plain-HTTP probe."""
    steps = dict(_dockerfile((CONTRIB / "Dockerfile").read_text()))
    command = json.loads(steps["HEALTHCHECK"].split("CMD", 1)[1])
    p = proxy(upstream_html, tls_cert=str(server_cert.cert), tls_key=str(server_cert.key))
    env = {"PROXPI_PORT": str(p.port), "PROXPI_TLS_CERT": str(server_cert.cert), "PROXPI_TLS_KEY": str(server_cert.key)}
    healthy = subprocess.run([sys.executable, *command[1:]], env=proxy_env(env), capture_output=True, timeout=30)
    assert healthy.returncode == 0, healthy.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_port_in_use_is_one_line_not_a_traceback(tmp_path, workers):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = _run(["--index-url", DEAD, "--port", str(port), "--workers", workers])
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    assert re.search(rf"cannot start on 127\.0\.0\.1:{port}\b.*in use", result.stderr), result.stderr
