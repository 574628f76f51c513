"""With ``--workers``: each worker's numbers as a file in the run dir, rewritten every
second, and read back by whichever worker answers ``/metrics`` or the home page (summed by
:mod:`.aggregate`)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from typing import Callable, List

from ..core.units import parse_decimal
from .atomic import pid_alive, write_atomically

__all__ = ["INTERVAL", "Snapshots"]

logger = logging.getLogger(__name__)

# How far behind another worker's numbers may be: a scrape sees its file as of its last
# write. A file is a few kB; written only when it changed.
INTERVAL = 1.0
SUFFIX = ".json"


class Snapshots:
    """This worker's file in *run_dir* (the supervisor's, local and private to one proxy
    run), and its siblings' beside it.

    *take* returns this process's numbers as a JSON-ready dict. A file is named for its
    process and a random token, so a restarted worker never writes over the file of the
    one it replaces: a dead worker's counts stay in the sum.
    """

    def __init__(self, run_dir: str, take: Callable[[], dict], interval: float = INTERVAL) -> None:
        self.run_dir = run_dir
        self._take = take
        self._interval = interval
        self._path = os.path.join(run_dir, f"worker-{os.getpid()}-{os.urandom(4).hex()}{SUFFIX}")
        # Held from taking the numbers to replacing the file, so that the file only
        # moves forward: a reader must never see an older state after a newer one. Only
        # this class takes it, and the file is small and local.
        self._lock = threading.Lock()
        self._written = b""
        self._failing = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="snapshots", daemon=True)

    def start(self) -> None:
        self.publish()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.publish()

    def publish(self) -> dict:
        """Take this process's numbers, write them (if changed) and return them."""
        with self._lock:
            numbers = self._take()
            data = json.dumps(numbers, separators=(",", ":")).encode()
            if data != self._written:
                try:
                    write_atomically(self._path, data)
                except OSError as exc:  # e.g. the run dir's file system is full
                    if not self._failing:
                        logger.warning("cannot share this worker's numbers with the others: %s", exc)
                    self._failing = True
                else:
                    self._written, self._failing = data, False
        return numbers

    def gather(self) -> List[dict]:
        """Every worker's numbers, this one's first (taken now and written first, so
        that the next reader, whichever worker it is, sees at least as much); each
        with ``"live"``: whether its process still runs."""
        own = dict(self.publish(), live=True)
        others = []
        with contextlib.suppress(FileNotFoundError):  # the supervisor is removing the dir
            names = sorted(os.listdir(self.run_dir))
            for name in names:
                path = os.path.join(self.run_dir, name)
                if not name.endswith(SUFFIX) or path == self._path:
                    continue
                try:
                    with open(path, "rb") as file:
                        numbers = json.load(file)
                except (OSError, ValueError) as exc:  # replaced whole, so not a torn file
                    logger.debug("skipped the snapshot %s: %s", name, exc)
                    continue
                numbers["live"] = _alive(name)
                others.append(numbers)
        return [own, *others]

    def close(self) -> None:
        """Stop the writer and write the final numbers (after the drain: every request)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.publish()


def _alive(name: str) -> bool:
    """Whether the worker whose file is *name* still runs (the run dir is local, so its
    process id is one of this host's)."""
    pid = parse_decimal(name[len("worker-") :].partition("-")[0])
    return pid is not None and pid_alive(pid)
