"""Child processes that hold the cache dir's lock files as a proxy's downloads do, for
tests of what a live or a killed writer leaves."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.proxy import REPO_ROOT

# A download in progress: its lock taken and its record written (its temp file and the
# size it reserved), 500 bytes written; it prints the temp file's path and lets go
# (cleanly) when its stdin closes; the test may instead kill it.
WRITER = """
import os, sys
from proxpi_min.infra.atomic import LockFile, lock_path, temp_path
target = sys.argv[1]
lock = LockFile(lock_path(target))
assert lock.acquire(wait=False)
temp = temp_path(os.path.dirname(target))
lock.record(os.path.basename(temp) + " 1000")
with open(temp, "wb") as file:
    file.write(b"x" * 500)
print(temp, flush=True)
sys.stdin.read()
lock.release()
"""


def child(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=str(REPO_ROOT),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def writing(target: str) -> tuple:
    """(the writer process, its temp file) for *target*, mid-download."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    process = child(WRITER, target)
    return process, process.stdout.readline().strip()
