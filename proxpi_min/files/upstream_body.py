"""The body of a file as upstream sends it: read a chunk at a time, each chunk counted
against the minimum download rate and hashed for the index's hash (or, with none, for
the file's own structure)."""

from __future__ import annotations

import contextlib
import time
from typing import Iterator

from ..core.errors import IntegrityError, UpstreamTimeout
from ..index.upstream import FileResponse
from .integrity import Verifier
from .layout import Target

__all__ = ["CHUNK", "RATE_WINDOW", "RateGuard", "VerifiedChunks"]

CHUNK = 1024 * 1024  # bytes per upstream read and per sendfile call while streaming
# The minimum download rate is an average over each window this long (seconds): the
# read timeout alone lets an upstream trickle a byte per read for ever.
RATE_WINDOW = 30.0


class RateGuard:
    """Cuts an upstream transfer that averages under *min_rate* bytes a second over a
    window of RATE_WINDOW seconds (0: never); *clock* is monotonic seconds."""

    def __init__(self, min_rate: int, url: str, clock=time.monotonic) -> None:
        self._min_rate = min_rate
        self._url = url
        self._clock = clock
        self._start = clock()
        self._count = 0

    def add(self, count: int) -> None:
        """Count *count* bytes just read.

        :raises UpstreamTimeout: the window ended under the minimum rate.
        """
        if not self._min_rate:
            return
        self._count += count
        now = self._clock()
        elapsed = now - self._start
        if elapsed < RATE_WINDOW:
            return
        if self._count < self._min_rate * elapsed:
            raise UpstreamTimeout(
                f"upstream sent {self._count} bytes in {elapsed:.0f} s, under the minimum of "
                f"{self._min_rate} bytes a second: {self._url}"
            )
        self._start, self._count = now, 0

    @contextlib.contextmanager
    def client_time(self) -> Iterator[None]:
        """Time spent inside waits on the client (a slow reader), not on the upstream:
        it does not count against the upstream's rate."""
        began = self._clock()
        try:
            yield
        finally:
            self._start += self._clock() - began


class VerifiedChunks:
    """The body of *target* as upstream sends it, a chunk at a time: each chunk hashed
    for the index's hash and counted against *min_rate* (see :class:`RateGuard`). What
    a chunk is written to, and what a failed write means, is the reader's."""

    def __init__(self, response: FileResponse, target: Target, min_rate: int) -> None:
        self._response = response
        self._filename = target.filename
        self._verifier = Verifier(target.hash, target.filename)
        self._guard = RateGuard(min_rate, target.url)
        self._count = 0
        # The length announced, else the index's size: a body that ends short of it was cut.
        self._length = response.length if response.length is not None else target.size

    def __iter__(self) -> Iterator[bytes]:
        """:raises UpstreamError: the read failed (UpstreamTimeout: under the minimum rate)."""
        while chunk := self._response.read(CHUNK):
            self._guard.add(len(chunk))
            self._verifier.update(chunk)
            self._count += len(chunk)
            yield chunk

    def check(self) -> None:
        """Compare the bytes read with the index hash, once the body has ended.

        :raises HashMismatch: they do not match.
        :raises IntegrityError: other than the bytes announced came (a cut, not a mismatch).
        """
        if self._length is not None and self._count != self._length:
            raise IntegrityError(f"{self._filename}: upstream sent {self._count} of {self._length} bytes")
        self._verifier.check(f"{self._filename}: downloaded bytes do not match the index hash")
