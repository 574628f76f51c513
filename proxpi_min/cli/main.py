"""Command line: parse flags, build settings once, run the server until a signal (or
the ``warm`` and ``verify`` commands)."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from typing import TYPE_CHECKING, Optional, Sequence

from .. import __version__
from ..core.errors import ConfigError
from ..infra.logs import configure_logging

if TYPE_CHECKING:  # imported in main(), so that --help and --version stay instant
    from ..core.settings import Settings
    from ..core.policy import Policy
    from ..app.serve import ProxyServer

__all__ = ["main"]

logger = logging.getLogger("proxpi_min")

# On SIGTERM/SIGINT, responses in flight get this long to finish.
DRAIN_SECONDS = 5.0


COMMANDS = ("warm", "verify")


def _parser(prog: str = "proxpi-min", description: Optional[str] = None) -> argparse.ArgumentParser:
    """The server's flags (the settings); ``warm`` takes them all too, so that it uses
    the same indices, cache and policies as the server."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description
        or "A caching proxy for the Python Package Index. Every flag also has a "
        "PROXPI_* environment variable (see README.md); flags win.",
        epilog="Commands: 'proxpi-min warm FILE...' fills the cache dir from lock files; "
        "'proxpi-min verify --cache-dir DIR' checks one (each with --help).",
    )
    add = parser.add_argument
    add("--version", action="version", version=f"%(prog)s {__version__}")
    add("--host", help="address to listen on (PROXPI_HOST, default 127.0.0.1)")
    add("--port", help="port to listen on, 0 for any free port (PROXPI_PORT, default 5000)")
    add("--index-url", help="root index URL (PROXPI_INDEX_URL, default https://pypi.org/simple/)")
    add("--index-ttl", help="root index cache TTL in seconds, 0 disables (PROXPI_INDEX_TTL, default 1800)")
    add("--extra-index-url", action="append", help="extra index URL, repeatable (PROXPI_EXTRA_INDEX_URLS, comma-separated)")
    add("--extra-index-ttl", action="append", help="TTL for each extra index, repeatable (PROXPI_EXTRA_INDEX_TTLS, default 180 each)")
    add("--cache-size", help="file cache size cap: bytes, or 500M, 5G; 0 disables (PROXPI_CACHE_SIZE, default 5G)")
    add("--cache-dir", help="cache directory (PROXPI_CACHE_DIR, default: a temp dir removed at exit)")
    add("--binary-file-mime-type", action="store_const", const=True, help="serve files as application/octet-stream (PROXPI_BINARY_FILE_MIME_TYPE=1)")
    add("--disable-index-ssl-verification", action="store_const", const=True, help="do not verify upstream TLS certificates (PROXPI_DISABLE_INDEX_SSL_VERIFICATION=1)")
    add("--download-timeout", help="accepted for compatibility, ignored: downloads always stream (PROXPI_DOWNLOAD_TIMEOUT)")
    add("--connect-timeout", help="upstream connect timeout in seconds (PROXPI_CONNECT_TIMEOUT, default 3.1)")
    add("--read-timeout", help="upstream read timeout in seconds (PROXPI_READ_TIMEOUT, default 20)")
    add("--client-timeout", help="idle client connection timeout in seconds (PROXPI_CLIENT_TIMEOUT, default 60)")
    add("--offline", action="store_const", const=True, help="never contact an upstream; serve the cache dir only (PROXPI_OFFLINE=1)")
    add("--admin-token", help="require 'Authorization: Bearer TOKEN' for DELETE (PROXPI_ADMIN_TOKEN)")
    add("--page-memory", help="memory for rendered pages: bytes, or 256M (PROXPI_PAGE_MEMORY, default 256M)")
    add("--upstream-proxy", metavar="URL", help="outbound HTTP proxy for every upstream, or 'none' to ignore HTTPS_PROXY/HTTP_PROXY/ALL_PROXY (PROXPI_UPSTREAM_PROXY, default: those variables; NO_PROXY applies)")
    add("--ca-bundle", metavar="FILE", help="PEM file of the CAs trusted for upstream TLS, in place of the system store (PROXPI_CA_BUNDLE)")
    add("--tls-cert", metavar="FILE", help="serve HTTPS with this PEM certificate (chain); needs --tls-key (PROXPI_TLS_CERT)")
    add("--tls-key", metavar="FILE", help="the PEM private key of --tls-cert, unencrypted (PROXPI_TLS_KEY)")
    add("--log-format", help="'text' (readable lines) or 'json' (one object per line) (PROXPI_LOG_FORMAT, default text)")
    add("--workers", help="worker processes on one port; 0 or auto: one per CPU (PROXPI_WORKERS, default 1)")
    add("--max-connections", help="connections served at once per process; past it, 503 (PROXPI_MAX_CONNECTIONS, default 1000)")
    add("--check-config", action="store_true", help="validate the settings, print them and exit 0 (2 if one is bad)")
    rails = parser.add_argument_group("guard rails", "see README.md, 'Guard rails'")
    add = rails.add_argument
    add("--pin", action="append", metavar="PATTERN=INDEX_URL", help="serve matching projects from that configured index only, repeatable (PROXPI_PIN, comma-separated)")
    add("--index-strategy", metavar="{merge,first-index}", help="merge every index's files, or take a project from the first index that has it (PROXPI_INDEX_STRATEGY, default merge)")
    add("--min-age", metavar="DURATION", help="leave out files uploaded less than this long ago: 3600, 36h, 7d, 2w (PROXPI_MIN_AGE)")
    add("--min-age-exempt", action="append", metavar="PATTERN", help="projects the minimum age does not apply to, comma-separated, repeatable (PROXPI_MIN_AGE_EXEMPT)")
    add("--min-age-unknown", metavar="{allow,deny}", help="files without an upload time under --min-age: served or left out (PROXPI_MIN_AGE_UNKNOWN, default allow)")
    add("--deny", action="append", metavar="NAME[==VERSION]", help="refuse a project, a version of it, or a pattern of names, comma-separated, repeatable (PROXPI_DENY)")
    add("--allow", action="append", metavar="PATTERN", help="serve only these projects, comma-separated, repeatable (PROXPI_ALLOW)")
    return parser


def _jobs(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of jobs (1 or more)")
    return int(text)


def _python_version(text: str) -> tuple:
    major, dot, minor = text.partition(".")
    if not (dot and major.isdigit() and minor.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a Python version like 3.11")
    return int(major), int(minor)


def _warm_parser() -> argparse.ArgumentParser:
    parser = _parser(
        "proxpi-min warm",
        "Fetch every file that lock files name into the cache dir, through the configured "
        "indices (never from the URLs in the lock files), for an offline proxy to serve. "
        "Exit status: 0 all in the cache, 1 some failed (each named), 2 unusable input.",
    )
    parser.epilog = ("The proxy's own flags apply as when serving; those of the listening side "
                     "(--host, --port, --tls-cert, --tls-key, --admin-token, ...) are unused.")
    group = parser.add_argument_group("warm")
    group.add_argument("files", nargs="+", metavar="FILE",
                       help="requirements.txt (with --hash), pylock.toml / pylock.*.toml, uv.lock, poetry.lock")
    group.add_argument("--jobs", type=_jobs, default=4, help="files fetched at once (default 4)")
    group.add_argument("--wheels-only", action="store_true", help="skip sdists")
    group.add_argument("--platform", action="append", default=[],
                       help="only wheels for this platform tag (and 'any'), repeatable, e.g. manylinux_2_17_x86_64")
    group.add_argument("--python-version", type=_python_version, help="only wheels for this Python, e.g. 3.11")
    return parser


def _verify_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="proxpi-min verify",
        description="Re-hash every file of a cache dir against the hash it is stored under, and "
        "load every saved index page. Exit status: 0 all good, 1 something bad (each named).",
    )
    parser.add_argument("--cache-dir", help="the cache directory (PROXPI_CACHE_DIR)")
    parser.add_argument("--repair", action="store_true", help="delete bad files, so that the next request fetches them again")
    parser.add_argument("--jobs", type=_jobs, default=4, help="files hashed at once (default 4)")
    return parser


def _warm(argv: Sequence[str]) -> int:
    args = _warm_parser().parse_args(argv)
    from ..core.settings import parse_settings
    from .warm import Filters, run_warm

    flags = vars(args)
    try:
        settings = parse_settings(os.environ, flags)
    except ConfigError as exc:
        print(f"proxpi-min warm: error: {exc}", file=sys.stderr)
        return 2
    filters = Filters(args.wheels_only, tuple(args.platform), args.python_version)
    # Upstream trouble while pages are fetched (file downloads report through the
    # progress line) reads as the command's own warnings, not bare text.
    logging.basicConfig(level=logging.WARNING, format="proxpi-min warm: %(levelname)s: %(message)s")
    return run_warm(
        settings, args.files, jobs=args.jobs, filters=filters, out=sys.stdout, err=sys.stderr, tty=sys.stderr.isatty()
    )


def _verify(argv: Sequence[str]) -> int:
    args = _verify_parser().parse_args(argv)
    from .warm import run_verify

    cache_dir = args.cache_dir or os.environ.get("PROXPI_CACHE_DIR")
    if not cache_dir:
        print("proxpi-min verify: error: --cache-dir (or PROXPI_CACHE_DIR) is required", file=sys.stderr)
        return 2
    return run_verify(cache_dir, repair=args.repair, jobs=args.jobs, out=sys.stdout, err=sys.stderr, tty=sys.stderr.isatty())


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the proxy, or a command; returns the exit status (2 for a bad setting)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "warm":
        return _warm(argv[1:])
    if argv and argv[0] == "verify":
        return _verify(argv[1:])
    args = _parser().parse_args(argv)
    # Imported here so that --help and --version stay instant.
    from ..core.settings import parse_settings

    flags = vars(args)
    check_only = flags.pop("check_config")
    try:
        settings = parse_settings(os.environ, flags)
    except ConfigError as exc:
        print(f"proxpi-min: error: {exc}", file=sys.stderr)
        return 2
    if check_only:  # for deployment checks: a unit file's or image's flags, before a restart
        from ..core.policy import Policy
        from ..web.http1 import address_text

        address = address_text((settings.host, settings.port))
        print(f"proxpi-min: configuration ok: {_describe(settings, address, settings.cache_dir or '(a temp dir)')}")
        for line in Policy.from_settings(settings).describe():
            print(f"proxpi-min: policy: {line}")
        return 0
    if settings.workers > 1:
        configure_logging(settings.log_format)
        return _supervise(settings)
    from ..app.serve import ProxyServer

    configure_logging(settings.log_format, batched=True)
    try:
        try:
            server = ProxyServer(settings)
        except OSError as exc:
            return _cannot_start(settings, exc)
        _log_listening(settings, server.address_text, server.cache_dir, server.policy)
        return _serve(server)
    finally:
        logging.shutdown()  # writes out what is queued


def _cannot_start(settings: "Settings", exc: OSError) -> int:
    print(f"proxpi-min: error: cannot start on {settings.host}:{settings.port} "
          f"with cache dir {settings.cache_dir!r}: {exc.strerror or exc}", file=sys.stderr)
    return 1


def _describe(settings: "Settings", address_text: str, cache_dir: str) -> str:
    """What the proxy will do, as the start-up line and ``--check-config`` say it."""
    from ..core.settings import redact_url
    from ..app.proxy import upstream_route

    indices = ", ".join(f"{redact_url(i.url)} (TTL {i.ttl:g} s)" for i in settings.indexes)
    return (
        f"{settings.scheme}://{address_text}/ ({'offline' if settings.offline else 'online'}"
        f"{f', {settings.workers} workers' if settings.workers > 1 else ''}); indices: {indices}; "
        f"cache dir {cache_dir}, cap {settings.cache_size} bytes; {upstream_route(settings)}"
    )


def _log_listening(settings: "Settings", address_text: str, cache_dir: str, policy: "Policy") -> None:
    logger.info("listening on %s", _describe(settings, address_text, cache_dir))
    for line in policy.describe():
        logger.info("policy: %s", line)


def _serve(server: "ProxyServer") -> int:
    """Serve until SIGTERM or SIGINT, then drain responses in flight; returns 0."""

    def stop(signum: int, frame) -> None:
        logger.info("%s: stopping", signal.Signals(signum).name)
        # shutdown() waits for serve_forever(), which runs in this very thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # Everything made so far (modules, settings, the server) lives as long as the
    # process: out of the collector's sight, a full collection no longer walks it. One
    # came during the first large pages a fresh proxy parses, ~15% of their time.
    gc.freeze()
    # A worker starts with them blocked (workers.Supervisor._start); one that came
    # meanwhile is delivered now, to the handler.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, (signal.SIGTERM, signal.SIGINT))
    try:
        server.serve_forever()
    finally:
        if not server.drain(DRAIN_SECONDS):
            logger.warning("stopping with responses still in flight")
        server.server_close()
    logger.info("stopped")
    return 0


def _supervise(settings: "Settings") -> int:
    """``--workers N``: the parent binds the port and makes the cache dir (a temp one
    shared by the workers and removed here, once), then only supervises."""
    from ..core.policy import Policy
    from ..app.serve import ProxyServer
    from ..web.http1 import address_text
    from ..web.server import listening_socket
    from ..app.workers import Supervisor

    temp_dir = None if settings.cache_dir else tempfile.mkdtemp(prefix="proxpi-")
    settings = dataclasses.replace(settings, cache_dir=os.path.abspath(settings.cache_dir or temp_dir))
    try:
        os.makedirs(settings.cache_dir, exist_ok=True)
        listener = listening_socket(settings)
    except OSError as exc:
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)
        return _cannot_start(settings, exc)

    def work(number: int, run_dir: str) -> int:
        configure_logging(settings.log_format, number, batched=True)
        return _serve(ProxyServer(settings, listener, run_dir))  # the supervisor flushes the log

    # The workers build the same policy from the same settings; the parent only shows it.
    policy = Policy.from_settings(settings)
    _log_listening(settings, address_text(listener.getsockname()), settings.cache_dir, policy)
    try:
        return Supervisor(settings.workers, work, DRAIN_SECONDS).run()
    finally:
        listener.close()
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)
