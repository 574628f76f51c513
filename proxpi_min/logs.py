"""Log line formats: the readable line (default) and one JSON object per line."""

from __future__ import annotations

import json
import logging
import time
from typing import Optional

__all__ = ["JsonFormatter", "TextFormatter", "formatter"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class TextFormatter(logging.Formatter):
    """The standard format, with the time text made once a second, not per line."""

    _second = (-1, "")

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatTime(self, record: logging.LogRecord, datefmt: Optional[str] = None) -> str:  # noqa: N802
        second = int(record.created)
        if self._second[0] != second:
            self._second = (second, super().formatTime(record, datefmt)[:-4])  # without ",mmm"
        return f"{self._second[1]},{int(record.msecs):03d}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log pipelines: time (RFC 3339, UTC), level,
    logger, message; a request's line adds client, method, path, status, bytes,
    duration_ms and source (the handler passes them as ``extra={"request": {...}}``)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request = getattr(record, "request", None)
        if isinstance(request, dict):
            line.update(request)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        # ensure_ascii: the line stays one line of ASCII whatever the request held.
        return json.dumps(line, ensure_ascii=True)


def formatter(log_format: str) -> logging.Formatter:
    """The formatter for the ``log_format`` setting ("text" or "json")."""
    return JsonFormatter() if log_format == "json" else TextFormatter()
