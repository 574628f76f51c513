"""Logging: the line formats (the readable line, the default, or one JSON object per
line), the batched writer a server logs through, and the set-up of both."""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import select
import sys
import threading
import time
from typing import Optional

__all__ = ["BatchedStream", "JsonFormatter", "TextFormatter", "configure_logging", "formatter"]

# The log writer (see BatchedStream) writes at most this many lines at once, and
# waits this long after a first line for others to join it.
MAX_LOG_BATCH = 1000
LOG_BATCH_DELAY = 0.02

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class TextFormatter(logging.Formatter):
    """The standard format, with the time text made once a second, not per line."""

    _second = (-1, "")

    def __init__(self, worker: Optional[int] = None) -> None:
        # A worker's lines say which (``--workers``): "INFO [worker 2] proxpi_min...".
        prefix = "" if worker is None else f"[worker {worker}] "
        super().__init__(TEXT_FORMAT.replace("%(name)s", prefix + "%(name)s"))

    def formatTime(self, record: logging.LogRecord, datefmt: Optional[str] = None) -> str:  # noqa: N802
        second = int(record.created)
        if self._second[0] != second:
            self._second = (second, super().formatTime(record, datefmt)[:-4])  # without ",mmm"
        return f"{self._second[1]},{int(record.msecs):03d}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log pipelines: time (RFC 3339, UTC), level,
    logger, message; a request's line adds client, method, path, status, bytes,
    duration_ms and source (the handler passes them as ``extra={"request": {...}}``);
    a worker's lines (``--workers``) add worker."""

    def __init__(self, worker: Optional[int] = None) -> None:
        super().__init__()
        self._worker = worker

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self._worker is not None:
            line["worker"] = self._worker
        request = getattr(record, "request", None)
        if isinstance(request, dict):
            line.update(request)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        # ensure_ascii: the line stays one line of ASCII whatever the request held.
        return json.dumps(line, ensure_ascii=True)


def formatter(log_format: str, worker: Optional[int] = None) -> logging.Formatter:
    """The formatter for the ``log_format`` setting ("text" or "json"), for *worker*
    (its number under ``--workers``) or the only process."""
    return JsonFormatter(worker) if log_format == "json" else TextFormatter(worker)


class BatchedStream(logging.Handler):
    """Writes log lines to stderr from a thread of its own, in batches.

    A server's request threads only queue their record. Written under the stream's lock
    by each request thread, the log line cost a third of a small page's CPU time, and 16
    busy connections spent most of their time queued on that lock, so the rate swung
    with the scheduling of whichever thread held it. Here one thread formats what has
    queued up and writes it in as few calls as keep each line whole.
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
                encoding = getattr(self.stream, "encoding", None) or "utf-8"
                for chunk in _whole_lines(lines, select.PIPE_BUF, encoding):
                    self.stream.write(chunk)
                    self.stream.flush()

    def close(self) -> None:
        """Write out every record queued so far, then stop the writer."""
        if self._writer.is_alive():
            self._records.put(None)
            self._writer.join(5)
        super().close()


def _whole_lines(lines: list, size: int, encoding: str = "utf-8"):
    """*lines* joined into writes of at most *size* bytes each (in *encoding*), never
    splitting one (a longer line alone): POSIX keeps a pipe write of up to PIPE_BUF bytes
    whole, so lines that short from several workers on one pipe (journald, docker)
    never interleave."""
    chunk, length = [], 0
    for line in lines:
        count = len(line.encode(encoding, "backslashreplace"))
        if chunk and length + count > size:
            yield "".join(chunk)
            chunk, length = [], 0
        chunk.append(line)
        length += count
    if chunk:
        yield "".join(chunk)


def configure_logging(log_format: str, level: str, worker: Optional[int] = None, batched: bool = False) -> None:
    """Log to stderr the records at *level* (a logging level name) and above, one line
    each; *batched* for a server (see BatchedStream)."""
    if batched:
        handler: logging.Handler = BatchedStream(formatter(log_format, worker))
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(formatter(log_format, worker))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # One line per request: skip what the format never shows (logging HOWTO,
    # "Optimization"): caller frames, thread and process names.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
