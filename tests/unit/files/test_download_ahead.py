"""DownloadAhead's bookkeeping: which wheels a client's first download queues, by the
clock. The file cache is a stand-in that records what it is asked to store (the real
one is driven through a proxy in tests/system/test_download_ahead.py)."""

from __future__ import annotations

from proxpi_min.core.simple import FileEntry
from proxpi_min.files.download_ahead import SESSION_SECONDS, DownloadAhead
from proxpi_min.infra.metrics import Metrics


class _Files:
    def __init__(self) -> None:
        self.stored: list = []

    def has(self, project, entry, metadata=False) -> bool:
        return entry.filename in self.stored

    def ensure(self, project, entry, metadata=False, index="") -> bool:
        self.stored.append(entry.filename)
        return True


def _wheel(name: str, version: str) -> FileEntry:
    filename = f"{name}-{version}-py3-none-any.whl"
    return FileEntry(filename, f"https://files.example/{filename}")


def _ahead(now: list) -> tuple:
    files = _Files()
    return files, DownloadAhead(files, 2, Metrics(), clock=lambda: now[0])


def test_a_resolution_older_than_a_session_is_forgotten():
    now = [1000.0]
    files, ahead = _ahead(now)
    ahead.metadata_read("pip a", "lib", _wheel("lib", "1.0"), "")
    now[0] += SESSION_SECONDS + 1
    ahead.file_requested("pip a", "app", "app-1.0-py3-none-any.whl")
    assert ahead.wait(5) and files.stored == []
    # A read within the session starts a new resolution, which a download then fetches.
    ahead.metadata_read("pip a", "lib", _wheel("lib", "2.0"), "")
    ahead.file_requested("pip a", "app", "app-1.0-py3-none-any.whl")
    assert ahead.wait(5) and files.stored == ["lib-2.0-py3-none-any.whl"]


def test_a_resolution_is_fetched_once_and_not_after_close():
    now = [0.0]
    files, ahead = _ahead(now)
    ahead.metadata_read("uv b", "lib", _wheel("lib", "1.0"), "")
    ahead.file_requested("uv b", "app", "app-1.0-py3-none-any.whl")
    ahead.file_requested("uv b", "other", "other-1.0-py3-none-any.whl")
    assert ahead.wait(5) and files.stored == ["lib-1.0-py3-none-any.whl"]
    ahead.close(5)
    ahead.metadata_read("uv b", "more", _wheel("more", "1.0"), "")
    ahead.file_requested("uv b", "app", "app-1.0-py3-none-any.whl")
    assert ahead.wait(5) and files.stored == ["lib-1.0-py3-none-any.whl"]


def test_an_sdist_downloaded_while_resolving_fetches_nothing_ahead():
    now = [0.0]
    files, ahead = _ahead(now)
    ahead.metadata_read("pip c", "lib", _wheel("lib", "1.0"), "")
    ahead.file_requested("pip c", "old", "old-1.0.tar.gz")  # pip builds its metadata
    assert ahead.wait(5) and files.stored == []
    ahead.file_requested("pip c", "app", "app-1.0-py3-none-any.whl")
    assert ahead.wait(5) and files.stored == ["lib-1.0-py3-none-any.whl"]
