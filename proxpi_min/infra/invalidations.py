"""With ``--workers``: an invalidation (``DELETE /cache/...``) answered by one worker
reaches the others. The worker that answers appends it to one file in the run dir; every
worker reads what the others appended, every INTERVAL, and forgets the same pages."""

from __future__ import annotations

import logging
import os
import threading
from typing import Callable, Optional

__all__ = ["INTERVAL", "Invalidations"]

logger = logging.getLogger(__name__)

INTERVAL = 0.2  # how long after the answer the other workers ask upstream too
NAME = "invalidations"
_LIST = "*"  # the project list (project names are never "*")


class Invalidations:
    """This worker's view of the run dir's invalidations: :meth:`tell` shares one,
    *forget* (a project name, or None for the project list) is called for the others'."""

    def __init__(self, run_dir: str, forget: Callable[[Optional[str]], None], interval: float = INTERVAL) -> None:
        self._path = os.path.join(run_dir, NAME)
        self._forget = forget
        self._interval = interval
        self._token = f"{os.getpid()}-{os.urandom(4).hex()}"  # a restarted worker's lines are not its own
        try:
            stat = os.stat(self._path)  # a worker starts with nothing to forget
            self._file, self._offset = stat.st_ino, stat.st_size
        except OSError:
            self._file, self._offset = None, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="invalidations", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def tell(self, project: Optional[str]) -> None:
        """Share an invalidation of *project* (None: the project list) done here."""
        line = f"{self._token} {project or _LIST}\n".encode()
        try:
            fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, line)  # one small append: whole, whoever else appends
            finally:
                os.close(fd)
        except OSError as exc:
            logger.warning("cannot tell the other workers of an invalidation: %s", exc)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.read()

    def read(self) -> None:
        """Forget what the other workers invalidated since the last read."""
        try:
            with open(self._path, "rb") as file:
                stat = os.fstat(file.fileno())
                if stat.st_ino != self._file or stat.st_size < self._offset:  # a new file: read from its start
                    self._file, self._offset = stat.st_ino, 0
                file.seek(self._offset)
                data = file.read()
        except OSError:  # none yet, or the run dir is being removed
            return
        complete = data[: data.rfind(b"\n") + 1]  # a line still being appended waits
        self._offset += len(complete)
        for line in complete.decode("utf-8", "replace").splitlines():
            token, _, project = line.partition(" ")
            if token != self._token and project:
                self._forget(None if project == _LIST else project)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
