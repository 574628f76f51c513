"""Command line: the subcommands and their flags; ``serve`` (also run with no subcommand,
as proxpi is) builds the settings once and serves until a signal."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import functools
import gc
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from typing import TYPE_CHECKING, Any, Optional, Sequence

from .. import __version__
from ..core.errors import ConfigError
from ..core.settings import (
    DEFAULT_CACHE_SIZE,
    DEFAULT_CLIENT_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_DOWNLOAD_MIN_RATE,
    DEFAULT_EXTRA_INDEX_TTL,
    DEFAULT_HOST,
    DEFAULT_INDEX_TTL,
    DEFAULT_INDEX_URL,
    DEFAULT_LOGGING_LEVEL,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_UPLOAD_SIZE,
    DEFAULT_THREADS,
    DEFAULT_PAGE_MEMORY,
    DEFAULT_PORT,
    DEFAULT_PREFETCH_JOBS,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_WORKERS,
    INDEX_STRATEGIES,
    LOG_FORMATS,
    LOGGING_LEVELS,
    METADATA_MODES,
    OLD_EXTRA_INDEX_TTLS,
    MIN_AGE_UNKNOWN,
    PREFETCH_MODES,
    Settings,
    parse_settings,
)
from ..core.units import parse_decimal
from ..infra.logs import configure_logging
from .progress import DEFAULT_JOBS

if TYPE_CHECKING:  # the server is imported when serving, so that --help stays instant
    from ..core.policy import Policy
    from ..app.serve import ProxyServer

__all__ = ["main"]

logger = logging.getLogger("proxpi_min")

PROG = "python proxpi.pyz"
# On a stop signal, responses in flight get this long to finish.
DRAIN_SECONDS = 5.0


def _size_text(size: int) -> str:
    """A byte count as the flags take it: ``5G`` for 5 GiB."""
    for power, unit in ((4, "T"), (3, "G"), (2, "M"), (1, "K")):
        if size % 1024**power == 0:
            return f"{size // 1024**power}{unit}"
    return str(size)


def _add_index_options(parser: argparse.ArgumentParser) -> None:
    """The flags ``serve`` and ``warm`` share: indices, the file cache's cap, the way to
    the upstreams and the guard rails, so that warm fetches what the proxy would serve."""
    add = parser.add_argument_group("indices").add_argument
    add("--index-url", help=f"root index URL (PROXPI_INDEX_URL, default {DEFAULT_INDEX_URL})")
    add("--index-ttl", help=f"root index cache TTL in seconds, 0 disables (PROXPI_INDEX_TTL, default {DEFAULT_INDEX_TTL:g})")
    add("--extra-index-url", action="append", help="extra index URL, repeatable (PROXPI_EXTRA_INDEX_URLS, comma-separated)")
    add("--extra-index-ttl", action="append",
        help=f"TTL for each extra index, repeatable (PROXPI_EXTRA_INDEX_TTLS, or proxpi's older "
        f"{OLD_EXTRA_INDEX_TTLS}, which must agree with it if both are set; default {DEFAULT_EXTRA_INDEX_TTL:g} each)")
    add("--cache-size",
        help=f"file cache size cap: bytes, or 500M, 5G; 0 disables (PROXPI_CACHE_SIZE, default {_size_text(DEFAULT_CACHE_SIZE)})")
    add("--metadata", metavar=f"{{{','.join(METADATA_MODES)}}}", help=f"serve PEP 658 metadata for wheels the index lists without, read from the wheel (PROXPI_METADATA, default {METADATA_MODES[0]})")
    add = parser.add_argument_group("upstream connections").add_argument
    add("--connect-timeout", help=f"upstream connect timeout in seconds (PROXPI_CONNECT_TIMEOUT, default {DEFAULT_CONNECT_TIMEOUT:g})")
    add("--read-timeout", help=f"upstream read timeout in seconds (PROXPI_READ_TIMEOUT, default {DEFAULT_READ_TIMEOUT:g})")
    add("--download-min-rate",
        help=f"cut a file download slower than this, bytes a second or 1K, 1M; 0: never (PROXPI_DOWNLOAD_MIN_RATE, default {_size_text(DEFAULT_DOWNLOAD_MIN_RATE)})")
    add("--upstream-proxy", metavar="URL", help="outbound HTTP proxy for every upstream, or 'none' to ignore HTTPS_PROXY/HTTP_PROXY/ALL_PROXY (PROXPI_UPSTREAM_PROXY, default: those variables; NO_PROXY applies)")
    add("--ca-bundle", metavar="FILE", help="PEM file of the CAs trusted for upstream TLS, in place of the system store (PROXPI_CA_BUNDLE)")
    add("--disable-index-ssl-verification", action="store_const", const=True, help="do not verify upstream TLS certificates (PROXPI_DISABLE_INDEX_SSL_VERIFICATION=1)")
    add = parser.add_argument_group("guard rails", "see README.md, 'Guard rails'").add_argument
    add("--pin", action="append", metavar="PATTERN=INDEX_URL", help="serve matching projects from that configured index only, repeatable (PROXPI_PIN, comma-separated)")
    add("--index-strategy", metavar=f"{{{','.join(INDEX_STRATEGIES)}}}", help=f"merge every index's files, or take a project from the first index that has it (PROXPI_INDEX_STRATEGY, default {INDEX_STRATEGIES[0]})")
    add("--min-age", metavar="DURATION", help="leave out files uploaded less than this long ago: 3600, 36h, 7d, 2w (PROXPI_MIN_AGE)")
    add("--min-age-exempt", action="append", metavar="PATTERN", help="projects the minimum age does not apply to, comma-separated, repeatable (PROXPI_MIN_AGE_EXEMPT)")
    add("--min-age-unknown", metavar=f"{{{','.join(MIN_AGE_UNKNOWN)}}}", help=f"files without an upload time under --min-age: served or left out (PROXPI_MIN_AGE_UNKNOWN, default {MIN_AGE_UNKNOWN[0]})")
    add("--deny", action="append", metavar="NAME[==VERSION]", help="refuse a project, a version of it, or a pattern of names, comma-separated, repeatable (PROXPI_DENY)")
    add("--allow", action="append", metavar="PATTERN", help="serve only these projects, comma-separated, repeatable (PROXPI_ALLOW)")
    add = parser.add_argument_group("local index", "see docs/private-packages.md").add_argument
    add("--local-dir", metavar="DIR", help="also serve the wheels and sdists of this folder, flat or a folder per project, read-only (PROXPI_LOCAL_DIR)")
    add("--local-merge", action="store_const", const=True, help="merge a local project with the upstreams' files instead of serving it alone (PROXPI_LOCAL_MERGE=1)")
    add("--min-age-local", action="store_const", const=True, help="apply --min-age to local files too (PROXPI_MIN_AGE_LOCAL=1)")


def _add_serve_options(parser: argparse.ArgumentParser) -> None:
    """The proxy's flags: the listening side, then the flags shared with ``warm``."""
    add = parser.add_argument_group("serving").add_argument
    add("--host", help=f"address to listen on (PROXPI_HOST, default {DEFAULT_HOST})")
    add("--port", help=f"port to listen on, 0 for any free port (PROXPI_PORT, default {DEFAULT_PORT})")
    add("--cache-dir", help="cache directory (PROXPI_CACHE_DIR, default: a temp dir removed at exit)")
    add("--offline", action="store_const", const=True, help="never contact an upstream; serve the cache dir only (PROXPI_OFFLINE=1)")
    add("--page-memory", help=f"memory for rendered pages: bytes, or 256M (PROXPI_PAGE_MEMORY, default {_size_text(DEFAULT_PAGE_MEMORY)})")
    add("--binary-file-mime-type", action="store_const", const=True, help="serve files as application/octet-stream (PROXPI_BINARY_FILE_MIME_TYPE=1)")
    add("--download-timeout", help="accepted for compatibility, ignored: downloads always stream (PROXPI_DOWNLOAD_TIMEOUT)")
    add("--client-timeout", help=f"seconds an idle keep-alive connection, or a client that stops reading, is kept (PROXPI_CLIENT_TIMEOUT, default {DEFAULT_CLIENT_TIMEOUT:g})")
    add("--header-timeout", help=f"seconds a client gets to send a whole request head (PROXPI_HEADER_TIMEOUT, default {DEFAULT_HEADER_TIMEOUT:g})")
    add("--admin-token", help="require 'Authorization: Bearer TOKEN' for DELETE (PROXPI_ADMIN_TOKEN)")
    add("--tls-cert", metavar="FILE", help="serve HTTPS with this PEM certificate, then its chain; needs --tls-key (PROXPI_TLS_CERT)")
    add("--tls-key", metavar="FILE", help="the PEM private key of --tls-cert, unencrypted (PROXPI_TLS_KEY)")
    add("--log-format", metavar=f"{{{','.join(LOG_FORMATS)}}}", help=f"readable lines or one JSON object per line (PROXPI_LOG_FORMAT, default {LOG_FORMATS[0]})")
    add("--logging-level", metavar="LEVEL",
        help=f"log records at this level and above: {', '.join(LOGGING_LEVELS)}, any case; WARNING leaves out the "
        f"start-up and request lines (PROXPI_LOGGING_LEVEL, default {DEFAULT_LOGGING_LEVEL})")
    add("--workers", help=f"worker processes on one port; 0 or auto: one per CPU (PROXPI_WORKERS, default {DEFAULT_WORKERS})")
    add("--max-connections", help=f"connections open at once per process; past it, the oldest idle ones close, then 503 (PROXPI_MAX_CONNECTIONS, default {DEFAULT_MAX_CONNECTIONS})")
    add("--threads", help=f"requests answered at once per process, a thread each; past it, requests wait, then 503 (PROXPI_THREADS, default {DEFAULT_THREADS})")
    add("--prefetch", metavar=f"{{{','.join(PREFETCH_MODES)}}}", help=f"fetch the pages of a served metadata's dependencies before they are asked for, and with metadata the metadata of the wheel the client will likely pick; pages: the pages only (PROXPI_PREFETCH, default {PREFETCH_MODES[0]})")
    add("--prefetch-jobs", help=f"prefetches at once per process (PROXPI_PREFETCH_JOBS, default {DEFAULT_PREFETCH_JOBS})")
    add("--check-config", action="store_true", help="validate the settings, print them and exit 0 (2 if one is bad)")
    add = parser.add_argument_group("uploads", "they need --cache-dir; see docs/private-packages.md").add_argument
    add("--upload-token", metavar="TOKEN", help="take uploads (twine, uv publish) at /upload/ with this token, for every project (PROXPI_UPLOAD_TOKEN)")
    add("--upload-tokens", metavar="FILE", help="take uploads with the tokens of FILE, lines 'token [project-pattern...]' (PROXPI_UPLOAD_TOKENS)")
    add("--max-upload-size", help=f"largest uploaded file: bytes, or 500M, 1G (PROXPI_MAX_UPLOAD_SIZE, default {_size_text(DEFAULT_MAX_UPLOAD_SIZE)})")
    _add_index_options(parser)


def _jobs(text: str) -> int:
    jobs = parse_decimal(text)
    if jobs is None or jobs < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of jobs (1 or more)")
    return jobs


def _python_version(text: str) -> tuple:
    major, _, minor = text.partition(".")
    version = (parse_decimal(major), parse_decimal(minor))
    if None in version:
        raise argparse.ArgumentTypeError(f"{text!r} is not a Python version like 3.11")
    return version


def _add_warm_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("warm")
    group.add_argument("files", nargs="+", metavar="FILE",
                       help="requirements.txt (with --hash), pylock.toml / pylock.*.toml, uv.lock, poetry.lock")
    group.add_argument("--cache-dir", help="the cache directory to fill, required (PROXPI_CACHE_DIR)")
    group.add_argument("--jobs", type=_jobs, default=DEFAULT_JOBS, help="files fetched at once (default %(default)s)")
    group.add_argument("--wheels-only", action="store_true", help="skip sdists")
    group.add_argument("--platform", action="append", default=[],
                       help="only wheels that run on a machine of this platform tag (older manylinux, musllinux and macOS tags of its CPU too, and 'any'), repeatable, e.g. manylinux_2_28_x86_64")
    group.add_argument("--python-version", type=_python_version, help="only wheels for this Python, e.g. 3.11")
    _add_index_options(parser)


def _add_verify_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("verify")
    group.add_argument("--cache-dir", help="the cache directory, required (PROXPI_CACHE_DIR)")
    group.add_argument("--repair", action="store_true", help="delete bad files, so that the next request fetches them again, and what killed writers left")
    group.add_argument("--offline", action="store_true",
                       help="the dir is for an offline proxy: a stored file no saved page lists (which it cannot serve) fails the check")
    group.add_argument("--jobs", type=_jobs, default=DEFAULT_JOBS, help="files hashed at once (default %(default)s)")


class _Collect(argparse._AppendAction):
    """``append`` into one list per flag for the whole command line: argparse gives a
    command's flags a namespace of their own, whose list replaced the one the same flag
    made before the command (``--deny a serve --deny b`` kept ``b`` alone)."""

    def __init__(self, *args: Any, lists: dict, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lists = lists

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        collected = self._lists.setdefault(self.dest, [])
        collected.append(values)
        setattr(namespace, self.dest, collected)


def _parser() -> argparse.ArgumentParser:
    """The whole command line: the subcommands, then the flags of ``serve``, which runs
    when no subcommand is given."""
    usage = {
        "serve": f"{PROG} [serve] [OPTION ...]",
        "warm": f"{PROG} warm --cache-dir DIR [OPTION ...] FILE ...",
        "verify": f"{PROG} verify --cache-dir DIR [--repair] [--jobs JOBS]",
    }
    lists: dict = {}

    def collecting(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.register("action", "append", functools.partial(_Collect, lists=lists))
        return parser

    parser = collecting(argparse.ArgumentParser(
        prog=PROG,
        usage="\n       ".join(usage.values()),
        description="A caching proxy for the Python Package Index. Every flag also has a "
        "PROXPI_* environment variable (see README.md); flags win.",
        epilog=f"Each command lists its own flags: '{PROG} warm --help'.",
        add_help=False,  # -h comes after the commands, under "general"
        # Only the flags given are set: those before "serve" and after it add up.
        argument_default=argparse.SUPPRESS,
    ))
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND", prog=PROG)
    _add_serve_options(collecting(commands.add_parser(
        "serve", usage=usage["serve"], argument_default=argparse.SUPPRESS, help="run the proxy (the default: the flags below are serve's)",
        description="Run the proxy until SIGTERM, SIGINT or SIGHUP. Every flag also has a PROXPI_* "
        "environment variable (see README.md); flags win.",
    )))
    _add_warm_options(collecting(commands.add_parser(
        "warm", usage=usage["warm"], argument_default=argparse.SUPPRESS, help="fetch every file that lock files name into a cache dir",
        description="Fetch every file that lock files name into the cache dir, through the configured "
        "indices (never from the URLs in the lock files), for an offline proxy to serve. "
        "Exit status: 0 all in the cache, 1 some failed (each named), 2 unusable input, 130 interrupted (Ctrl-C).",
    )))
    _add_verify_options(commands.add_parser(
        "verify", usage=usage["verify"], argument_default=argparse.SUPPRESS, help="re-hash a cache dir's files and load its saved pages",
        description="Re-hash every file of a cache dir against the hash it is stored under, and "
        "load every saved index page, and name the stored files no saved page lists. Exit status: "
        "0 all good, 1 something bad (with --offline, or not listed; each named), 2 not a cache dir.",
    ))
    general = parser.add_argument_group("general")
    general.add_argument("-h", "--help", action="help", help="show this help and exit")
    general.add_argument("--version", action="version", version=f"proxpi-min {__version__}")
    _add_serve_options(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run a command (``serve`` when none is named); returns the exit status (2 for a
    bad setting)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    flags = vars(parser.parse_args(argv))
    command = flags.pop("command", None)
    if command in ("warm", "verify") and argv[0] != command:
        parser.error(f"the flags of '{command}' come after it: {PROG} {command} [OPTION ...]")
    if command == "warm":
        return _warm(flags)
    if command == "verify":
        return _verify(flags)
    return _serve_command(flags)


def _warm(flags: dict) -> int:
    from ..core.lockmatch import Filters
    from ..infra.tls import check_files
    from .warm import run_warm

    try:
        settings = parse_settings(os.environ, flags, serving=False)
        check_files(settings)
    except ConfigError as exc:
        print(f"proxpi-min warm: error: {exc}", file=sys.stderr)
        return 2
    filters = Filters(flags.get("wheels_only", False), tuple(flags["platform"]), flags.get("python_version"))
    # Upstream trouble while pages are fetched (file downloads report through the
    # progress line) reads as the command's own warnings, not bare text.
    logging.basicConfig(level=logging.WARNING, format="proxpi-min warm: %(levelname)s: %(message)s")
    return run_warm(
        settings, flags["files"], jobs=flags["jobs"], filters=filters, out=sys.stdout, err=sys.stderr,
        tty=sys.stderr.isatty(),
    )


def _verify(flags: dict) -> int:
    from .verify import run_verify

    cache_dir = flags.get("cache_dir") or os.environ.get("PROXPI_CACHE_DIR")
    if not cache_dir:
        print("proxpi-min verify: error: --cache-dir (or PROXPI_CACHE_DIR) is required", file=sys.stderr)
        return 2
    return run_verify(
        cache_dir, repair=flags.get("repair", False), offline=flags.get("offline", False), jobs=flags["jobs"],
        out=sys.stdout, err=sys.stderr, tty=sys.stderr.isatty(),
    )


def _serve_command(flags: dict) -> int:
    from ..infra.tls import check_files
    from ..web.upload import load_grants

    try:
        settings = parse_settings(os.environ, flags)
        check_files(settings)
        load_grants(settings)  # a token file that does not read stops the start
        if settings.local_dir and not os.path.isdir(settings.local_dir):
            raise ConfigError(f"--local-dir={settings.local_dir!r} is not a directory")
    except ConfigError as exc:
        print(f"proxpi-min: error: {exc}", file=sys.stderr)
        return 2
    if flags.get("check_config"):  # for deployment checks: a unit file's or image's flags, before a restart
        return 2 if settings.cache_dir and not _could_make(settings, settings.cache_dir) else _check_config(settings)
    # Without a cache dir, a temp one, made here once (shared by the workers) and removed at exit.
    temp_dir = None if settings.cache_dir else tempfile.mkdtemp(prefix="proxpi-")
    try:
        if not _made(settings, settings.cache_dir or temp_dir):
            return 2
        settings = dataclasses.replace(settings, cache_dir=os.path.abspath(settings.cache_dir or temp_dir))
        return _supervise(settings) if settings.workers > 1 else _serve_alone(settings)
    finally:
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)


def _made(settings: Settings, cache_dir: str) -> bool:
    """Make the cache dir and its files folder, writable by us (a cache dir that cannot
    hold files is a bad setting, not a failed start); False, the error said, if not."""
    from ..files.layout import files_root

    folders = (cache_dir, files_root(cache_dir))
    problem = f"is not writable by this user (uid {os.geteuid()})"
    try:
        for folder in folders:
            os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        # One that exists but refuses us (a volume another user filled) is not "cannot be made".
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS) or not os.path.isdir(cache_dir):
            problem = f"cannot be made ({exc.strerror or exc})"
    else:
        # Folders another user made before: found now, not by every download failing.
        # Offline nothing is downloaded: a read-only copy (a USB disk) is served as it is.
        if settings.offline or all(os.access(folder, os.W_OK | os.X_OK) for folder in folders):
            return True
    print(f"proxpi-min: error: {settings.source_of('cache_dir')}={settings.cache_dir!r} {problem}", file=sys.stderr)
    return False


def _could_make(settings: Settings, cache_dir: str) -> bool:
    """Whether :func:`_made` would make the cache dir, found by making it as a start
    would, then removing what the check made (it leaves no trace)."""
    from ..files.layout import files_root

    made = []  # the folders the check makes, deepest first
    folder = files_root(os.path.abspath(cache_dir))
    while not os.path.exists(folder):
        made.append(folder)
        folder = os.path.dirname(folder)
    try:
        return _made(settings, cache_dir)
    finally:
        for folder in made:
            with contextlib.suppress(OSError):
                os.rmdir(folder)


def _check_config(settings: Settings) -> int:
    from ..core.policy import Policy
    from ..web.http1 import address_text

    address = address_text((settings.host, settings.port))
    print(f"proxpi-min: configuration ok: {_describe(settings, address, settings.cache_dir or '(a temp dir)')}")
    for line in Policy.from_settings(settings).describe():
        print(f"proxpi-min: policy: {line}")
    return 0


def _serve_alone(settings: Settings) -> int:
    """One process serves (``--workers 1``); returns the exit status."""
    from ..app.serve import ProxyServer

    configure_logging(settings.log_format, settings.logging_level, batched=True)
    try:
        try:
            server = ProxyServer(settings)
        except OSError as exc:
            return _cannot_start(settings, exc)
        _log_listening(settings, server.address_text, server.cache_dir, server.policy)
        return _serve(server)
    finally:
        logging.shutdown()  # writes out what is queued


def _cannot_start(settings: Settings, exc: OSError) -> int:
    print(f"proxpi-min: error: cannot start on {settings.host}:{settings.port} "
          f"with cache dir {settings.cache_dir!r}: {exc.strerror or exc}", file=sys.stderr)
    return 1


def _describe(settings: Settings, address_text: str, cache_dir: str) -> str:
    """What the proxy will do, as the start-up line and ``--check-config`` say it."""
    from ..app.proxy import upstream_route
    from ..core.urls import redact_url

    indices = ", ".join(f"{redact_url(i.url)} (TTL {i.ttl:g} s)" for i in settings.indexes)
    return (
        f"{settings.scheme}://{address_text}/ ({'offline' if settings.offline else 'online'}"
        f"{f', {settings.workers} workers' if settings.workers > 1 else ''}); indices: {indices}; "
        f"cache dir {cache_dir}, cap {settings.cache_size} bytes; {upstream_route(settings)}"
    )


def _log_listening(settings: Settings, address_text: str, cache_dir: str, policy: "Policy") -> None:
    descriptors = _raise_descriptor_limit()
    logger.info(
        "listening on %s; up to %d connections and %d request threads per process, %s descriptors",
        _describe(settings, address_text, cache_dir),
        settings.max_connections,
        settings.threads,
        descriptors if descriptors is not None else "unknown",
    )
    if descriptors is not None and descriptors < settings.max_connections + 100:
        logger.warning(
            "%d descriptors allowed (ulimit -n) for --max-connections %d: raise the hard limit "
            "(LimitNOFILE=, docker --ulimit nofile=) or lower the cap", descriptors, settings.max_connections
        )
    for line in policy.describe():
        logger.info("policy: %s", line)


def _raise_descriptor_limit() -> Optional[int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (each connection is a descriptor;
    forked workers inherit it); the soft limit now, None where unknown."""
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            # macOS refuses an infinite soft limit, and values past OPEN_MAX.
            wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            except (ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, 10240), hard))
        return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ValueError, OSError):
        return None


def _serve(server: "ProxyServer") -> int:
    """Serve until a stop signal (SIGTERM, SIGINT, SIGHUP), then drain responses in
    flight; returns 0."""
    from ..app.workers import STOP_SIGNALS

    def stop(signum: int, frame) -> None:
        logger.info("%s: stopping", signal.Signals(signum).name)
        # shutdown() waits for serve_forever(), which runs in this very thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    for signum in STOP_SIGNALS:
        signal.signal(signum, stop)
    # Everything made so far (modules, settings, the server) lives as long as the
    # process: out of the collector's sight, a full collection no longer walks it.
    gc.freeze()
    # A worker starts with them blocked (workers.Supervisor._start); one that came
    # meanwhile is delivered now, to the handler.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    try:
        server.serve_forever()
    finally:
        server.stop_listening()
        if not server.drain(DRAIN_SECONDS):
            logger.warning("stopping with responses still in flight")
        server.server_close()
    logger.info("stopped")
    return 0


def _supervise(settings: Settings) -> int:
    """``--workers N``: the parent binds the port, then only supervises."""
    from ..core.policy import Policy
    from ..app.serve import ProxyServer
    from ..web.http1 import address_text
    from ..web.server import listening_socket
    from ..app.workers import Supervisor, mark_serving

    configure_logging(settings.log_format, settings.logging_level)
    try:
        listener = listening_socket(settings)
    except OSError as exc:
        return _cannot_start(settings, exc)

    def work(number: int, run_dir: str) -> int:
        configure_logging(settings.log_format, settings.logging_level, number, batched=True)
        server = ProxyServer(settings, listener, run_dir)
        mark_serving(run_dir)
        return _serve(server)  # the supervisor flushes the log

    # The workers build the same policy from the same settings; the parent only shows it.
    policy = Policy.from_settings(settings)
    _log_listening(settings, address_text(listener.getsockname()), settings.cache_dir, policy)
    try:
        return Supervisor(settings.workers, work, DRAIN_SECONDS, on_stop=listener.close).run()
    finally:
        listener.close()
