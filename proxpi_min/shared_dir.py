"""What processes sharing a cache dir agree on: temp-file naming, atomic writes, and
sweeping the temp files that dead writers left behind."""

from __future__ import annotations

import contextlib
import os
import socket
import time

__all__ = ["STALE_TEMP", "TEMP_PREFIX", "remove_temp_files", "temp_path", "write_atomically"]

TEMP_PREFIX = ".tmp-"
STALE_TEMP = 600.0  # seconds without a write after which another host's temp file is dead


def write_atomically(path: str, data: bytes) -> None:
    """Write *data* to *path* through a temp file and ``os.replace``, so that a reader
    (or a restart after kill -9) sees the old content or the new, never a part."""
    temp = temp_path(os.path.dirname(path))
    try:
        with open(temp, "wb") as file:
            file.write(data)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _host() -> str:
    return "".join(c for c in socket.gethostname() if c.isalnum() or c == ".") or "host"


def temp_path(directory: str) -> str:
    """A new temp file name in *directory* naming its owner: host, process, random."""
    return os.path.join(directory, f"{TEMP_PREFIX}{_host()}-{os.getpid()}-{os.urandom(4).hex()}")


def remove_temp_files(directory: str, at_start: bool = True) -> int:
    """Remove leftover temp files under *directory*; count them.

    Ours to judge are those of this host: left alone while their process lives (a
    second proxy on the same dir), removed once it is gone, or when it has our own
    process id (a previous run, e.g. PID 1 in a restarted container). Another host's
    (a shared volume) are removed only once untouched for STALE_TEMP seconds, since
    a download in progress writes to its file all the time. Once running
    (*at_start* false), only that age rule applies, to every owner.
    """
    removed = 0
    now = time.time()
    for root, _, names in os.walk(directory):
        for name in names:
            if not name.startswith(TEMP_PREFIX):
                continue
            path = os.path.join(root, name)
            with contextlib.suppress(OSError):
                if (at_start and not _owner_alive(name)) or now - os.stat(path).st_mtime > STALE_TEMP:
                    os.unlink(path)
                    removed += 1
    return removed


def _owner_alive(temp_name: str) -> bool:
    """Whether the temp file's process may still be writing it (see remove_temp_files)."""
    host, _, pid_text = temp_name[len(TEMP_PREFIX) :].rpartition("-")[0].rpartition("-")
    if host != _host():
        return True  # another host's: judged by age
    pid = int(pid_text) if pid_text.isascii() and pid_text.isdigit() else -1
    if pid in (-1, os.getpid()):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True
