"""The command line: every flag of ``serve``, ``warm`` and ``verify``, each one's help
naming its ``PROXPI_*`` variable and the default the settings hold."""

from __future__ import annotations

import argparse
import functools
from typing import Any

from .. import __version__
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
)
from ..core.units import parse_decimal
from .progress import DEFAULT_JOBS

__all__ = ["PROG", "command_line"]

PROG = "python proxpi.pyz"


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


def command_line() -> argparse.ArgumentParser:
    """The whole command line: the subcommands, then the flags of ``serve``, which runs
    when no subcommand is given."""
    usage = {
        "serve": f"{PROG} [serve] [OPTION ...]",
        "warm": f"{PROG} warm --cache-dir DIR [OPTION ...] FILE ...",
        "verify": f"{PROG} verify --cache-dir DIR [--offline] [--repair] [--jobs JOBS]",
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
