"""What sharing a cache dir costs with many files: a full walk (what a process does
at start) against the ledger and journal that spare every other walk.

    python bench/shared_dir.py [--files 100000] [--dir /path/on/the/disk/to/measure]

Builds N one-byte stored files in the proxy's layout (project/sha256-.../name) in a
temp dir (or under --dir), then times, median of --reps: the start of the first
process on the directory (``FileCache``: walk, stat, sort, journal snapshot, under the
ledger lock); the start of a process joining it (reads the journal instead); a store's
round trip as another process sees it (lock, read 100 new lines, append one, write the
record, unlock); a ``Ledger.read`` (what the home page does); a download's reservation
made and dropped (two more ledger round trips). Standard library only; removes what it
made.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from proxpi_min.files.file_cache import FileCache  # noqa: E402
from proxpi_min.files.ledger import JournalEntry, Ledger  # noqa: E402

PER_PROJECT = 20  # files per project directory, about PyPI's median


def build(root: str, files: int) -> None:
    for n in range(files):
        project = f"project-{n // PER_PROJECT}"
        folder = os.path.join(root, project, f"sha256-{n:064x}")
        os.makedirs(folder)
        with open(os.path.join(folder, f"{project}-{n}-py3-none-any.whl"), "wb") as file:
            file.write(b"x")


def timed(function, reps: int) -> float:
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--dir", default=None, help="where to build the tree (default: a temp dir)")
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="proxpi-bench-", dir=args.dir)
    try:
        root = os.path.join(base, "files")
        start = time.perf_counter()
        build(root, args.files)
        print(f"built {args.files} files in {time.perf_counter() - start:.1f} s")
        def start() -> FileCache:
            return FileCache(root, 1 << 60, upstream=None)

        first = timed(lambda: start().close(), args.reps)
        print(f"first process starts ({args.files} files, warm cache): {first * 1000:.0f} ms")
        cache = start()
        print(f"journal: {os.path.getsize(os.path.join(root, '.journal')) / 1e6:.1f} MB")
        print(f"a process joins: {timed(lambda: start().close(), args.reps) * 1000:.0f} ms")
        ledger = Ledger(root)
        with ledger.locked() as handle:
            position = handle.changes(None)[1]

        def store_round_trip() -> None:
            nonlocal position
            with cache._accounting._ledger.locked() as handle:  # another process adds 100 lines
                handle.append([JournalEntry(f"p/x/f-{n}.whl", 1, 1.0) for n in range(100)], None)
            with ledger.locked() as handle:
                entries, position, _ = handle.changes(position)
                position = handle.append([JournalEntry("p/x/g.whl", 1, 1.0)], position)
                handle.write(handle.record.used, handle.record.count)

        print(f"a store, with 100 lines from others to read: {timed(store_round_trip, args.reps * 20) * 1e6:.0f} us")
        print(f"ledger read (stats): {timed(ledger.read, args.reps * 200) * 1e6:.0f} us")

        def reservation_round_trip() -> None:  # what a download adds: reserve, then release
            for change in ({"p/x/.tmp-host-1-00": 1}, {}):
                with ledger.locked() as handle:
                    handle.reserve({**handle.reservations(), **change} if change else {})

        print(f"a reservation made and dropped: {timed(reservation_round_trip, args.reps * 200) * 1e6:.0f} us")
        cache.close()
        ledger.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
