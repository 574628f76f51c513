"""Command line: parse flags, build settings once, run the server until a signal."""

from __future__ import annotations

import argparse
import dataclasses
import contextlib
import logging
import os
import queue
import shutil
import signal
import sys
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Optional, Sequence

from . import __version__
from .errors import ConfigError

if TYPE_CHECKING:  # imported in main(), so that --help and --version stay instant
    from .config import Settings
    from .server import ProxyServer

__all__ = ["main"]

logger = logging.getLogger("proxpi_min")

# On SIGTERM/SIGINT, responses in flight get this long to finish.
DRAIN_SECONDS = 5.0
# The log writer (see _BatchedStream) writes at most this many lines at once, and
# waits this long after a first line for others to join it.
MAX_LOG_BATCH = 1000
LOG_BATCH_DELAY = 0.02


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="proxpi-min",
        description="A caching proxy for the Python Package Index. Every flag also has a "
        "PROXPI_* environment variable (see README.md); flags win.",
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
    add("--workers", help="worker processes on one port; 0 or auto: one per CPU (PROXPI_WORKERS, default 1)")
    add("--max-connections", help="connections served at once per process; past it, 503 (PROXPI_MAX_CONNECTIONS, default 1000)")
    return parser


class _Formatter(logging.Formatter):
    """The standard format, with the time text made once a second, not per line."""

    _second = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: Optional[str] = None) -> str:  # noqa: N802
        second = int(record.created)
        if self._second[0] != second:
            self._second = (second, super().formatTime(record, datefmt)[:-4])  # without ",mmm"
        return f"{self._second[1]},{int(record.msecs):03d}"


class _BatchedStream(logging.Handler):
    """Writes log lines to stderr from a thread of its own, in batches.

    A server's request threads only queue their record. Written under the stream's lock
    by each request thread, the log line cost a third of a small page's CPU time, and 16
    busy connections spent most of their time queued on that lock, so the rate swung
    with the scheduling of whichever thread held it. Here one thread formats what has
    queued up and writes it in one call.
    """

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self.stream = sys.stderr
        self._records: "queue.SimpleQueue[Optional[logging.LogRecord]]" = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write, name="log-writer", daemon=True)
        self._writer.start()

    def handle(self, record: logging.LogRecord) -> bool:
        # No lock: SimpleQueue.put is atomic, and the record is formatted later (our
        # log calls pass immutable arguments).
        self._records.put(record)
        return True

    def _write(self) -> None:
        stopping = full = False
        while not stopping:
            batch = [self._records.get()]
            if not full:  # let a batch gather rather than wake (take the GIL) per line
                time.sleep(LOG_BATCH_DELAY)
            with contextlib.suppress(queue.Empty):
                while len(batch) < MAX_LOG_BATCH:
                    batch.append(self._records.get_nowait())
            full = len(batch) == MAX_LOG_BATCH
            lines = []
            for record in batch:
                if record is None:  # from close()
                    stopping = True
                    continue
                try:
                    lines.append(self.format(record) + "\n")
                except Exception:  # as logging does: a bad record must not stop the log
                    self.handleError(record)
            with contextlib.suppress(OSError, ValueError):  # stderr gone: nowhere to say so
                self.stream.write("".join(lines))
                self.stream.flush()

    def close(self) -> None:
        """Write out every record queued so far, then stop the writer."""
        if self._writer.is_alive():
            self._records.put(None)
            self._writer.join(5)
        super().close()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the proxy; returns the exit status (2 for a bad setting)."""
    args = _parser().parse_args(argv)
    # Imported here so that --help and --version stay instant.
    from .config import parse_settings

    try:
        settings = parse_settings(os.environ, vars(args))
    except ConfigError as exc:
        print(f"proxpi-min: error: {exc}", file=sys.stderr)
        return 2
    if settings.workers > 1:
        _configure_logging()
        return _supervise(settings)
    from .server import ProxyServer

    _configure_logging(batched=True)
    try:
        try:
            server = ProxyServer(settings)
        except OSError as exc:
            return _cannot_start(settings, exc)
        _log_listening(settings, server.server_address, server.cache_dir)
        return _serve(server)
    finally:
        logging.shutdown()  # writes out what is queued


def _configure_logging(worker: str = "", batched: bool = False) -> None:
    """Log to stderr: one line per record; *batched* for a server (see _BatchedStream)."""
    formatter = _Formatter(f"%(asctime)s %(levelname)s {worker}%(name)s: %(message)s")
    if batched:
        handler: logging.Handler = _BatchedStream(formatter)
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(formatter)
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    # One line per request: skip what the format never shows (logging HOWTO,
    # "Optimization"): caller frames, thread and process names.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def _cannot_start(settings: "Settings", exc: OSError) -> int:
    print(f"proxpi-min: error: cannot start on {settings.host}:{settings.port} "
          f"with cache dir {settings.cache_dir!r}: {exc.strerror or exc}", file=sys.stderr)
    return 1


def _log_listening(settings: "Settings", address: tuple, cache_dir: str) -> None:
    from .config import redact_url

    host, port = address[:2]
    logger.info(
        "listening on http://%s:%d/ (%s%s); indices: %s; cache dir %s, cap %d bytes",
        f"[{host}]" if ":" in host else host,
        port,
        "offline" if settings.offline else "online",
        f", {settings.workers} workers" if settings.workers > 1 else "",
        ", ".join(f"{redact_url(i.url)} (TTL {i.ttl:g} s)" for i in settings.indexes),
        cache_dir,
        settings.cache_size,
    )


def _serve(server: "ProxyServer") -> int:
    """Serve until SIGTERM or SIGINT, then drain responses in flight; returns 0."""

    def stop(signum: int, frame) -> None:
        logger.info("%s: stopping", signal.Signals(signum).name)
        # shutdown() waits for serve_forever(), which runs in this very thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
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
    from .server import ProxyServer, listening_socket
    from .workers import Supervisor

    temp_dir = None if settings.cache_dir else tempfile.mkdtemp(prefix="proxpi-")
    settings = dataclasses.replace(settings, cache_dir=os.path.abspath(settings.cache_dir or temp_dir))
    try:
        os.makedirs(settings.cache_dir, exist_ok=True)
        listener = listening_socket(settings)
    except OSError as exc:
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)
        return _cannot_start(settings, exc)

    def work(number: int) -> int:
        _configure_logging(f"[worker {number}] ", batched=True)
        return _serve(ProxyServer(settings, listener))  # the supervisor flushes the log

    _log_listening(settings, listener.getsockname(), settings.cache_dir)
    try:
        return Supervisor(settings.workers, work, DRAIN_SECONDS).run()
    finally:
        listener.close()
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)
