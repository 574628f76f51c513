"""The read-only ``--local-dir`` folders, as pypiserver serves a directory of wheels:
their wheels and sdists by project (flat, or one folder per project), listed again only
once a folder changed, and each file's hash computed once; and the folder helpers the
local index shares with them."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from typing import Callable, Dict, Optional, Tuple

from ..core.distnames import is_dist_filename, parse_dist_filename

__all__ = ["WATCH_SECONDS", "WheelFolders", "listing", "mtime", "settled", "upload_time"]

logger = logging.getLogger(__name__)

# Seconds between two looks at a folder for a change: no request pays a walk, or more
# than a stat now and then.
WATCH_SECONDS = 1.0
_CHUNK = 1 << 20
_DIST_SUFFIXES = (".whl", ".tar.gz", ".zip")


class WheelFolders:
    """The distributions of the folders *dirs*, looked at again at most once a
    WATCH_SECONDS of *clock*."""

    def __init__(self, dirs: Tuple[str, ...], clock: Callable[[], float] = time.monotonic) -> None:
        self.dirs = dirs
        self._clock = clock
        self._lock = threading.Lock()
        # The files by project, and the folders' mtimes they were listed at.
        self._listed: Tuple[tuple, Dict[str, list]] = ((), {})
        self._next_look = 0.0
        self._hashes: Dict[tuple, str] = {}  # (path, size, mtime) -> sha256
        self._told_unnamed: set = set()  # files of a distribution's suffix but no such name
        # Listed here, before any request: one asking during a later listing gets the
        # last one, never none.
        self.projects()

    def projects(self) -> Dict[str, list]:
        """Project -> [(file name, path)]: listed again only once a folder's mtime
        changed (a file added, removed or renamed)."""
        now = self._clock()
        with self._lock:
            stamps, projects = self._listed
            if not self.dirs or now < self._next_look:
                return projects
            self._next_look = now + WATCH_SECONDS
        if stamps and all(mtime(path) == seen for path, seen in stamps):
            return projects  # a folder added or removed changes its parent's mtime too
        folders = [(top, listing(top)) for top in self.dirs]
        folders += [(entry.path, None) for _, entries in folders for entry in entries if entry.is_dir()]
        new_stamps = tuple((path, mtime(path)) for path, _ in folders)
        if new_stamps == stamps:
            return projects
        if not all(settled(seen) for _, seen in new_stamps):
            new_stamps = ()  # a change within the mtime's resolution may follow: list again next time
        projects = {}
        for path, entries in folders:
            for item in listing(path) if entries is None else entries:
                if item.is_file() and is_dist_filename(item.name):
                    projects.setdefault(parse_dist_filename(item.name).project, []).append((item.name, item.path))
                elif item.name.endswith(_DIST_SUFFIXES) and item.path not in self._told_unnamed:
                    # An sdist of old setuptools ("acme-billing-1.0.tar.gz") says no
                    # project unambiguously: said once, so that it is not missed silently.
                    self._told_unnamed.add(item.path)
                    logger.warning("%s is not named as a wheel (PEP 427) or an sdist (PEP 625) is: not served",
                                   item.path)
        with self._lock:
            self._listed = (new_stamps, projects)
        return projects

    def files(self, project: str) -> list:
        """(file name, path, stat) of *project*'s files."""
        found = []
        for name, path in self.projects().get(project, ()):
            try:
                found.append((name, path, os.stat(path)))
            except OSError:  # removed since the listing: the others stand
                continue
        return found

    def info(self, path: str, st: os.stat_result) -> dict:
        """What an upload's info holds, for the file at *path* (its hash computed once
        while its size and time stay the same)."""
        key = (path, st.st_size, st.st_mtime_ns)
        digest = self._hashes.get(key)
        if digest is None:
            digest = _sha256(path)
            with self._lock:
                self._hashes[key] = digest
        return {"sha256": digest, "size": st.st_size, "upload-time": upload_time(st.st_mtime)}


def mtime(path: str) -> Optional[int]:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def settled(seen: Optional[int]) -> bool:
    """Whether a folder's mtime is old enough to tell a later change (file systems keep
    it to a few ms, some to a second or two)."""
    return seen is not None and time.time() - seen / 1e9 > 2.0


def listing(folder: str) -> list:
    """The entries of *folder* by name, or none if it cannot be read."""
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda entry: entry.name)
    except OSError:
        return []


def upload_time(seconds: float) -> str:
    """PEP 700 ``upload-time``: ISO 8601 in UTC, with microseconds."""
    whole = int(seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((seconds - whole) * 1e6):06d}Z"


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
