"""Command line: the subcommands (their flags are in :mod:`.options`); ``serve`` (also
run with no subcommand, as proxpi is) builds the settings once and serves until a signal."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import gc
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from typing import TYPE_CHECKING, Optional, Sequence

from ..core.errors import ConfigError
from ..core.settings import Settings, parse_settings
from ..core.sources import Sources
from ..infra.logs import configure_logging
from .options import PROG, command_line

if TYPE_CHECKING:  # the server is imported when serving, so that --help stays instant
    from ..core.policy import Policy
    from ..app.serve import ProxyServer

__all__ = ["main"]

logger = logging.getLogger("proxpi_min")

# On a stop signal, responses in flight get this long to finish.
DRAIN_SECONDS = 5.0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run a command (``serve`` when none is named); returns the exit status (2 for a
    bad setting)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = command_line()
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
    try:  # as the proxy reads them, so that a service's environment checks what it serves
        offline = bool(flags.get("offline")) or Sources(os.environ, {}).flag("--offline", "PROXPI_OFFLINE")
    except ConfigError as exc:
        print(f"proxpi-min verify: error: {exc}", file=sys.stderr)
        return 2
    return run_verify(
        cache_dir, repair=flags.get("repair", False), offline=offline, jobs=flags["jobs"],
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
        _check_offline_cache_dir(settings)
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


def _check_offline_cache_dir(settings: Settings) -> None:
    """Offline, the cache dir is all there is to serve: one missing (a typo, a disk not
    mounted) stops the start rather than serve an empty cache.

    :raises ConfigError: no cache dir is given, or it does not exist.
    """
    if not settings.offline:
        return
    if not settings.cache_dir:
        raise ConfigError("--offline serves what a cache dir holds: give --cache-dir (or PROXPI_CACHE_DIR)")
    if not os.path.isdir(settings.cache_dir):
        raise ConfigError(f"{settings.source_of('cache_dir')}={settings.cache_dir!r} is not a directory "
                          "(--offline serves what a cache dir holds)")


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
