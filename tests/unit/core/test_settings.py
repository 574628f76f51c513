"""Unit tests for proxpi_min/core/settings.py: settings from PROXPI_* variables and flags."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from proxpi_min.core.settings import (
    IndexSettings,
    Settings,
    cpu_count,
    parse_settings,
)
from proxpi_min.core.errors import ConfigError

GIB = 1024**3
MIB = 1024**2


def settings(env: "dict[str, str] | None" = None, **flags: Any) -> Settings:
    return parse_settings(env or {}, flags)


def config_error(env: "dict[str, str] | None" = None, **flags: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse_settings(env or {}, flags)
    return str(info.value)


# ---------------------------------------------------------------- defaults


def test_defaults_equal_proxpis() -> None:
    result = settings()
    assert result.indexes == (IndexSettings("https://pypi.org/simple/", 1800.0),)
    assert result.cache_size == 5 * GIB
    assert result.cache_dir is None
    assert result.binary_file_mime_type is False
    assert result.verify_ssl is True
    assert result.offline is False
    assert result.admin_token is None


def test_without_serving_the_listening_side_is_left_unread() -> None:
    """warm reads the indices, the cache and the guard rails, not the listening side."""
    env = {"PROXPI_INDEX_TTL": "60", "PROXPI_CACHE_SIZE": "1G", "PROXPI_DENY": "evil",
           "PROXPI_PORT": "abc", "PROXPI_TLS_CERT": "/nowhere.pem", "PROXPI_WORKERS": "many",
           "PROXPI_LOG_FORMAT": "xml", "PROXPI_MAX_CONNECTIONS": "0", "PROXPI_PAGE_MEMORY": "lots"}
    settings = parse_settings(env, {}, serving=False)
    assert (settings.indexes[0].ttl, settings.cache_size, settings.deny) == (60.0, 1024**3, (("evil", None),))
    assert (settings.port, settings.tls_cert, settings.workers) == (Settings(indexes=()).port, None, 1)
    with pytest.raises(ConfigError, match="PROXPI_PORT='abc'"):
        parse_settings(env, {})


def test_settings_name_where_each_start_up_path_came_from() -> None:
    settings = parse_settings({"PROXPI_CACHE_DIR": "/env", "PROXPI_CA_BUNDLE": "/ca.pem"}, {"tls_cert": "c", "tls_key": "k"})
    assert settings.source_of("cache_dir") == "PROXPI_CACHE_DIR" and settings.source_of("ca_bundle") == "PROXPI_CA_BUNDLE"
    assert settings.source_of("tls_cert") == "--tls-cert" and settings.source_of("tls_key") == "--tls-key"
    assert Settings(indexes=()).source_of("cache_dir") == "--cache-dir"  # built without parse_settings


def test_argparse_flags_left_unset_do_not_override_env() -> None:
    # argparse puts None into every flag that was not given.
    flags = {
        "index_url": None,
        "index_ttl": None,
        "extra_index_url": None,
        "extra_index_ttl": None,
        "cache_size": None,
        "offline": None,
        "port": None,
    }
    env = {
        "PROXPI_INDEX_URL": "https://mirror.example/simple",
        "PROXPI_INDEX_TTL": "60",
        "PROXPI_CACHE_SIZE": "1G",
        "PROXPI_OFFLINE": "1",
        "PROXPI_PORT": "8080",
    }
    result = parse_settings(env, flags)
    assert result.indexes == (IndexSettings("https://mirror.example/simple/", 60.0),)
    assert result.cache_size == GIB
    assert result.offline is True
    assert result.port == 8080


@pytest.mark.parametrize(
    "env",
    [
        {"PROXPI_PIN": "acme-*https://ci:S3CRET@pkgs.example/simple/"},  # no "=": not PATTERN=URL
        {"PROXPI_INDEX_URL": "https://ci:S3/CRET@pkgs.example/simple/"},  # a "/" in the password
        {"PROXPI_EXTRA_INDEX_URLS": "https://ci:S3#CRET@pkgs.example:bad/"},
        {"PROXPI_UPSTREAM_PROXY": "http://ci:S3?CRET@proxy.example:99999"},
    ],
    ids=["pin", "index-url", "extra-index-url", "proxy"],
)
def test_a_bad_url_setting_is_named_without_its_password(env) -> None:
    message = config_error(env)
    assert "S3" not in message and "CRET" not in message, message
    assert "***@" in message


def test_an_index_url_read_from_a_file_loses_its_newline() -> None:
    result = settings({"PROXPI_INDEX_URL": "https://mirror.example/simple/\n"})
    assert result.indexes[0].url == "https://mirror.example/simple/"


def test_extra_indexes_get_the_default_ttl_of_180() -> None:
    result = settings({"PROXPI_EXTRA_INDEX_URLS": "https://a.example/simple/,https://b.example/"})
    assert result.indexes[1:] == (
        IndexSettings("https://a.example/simple/", 180.0),
        IndexSettings("https://b.example/", 180.0),
    )


def test_settings_are_frozen() -> None:
    result = settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.port = 1  # type: ignore[misc]


# ---------------------------------------------------------------- flags beat env


@pytest.mark.parametrize(
    ("var", "env_value", "flag", "flag_value", "read", "expected"),
    [
        ("PROXPI_INDEX_URL", "https://env.example/simple/", "index_url",
         "https://flag.example/simple/", lambda s: s.indexes[0].url, "https://flag.example/simple/"),
        ("PROXPI_INDEX_TTL", "10", "index_ttl", "20", lambda s: s.indexes[0].ttl, 20.0),
        ("PROXPI_CACHE_SIZE", "1G", "cache_size", "500M", lambda s: s.cache_size, 500 * MIB),
        ("PROXPI_CACHE_DIR", "/env", "cache_dir", "/flag", lambda s: s.cache_dir, "/flag"),
        ("PROXPI_PORT", "1234", "port", "4321", lambda s: s.port, 4321),
        ("PROXPI_HOST", "0.0.0.0", "host", "::1", lambda s: s.host, "::1"),
        ("PROXPI_OFFLINE", "0", "offline", True, lambda s: s.offline, True),
        ("PROXPI_BINARY_FILE_MIME_TYPE", "0", "binary_file_mime_type", True,
         lambda s: s.binary_file_mime_type, True),
        ("PROXPI_DISABLE_INDEX_SSL_VERIFICATION", "0", "disable_index_ssl_verification", True,
         lambda s: s.verify_ssl, False),
        ("PROXPI_CONNECT_TIMEOUT", "1", "connect_timeout", "2", lambda s: s.connect_timeout, 2.0),
        ("PROXPI_READ_TIMEOUT", "1", "read_timeout", "2", lambda s: s.read_timeout, 2.0),
        ("PROXPI_CLIENT_TIMEOUT", "1", "client_timeout", "2", lambda s: s.client_timeout, 2.0),
        ("PROXPI_HEADER_TIMEOUT", "1", "header_timeout", "2.5", lambda s: s.header_timeout, 2.5),
        ("PROXPI_THREADS", "8", "threads", "16", lambda s: s.threads, 16),
        ("PROXPI_ADMIN_TOKEN", "env-token", "admin_token", "flag-token", lambda s: s.admin_token,
         "flag-token"),
        ("PROXPI_PAGE_MEMORY", "1M", "page_memory", "2M", lambda s: s.page_memory, 2 * MIB),
    ],
)
def test_flag_beats_env(
    var: str, env_value: str, flag: str, flag_value: Any, read: Any, expected: Any
) -> None:
    assert read(parse_settings({var: env_value}, {})) != expected  # the env alone differs
    assert read(parse_settings({var: env_value}, {flag: flag_value})) == expected


def test_extra_index_flags_beat_env() -> None:
    env = {"PROXPI_EXTRA_INDEX_URLS": "https://env.example/", "PROXPI_EXTRA_INDEX_TTLS": "5"}
    flags = {
        "extra_index_url": ["https://one.example/simple", "https://two.example/"],
        "extra_index_ttl": ["1", "2"],
    }
    assert parse_settings(env, flags).indexes[1:] == (
        IndexSettings("https://one.example/simple/", 1.0),
        IndexSettings("https://two.example/", 2.0),
    )


def test_env_values_are_used() -> None:
    env = {
        "PROXPI_INDEX_URL": "http://mirror.example:8080/simple/",
        "PROXPI_INDEX_TTL": "0",
        "PROXPI_EXTRA_INDEX_URLS": " https://a.example/ , https://b.example/x ",
        "PROXPI_EXTRA_INDEX_TTLS": "10,20.5",
        "PROXPI_CACHE_SIZE": "0",
        "PROXPI_CACHE_DIR": "/var/cache/proxpi",
        "PROXPI_PORT": "0",
        "PROXPI_HOST": "0.0.0.0",
        "PROXPI_ADMIN_TOKEN": "s3cret",
    }
    result = settings(env)
    assert result.indexes == (
        IndexSettings("http://mirror.example:8080/simple/", 0.0),
        IndexSettings("https://a.example/", 10.0),
        IndexSettings("https://b.example/x/", 20.5),
    )
    assert result.cache_size == 0
    assert result.cache_dir == "/var/cache/proxpi"
    assert result.port == 0
    assert result.host == "0.0.0.0"
    assert result.admin_token == "s3cret"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("true", True), ("TRUE", True), ("yes", True), ("on", True), (" 1 ", True),
     ("0", False), ("false", False), ("no", False), ("off", False), ("", False)],
)
def test_boolean_variables(value: str, expected: bool) -> None:
    assert settings({"PROXPI_OFFLINE": value}).offline is expected
    assert settings({"PROXPI_DISABLE_INDEX_SSL_VERIFICATION": value}).verify_ssl is not expected


# ---------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("1024", 1024),
        ("5368709120", 5 * GIB),
        ("500M", 500 * MIB),
        ("500m", 500 * MIB),
        ("5G", 5 * GIB),
        ("5GB", 5 * GIB),  # proxpi's spelling
        ("5GiB", 5 * GIB),
        ("10K", 10 * 1024),
        ("10KB", 10 * 1024),
        ("2T", 2 * 1024**4),
        ("1.5K", 1536),
        (" 7 ", 7),
        ("7B", 7),
    ],
)
def test_cache_size_reads_every_size_spelling(text: str, expected: int) -> None:
    assert settings({"PROXPI_CACHE_SIZE": text}).cache_size == expected
    assert settings(cache_size=text).cache_size == expected


# ---------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"PROXPI_INDEX_TTL": "-1"}, ["PROXPI_INDEX_TTL", "-1"]),
        ({"PROXPI_INDEX_TTL": "-0.5"}, ["PROXPI_INDEX_TTL", "-0.5"]),
        ({"PROXPI_INDEX_TTL": "soon"}, ["PROXPI_INDEX_TTL", "soon"]),
        ({"PROXPI_INDEX_TTL": "nan"}, ["PROXPI_INDEX_TTL", "nan"]),
        ({"PROXPI_INDEX_TTL": "inf"}, ["PROXPI_INDEX_TTL", "inf"]),
        ({"PROXPI_CACHE_SIZE": "lots"}, ["PROXPI_CACHE_SIZE", "lots"]),
        ({"PROXPI_CACHE_SIZE": "-5G"}, ["PROXPI_CACHE_SIZE", "-5G"]),
        ({"PROXPI_PAGE_MEMORY": "much"}, ["PROXPI_PAGE_MEMORY", "much"]),
        (
            {"PROXPI_EXTRA_INDEX_URLS": "https://a.example/,https://b.example/",
             "PROXPI_EXTRA_INDEX_TTLS": "5"},
            ["PROXPI_EXTRA_INDEX_TTLS", "5"],
        ),
        (
            {"PROXPI_EXTRA_INDEX_URLS": "https://a.example/", "PROXPI_EXTRA_INDEX_TTLS": "5,6"},
            ["PROXPI_EXTRA_INDEX_TTLS", "5,6"],
        ),
        ({"PROXPI_EXTRA_INDEX_TTLS": "5"}, ["PROXPI_EXTRA_INDEX_TTLS", "5"]),  # no extra URLs
        (
            {"PROXPI_EXTRA_INDEX_URLS": "https://a.example/", "PROXPI_EXTRA_INDEX_TTLS": "-5"},
            ["PROXPI_EXTRA_INDEX_TTLS", "-5"],
        ),
        (
            {"PROXPI_EXTRA_INDEX_URLS": "https://a.example/", "PROXPI_EXTRA_INDEX_TTLS": "x"},
            ["PROXPI_EXTRA_INDEX_TTLS", "x"],
        ),
        ({"PROXPI_INDEX_URL": "ftp://files.example/simple/"}, ["PROXPI_INDEX_URL", "ftp://files.example/simple/"]),
        ({"PROXPI_INDEX_URL": "pypi.org/simple/"}, ["PROXPI_INDEX_URL", "pypi.org/simple/"]),
        ({"PROXPI_INDEX_URL": "http://"}, ["PROXPI_INDEX_URL", "http://"]),
        ({"PROXPI_INDEX_URL": "https:///simple/"}, ["PROXPI_INDEX_URL", "https:///simple/"]),
        ({"PROXPI_INDEX_URL": "javascript:alert(1)"}, ["PROXPI_INDEX_URL", "javascript:alert(1)"]),
        ({"PROXPI_INDEX_URL": "http://h.example:99999/"}, ["PROXPI_INDEX_URL", "99999"]),
        ({"PROXPI_INDEX_URL": "http://h.example:abc/"}, ["PROXPI_INDEX_URL", "h.example:***/' has a bad port"]),
        ({"PROXPI_EXTRA_INDEX_URLS": "ftp://x.example/"}, ["PROXPI_EXTRA_INDEX_URLS", "ftp://x.example/"]),
        ({"PROXPI_PORT": "x"}, ["PROXPI_PORT", "x"]),
        ({"PROXPI_PORT": "70000"}, ["PROXPI_PORT", "70000"]),
        ({"PROXPI_PORT": "65536"}, ["PROXPI_PORT", "65536"]),
        ({"PROXPI_PORT": "-1"}, ["PROXPI_PORT", "-1"]),
        ({"PROXPI_PORT": "80.5"}, ["PROXPI_PORT", "80.5"]),
        ({"PROXPI_CONNECT_TIMEOUT": "0"}, ["PROXPI_CONNECT_TIMEOUT", "0"]),
        ({"PROXPI_READ_TIMEOUT": "-1"}, ["PROXPI_READ_TIMEOUT", "-1"]),
        ({"PROXPI_CLIENT_TIMEOUT": "0"}, ["PROXPI_CLIENT_TIMEOUT", "0"]),
        # past what a socket timeout can hold (settimeout() overflowed at 1e12 s)
        ({"PROXPI_CLIENT_TIMEOUT": "1e12"}, ["PROXPI_CLIENT_TIMEOUT", "1e12", "at most 604800"]),
        ({"PROXPI_READ_TIMEOUT": "1e20"}, ["PROXPI_READ_TIMEOUT", "1e20", "at most"]),
        ({"PROXPI_CONNECT_TIMEOUT": "604801"}, ["PROXPI_CONNECT_TIMEOUT", "604801"]),
        ({"PROXPI_DOWNLOAD_TIMEOUT": "-3"}, ["PROXPI_DOWNLOAD_TIMEOUT", "-3"]),
        ({"PROXPI_OFFLINE": "maybe"}, ["PROXPI_OFFLINE", "maybe"]),
    ],
)
def test_bad_env_value_names_variable_and_value(env: dict, names: list) -> None:
    message = config_error(env)
    for name in names:
        assert name in message


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        ({"index_ttl": "-1"}, ["--index-ttl", "-1"]),
        ({"cache_size": "lots"}, ["--cache-size", "lots"]),
        ({"port": "http"}, ["--port", "http"]),
        ({"index_url": "ftp://x.example/"}, ["--index-url", "ftp://x.example/"]),
        ({"extra_index_url": ["https://a.example/", "https://b.example/"],
          "extra_index_ttl": ["1"]}, ["--extra-index-ttl", "1"]),
        ({"connect_timeout": "0"}, ["--connect-timeout", "0"]),
    ],
)
def test_bad_flag_value_names_flag_and_value(flags: dict, names: list) -> None:
    # the environment is fine; the flag is what is wrong and must be named
    env = {"PROXPI_INDEX_TTL": "5", "PROXPI_CACHE_SIZE": "1G", "PROXPI_PORT": "1"}
    message = config_error(env, **flags)
    for name in names:
        assert name in message
    assert "PROXPI_" not in message


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_bad_url_message_hides_credentials() -> None:
    message = config_error({"PROXPI_INDEX_URL": "ftp://user:hunter2@files.example/simple/"})
    assert "PROXPI_INDEX_URL" in message
    assert "files.example" in message
    assert "hunter2" not in message


@pytest.mark.parametrize("port", ["0", "1", "5000", "65535"])
def test_good_ports(port: str) -> None:
    assert settings({"PROXPI_PORT": port}).port == int(port)


@pytest.mark.parametrize("ttl", ["0", "0.5", "86400"])
def test_zero_and_positive_ttls_are_accepted(ttl: str) -> None:
    assert settings({"PROXPI_INDEX_TTL": ttl}).indexes[0].ttl == float(ttl)


# ---------------------------------------------------------------- index URLs


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://pypi.org/simple", "https://pypi.org/simple/"),
        ("https://pypi.org/simple/", "https://pypi.org/simple/"),
        ("http://127.0.0.1:8080/root/pypi/+simple", "http://127.0.0.1:8080/root/pypi/+simple/"),
        ("https://mirror.example", "https://mirror.example/"),
        ("file:///srv/mirror/simple", "file:///srv/mirror/simple/"),
        ("https://u:p@private.example/simple", "https://u:p@private.example/simple/"),
    ],
)
def test_index_url_gets_a_trailing_slash(url: str, expected: str) -> None:
    assert settings({"PROXPI_INDEX_URL": url}).indexes[0].url == expected
    assert settings({"PROXPI_EXTRA_INDEX_URLS": url}).indexes[1].url == expected


def test_empty_index_url_means_the_default() -> None:
    assert settings({"PROXPI_INDEX_URL": ""}).indexes[0].url == "https://pypi.org/simple/"


def test_credentials_are_kept_for_upstream_but_not_displayed() -> None:
    index = settings({"PROXPI_INDEX_URL": "https://me:pw@private.example/simple/"}).indexes[0]
    assert index.url == "https://me:pw@private.example/simple/"
    assert index.display_url == "https://private.example/simple/"


# ---------------------------------------------------------------- workers and connections


def test_workers_and_connection_cap_defaults() -> None:
    result = settings()
    assert (result.workers, result.max_connections) == (1, 10_000)
    assert (result.threads, result.header_timeout) == (256, 10.0)


@pytest.mark.parametrize("value", ["0", "auto", "AUTO"])
def test_workers_auto_is_one_per_cpu(value: str) -> None:
    assert settings({"PROXPI_WORKERS": value}).workers == cpu_count() >= 1


def test_workers_and_connection_cap_from_env_and_flags() -> None:
    env = {"PROXPI_WORKERS": "3", "PROXPI_MAX_CONNECTIONS": "50"}
    assert (settings(env).workers, settings(env).max_connections) == (3, 50)
    assert settings(env, workers="2", max_connections="7").workers == 2
    assert settings(env, workers="2", max_connections="7").max_connections == 7


def test_workers_beyond_four_per_cpu_or_64_are_refused() -> None:
    most = max(64, 4 * cpu_count())
    assert settings({"PROXPI_WORKERS": str(most)}).workers == most
    with pytest.raises(ConfigError, match=f"up to {most},"):
        settings(workers=str(most + 1))
    with pytest.raises(ConfigError, match="--workers"):
        settings(workers="100000")


@pytest.mark.parametrize(
    "env, names",
    [
        ({"PROXPI_WORKERS": "many"}, ["PROXPI_WORKERS", "many"]),
        ({"PROXPI_WORKERS": "-1"}, ["PROXPI_WORKERS", "-1"]),
        ({"PROXPI_MAX_CONNECTIONS": "0"}, ["PROXPI_MAX_CONNECTIONS", "0"]),
        ({"PROXPI_MAX_CONNECTIONS": "1e3"}, ["PROXPI_MAX_CONNECTIONS", "1e3"]),
        ({"PROXPI_THREADS": "0"}, ["PROXPI_THREADS", "0"]),
        ({"PROXPI_THREADS": "lots"}, ["PROXPI_THREADS", "lots"]),
        ({"PROXPI_HEADER_TIMEOUT": "0"}, ["PROXPI_HEADER_TIMEOUT", "0"]),
        ({"PROXPI_HEADER_TIMEOUT": "1e12"}, ["PROXPI_HEADER_TIMEOUT", "1e12", "at most 604800"]),
    ],
)
def test_bad_workers_or_connection_cap(env: dict, names: list) -> None:
    message = config_error(env)
    for name in names:
        assert name in message
# ---------------------------------------------------------------- guard rails

ROOT = "https://pypi.example/simple/"
INTERNAL = "https://user:pw@internal.example/simple/"


def rails(env: "dict[str, str]", **flags: Any) -> Settings:
    return parse_settings({"PROXPI_INDEX_URL": ROOT, "PROXPI_EXTRA_INDEX_URLS": INTERNAL, **env}, flags)


def test_guard_rails_default_to_none() -> None:
    result = settings()
    assert (result.pins, result.index_strategy, result.min_age, result.min_age_exempt) == ((), "merge", 0.0, ())
    assert (result.min_age_unknown_deny, result.deny, result.allow) == (False, (), ())


@pytest.mark.parametrize(
    ("env", "flags", "read", "expected"),
    [
        # A pin may name the index as configured or as shown (without credentials).
        ({"PROXPI_PIN": "Acme_*=https://internal.example/simple"}, {}, lambda s: s.pins, (("acme-*", INTERNAL),)),
        ({"PROXPI_PIN": f"a={ROOT}, b={INTERNAL}"}, {}, lambda s: s.pins, (("a", ROOT), ("b", INTERNAL))),
        ({"PROXPI_PIN": f"a={ROOT}"}, {"pin": [f"b={INTERNAL}"]}, lambda s: s.pins, (("b", INTERNAL),)),
        ({"PROXPI_INDEX_STRATEGY": "First-Index"}, {}, lambda s: s.index_strategy, "first-index"),
        ({"PROXPI_INDEX_STRATEGY": "first-index"}, {"index_strategy": "merge"}, lambda s: s.index_strategy, "merge"),
        ({"PROXPI_MIN_AGE": "3600"}, {}, lambda s: s.min_age, 3600.0),
        ({"PROXPI_MIN_AGE": "36h"}, {}, lambda s: s.min_age, 36 * 3600.0),
        ({"PROXPI_MIN_AGE": "7d"}, {"min_age": "2w"}, lambda s: s.min_age, 14 * 86400.0),
        ({"PROXPI_MIN_AGE": "90m"}, {}, lambda s: s.min_age, 5400.0),
        ({"PROXPI_MIN_AGE_EXEMPT": "Urgent.Fix,sec-*"}, {}, lambda s: s.min_age_exempt, ("urgent-fix", "sec-*")),
        ({"PROXPI_MIN_AGE_UNKNOWN": "deny"}, {}, lambda s: s.min_age_unknown_deny, True),
        ({"PROXPI_MIN_AGE_UNKNOWN": "deny"}, {"min_age_unknown": "allow"}, lambda s: s.min_age_unknown_deny, False),
        ({"PROXPI_DENY": "evil-*, Alpha==2.0"}, {}, lambda s: s.deny, (("evil-*", None), ("alpha", "2.0"))),
        ({}, {"deny": ["x==1.0rc1"]}, lambda s: s.deny, (("x", "1.0rc1"),)),
        ({"PROXPI_ALLOW": "acme-*,six"}, {}, lambda s: s.allow, ("acme-*", "six")),
        # A pattern flag takes a comma-separated list too, as README's examples write it.
        ({}, {"allow": ["acme-*,six", "idna"]}, lambda s: s.allow, ("acme-*", "six", "idna")),
        ({}, {"min_age_exempt": ["urllib3,cryptography"]}, lambda s: s.min_age_exempt, ("urllib3", "cryptography")),
        ({}, {"deny": ["evil-*,requests==2.32.0"]}, lambda s: s.deny, (("evil-*", None), ("requests", "2.32.0"))),
    ],
)
def test_guard_rail_settings(env, flags, read, expected) -> None:
    assert read(rails(env, **flags)) == expected


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PROXPI_PIN": "acme-*=https://elsewhere.example/simple/"}, "PROXPI_PIN='acme-*=https://elsewhere.example/simple/' names an index that is not configured"),
        ({"PROXPI_PIN": "acme-*"}, "PROXPI_PIN='acme-*' is not PATTERN=INDEX_URL"),
        ({"PROXPI_PIN": "a b=" + ROOT}, "PROXPI_PIN='a b' is not a project name or pattern"),
        ({"PROXPI_INDEX_STRATEGY": "last"}, "PROXPI_INDEX_STRATEGY='last' must be one of: merge, first-index"),
        ({"PROXPI_MIN_AGE": "7 days"}, "PROXPI_MIN_AGE='7 days' is not a duration"),
        ({"PROXPI_MIN_AGE": "-1d"}, "PROXPI_MIN_AGE='-1d' is not a duration"),
        ({"PROXPI_MIN_AGE_UNKNOWN": "maybe"}, "PROXPI_MIN_AGE_UNKNOWN='maybe' must be one of: allow, deny"),
        ({"PROXPI_MIN_AGE_EXEMPT": "ok,not/ok"}, "PROXPI_MIN_AGE_EXEMPT='not/ok' is not a project name or pattern"),
        ({"PROXPI_DENY": "x==1.0 beta"}, "PROXPI_DENY='x==1.0 beta' is not NAME, NAME==VERSION or a pattern"),
        ({"PROXPI_DENY": "x>=1"}, "PROXPI_DENY='x>=1' is not a project name or pattern"),
        ({"PROXPI_ALLOW": "a;b"}, "PROXPI_ALLOW='a;b' is not a project name or pattern"),
    ],
)
def test_guard_rail_settings_refuse_bad_values(env, message) -> None:
    with pytest.raises(ConfigError) as info:
        rails(env)
    assert str(info.value).startswith(message)
    assert "pw" not in str(info.value)  # credentials never shown


@pytest.mark.parametrize(
    ("env", "flags"),
    [
        ({"HTTPS_PROXY": "user:s3cret@proxy.example:bad"}, {}),
        ({}, {"upstream_proxy": "user:s3cret@proxy.example:bad"}),
        ({}, {"upstream_proxy": "socks5://user:s3cret@proxy.example:1080"}),
        ({}, {"index_url": "user:s3cret@host.example/simple/"}),
    ],
)
def test_bad_url_errors_never_show_credentials(env, flags) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(env, flags)
    assert "s3cret" not in str(info.value)
    assert "proxy.example" in str(info.value) or "host.example" in str(info.value)


@pytest.mark.parametrize(
    ("env", "flags", "problem"),
    [
        # A "," in a password splits a list of URLs: the part before it has no "@".
        ({"PROXPI_EXTRA_INDEX_URLS": "https://bot:s3cr,etPW@host.example/simple/"}, {}, "'https://bot:***' has a bad port"),
        ({"PROXPI_PIN": "a=https://bot:s3cr,etPW@host.example/simple/"}, {"extra_index_url": ["https://host.example/simple/"]},
         "names an index that is not configured"),
        ({}, {"index_url": "https://bot:s3cr#etPW@host.example/simple/"}, "percent-encode"),
        ({}, {"index_url": "https://host.example/simple/?token=s3cret"}, "'https://host.example/simple/?...' has a query"),
        ({}, {"index_url": "https://host.example/simple/#s3cret"}, "has a query or fragment"),
    ],
    ids=["comma-split", "comma-split-pin", "hash", "query", "fragment"],
)
def test_index_urls_cut_in_their_credentials_or_with_a_query_are_refused_unshown(env, flags, problem) -> None:
    message = config_error(env, **flags)
    assert problem in message and "s3cr" not in message, message


# ---------------------------------------------------------------- private packages


def test_private_package_settings() -> None:
    assert (settings().upload_token, settings().max_upload_size, settings().local_merge) == (None, GIB, False)
    result = settings(
        {"PROXPI_UPLOAD_TOKEN": "s3cret", "PROXPI_MAX_UPLOAD_SIZE": "500M", "PROXPI_LOCAL_MERGE": "1"},
        local_dir="/srv/wheels", min_age_local=True, upload_tokens="/etc/tokens", cache_dir="/srv/cache",
    )
    assert (result.upload_token, result.max_upload_size, result.local_merge) == ("s3cret", 500 * MIB, True)
    assert (result.local_dir, result.min_age_local, result.upload_tokens_file) == ("/srv/wheels", True, "/etc/tokens")
    assert "s3cret" not in repr(result)  # a token never reaches a log line through repr
    assert "PROXPI_MAX_UPLOAD_SIZE='lots'" in config_error({"PROXPI_MAX_UPLOAD_SIZE": "lots"})
    assert "PROXPI_LOCAL_MERGE='maybe'" in config_error({"PROXPI_LOCAL_MERGE": "maybe"})


@pytest.mark.parametrize(
    ("env", "flags", "named"),
    [({"PROXPI_UPLOAD_TOKEN": "s3cret"}, {}, "PROXPI_UPLOAD_TOKEN"), ({}, {"upload_token": "s3cret"}, "--upload-token"),
     ({"PROXPI_UPLOAD_TOKENS": "/etc/tokens"}, {}, "PROXPI_UPLOAD_TOKENS"),
     ({}, {"upload_tokens": "/etc/tokens"}, "--upload-tokens")],
)
def test_uploads_without_a_cache_dir_are_refused(env, flags, named) -> None:
    """Uploads in the temp dir would be lost at exit, and their names then served from upstream."""
    message = config_error(env, **flags)
    assert message.startswith(f"{named} needs PROXPI_CACHE_DIR") and "removed at exit" in message
    assert "s3cret" not in message
    assert settings({**env, "PROXPI_CACHE_DIR": "/srv/cache"}, **flags).cache_dir == "/srv/cache"
    assert parse_settings(env, flags, serving=False).upload_token is None  # warm takes no uploads


# ---------------------------------------------------------------- proxpi's other names and logging


EXTRA = {"PROXPI_EXTRA_INDEX_URLS": "https://a.example/,https://b.example/"}


def test_proxpis_older_extra_index_ttl_name_is_read() -> None:
    """proxpi before 1.2.1 read only PROXPI_EXTRA_INDEX_TTL, and 1.3 reads it still."""
    assert [i.ttl for i in settings({**EXTRA, "PROXPI_EXTRA_INDEX_TTL": "0,60"}).indexes[1:]] == [0.0, 60.0]
    both = {**EXTRA, "PROXPI_EXTRA_INDEX_TTL": "0,60", "PROXPI_EXTRA_INDEX_TTLS": "0, 60"}
    assert [i.ttl for i in settings(both).indexes[1:]] == [0.0, 60.0]  # set alike for either proxpi: fine
    flagged = settings(both, extra_index_ttl=["5", "6"])
    assert [i.ttl for i in flagged.indexes[1:]] == [5.0, 6.0]  # the flag beats both
    assert config_error({**EXTRA, "PROXPI_EXTRA_INDEX_TTL": "0,x"}).startswith("PROXPI_EXTRA_INDEX_TTL='0,x'")
    # proxpi takes the older name first, we the newer: when they differ, neither is guessed.
    message = config_error({**both, "PROXPI_EXTRA_INDEX_TTLS": "0,61"})
    assert message == "PROXPI_EXTRA_INDEX_TTL='0,60' differs from PROXPI_EXTRA_INDEX_TTLS='0,61': set one of them"


def test_logging_level_takes_pythons_level_names_in_any_case() -> None:
    assert settings().logging_level == "INFO"
    assert settings({"PROXPI_LOGGING_LEVEL": " warning "}).logging_level == "WARNING"
    assert settings({"PROXPI_LOGGING_LEVEL": "ERROR"}, logging_level="debug").logging_level == "DEBUG"
    assert settings({"PROXPI_LOGGING_LEVEL": "warn"}).logging_level == "WARN"  # logging takes its aliases too
    assert config_error({"PROXPI_LOGGING_LEVEL": "verbose"}) == (
        "PROXPI_LOGGING_LEVEL='verbose' must be one of: DEBUG, INFO, WARNING, ERROR, CRITICAL, NOTSET, WARN, FATAL "
        "(any case)"
    )
    assert parse_settings({"PROXPI_LOGGING_LEVEL": "verbose"}, {}, serving=False).logging_level == "INFO"


def test_logging_levels_are_the_names_python_logging_takes() -> None:
    import logging

    from proxpi_min.core.settings import LOGGING_LEVELS

    assert set(LOGGING_LEVELS) == set(logging._nameToLevel)  # what proxpi's basicConfig(level=...) takes


@pytest.mark.parametrize("value", ["y", "n", "2", "enabled"])
def test_a_refused_boolean_names_every_value_taken(value: str) -> None:
    message = config_error({"PROXPI_OFFLINE": value})
    taken = "1, true, yes, on (on) or 0, false, no, off, empty (off), in any case"
    assert message == f"PROXPI_OFFLINE={value!r} must be {taken}"
    for on in ("1", "true", "yes", "on"):
        assert settings({"PROXPI_OFFLINE": on.upper()}).offline is True
    for off in ("0", "false", "no", "off", ""):
        assert settings({"PROXPI_OFFLINE": off.upper()}).offline is False
