"""Serving HTTPS: settings, the handshake in the connection's own thread, clients that
speak plain HTTP or nothing, and real pip through HTTPS -> outbound proxy -> HTTPS."""

from __future__ import annotations

import hashlib
import http.client
import logging
import socket
import ssl
import subprocess
import threading
import time

import pytest

from proxpi_min.cli import main as cli
from proxpi_min.core.settings import parse_settings
from proxpi_min.core.errors import ConfigError
from proxpi_min.infra.tls import check_files, server_context
from tests.support.cache_dir import sized_wheel
from tests.support.certs import OPENSSL
from tests.support.forward_proxy import ForwardProxy, basic
from tests.support.proxy import ProxyProcess, assert_healthy, run_pip
from tests.support.raw_server import Relay


def https_get(port: int, path: str, ca: str, host: str = "127.0.0.1") -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=ca)
    connection = http.client.HTTPSConnection(host, port, context=context, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.fixture
def tls_proxy(proxy, upstream_html, server_cert):
    def make(**overrides):
        return proxy(upstream_html, tls_cert=str(server_cert.cert), tls_key=str(server_cert.key), **overrides)

    return make


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize("given", ["tls_cert", "tls_key"])
def test_tls_cert_and_key_go_together(server_cert, given):
    with pytest.raises(ConfigError, match=f"^--{given.replace('_', '-')}=.*both or neither"):
        parse_settings({}, {given: str(getattr(server_cert, given[4:]))})


def test_tls_files_must_load(server_cert, tmp_path):
    settings = parse_settings({"PROXPI_TLS_CERT": str(server_cert.cert), "PROXPI_TLS_KEY": "/nowhere.key"}, {})
    with pytest.raises(ConfigError, match="^PROXPI_TLS_KEY='/nowhere.key' cannot be read"):
        check_files(settings)  # at start: parsing the settings opens no file
    # The CA certificate with the server's key: not a pair.
    settings = parse_settings({}, {"tls_cert": str(server_cert.cert.with_name("ca.pem")), "tls_key": str(server_cert.key)})
    with pytest.raises(ConfigError, match="^--tls-cert=.* not a PEM certificate and its key"):
        check_files(settings)
    with pytest.raises(ConfigError, match="^PROXPI_CA_BUNDLE='.*key.*' holds no PEM certificate"):
        check_files(parse_settings({"PROXPI_CA_BUNDLE": str(server_cert.key)}, {}))
    check_files(parse_settings({}, {"tls_cert": str(server_cert.cert), "tls_key": str(server_cert.key)}))


@pytest.mark.skipif(OPENSSL is None, reason="needs the openssl command")
def test_encrypted_tls_key_is_refused_without_a_prompt(server_cert, tmp_path):
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(
        [OPENSSL, "pkey", "-in", str(server_cert.key), "-out", str(encrypted), "-aes256", "-passout", "pass:x"],
        check=True, stdin=subprocess.DEVNULL, capture_output=True,
    )
    with pytest.raises(ConfigError, match="encrypted"):
        check_files(parse_settings({}, {"tls_cert": str(server_cert.cert), "tls_key": str(encrypted)}))


@pytest.mark.parametrize(
    "args, named",
    [
        (["--tls-cert", "/nowhere.pem", "--tls-key", "/nowhere.key"], "--tls-cert='/nowhere.pem' cannot be read"),
        (["--tls-key", "/nowhere.key"], "--tls-key='/nowhere.key' needs --tls-cert"),
        (["--ca-bundle", "/nowhere.pem"], "--ca-bundle='/nowhere.pem' cannot be read"),
        (["warm", "--ca-bundle", "/nowhere.pem", "x.txt"], "--ca-bundle='/nowhere.pem' cannot be read"),
        (["--upstream-proxy", "socks5://u:secret@corp:1080"], "--upstream-proxy='socks5://corp:1080' is not an http://"),
    ],
)
def test_bad_tls_or_proxy_setting_exits_2_with_one_line(capsys, args, named):
    assert cli.main(args if args[0] == "warm" else ["--port", "0", *args]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and named in lines[0], lines


def test_server_context_refuses_tls_before_1_2(server_cert):
    assert server_context(str(server_cert.cert), str(server_cert.key)).minimum_version == ssl.TLSVersion.TLSv1_2


# ---------------------------------------------------------------- serving


def test_serves_https_and_home_page_shows_it(tls_proxy, test_ca):
    running = tls_proxy()
    assert https_get(running.port, "/health", str(test_ca.cert))[0] == 200
    status, body = https_get(running.port, "/", str(test_ca.cert))
    assert status == 200
    assert f"https://127.0.0.1:{running.port}/index/" in body.decode()
    status, body = https_get(running.port, "/index/alpha/", str(test_ca.cert), host="localhost")
    assert status == 200 and b"alpha-1.0" in body


def test_plain_http_on_the_tls_port_is_dropped_quietly(tls_proxy, test_ca, caplog):
    caplog.set_level(logging.DEBUG, logger="proxpi_min")
    running = tls_proxy()
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as plain:
        plain.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert not plain.recv(4096).startswith(b"HTTP/")
    assert https_get(running.port, "/health", str(test_ca.cert))[0] == 200
    handshakes = [r for r in caplog.records if "TLS handshake" in r.getMessage()]
    assert [r.levelno for r in handshakes] == [logging.DEBUG]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_silent_client_neither_blocks_others_nor_stays_forever(tls_proxy, test_ca):
    running = tls_proxy(client_timeout=0.5)
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as silent:
        # The handshake waits in the silent connection's own thread, not the accept loop.
        assert https_get(running.port, "/health", str(test_ca.cert))[0] == 200
        assert silent.recv(1) == b""  # closed once the client timeout passed


def test_client_distrusting_our_certificate_does_not_disturb_others(tls_proxy, test_ca):
    running = tls_proxy()
    with pytest.raises(ssl.SSLCertVerificationError):
        https_get(running.port, "/health", ssl.get_default_verify_paths().cafile or "/dev/null")
    assert https_get(running.port, "/health", str(test_ca.cert))[0] == 200


# ---------------------------------------------------------------- upstream handshake


@pytest.mark.parametrize("copy", ["none", "saved"])
def test_upstream_handshake_trickled_is_cut_at_the_page_deadline(proxy, upstream_tls, test_ca, copy):
    """An https upstream whose TLS handshake comes a byte each 0.05 s, which the 20 s
    connect timeout alone would let run: the page deadline (six 0.1 s read timeouts,
    0.6 s) cuts it, and the client gets its 504, or the saved copy, near the deadline."""
    with Relay(upstream_tls.port, every=0.05) as relay:
        index = (f"https://127.0.0.1:{relay.port}/simple/", 0.15)
        p = proxy(index, read_timeout=0.1, connect_timeout=20.0, ca_bundle=str(test_ca.cert))
        if copy == "saved":
            assert p.get("/index/alpha/").status == 200
            time.sleep(0.3)  # past the TTL
        relay.trickle()  # drops the kept connection too: the refresh shakes hands again
        answers: list = []
        started = time.monotonic()
        asking = threading.Thread(target=lambda: answers.append(p.get("/index/alpha/", timeout=30)), daemon=True)
        asking.start()
        asking.join(10)
        took = time.monotonic() - started
        assert answers, f"no answer after {took:.1f} s"
    result = answers[0]
    if copy == "saved":
        assert (result.status, result.headers.get("X-Proxpi-Stale")) == (200, "1"), result
    else:
        assert result.status == 504 and b"took over 0.6 s" in result.body, result
    assert took < 2.0, f"answered after {took:.1f} s"
    assert_healthy(p)


# ---------------------------------------------------------------- end to end


def test_pip_installs_through_https_proxy_outbound_proxy_and_private_ca(
    upstream_tls, test_ca, server_cert, dists, pip_venv, tmp_path
):
    """pip -> proxpi-min over HTTPS -> an authenticating outbound proxy (CONNECT) ->
    an HTTPS upstream whose certificate only the private CA vouches for."""
    with ForwardProxy(credentials=("ci", "s3cret")) as outbound:
        args = [
            "--index-url", upstream_tls.url,
            "--tls-cert", str(server_cert.cert), "--tls-key", str(server_cert.key),
            "--ca-bundle", str(test_ca.cert),
        ]
        # The outbound proxy from the environment, as a CI runner sets it; 127.0.0.1
        # must not be exempted for this test.
        env = {"HTTPS_PROXY": outbound.url, "NO_PROXY": None, "no_proxy": None}
        with ProxyProcess(args, env) as running:
            assert running.url.startswith("https://")
            index_url = running.index_url.replace("127.0.0.1", "localhost")
            target = tmp_path / "site"
            # REQUESTS_CA_BUNDLE: what every pip here honours (SSL_CERT_FILE only from
            # pip 24.2, which checks certificates with the system store).
            result = run_pip(
                ["install", "--target", str(target), "beta"], index_url,
                python=pip_venv, env={"REQUESTS_CA_BUNDLE": str(test_ca.cert)},
            )
            assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{running.stderr}"
            assert (target / "beta.py").is_file() and (target / "alpha.py").is_file()
            startup = running.stderr.splitlines()[0]
        assert outbound.count("CONNECT") >= 1
        assert all(r.proxy_authorization == basic("ci", "s3cret") for r in outbound.requests)
    assert upstream_tls.hits("beta-1.0-py3-none-any.whl") == 1
    assert f"upstream CAs from {test_ca.cert}" in startup
    assert f"https via http://127.0.0.1:{outbound.port}" in startup
    assert "s3cret" not in running.stderr


def test_clients_joining_one_download_over_https_each_get_the_whole_file(
    proxy, upstream_factory, server_cert, test_ca
):
    """Clients of one file still downloading read the temp file through handles that
    share its position (os.dup): over TLS, where sendfile cannot be used, each must
    read at its own offset, or they send each other's bytes and stall short."""
    dist = sized_wheel("shared", "1.0", 2_000_000)
    index = upstream_factory("html", None)
    index.add(dist, metadata=False)
    running = proxy(index.url, tls_cert=str(server_cert.cert), tls_key=str(server_cert.key))
    assert https_get(running.port, "/index/shared/", str(test_ca.cert))[0] == 200
    hold = index.hold(dist)  # the first half goes out, the rest once every client has joined
    path = f"/index/shared/{dist.filename}"
    results: list = []
    clients = [threading.Thread(target=lambda: results.append(https_get(running.port, path, str(test_ca.cert))))
               for _ in range(3)]
    for client in clients:
        client.start()
    assert hold.sent_first.wait(10)
    time.sleep(0.3)  # the clients read what is written so far
    hold.open()
    for client in clients:
        client.join(15)
    assert [(status, hashlib.sha256(body).hexdigest()) for status, body in results] == [(200, dist.sha256)] * 3
