"""Where things live in a cache dir: its folders, and the path of each stored file.

    <cache dir>/files/<project>/<algorithm>-<digest>/<filename>
    <cache dir>/files/<project>/<algorithm>-<digest>/<filename>.metadata   (PEP 658)
    <cache dir>/index/<hash of the index URL>/...                          (saved pages)
    <cache dir>/local/<project>/<filename>[.metadata]                      (uploads, files.local)

The folder is named by the index's hash of the distribution (``unverified`` when the
index gives none); its PEP 658 metadata file sits beside it, under the same folder.
Every part comes from validated names and the index's own data, never from raw request
text. Names starting with a dot are bookkeeping (``infra.atomic``), never stored files.
"""

from __future__ import annotations

import hashlib
import os
from typing import Iterator, NamedTuple, Optional

from ..core.names import NormalizedName, check_filename
from ..core.simple import FileEntry
from ..infra.atomic import is_private
from .integrity import FileHash, best_hash

__all__ = [
    "FILES_DIR",
    "INDEX_DIR",
    "LOCAL_DIR",
    "METADATA_SUFFIX",
    "StoredFile",
    "Target",
    "files_root",
    "index_root",
    "local_root",
    "parse_stored",
    "remove_empty_folders",
    "stored_files",
]

FILES_DIR = "files"
INDEX_DIR = "index"  # saved pages (``index.page_store`` writes under it)
LOCAL_DIR = "local"  # uploaded packages (``files.local``): never evicted, not in the cap
METADATA_SUFFIX = ".metadata"  # PEP 658: the metadata file's URL and name
UNVERIFIED = "unverified"  # the folder of files the index gives no hash for


def files_root(cache_dir: str) -> str:
    """The folder of stored distribution files (the file cache's root)."""
    return os.path.join(cache_dir, FILES_DIR)


def index_root(cache_dir: str) -> str:
    """The folder of saved index pages."""
    return os.path.join(cache_dir, INDEX_DIR)


def local_root(cache_dir: str) -> str:
    """The folder of the local index (uploaded packages)."""
    return os.path.join(cache_dir, LOCAL_DIR)


class Target:
    """What to fetch and where it lives: a distribution file or its metadata file."""

    def __init__(self, root: str, project: NormalizedName, entry: FileEntry, metadata: bool, index: str = "") -> None:
        check_filename(entry.filename)
        self.index = index  # the listing index's URL without credentials, for metrics
        dist_hash = best_hash(entry.hashes)
        folder = f"{dist_hash.algorithm}-{dist_hash.digest}" if dist_hash else UNVERIFIED
        suffix = METADATA_SUFFIX if metadata else ""
        self.filename = entry.filename + suffix
        self.path = os.path.join(root, project, folder, self.filename)
        self.url = entry.url + suffix
        self.hash: Optional[FileHash] = best_hash(entry.metadata or ()) if metadata else dist_hash
        self.size = None if metadata else entry.size
        self.upstream_metadata = entry.metadata is not None  # the index has a .metadata for it
        # Files never change (PyPI refuses a reused file name), so their hash is a
        # strong validator; without one, there is no ETag.
        self.etag = f'"{self.hash.digest[:40]}"' if self.hash else None


class StoredFile(NamedTuple):
    """What a path under the files root says of the file there."""

    project: str  # its first folder (a file put at the root by hand: its own name)
    filename: str
    # The distribution's hash its folder names; None for "unverified", or for a path not
    # <project>/<folder>/<filename> (put there by hand).
    hash: Optional[FileHash]
    metadata: bool  # a PEP 658 metadata file: its own hash is on the page, not in the path


def parse_stored(relative: str) -> StoredFile:
    """Read back the parts of a path relative to the files root."""
    parts = relative.split(os.sep)
    found = None
    if len(parts) == 3:
        algorithm, _, digest = parts[1].partition("-")
        if algorithm in hashlib.algorithms_guaranteed and digest:
            found = FileHash(algorithm, digest)
    return StoredFile(parts[0], parts[-1], found, parts[-1].endswith(METADATA_SUFFIX))


def stored_files(root: str) -> Iterator[str]:
    """The path of every stored file under *root* (bookkeeping left out), in name order
    within each folder."""
    for directory, _, names in os.walk(root):
        for name in sorted(names):
            if not is_private(name):
                yield os.path.join(directory, name)


def remove_empty_folders(root: str, path: str) -> None:
    """Remove the folders that the removal of the stored file at *path* left empty: its
    hash folder, then its project's (never *root*). rmdir takes only an empty folder, so
    one a writer is in (its lock file is its first file there) stays."""
    folder = os.path.dirname(path)
    while folder.startswith(root + os.sep):
        try:
            os.rmdir(folder)
        except FileNotFoundError:  # removed by another process: its parent may be empty still
            pass
        except OSError:  # not empty: nor is any folder above it
            return
        folder = os.path.dirname(folder)
