"""Settings: one frozen dataclass, built once at start from the environment and flags."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import urllib.parse
import urllib.request
from typing import Any, Mapping, Optional, Sequence

from .errors import ConfigError
from .names import canonicalize_name
from .sources import Sources, bad_value
from .proxies import ProxySettings, proxy_settings
from .urls import redact_setting, redact_url

__all__ = [
    "IndexSettings",
    "Settings",
    "cpu_count",
    "parse_pattern",
    "parse_settings",
]

DEFAULT_INDEX_URL = "https://pypi.org/simple/"
DEFAULT_INDEX_TTL = 30 * 60.0  # proxpi's defaults: 30 minutes for the root index ...
DEFAULT_EXTRA_INDEX_TTL = 3 * 60.0  # ... and 3 minutes for each extra index
# proxpi's older name of PROXPI_EXTRA_INDEX_TTLS, still read: alone, or agreeing with it.
OLD_EXTRA_INDEX_TTLS = "PROXPI_EXTRA_INDEX_TTL"
DEFAULT_CACHE_SIZE = 5 * 1024**3  # proxpi's "5GB"
# Finite by default so a hung upstream never hangs a client (proxpi's defaults).
DEFAULT_CONNECT_TIMEOUT = 3.1
DEFAULT_READ_TIMEOUT = 20.0
# A file download slower than this many bytes a second (over upstream_body.RATE_WINDOW) is
# cut: the read timeout alone lets an upstream trickle a byte per read forever.
DEFAULT_DOWNLOAD_MIN_RATE = 1024
# Idle keep-alive connections are closed after this long, so idle clients cannot pin
# threads forever; long enough for a CI job's pauses between requests.
DEFAULT_CLIENT_TIMEOUT = 60.0
# Timeouts go to socket.settimeout() and the kernel's SO_RCVTIMEO, whose time_t
# overflows far past any useful wait: a week is the ceiling.
MAX_TIMEOUT = 7 * 24 * 3600.0
DEFAULT_PAGE_MEMORY = 256 * 1024**2  # rendered pages kept in memory (bytes)
# Connections one process holds open, a descriptor and a few kilobytes each (no thread
# while idle); past the cap the oldest idle ones are closed, then new ones get 503.
DEFAULT_MAX_CONNECTIONS = 10_000
DEFAULT_THREADS = 256  # requests answered at once, a thread each (a fleet's slow downloads)
DEFAULT_HEADER_TIMEOUT = 10.0  # seconds for a whole request head, and to wait for a thread
DEFAULT_HOST = "127.0.0.1"
LOG_FORMATS = ("text", "json")  # the first is the default
# Python's logging level names, which proxpi's PROXPI_LOGGING_LEVEL takes (any case here).
LOGGING_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "NOTSET", "WARN", "FATAL")
DEFAULT_LOGGING_LEVEL = "INFO"
DEFAULT_PORT = 5000
DEFAULT_WORKERS = 1
WORKERS_PER_CPU, MOST_WORKERS = 4, 64  # --workers at most: 4 per CPU, or 64 where that is more
DEFAULT_MAX_UPLOAD_SIZE = 1024**3  # one uploaded file, streamed to disk (README "Private packages")
METADATA_MODES, PREFETCH_MODES = ("auto", "off"), ("metadata", "pages", "off")  # the first of each is the default
DEFAULT_PREFETCH_JOBS = 8

# A normalised project name (PEP 503), or an fnmatch pattern over such names.
# An "@" followed by what reads as a host ("pkgs.example", "proxy:3128"), in a URL's path.
_HOST_AFTER_AT = re.compile(r"@[^/?#@]*[.:][^/?#@]*(?:[/?#]|\Z)")
_PATTERN = re.compile(r"^[a-z0-9*?\[\]!-]+\Z")
_VERSION = re.compile(r"^[A-Za-z0-9.+!_-]+\Z")
INDEX_STRATEGIES = ("merge", "first-index")  # the first is the default
MIN_AGE_UNKNOWN = ("allow", "deny")  # the first is the default


@dataclasses.dataclass(frozen=True)
class IndexSettings:
    """One upstream index: its simple-API base URL (ending in ``/``) and TTL in seconds."""

    url: str
    ttl: float

    @property
    def display_url(self) -> str:
        """The URL without credentials, for pages and logs."""
        return redact_url(self.url)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything configurable; see README.md for the meaning of each field."""

    indexes: tuple[IndexSettings, ...]
    cache_size: int = DEFAULT_CACHE_SIZE
    cache_dir: Optional[str] = None
    binary_file_mime_type: bool = False
    verify_ssl: bool = True
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    download_min_rate: int = DEFAULT_DOWNLOAD_MIN_RATE  # bytes/s; 0: no minimum
    client_timeout: float = DEFAULT_CLIENT_TIMEOUT
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    offline: bool = False
    admin_token: Optional[str] = None
    page_memory: int = DEFAULT_PAGE_MEMORY
    workers: int = DEFAULT_WORKERS
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    threads: int = DEFAULT_THREADS
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    log_format: str = LOG_FORMATS[0]
    logging_level: str = DEFAULT_LOGGING_LEVEL  # one of LOGGING_LEVELS
    upstream_proxy: ProxySettings = ProxySettings()
    ca_bundle: Optional[str] = None
    tls_cert: Optional[str] = None
    tls_key: Optional[str] = None
    # Guard rails (README "Guard rails"); see policy.py.
    pins: tuple[tuple[str, str], ...] = ()  # (pattern, the configured index URL)
    index_strategy: str = INDEX_STRATEGIES[0]
    min_age: float = 0.0  # seconds; 0: no cooldown
    min_age_exempt: tuple[str, ...] = ()  # patterns
    min_age_unknown_deny: bool = False  # leave out files without an upload time
    deny: tuple[tuple[str, Optional[str]], ...] = ()  # (pattern, version or None)
    allow: tuple[str, ...] = ()  # patterns; empty: every project
    upload_token: Optional[str] = dataclasses.field(default=None, repr=False)  # uploads on (docs/private-packages.md)
    upload_tokens_file: Optional[str] = None  # lines "token [project-pattern...]"
    max_upload_size: int = DEFAULT_MAX_UPLOAD_SIZE
    local_dir: Optional[str] = None  # a read-only folder of wheels and sdists
    local_merge: bool = False  # local projects merged with the upstreams' instead of alone
    min_age_local: bool = False  # the cooldown applies to local files too
    metadata: str = METADATA_MODES[0]
    prefetch: str = PREFETCH_MODES[0]
    prefetch_jobs: int = DEFAULT_PREFETCH_JOBS
    # (field, the flag or variable that set it) for the paths used at start (the cache
    # dir, TLS files), so that one that does not work is named as the user gave it.
    sources: tuple[tuple[str, str], ...] = dataclasses.field(default=(), compare=False, repr=False)

    @property
    def scheme(self) -> str:
        """How clients reach us: ``https`` with a certificate, else ``http``."""
        return "https" if self.tls_cert else "http"

    def source_of(self, field: str) -> str:
        """The flag or variable that set *field* (its flag when not recorded)."""
        return dict(self.sources).get(field, "--" + field.replace("_", "-"))


def parse_pattern(text: str) -> str:
    """A project name or fnmatch pattern, normalised as PEP 503 names are
    (``Acme_*`` becomes ``acme-*``).

    :raises ValueError: empty, or a character no project name or pattern has.
    """
    pattern = canonicalize_name(text.strip())
    if not _PATTERN.match(pattern):
        raise ValueError(text)
    return pattern


def _index_url(source: str, raw: str) -> str:
    raw = raw.strip()  # a value read from a secret file ends in a newline
    try:
        parts = urllib.parse.urlsplit(raw)
    except ValueError:  # an unclosed IPv6 bracket
        raise bad_value(source, redact_setting(raw), "is not an http, https or file URL") from None
    if parts.scheme not in ("http", "https", "file") or (parts.scheme != "file" and not parts.hostname):
        raise bad_value(source, redact_setting(raw), "is not an http, https or file URL")
    if parts.scheme != "file" and _HOST_AFTER_AT.search(parts.path + parts.query + parts.fragment):
        # "https://user:12/34@host/simple/" parses as host "user": its password would show.
        # ("feed@Release", an Azure Artifacts view, names no host after its "@".)
        raise bad_value(source, redact_setting(raw), "has an '@' past its host: percent-encode '/', '?' and '#' in its credentials")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        # Also what a "," in a password gives (a list of URLs is split at it), or a "#".
        raise bad_value(source, _shown_cut(raw), "has a bad port (or credentials to percent-encode: ',' as %2C, '#' as %23, '?' as %3F)") from None
    if parts.query or parts.fragment or raw.endswith(("?", "#")):
        # PEP 503: a project's page is the base URL's path and its name: a query (a token
        # in it, perhaps: not shown) would end up before the name.
        shown = redact_setting(urllib.parse.urlunsplit(parts._replace(query="", fragment="")))
        raise bad_value(source, shown + "?...", "has a query or fragment, which an index URL cannot have")
    # PEP 503: project pages are relative to the base URL, which must end in "/".
    return raw if raw.endswith("/") else raw + "/"


def _shown_cut(raw: str) -> str:
    """An index URL setting as an error shows it (:func:`redact_setting`), and without
    what follows a ":" that is no port: the start of a password that a "," cut off
    (lists of URLs are split at commas)."""
    shown = redact_setting(raw)
    head, sep, rest = shown.partition("://")
    netloc, slash, path = rest.partition("/")
    host, colon, port = netloc.rpartition(":")
    if sep and colon and not port.isdigit() and not netloc.endswith("]"):
        return f"{head}://{host}:***{slash}{path}"
    return shown


def cpu_count() -> int:
    """CPUs this process may run on (``os.process_cpu_count`` is Python 3.13+)."""
    count = getattr(os, "process_cpu_count", os.cpu_count)()
    return count or 1


def _workers(sources: Sources) -> int:
    source, raw = sources.get("--workers", "PROXPI_WORKERS")
    if isinstance(raw, str) and raw.strip().lower() == "auto":
        return cpu_count()
    # More processes than that cannot use the CPUs better (each has its request
    # threads), and a slip of the keyboard must not fork the machine to a halt; a
    # container that sees fewer CPUs than its host keeps a few dozen.
    most = max(MOST_WORKERS, WORKERS_PER_CPU * cpu_count())
    problem = f"must be a number of processes up to {most}, 0 or auto (one per CPU)"
    workers = sources.integer("--workers", "PROXPI_WORKERS", DEFAULT_WORKERS, problem, maximum=most) or cpu_count()
    if not hasattr(os, "fork") and workers > 1:
        raise bad_value(source, raw, "needs os.fork, which this platform lacks")
    return workers


def _ttl_list(sources: Sources, count: int) -> list[float]:
    source, raw = sources.get("--extra-index-ttl", "PROXPI_EXTRA_INDEX_TTLS")
    ttls = _ttls(source, raw, count)
    if source == "--extra-index-ttl":
        return ttls
    # proxpi's only name before 1.2.1, which proxpi still reads and deployments still set (its issue #57).
    old_source, old_raw = sources.get("--extra-index-ttl", OLD_EXTRA_INDEX_TTLS)
    if old_raw is None or old_raw == "":
        return ttls
    old_ttls = _ttls(old_source, old_raw, count)
    if raw is None or raw == "" or old_ttls == ttls:
        return old_ttls
    # proxpi took the old name first, we would take the new one: neither guess is safe.
    raise bad_value(old_source, old_raw, f"differs from PROXPI_EXTRA_INDEX_TTLS={raw!r}: set one of them")


def _ttls(source: str, raw: Any, count: int) -> list[float]:
    if raw is None or raw == "" or raw == []:
        return [DEFAULT_EXTRA_INDEX_TTL] * count
    items: Sequence[Any] = [item for item in raw.split(",") if item.strip()] if isinstance(raw, str) else raw
    if len(items) != count:
        raise bad_value(source, raw, f"gives {len(items)} TTLs for {count} extra index URLs")
    ttls = []
    for item in items:
        try:
            ttl = float(item)
        except ValueError:
            raise bad_value(source, raw, "is not a list of numbers") from None
        if not 0 <= ttl < math.inf:
            raise bad_value(source, raw, "must be >= 0 and finite")
        ttls.append(ttl)
    return ttls


def _tls_files(sources: Sources) -> tuple[Optional[str], Optional[str]]:
    """The certificate and key to serve HTTPS with: both or neither."""
    cert_source, cert = sources.get("--tls-cert", "PROXPI_TLS_CERT")
    key_source, key = sources.get("--tls-key", "PROXPI_TLS_KEY")
    if not cert and not key:
        return None, None
    if not key:
        raise bad_value(cert_source, cert, "needs --tls-key / PROXPI_TLS_KEY too (both or neither)")
    if not cert:
        raise bad_value(key_source, key, "needs --tls-cert / PROXPI_TLS_CERT too (both or neither)")
    return cert, key


def parse_settings(env: Mapping[str, str], flags: Mapping[str, Any], *, serving: bool = True) -> Settings:
    """Build and validate :class:`Settings`; flags (argparse names) beat ``env``.

    Without *serving* (the ``warm`` command), the settings of the listening side (address,
    HTTPS, processes, connections, logs, served pages) keep their defaults, unread.
    No file is opened here: a CA bundle or certificate that does not load is refused
    at start, where files are read.

    :raises ConfigError: naming the flag or variable and its value.
    """
    sources = Sources(env, flags)
    source, root = sources.get("--index-url", "PROXPI_INDEX_URL")
    indexes = [
        IndexSettings(
            _index_url(source, root or DEFAULT_INDEX_URL),
            sources.number("--index-ttl", "PROXPI_INDEX_TTL", DEFAULT_INDEX_TTL),
        )
    ]
    source, extra_urls = sources.items("--extra-index-url", "PROXPI_EXTRA_INDEX_URLS")
    for url, ttl in zip(extra_urls, _ttl_list(sources, len(extra_urls))):
        indexes.append(IndexSettings(_index_url(source, url), ttl))
    settings = Settings(
        indexes=tuple(indexes),
        **_guard_rails(sources, indexes),
        cache_size=sources.size("--cache-size", "PROXPI_CACHE_SIZE", DEFAULT_CACHE_SIZE),
        cache_dir=sources.text("--cache-dir", "PROXPI_CACHE_DIR"),
        verify_ssl=not sources.flag("--disable-index-ssl-verification", "PROXPI_DISABLE_INDEX_SSL_VERIFICATION"),
        connect_timeout=sources.number(
            "--connect-timeout", "PROXPI_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT, positive=True, maximum=MAX_TIMEOUT
        ),
        read_timeout=sources.number(
            "--read-timeout", "PROXPI_READ_TIMEOUT", DEFAULT_READ_TIMEOUT, positive=True, maximum=MAX_TIMEOUT
        ),
        download_min_rate=sources.size("--download-min-rate", "PROXPI_DOWNLOAD_MIN_RATE", DEFAULT_DOWNLOAD_MIN_RATE),
        offline=sources.flag("--offline", "PROXPI_OFFLINE"),
        upstream_proxy=proxy_settings(sources, env),
        ca_bundle=sources.text("--ca-bundle", "PROXPI_CA_BUNDLE"),
        local_dir=sources.text("--local-dir", "PROXPI_LOCAL_DIR"),
        local_merge=sources.flag("--local-merge", "PROXPI_LOCAL_MERGE"),
        min_age_local=sources.flag("--min-age-local", "PROXPI_MIN_AGE_LOCAL"),
        metadata=sources.choice("--metadata", "PROXPI_METADATA", METADATA_MODES),
        sources=tuple(
            (field, sources.get(flag, var)[0])
            for field, flag, var in (
                ("cache_dir", "--cache-dir", "PROXPI_CACHE_DIR"),
                ("ca_bundle", "--ca-bundle", "PROXPI_CA_BUNDLE"),
                ("tls_cert", "--tls-cert", "PROXPI_TLS_CERT"),
                ("tls_key", "--tls-key", "PROXPI_TLS_KEY"),
            )
        ),
    )
    if not serving:
        return settings
    return dataclasses.replace(settings, **_listening(sources), **_uploads(sources, settings.cache_dir))


def _uploads(sources: Sources, cache_dir: Optional[str]) -> dict:
    """The upload settings; a token needs a cache dir set, the only place uploads outlive the process."""
    token_source, token = sources.get("--upload-token", "PROXPI_UPLOAD_TOKEN")
    file_source, tokens_file = sources.get("--upload-tokens", "PROXPI_UPLOAD_TOKENS")
    if (token or tokens_file) and not cache_dir:
        # Gone at exit, an upload's name would fall back to the upstreams' project of that name.
        raise ConfigError(
            f"{token_source if token else file_source} needs PROXPI_CACHE_DIR (--cache-dir): uploads are "
            "kept in the cache dir, and the temp dir used without one is removed at exit"
        )
    return {
        "upload_token": token or None,
        "upload_tokens_file": tokens_file or None,
        "max_upload_size": sources.size("--max-upload-size", "PROXPI_MAX_UPLOAD_SIZE", DEFAULT_MAX_UPLOAD_SIZE),
    }


def _logging_level(sources: Sources) -> str:
    source, raw = sources.get("--logging-level", "PROXPI_LOGGING_LEVEL")
    if raw is None or raw.strip() == "":
        return DEFAULT_LOGGING_LEVEL
    if raw.strip().upper() not in LOGGING_LEVELS:
        raise bad_value(source, raw, f"must be one of: {', '.join(LOGGING_LEVELS)} (any case)")
    return raw.strip().upper()


def _listening(sources: Sources) -> dict:
    """The settings of the listening side: address, HTTPS, processes, logs, served pages."""
    port = sources.integer("--port", "PROXPI_PORT", DEFAULT_PORT, "is not a port number", maximum=65535)
    # Accepted (proxpi has it) and validated, but unused: downloads are streamed, never redirected.
    sources.number("--download-timeout", "PROXPI_DOWNLOAD_TIMEOUT", 0.9)
    tls_cert, tls_key = _tls_files(sources)
    return {
        "binary_file_mime_type": sources.flag("--binary-file-mime-type", "PROXPI_BINARY_FILE_MIME_TYPE"),
        "client_timeout": sources.number(
            "--client-timeout", "PROXPI_CLIENT_TIMEOUT", DEFAULT_CLIENT_TIMEOUT, positive=True, maximum=MAX_TIMEOUT
        ),
        "host": sources.text("--host", "PROXPI_HOST") or DEFAULT_HOST, "port": port,
        "admin_token": sources.text("--admin-token", "PROXPI_ADMIN_TOKEN"),
        "page_memory": sources.size("--page-memory", "PROXPI_PAGE_MEMORY", DEFAULT_PAGE_MEMORY),
        "workers": _workers(sources),
        "max_connections": sources.integer(
            "--max-connections", "PROXPI_MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS,
            "must be a whole number >= 1", minimum=1,
        ),
        "threads": sources.integer("--threads", "PROXPI_THREADS", DEFAULT_THREADS, "must be a whole number >= 1", minimum=1),
        "header_timeout": sources.number(
            "--header-timeout", "PROXPI_HEADER_TIMEOUT", DEFAULT_HEADER_TIMEOUT, positive=True, maximum=MAX_TIMEOUT
        ),
        "tls_cert": tls_cert, "tls_key": tls_key,
        "log_format": sources.choice("--log-format", "PROXPI_LOG_FORMAT", LOG_FORMATS),
        "logging_level": _logging_level(sources),
        "prefetch": sources.choice("--prefetch", "PROXPI_PREFETCH", PREFETCH_MODES),
        "prefetch_jobs": sources.integer("--prefetch-jobs", "PROXPI_PREFETCH_JOBS", DEFAULT_PREFETCH_JOBS, "must be a whole number >= 1", minimum=1),
    }


def _patterns(source: str, items: Sequence[str]) -> tuple[str, ...]:
    try:
        return tuple(parse_pattern(item) for item in items)
    except ValueError as exc:
        raise bad_value(source, str(exc), "is not a project name or pattern") from None


def _pin(source: str, item: str, indexes: Sequence[IndexSettings]) -> tuple[str, str]:
    pattern, equals, url = item.partition("=")
    if not equals or not url.strip():
        raise bad_value(source, redact_setting(item), "is not PATTERN=INDEX_URL")
    wanted = url.strip() if url.strip().endswith("/") else url.strip() + "/"
    # The URL as configured, or as shown (without credentials) on the home page and logs.
    for index in indexes:
        if wanted in (index.url, index.display_url):
            return _patterns(source, [pattern])[0], index.url
    raise bad_value(source, _shown_cut(item), "names an index that is not configured (--index-url, --extra-index-url)")


def _deny(source: str, item: str) -> tuple[str, Optional[str]]:
    pattern, equals, version = item.partition("==")
    if equals and not _VERSION.match(version.strip()):
        raise bad_value(source, item, "is not NAME, NAME==VERSION or a pattern")
    return _patterns(source, [pattern])[0], version.strip() if equals else None


def _guard_rails(sources: Sources, indexes: Sequence[IndexSettings]) -> dict:
    """The policy settings (pins, index strategy, cooldown, deny and allow lists)."""
    pin_source, pins = sources.items("--pin", "PROXPI_PIN")
    exempt_source, exempt = sources.items("--min-age-exempt", "PROXPI_MIN_AGE_EXEMPT", split_flag=True)
    deny_source, deny = sources.items("--deny", "PROXPI_DENY", split_flag=True)
    allow_source, allow = sources.items("--allow", "PROXPI_ALLOW", split_flag=True)
    return {
        "pins": tuple(_pin(pin_source, item, indexes) for item in pins),
        "index_strategy": sources.choice("--index-strategy", "PROXPI_INDEX_STRATEGY", INDEX_STRATEGIES),
        "min_age": sources.duration("--min-age", "PROXPI_MIN_AGE"),
        "min_age_exempt": _patterns(exempt_source, exempt),
        "min_age_unknown_deny": sources.choice(
            "--min-age-unknown", "PROXPI_MIN_AGE_UNKNOWN", MIN_AGE_UNKNOWN
        ) == "deny",
        "deny": tuple(_deny(deny_source, item) for item in deny),
        "allow": _patterns(allow_source, allow),
    }
