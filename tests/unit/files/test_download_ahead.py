"""DownloadAhead's bookkeeping: which wheels a client's first download queues, by the
clock, within the cap's share. The file cache is a stand-in that writes what it is asked
to store (the real one is driven through a proxy in tests/system/test_download_ahead.py)."""

from __future__ import annotations

import os
import threading

import pytest

from proxpi_min.core.simple import FileEntry
from proxpi_min.files.download_ahead import SESSION_SECONDS, DownloadAhead
from proxpi_min.files.layout import Target
from proxpi_min.infra.metrics import Metrics

CAP = 1000
UNKNOWN_SIZE = 100  # what the stand-in stores of a wheel the index gives no size for


class _Files:
    def __init__(self, root: str, cap: int = 10**9) -> None:
        self.root = root
        self.cap = cap
        self.stored: list = []
        self.fetching = 0
        self.most_fetching = 0  # the most fetches at once
        self._lock = threading.Lock()

    def has(self, project, entry, metadata=False) -> bool:
        return entry.filename in self.stored

    def ensure(self, project, entry, metadata=False, index="") -> bool:
        with self._lock:
            self.fetching += 1
            self.most_fetching = max(self.most_fetching, self.fetching)
        path = Target(self.root, project, entry, metadata).path
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as file:
            file.write(bytes(UNKNOWN_SIZE if entry.size is None else entry.size))
        with self._lock:
            self.fetching -= 1
            self.stored.append(entry.filename)
        return True


def _wheel(name: str, version: str, size=None) -> FileEntry:
    filename = f"{name}-{version}-py3-none-any.whl"
    return FileEntry(filename, f"https://files.example/{filename}", size=size)


@pytest.fixture
def root(tmp_path) -> str:
    return str(tmp_path)


def _ahead(now: list, root: str, cap: int = 10**9) -> tuple:
    files = _Files(root, cap)
    return files, DownloadAhead(files, 2, Metrics(), clock=lambda: now[0])


def test_a_resolution_older_than_a_session_is_forgotten(root):
    now = [1000.0]
    files, ahead = _ahead(now, root)
    ahead.metadata_read("pip a", "lib", _wheel("lib", "1.0"), "")
    now[0] += SESSION_SECONDS + 1
    ahead.file_requested("pip a", "app", "app-1.0-py3-none-any.whl")
    assert ahead.wait(5) and files.stored == []
    # A read within the session starts a new resolution, which a download then fetches.
    ahead.metadata_read("pip a", "lib", _wheel("lib", "2.0"), "")
    ahead.file_requested("pip a", "app", "app-1.0-py3-none-any.whl")
    assert ahead.wait(5) and files.stored == ["lib-2.0-py3-none-any.whl"]


def test_a_resolution_is_fetched_once_and_not_after_close(root):
    now = [0.0]
    files, ahead = _ahead(now, root)
    ahead.metadata_read("uv b", "lib", _wheel("lib", "1.0"), "")
    ahead.file_requested("uv b", "app", "app-1.0-py3-none-any.whl")
    ahead.file_requested("uv b", "other", "other-1.0-py3-none-any.whl")
    assert ahead.wait(5) and files.stored == ["lib-1.0-py3-none-any.whl"]
    ahead.close(5)
    ahead.metadata_read("uv b", "more", _wheel("more", "1.0"), "")
    ahead.file_requested("uv b", "app", "app-1.0-py3-none-any.whl")
    assert ahead.wait(5) and files.stored == ["lib-1.0-py3-none-any.whl"]


def test_an_sdist_downloaded_while_resolving_fetches_nothing_ahead(root):
    now = [0.0]
    files, ahead = _ahead(now, root)
    ahead.metadata_read("pip c", "lib", _wheel("lib", "1.0"), "")
    ahead.file_requested("pip c", "old", "old-1.0.tar.gz")  # pip builds its metadata
    assert ahead.wait(5) and files.stored == []
    ahead.file_requested("pip c", "app", "app-1.0-py3-none-any.whl")
    assert ahead.wait(5) and files.stored == ["lib-1.0-py3-none-any.whl"]


def _resolve(ahead: DownloadAhead, client: str, *wheels: FileEntry) -> None:
    for wheel in wheels:
        ahead.metadata_read(client, wheel.filename.partition("-")[0], wheel, "")


def test_wheels_ahead_of_their_client_take_at_most_half_the_cap(root):
    now = [0.0]
    files, ahead = _ahead(now, root, CAP)
    wheels = [_wheel(f"lib{n}", "1.0", size=200) for n in range(4)]
    _resolve(ahead, "pip d", *wheels)
    ahead.file_requested("pip d", "app", "app-1.0-py3-none-any.whl")
    assert ahead.wait(5) and sorted(files.stored) == ["lib0-1.0-py3-none-any.whl", "lib1-1.0-py3-none-any.whl"]
    # Each wheel the client asks for leaves room for the next.
    ahead.file_requested("pip d", "lib0", "lib0-1.0-py3-none-any.whl")
    assert ahead.wait(5) and files.stored[2:] == ["lib2-1.0-py3-none-any.whl"]
    # One it asks for while it waits, it fetches itself.
    ahead.file_requested("pip d", "lib3", "lib3-1.0-py3-none-any.whl")
    ahead.file_requested("pip d", "lib1", "lib1-1.0-py3-none-any.whl")
    assert ahead.wait(5) and len(files.stored) == 3


def test_a_wheel_larger_than_half_the_cap_is_not_fetched_ahead(root):
    now = [0.0]
    files, ahead = _ahead(now, root, CAP)
    _resolve(ahead, "pip e", _wheel("big", "1.0", size=CAP // 2 + 1), _wheel("small", "1.0", size=10))
    ahead.file_requested("pip e", "app", "app-1.0-py3-none-any.whl")
    assert ahead.wait(5) and files.stored == ["small-1.0-py3-none-any.whl"]


def test_wheels_of_unknown_size_are_fetched_one_at_a_time_while_they_fit(root):
    now = [0.0]
    files, ahead = _ahead(now, root, 5 * UNKNOWN_SIZE)
    _resolve(ahead, "uv f", *[_wheel(f"lib{n}", "1.0") for n in range(5)])
    ahead.file_requested("uv f", "app", "app-1.0-py3-none-any.whl")
    # Half the cap holds two and a half of them: each counted as large as the largest
    # stored ahead, a third does not fit beside two.
    assert ahead.wait(5) and len(files.stored) == 2
    assert files.most_fetching == 1


def test_wheels_fetched_ahead_and_never_asked_for_stop_counting_after_a_while(root):
    now = [0.0]
    files, ahead = _ahead(now, root, CAP)
    _resolve(ahead, "pip g", _wheel("lib0", "1.0", size=400))
    ahead.file_requested("pip g", "app", "app-1.0-py3-none-any.whl")
    assert ahead.wait(5) and files.stored == ["lib0-1.0-py3-none-any.whl"]
    _resolve(ahead, "pip h", _wheel("lib1", "1.0", size=400))
    ahead.file_requested("pip h", "app", "app-1.0-py3-none-any.whl")
    assert ahead.wait(5) and len(files.stored) == 1  # lib0 is still ahead of its client
    now[0] += SESSION_SECONDS + 1  # which went on without it (it had a copy of its own)
    _resolve(ahead, "pip h", _wheel("lib1", "1.0", size=400))
    ahead.file_requested("pip h", "app", "app-1.0-py3-none-any.whl")
    assert ahead.wait(5) and files.stored == ["lib0-1.0-py3-none-any.whl", "lib1-1.0-py3-none-any.whl"]
