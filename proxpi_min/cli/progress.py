"""The progress of ``warm`` and ``verify``, their shared pace: one line redrawn on a
terminal, log warnings above it, and how many files each works on at once."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional, TextIO

from ..core.units import human_size

__all__ = ["DEFAULT_JOBS", "Progress", "capture_logs"]

DEFAULT_JOBS = 4  # files fetched (warm) or hashed (verify) at once
REDRAW_INTERVAL = 0.1  # seconds between redraws of the terminal progress line

class Progress:
    """Progress on *stream*: one line redrawn in place on a terminal, else a plain line
    per file. Thread-safe. A *total_bytes* of 0 means unknown (an index without sizes):
    the percentage then counts files."""

    def __init__(
        self, stream: TextIO, verb: str, total: int, total_bytes: int, tty: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._verb = verb
        self._total = total
        self._total_bytes = total_bytes
        self._tty = tty
        self._clock = clock
        self._started = clock()
        self._drawn = float("-inf")
        self._lock = threading.Lock()
        self._finished = False  # nothing is written after finish (warm's abandoned downloads may end later)
        self.done = 0
        self.done_bytes = 0
        self.moved_bytes = 0  # fetched (or hashed) now, for the rate

    def line(self) -> str:
        elapsed = max(self._clock() - self._started, 1e-6)
        if self._total_bytes:
            percent = 100.0 * self.done_bytes / self._total_bytes
        else:
            percent = 100.0 * self.done / self._total if self._total else 100.0
        of = f" of {human_size(self._total_bytes)}" if self._total_bytes else ""
        return (
            f"{self._verb}: {self.done}/{self._total} files, {human_size(self.done_bytes)}{of},"
            f" {human_size(self.moved_bytes / elapsed)}/s, {percent:.0f}%"
        )

    def advance(self, size: int, moved: bool, message: Optional[str] = None) -> None:
        """One more file done (*moved*: its bytes were fetched or hashed now)."""
        with self._lock:
            if self._finished:
                return
            self.done += 1
            self.done_bytes += size
            if moved:
                self.moved_bytes += size
            now = self._clock()
            if self._tty:
                if message:
                    self._stream.write(f"\r\x1b[K{message}\n")
                if message or self.done == self._total or now - self._drawn >= REDRAW_INTERVAL:
                    self._drawn = now
                    self._stream.write(f"\r\x1b[K{self.line()}")
            elif message:
                self._stream.write(f"{message}\n")
            self._stream.flush()

    def note(self, message: str) -> None:
        """A line of its own (a warning), above the progress line on a terminal."""
        with self._lock:
            if self._finished:
                return
            if self._tty:
                self._stream.write(f"\r\x1b[K{message}\n{self.line()}")
            else:
                self._stream.write(f"{message}\n")
            self._stream.flush()

    def finish(self) -> None:
        with self._lock:
            self._finished = True
            if self._tty:
                self._stream.write(f"\r\x1b[K{self.line()}\n")
                self._stream.flush()


class _ProgressLog(logging.Handler):
    """Log records (upstream trouble at WARNING) as lines above the progress line."""

    def __init__(self, progress: Progress) -> None:
        super().__init__(logging.WARNING)
        self._progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        self._progress.note(f"warning: {record.getMessage()}")


def capture_logs(progress: Progress) -> Callable[[], None]:
    """Send proxpi_min's warnings through *progress*; returns the undo function."""
    root = logging.getLogger("proxpi_min")
    handler = _ProgressLog(progress)
    old_level, old_propagate = root.level, root.propagate
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    root.propagate = False

    def undo() -> None:
        root.removeHandler(handler)
        root.setLevel(old_level)
        root.propagate = old_propagate

    return undo
