"""Everything mutable about the fake upstream index, behind one lock and without I/O:
the files it lists, injected faults, throttling, held responses and the requests it got."""

from __future__ import annotations

import collections
import dataclasses
import threading
from typing import NamedTuple

from .cache_dir import WAIT
from .dists import canonicalize
from .upstream_render import FileEntry

__all__ = ["ALL_PATHS", "FAULT_MODES", "Hold", "IndexState", "RequestRecord", "path_matches"]

FAULT_MODES = ("500", "503", "hang", "close", "truncate", "corrupt", "midway")
ALL_PATHS = "*"
# A held response goes on by itself after this long, so that a proxy that does not
# stream cannot hang a test; the test then fails on the hold's state.
_HOLD_BACKSTOP = WAIT


class RequestRecord(NamedTuple):
    """A request the upstream received. ``path`` is percent-decoded, without query;
    ``headers`` has lowercased names."""

    method: str
    path: str
    headers: dict


class Hold:
    """One held file response: ``first`` bytes go out, then the rest waits for
    :meth:`open` (or the backstop). ``mode``: "ok", "corrupt" (the first byte of the
    rest flipped) or "cut" (hang up instead of sending the rest)."""

    def __init__(self, first: int, mode: str, ranged: bool = False) -> None:
        if mode not in ("ok", "corrupt", "cut"):
            raise ValueError(f"unknown hold mode {mode!r}")
        self.first = first
        self.mode = mode
        self.ranged = ranged  # holds a range response (206), not a whole one
        self.sent_first = threading.Event()  # the first part is on the wire
        self.passed = False  # the upstream went past the gate (opened or backstop)
        self._open = threading.Event()

    def open(self) -> None:
        self._open.set()

    def wait(self) -> None:
        self._open.wait(_HOLD_BACKSTOP)
        self.passed = True


@dataclasses.dataclass
class _Project:
    display: str
    files: dict  # filename -> FileEntry, in insertion order


@dataclasses.dataclass
class _Fault:
    mode: str
    remaining: int | None  # None: forever


def path_matches(path: str, pattern: str) -> bool:
    """True if ``pattern`` is ``path`` or a suffix of it starting at a ``/`` boundary.

    ``"alpha/"`` and ``"/simple/alpha/"`` both match ``/simple/alpha/``; ``"pha/"``
    does not, and neither does ``"simple/"`` (it matches ``/simple/`` only).
    """
    if pattern == ALL_PATHS or path == pattern:
        return True
    if not path.endswith(pattern):
        return False
    if pattern.startswith("/"):
        return True
    return path[: len(path) - len(pattern)].endswith("/")


class IndexState:
    """Everything mutable about the fake index, behind one lock. No I/O."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._projects: dict[str, _Project] = {}
        self._faults: dict[str, _Fault] = {}
        self._throttle: tuple[int, float] | None = None
        self._chunked = False
        self._holds: dict[str, list[Hold]] = {}  # file name -> holds not yet taken
        self._all_holds: list[Hold] = []
        self._hits: collections.Counter = collections.Counter()
        self._requests: list[RequestRecord] = []

    # -- content ---------------------------------------------------------

    def add(self, entry: FileEntry) -> None:
        key = entry.dist.normalized
        with self._lock:
            project = self._projects.setdefault(key, _Project(entry.dist.project, {}))
            project.files[entry.dist.filename] = entry

    def add_project(self, name: str) -> None:
        with self._lock:
            self._projects.setdefault(canonicalize(name), _Project(name, {}))

    def remove(self, name: str, filename: str | None = None) -> None:
        key = canonicalize(name)
        with self._lock:
            if filename is None:
                self._projects.pop(key, None)
            elif key in self._projects:
                self._projects[key].files.pop(filename, None)

    def project_names(self) -> list[str]:
        with self._lock:
            return [p.display for p in self._projects.values()]

    def project(self, normalized: str) -> tuple[str, list[FileEntry]] | None:
        with self._lock:
            project = self._projects.get(normalized)
            if project is None:
                return None
            return project.display, list(project.files.values())

    def find_file(self, normalized: str, filename: str) -> FileEntry | None:
        with self._lock:
            project = self._projects.get(normalized)
            return None if project is None else project.files.get(filename)

    # -- faults ----------------------------------------------------------

    def set_fault(self, pattern: str, mode: str, times: int | None) -> None:
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}; expected one of {FAULT_MODES}")
        with self._lock:
            self._faults[pattern] = _Fault(mode, times)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def take_fault(self, path: str) -> str | None:
        """The fault mode for this request (consuming one use of it), or None."""
        with self._lock:
            for pattern, fault in list(self._faults.items()):
                if path_matches(path, pattern):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining <= 0:
                            del self._faults[pattern]
                    return fault.mode
        return None

    def set_throttle(self, value: tuple[int, float] | None) -> None:
        with self._lock:
            self._throttle = value

    def throttle(self) -> tuple[int, float] | None:
        with self._lock:
            return self._throttle

    def set_chunked(self, value: bool) -> None:
        with self._lock:
            self._chunked = value

    def chunked(self) -> bool:
        with self._lock:
            return self._chunked

    def add_hold(self, filename: str, hold: Hold) -> None:
        with self._lock:
            self._holds.setdefault(filename, []).append(hold)
            self._all_holds.append(hold)

    def take_hold(self, filename: str, ranged: bool = False) -> Hold | None:
        """The oldest hold waiting for this file's next GET, whole or *ranged*
        (consuming it), or None."""
        with self._lock:
            holds = [hold for hold in self._holds.get(filename, ()) if hold.ranged == ranged]
            if not holds:
                return None
            self._holds[filename].remove(holds[0])
            return holds[0]

    def open_holds(self) -> None:
        with self._lock:
            holds = list(self._all_holds)
        for hold in holds:
            hold.open()

    # -- accounting ------------------------------------------------------

    def record(self, method: str, path: str, headers: dict) -> None:
        with self._lock:
            self._hits[(method, path)] += 1
            self._requests.append(RequestRecord(method, path, headers))

    def hits(self, pattern: str, method: str | None) -> int:
        with self._lock:
            return sum(
                count
                for (m, path), count in self._hits.items()
                if (method is None or m == method) and path_matches(path, pattern)
            )

    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    def reset_hits(self) -> None:
        with self._lock:
            self._hits.clear()
            self._requests.clear()
