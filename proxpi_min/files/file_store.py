"""What a download needs of the file cache it fills (``downloads.Download`` uses it,
``file_cache.FileCache`` implements it): the two meet only here."""

from __future__ import annotations

from typing import BinaryIO, NamedTuple, Optional, Protocol

from ..core.errors import ProxpiError
from ..infra.atomic import LockFile
from .layout import Target

__all__ = ["FileStore", "Opened"]


class Opened(NamedTuple):
    """A stored file, open for reading."""

    file: BinaryIO
    size: int


class FileStore(Protocol):
    """The cache a download fills, as the download sees it (``file_cache.FileCache``)."""

    cap: int  # bytes the stored files may take

    def open_cached(self, target: Target) -> Optional[Opened]:
        """The stored file, marked recently used; None if it is not stored."""

    def reserve(self, target: Target, temp: str, size: int) -> bool:
        """Make room under the cap for a download of *size* bytes into *temp* before
        it starts; False if it does not fit now, or ever (it is not stored).

        :raises OSError: the cache's bookkeeping cannot be had or written.
        """

    def release(self, temp: str) -> None:
        """Drop the reservation of the download into *temp* (it was not stored)."""

    def store(self, target: Target, temp: str, size: int) -> bool:
        """Give a verified temp file of *size* bytes the target's path, if it fits
        under the cap (its reservation, if any, becomes the stored file's); False if
        it was not taken (the caller removes it).

        :raises OSError: the cache's bookkeeping cannot be had or written.
        """

    def count_upstream(self, target: Target, error: Optional[ProxpiError]) -> None:
        """Count one upstream file request's outcome (None: it answered)."""

    def finished(self, download) -> None:
        """The ``downloads.Download``'s writer is done (stored, passed through or failed)."""

    def stalled(self, target: Target, mark: tuple) -> None:
        """Another process's download of *target* has stood still at *mark* (as
        ``liveness.writer_mark`` gives it) for STALL_AFTER seconds."""

    def make_room_beside(self, path: str, size: int) -> None:
        """Evict stored files until the disk has *size* bytes free for a file written
        at *path* (none where evicting every one would not make the room)."""

    def spool_slot(self) -> LockFile:
        """The lock a download holds while it spools a file that will not be stored
        (one at a time on the cache dir, see the module docstring)."""
