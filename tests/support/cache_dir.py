"""Tests' view of a cache directory from the outside (stored files, their sizes, the
bookkeeping left aside), the wheels of known size that fill it, and polling for what
a test waits on."""

from __future__ import annotations

import functools
import os
import random
import string
import threading
import time
import urllib.parse
from pathlib import Path
from stat import S_ISREG
from typing import Any, Callable, Optional

from .dists import Dist, make_wheel

__all__ = ["WAIT", "file_path", "files_tree", "peak_while", "sized_wheel", "stored_content", "stored_paths", "wait_for", "wait_until"]

# How long a test waits for something a correct proxy does at once (first bytes of a
# stream, a temp file appearing). Only a broken proxy ever makes a test wait this long.
WAIT = 4.0


# Each byte value to one of the 62 letters and digits, near evenly: random bytes mapped
# through it are as incompressible as random.choices of them, and many times quicker.
_TO_ALNUM = bytes(ord((string.ascii_letters + string.digits)[value % 62]) for value in range(256))


@functools.lru_cache(maxsize=None)
def sized_wheel(name: str, version: str, source_chars: int) -> Dist:
    """A real wheel whose module holds *source_chars* random (barely compressible)
    characters, so its size is known roughly in advance and similar for equal sizes."""
    rnd = random.Random(f"{name}-{version}-{source_chars}")
    text = rnd.randbytes(source_chars).translate(_TO_ALNUM).decode("ascii")
    return make_wheel(name, version, module_source=f'DATA = "{text}"\n')


def file_path(dist: Dist) -> str:
    return f"/index/{dist.normalized}/{urllib.parse.quote(dist.filename)}"


def files_tree(cache_dir: str | os.PathLike) -> dict[str, int]:
    """Every regular file under ``<cache dir>/files`` (relative path -> size) but the
    bookkeeping processes on the dir share (the size ledger, its journal, the users'
    lock, a download's lock file, which goes just after its file is stored); a temp
    file that the proxy renames or removes while we look is skipped."""
    root = os.path.join(cache_dir, "files")
    found = {}
    for directory, _, names in os.walk(root):
        for name in names:
            if name in (".ledger", ".journal", ".users") or name.startswith(".lock-"):
                continue
            path = os.path.join(directory, name)
            try:
                stat = os.lstat(path)
            except FileNotFoundError:
                continue
            if S_ISREG(stat.st_mode):
                found[os.path.relpath(path, root)] = stat.st_size
    return found


def stored_paths(cache_dir: str | os.PathLike, filename: str) -> list[str]:
    """Absolute paths of the files under ``<cache dir>/files`` named *filename*."""
    root = os.path.join(cache_dir, "files")
    return [os.path.join(root, rel) for rel in files_tree(cache_dir) if os.path.basename(rel) == filename]


def stored_content(cache_dir: str | os.PathLike, filename: str) -> Optional[bytes]:
    paths = stored_paths(cache_dir, filename)
    assert len(paths) <= 1, paths
    return Path(paths[0]).read_bytes() if paths else None


def wait_until(predicate: Callable[[], Any], timeout: float = WAIT) -> Any:
    """Poll *predicate* until it is truthy or the deadline passes; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


def wait_for(condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """Poll *condition* until it is truthy and return its value; past *timeout* seconds
    fail the test, naming *what* it waited for."""
    value = wait_until(condition, timeout)
    if not value:
        raise AssertionError(f"timed out waiting for {what}")
    return value


TEMP_PREFIX = ".tmp-"  # how proxpi_min.infra.atomic names a download's temp file


def settled(cache_dir: str | os.PathLike, timeout: float = WAIT) -> bool:
    """Wait until no download is being written or stored under *cache_dir* (no temp
    file left): a client may have its whole file before the proxy has stored it."""
    def no_temp_file() -> bool:
        return not any(os.path.basename(rel).startswith(TEMP_PREFIX) for rel in files_tree(cache_dir))

    return wait_until(no_temp_file, timeout)


def peak_while(cache_dir: str | os.PathLike, work: Callable[[], Any]) -> tuple:
    """(what *work* returns, the most bytes :func:`files_tree` saw while it ran, temp
    files included)."""
    peak, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], sum(files_tree(cache_dir).values()))
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = work()
    finally:
        stop.set()
        sampler.join()
    return result, peak[0]
