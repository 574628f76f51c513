"""Upstream through an outbound HTTP proxy, with private CAs: proxy choice from the
environment, CONNECT tunnels and absolute-form requests, refusals, certificate failures."""

from __future__ import annotations

import logging
import re
import socket
import threading
import time

import pytest

from proxpi_min.core.proxies import ProxySettings
from proxpi_min.core.settings import parse_settings
from proxpi_min.index import upstream as upstream_module
from proxpi_min.infra.tls import check_files
from proxpi_min.core.errors import ConfigError
from tests.support.raw_server import raw_server
from tests.support.forward_proxy import TINYPROXY, ForwardProxy, Tinyproxy, basic, free_port

# ---------------------------------------------------------------- proxy choice (pure)

CORP = {"HTTPS_PROXY": "http://corp:3128", "HTTP_PROXY": "http://corp-http:3128"}


def proxy_for(env: dict, url_parts: tuple, **flags) -> "str | None":
    return parse_settings(env, flags).upstream_proxy.proxy_for(*url_parts)


@pytest.mark.parametrize(
    "env, target, expected",
    [
        ({}, ("https", "pypi.org", 443), None),
        (CORP, ("https", "pypi.org", 443), "http://corp:3128"),
        (CORP, ("http", "pypi.org", 80), "http://corp-http:3128"),
        # The lower-case spelling wins, as in urllib.request.getproxies().
        ({"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2"}, ("https", "a.org", 443), "http://lower:2"),
        # An empty lower-case variable unsets the upper-case one.
        ({"HTTPS_PROXY": "http://upper:1", "https_proxy": ""}, ("https", "a.org", 443), None),
        # ALL_PROXY is the fallback for a scheme without its own.
        ({"ALL_PROXY": "http://all:3128"}, ("https", "a.org", 443), "http://all:3128"),
        ({"ALL_PROXY": "http://all:1", "HTTPS_PROXY": "http://s:2"}, ("https", "a.org", 443), "http://s:2"),
        # "host:port" means an HTTP proxy, as for curl and pip.
        ({"HTTPS_PROXY": "corp:3128"}, ("https", "a.org", 443), "http://corp:3128"),
        # NO_PROXY: names, domain suffixes (with or without a dot), "*", addresses, host:port.
        ({**CORP, "NO_PROXY": "pypi.org"}, ("https", "pypi.org", 443), None),
        ({**CORP, "NO_PROXY": "corp.example"}, ("https", "pkgs.corp.example", 443), None),
        ({**CORP, "NO_PROXY": ".corp.example"}, ("https", "pkgs.corp.example", 443), None),
        ({**CORP, "NO_PROXY": "corp.example"}, ("https", "notcorp.example", 443), "http://corp:3128"),
        ({**CORP, "no_proxy": "*"}, ("https", "pypi.org", 443), None),
        ({**CORP, "NO_PROXY": "10.1.2.3"}, ("https", "10.1.2.3", 443), None),
        ({**CORP, "NO_PROXY": "pkgs:8443"}, ("https", "pkgs", 8443), None),
        ({**CORP, "NO_PROXY": "pkgs:8443"}, ("https", "pkgs", 443), "http://corp:3128"),
        ({**CORP, "NO_PROXY": "PyPI.org"}, ("https", "pypi.org", 443), None),
        # IPv6 addresses, bare or in brackets, as pip and curl read them.
        ({**CORP, "NO_PROXY": "::1,fd00::5"}, ("https", "::1", 8443), None),
        ({**CORP, "NO_PROXY": "pypi.org, [FD00::5]"}, ("https", "fd00::5", 443), None),
        ({**CORP, "NO_PROXY": "::1"}, ("https", "fd00::5", 443), "http://corp:3128"),
        ({**CORP, "NO_PROXY": "[::1]:8443"}, ("https", "::1", 8443), None),
        ({**CORP, "NO_PROXY": "[::1]:8443"}, ("https", "::1", 443), "http://corp:3128"),
        # Networks, as curl and pip read them (urllib reads none).
        ({**CORP, "NO_PROXY": "pypi.org,10.0.0.0/8"}, ("https", "10.20.30.40", 443), None),
        ({**CORP, "NO_PROXY": "10.0.0.0/8"}, ("https", "11.0.0.1", 443), "http://corp:3128"),
        ({**CORP, "NO_PROXY": "127.0.0.1/32"}, ("https", "127.0.0.1", 8443), None),
        ({**CORP, "NO_PROXY": "::1/128"}, ("https", "::1", 443), None),
        ({**CORP, "NO_PROXY": "10.0.0.0/8"}, ("https", "ten.example", 443), "http://corp:3128"),
        # Under CGI an upper-case HTTP_PROXY may come from a client's header: ignored.
        ({"HTTP_PROXY": "http://evil:1", "REQUEST_METHOD": "GET"}, ("http", "a.org", 80), None),
    ],
)
def test_proxy_for_reads_the_environment_as_urllib(env, target, expected):
    assert proxy_for(env, target) == expected


def test_upstream_proxy_setting_overrides_the_environment_but_not_no_proxy():
    env = {**CORP, "NO_PROXY": "internal.example", "PROXPI_UPSTREAM_PROXY": "http://mine:8080"}
    assert proxy_for(env, ("https", "pypi.org", 443)) == "http://mine:8080"
    assert proxy_for(env, ("http", "pypi.org", 80)) == "http://mine:8080"
    assert proxy_for(env, ("https", "pkgs.internal.example", 443)) is None
    assert proxy_for(env, ("https", "pypi.org", 443), upstream_proxy="http://flag:1") == "http://flag:1"


@pytest.mark.parametrize("value", ["none", "NONE", " None "])
def test_upstream_proxy_none_ignores_the_environment(value):
    settings = parse_settings({**CORP, "ALL_PROXY": "http://all:1"}, {"upstream_proxy": value})
    assert settings.upstream_proxy == ProxySettings()
    assert settings.upstream_proxy.proxy_for("https", "pypi.org", 443) is None


@pytest.mark.parametrize(
    "env, named",
    [
        ({"HTTPS_PROXY": "socks5://user:secret@corp:1080"}, "HTTPS_PROXY="),
        ({"all_proxy": "https://user:secret@corp:3128"}, "all_proxy="),
        ({"PROXPI_UPSTREAM_PROXY": "http://user:secret@corp:99999"}, "PROXPI_UPSTREAM_PROXY="),
        ({"HTTP_PROXY": "http://user:secret@:3128"}, "HTTP_PROXY="),
        # An unencoded "/" in a password after digits parses as a port and a path.
        ({"HTTPS_PROXY": "http://user:1234/secret@corp:3128"}, "HTTPS_PROXY="),
        ({"PROXPI_INDEX_URL": "https://user:1234/secret@pkgs.example/simple/"}, "PROXPI_INDEX_URL="),
    ],
)
def test_bad_proxy_url_is_a_config_error_without_credentials(env, named):
    with pytest.raises(ConfigError) as info:
        parse_settings(env, {})
    assert str(info.value).startswith(named)
    assert "secret" not in str(info.value)


def test_proxy_description_has_no_credentials():
    settings = parse_settings({"HTTPS_PROXY": "http://alice:s3cret@corp:3128", "NO_PROXY": "internal"}, {})
    text = settings.upstream_proxy.describe()
    assert "corp:3128" in text and "internal" in text
    assert "alice" not in text and "s3cret" not in text
    assert "s3cret" not in repr(settings)
    assert ProxySettings().describe() == "no outbound proxy"


def test_an_at_sign_in_an_index_path_that_names_no_host_is_taken():
    # Azure Artifacts feed views ("feed@Release"); a file:// folder named with an "@".
    for url in ("https://user:tok@pkgs.dev.azure.com/org/_packaging/feed@Release/pypi/simple/",
                "file:///srv/builds@2024/simple/"):
        assert parse_settings({"PROXPI_INDEX_URL": url}, {}).indexes[0].url == url


def test_all_proxy_unused_beside_both_scheme_proxies_is_not_checked():
    # curl never reads ALL_PROXY then: a developer's SOCKS one must not stop the start.
    env = {"HTTPS_PROXY": "http://s:1", "HTTP_PROXY": "http://h:2", "ALL_PROXY": "socks5://x:1080"}
    assert proxy_for(env, ("https", "a.org", 443)) == "http://s:1"


def test_other_schemes_proxy_variables_are_ignored():
    # ftp_proxy and friends concern other tools; their values are never checked.
    assert parse_settings({"FTP_PROXY": "socks5://x:1"}, {}).upstream_proxy == ProxySettings()


# ---------------------------------------------------------------- through a real proxy


def through(proxy_url: str, no_proxy: str = "") -> ProxySettings:
    return ProxySettings((("all", proxy_url),), no_proxy)


def warnings_of(caplog) -> list:
    return [r for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("proxpi_min")]


@pytest.fixture
def forward_proxy():
    with ForwardProxy(credentials=("ci", "pa:ss w/rd")) as running:
        yield running


def test_https_upstream_through_connect_tunnel_with_basic_auth(proxy, upstream_tls, test_ca, dists, forward_proxy, caplog):
    caplog.set_level(logging.DEBUG, logger="proxpi_min")
    running = proxy(upstream_tls, upstream_proxy=through(forward_proxy.url), ca_bundle=str(test_ca.cert))
    page = running.get("/index/alpha/")
    assert page.status == 200 and dists.alpha_1.filename in page.text
    wheel = running.get(f"/index/alpha/{dists.alpha_1.filename}")
    assert wheel.status == 200 and wheel.body == dists.alpha_1.content
    # Both went through one tunnel (keep-alive), opened with the proxy's credentials.
    assert forward_proxy.requests == [
        ("CONNECT", f"127.0.0.1:{upstream_tls.port}", basic("ci", "pa:ss w/rd"))
    ]
    # TLS inside the tunnel is with the upstream itself: its Host, no proxy header.
    seen = upstream_tls.requests
    assert [r.path for r in seen] == ["/simple/alpha/", f"/files/alpha/{dists.alpha_1.filename}"]
    assert all(r.headers["host"] == f"127.0.0.1:{upstream_tls.port}" for r in seen)
    assert all("proxy-authorization" not in r.headers for r in seen)
    assert "pa:ss" not in caplog.text and "ci:" not in caplog.text
    assert "pa:ss" not in running.get("/").text


def test_http_upstream_through_proxy_in_absolute_form(proxy, upstream_html, dists, forward_proxy):
    running = proxy(upstream_html, upstream_proxy=through(forward_proxy.url))
    assert running.get("/index/alpha/").status == 200
    assert running.get(f"/index/alpha/{dists.alpha_1.filename}").body == dists.alpha_1.content
    assert [(r.method, r.target, r.proxy_authorization) for r in forward_proxy.requests] == [
        ("GET", f"{upstream_html.base_url}/simple/alpha/", basic("ci", "pa:ss w/rd")),
        ("GET", f"{upstream_html.base_url}/files/alpha/{dists.alpha_1.filename}", basic("ci", "pa:ss w/rd")),
    ]
    # The proxy's credentials stop at the proxy.
    assert all("proxy-authorization" not in r.headers for r in upstream_html.requests)


def test_a_forward_proxy_refusing_an_http_extra_index_is_no_absence(proxy, upstream_html, forward_proxy, caplog):
    # Through a proxy in absolute form, a 403 may be the proxy's: the extra index's files
    # must not quietly vanish from the merged page (pip would pick the root's).
    extra = f"http://127.0.0.1:{free_port()}/simple/"
    direct = f"127.0.0.1:{upstream_html.port}"  # the root index is reached without the proxy
    running = proxy(upstream_html, (extra, 0), upstream_proxy=through(forward_proxy.url, no_proxy=direct))
    forward_proxy.refuse = True
    page = running.get("/index/alpha/")
    assert page.status == 502 and "403" in page.text and f"via proxy http://127.0.0.1:{forward_proxy.port}" in page.text


@pytest.mark.parametrize("scheme", ["https", "http"])
@pytest.mark.parametrize("answer", ["silent", "garbage"])
def test_a_proxy_silent_or_not_speaking_http_is_named(proxy, upstream_tls, upstream_html, test_ca, answer, scheme):
    release = threading.Event()

    def respond(conn: socket.socket) -> None:
        with conn:
            conn.recv(4096)  # the CONNECT
            if answer == "garbage":
                conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
            release.wait(5)

    with raw_server(respond) as port:
        index = upstream_tls if scheme == "https" else upstream_html
        running = proxy(index, upstream_proxy=through(f"http://127.0.0.1:{port}"), ca_bundle=str(test_ca.cert),
                        connect_timeout=0.3, read_timeout=0.3)
        try:
            page = running.get("/index/alpha/")
        finally:
            release.set()
    if scheme == "https":  # the CONNECT is where it fails
        expected = (504, "timed out connecting through proxy") if answer == "silent" else (502, "answered no HTTP")
    else:  # the request itself, read by the proxy
        expected = (504, "timed out") if answer == "silent" else (502, "BadStatusLine")
    assert page.status == expected[0] and expected[1] in page.text and f"127.0.0.1:{port}" in page.text, page.text


def test_no_proxy_hosts_are_reached_directly(proxy, upstream_html, forward_proxy):
    running = proxy(upstream_html, upstream_proxy=through(forward_proxy.url, no_proxy="localhost,127.0.0.1"))
    assert running.get("/index/alpha/").status == 200
    assert forward_proxy.requests == []
    assert upstream_html.hits("/simple/alpha/") == 1


@pytest.mark.parametrize("refusal", ["407", "403", "refused"])
def test_proxy_refusal_is_502_with_one_warning_and_the_stale_copy(
    proxy, upstream_tls, test_ca, dists, forward_proxy, caplog, refusal
):
    caplog.set_level(logging.WARNING, logger="proxpi_min")
    running = proxy(
        (upstream_tls, 0), upstream_proxy=through(forward_proxy.url), ca_bundle=str(test_ca.cert)
    )
    assert running.get("/index/alpha/").status == 200
    if refusal == "407":
        forward_proxy.credentials = ("ci", "rotated")
    elif refusal == "403":
        forward_proxy.refuse = True
    else:
        forward_proxy.stop()
    running.server.upstream.close()  # the next request needs a new tunnel
    caplog.clear()

    stale = running.get("/index/alpha/")
    assert stale.status == 200 and stale.headers["X-Proxpi-Stale"] == "1"
    never_fetched = running.get(f"/index/alpha/{dists.alpha_1.filename}")
    assert never_fetched.status == 502

    shown = f"http://127.0.0.1:{forward_proxy.port}"
    expected = {"407": "407 Proxy Authentication Required", "403": "403 Forbidden", "refused": "Connection refused"}
    records = warnings_of(caplog)
    assert len(records) == 2, [r.getMessage() for r in records]  # one per failed request
    for record in records:
        message = record.getMessage()
        assert shown in message and expected[refusal] in message
        assert "pa:ss" not in message and record.exc_info is None
    assert shown in never_fetched.text and "pa:ss" not in never_fetched.text


def test_unreachable_proxy_for_plain_http_is_502(proxy, upstream_html, caplog):
    caplog.set_level(logging.WARNING, logger="proxpi_min")
    port = free_port()
    running = proxy(upstream_html, upstream_proxy=through(f"http://u:secret@127.0.0.1:{port}"))
    answer = running.get("/index/alpha/")
    assert answer.status == 502
    assert f"proxy http://127.0.0.1:{port} unreachable (Connection refused)" in answer.text
    assert "secret" not in caplog.text


def test_407_to_a_plain_http_request_names_the_proxy(proxy, upstream_html, forward_proxy):
    running = proxy(upstream_html, upstream_proxy=through(forward_proxy.url))
    forward_proxy.credentials = ("ci", "rotated")
    answer = running.get("/index/alpha/")
    assert answer.status == 502
    assert f"proxy http://127.0.0.1:{forward_proxy.port} refused the request: 407" in answer.text


@pytest.fixture
def trickling_proxy():
    """An outbound proxy that answers CONNECT with ``200`` and then one header line every
    0.2 s, never the blank line that ends its answer. Yields its URL; stopping it ends
    every answer."""
    stopped = threading.Event()

    def answer(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)  # the CONNECT request, not looked at
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                while not stopped.wait(0.2):
                    conn.sendall(b"X-Still-Deciding: yes\r\n")
            except OSError:
                pass  # the client hung up

    with raw_server(answer) as port:
        yield f"http://127.0.0.1:{port}"
        stopped.set()


def test_a_connect_answer_trickled_past_the_page_deadline_is_504(proxy, trickling_proxy, monkeypatch):
    """Each line of the proxy's CONNECT answer comes within the connect timeout, so only
    the page deadline (PAGE_DEADLINE_READS read timeouts, lowered to one here) ends the
    tunnel's set-up: a 504 at the deadline, not a fetch held as long as the proxy likes."""
    monkeypatch.setattr(upstream_module, "PAGE_DEADLINE_READS", 1)
    running = proxy("https://index.example/simple/", upstream_proxy=through(trickling_proxy), read_timeout=0.5)
    started = time.monotonic()
    answer = running.get("/index/alpha/", timeout=10)
    took = time.monotonic() - started
    assert answer.status == 504 and b"upstream page took over 0.5 s" in answer.body, answer
    assert took < 0.5 + 2.0, f"cut after {took:.1f} s"


# ---------------------------------------------------------------- private CAs


def test_untrusted_upstream_certificate_is_502_with_a_certificate_warning(proxy, upstream_tls, caplog):
    caplog.set_level(logging.WARNING, logger="proxpi_min")
    running = proxy(upstream_tls)  # the system store does not know the test CA
    answer = running.get("/index/alpha/")
    assert answer.status == 502
    (record,) = warnings_of(caplog)
    assert "certificate problem for 127.0.0.1" in record.getMessage()
    assert record.exc_info is None
    assert upstream_tls.hits("/simple/alpha/") == 0


def test_verification_turned_off_serves_and_says_so_at_the_warning_level(proxy, upstream_tls, caplog):
    caplog.set_level(logging.WARNING, logger="proxpi_min")
    running = proxy(upstream_tls, verify_ssl=False)
    assert running.get("/index/alpha/").status == 200
    (record,) = warnings_of(caplog)
    assert "index certificates are not verified" in record.getMessage()


def test_ca_bundle_makes_the_private_ca_trusted(proxy, upstream_tls, test_ca):
    assert proxy(upstream_tls, ca_bundle=str(test_ca.cert)).get("/index/alpha/").status == 200


def test_ssl_cert_file_is_honoured_without_a_bundle(upstream_tls, test_ca):
    # OpenSSL reads SSL_CERT_FILE itself, so this needs a process of its own.
    from tests.support.proxy import ProxyProcess

    with ProxyProcess(["--index-url", upstream_tls.url], env={"SSL_CERT_FILE": str(test_ca.cert)}) as running:
        assert running.get("/index/alpha/").status == 200
        assert f"upstream CAs from {test_ca.cert} (SSL_CERT_FILE)" in running.stderr


@pytest.mark.parametrize("content, problem", [(None, "cannot be read"), (b"not a certificate\n", "holds no PEM certificate")])
def test_bad_ca_bundle_is_a_config_error(tmp_path, content, problem):
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=f"^--ca-bundle='{path}' {problem}"):
        check_files(parse_settings({}, {"ca_bundle": str(path)}))


# ---------------------------------------------------------------- tinyproxy


@pytest.mark.skipif(TINYPROXY is None, reason="needs tinyproxy (apt install tinyproxy)")
@pytest.mark.parametrize("credentials", [None, ("ci", "s3cret")], ids=["open", "basic-auth"])
def test_https_upstream_through_tinyproxy_tunnels_once_and_bad_credentials_are_502(proxy, upstream_tls, test_ca, dists, tmp_path, credentials):
    with Tinyproxy(tmp_path, credentials) as tiny:
        running = proxy(upstream_tls, upstream_proxy=through(tiny.url), ca_bundle=str(test_ca.cert))
        assert running.get("/index/alpha/").status == 200
        assert running.get(f"/index/alpha/{dists.alpha_1.filename}").body == dists.alpha_1.content
        assert tiny.count("CONNECT") == 1
    if credentials:
        with Tinyproxy(tmp_path / "wrong", credentials) as tiny:
            wrong = tiny.url.replace("s3cret", "wrong")
            running = proxy(upstream_tls, upstream_proxy=through(wrong), ca_bundle=str(test_ca.cert))
            answer = running.get("/index/beta/")
            # tinyproxy answers wrong credentials with 401, none with 407.
            assert answer.status == 502
            assert re.search(r"refused the tunnel: 40[17] ", answer.text), answer.text


def test_a_proxys_reason_phrase_reaches_no_client_or_log_with_its_control_characters(
    proxy, upstream_tls, test_ca, caplog
):
    caplog.set_level(logging.WARNING, logger="proxpi_min")

    def respond(conn: socket.socket) -> None:
        with conn:
            conn.recv(4096)  # the CONNECT
            conn.sendall(b"HTTP/1.1 407 denied \x1b[31mRED\x1b[0m\x07 by policy\r\nContent-Length: 0\r\n\r\n")

    with raw_server(respond) as port:
        running = proxy(upstream_tls, upstream_proxy=through(f"http://127.0.0.1:{port}"), ca_bundle=str(test_ca.cert))
        page = running.get("/index/alpha/")
    assert page.status == 502 and "denied [31mRED[0m by policy" in page.text, page.text
    assert "\x1b" not in page.text and "\x07" not in page.text
    assert "\x1b" not in caplog.text and "denied" in caplog.text
