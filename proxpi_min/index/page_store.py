"""Index pages saved under the cache dir, so a restarted proxy can serve what it saw
before even when no upstream answers (and so a copied cache dir works offline).

A project page is saved as the index sent it, after a line of JSON that says how to
read it (format 2): writing the bytes costs next to nothing, where encoding the parsed
page cost as much as parsing it. The project list, and pages saved by earlier versions,
are the parsed value as JSON (format 1).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from typing import Any, NamedTuple, Optional, Union

from ..core.urls import redact_url
from ..core.names import NormalizedName
from ..infra.atomic import write_atomically
from ..core.errors import BadUpstreamPage
from ..core.simple import FileEntry, ProjectList, ProjectPage, servable
from ..core.simple_parse import parse_project_page
from .page_budget import SavedPagesBudget

__all__ = ["OtherFormat", "PageStore", "RawPage", "SavedPage"]

logger = logging.getLogger(__name__)

LIST_KEY = "_list"  # never a project name: those start with a letter or digit
URL_FILE = "_url"  # the index's URL (without credentials), for offline use of a copy
_FORMAT = 1  # the parsed value as JSON
_RAW_FORMAT = 2  # a JSON head line, then the page as the index sent it


class OtherFormat(ValueError):
    """A saved page written in another format version."""


class SavedPage(NamedTuple):
    value: Union[ProjectPage, ProjectList]
    url: str
    etag: Optional[str]
    last_modified: Optional[str]
    ask_again: bool = False  # its index said not to reuse it unasked (kept across a restart)


class RawPage(NamedTuple):
    """A project page as the index sent it (what it was parsed from)."""

    body: bytes
    content_type: str


def _encode(value: Union[ProjectPage, ProjectList]) -> Any:
    if isinstance(value, ProjectList):
        return {"names": value.names}
    return {
        "name": value.name,
        "files": value.files,  # tuples: json writes them as arrays
        "versions": list(value.versions),
        "all_sizes_known": value.all_sizes_known,
        "status": value.status,
        "status_reason": value.status_reason,
    }


def _pairs(value: Any) -> Optional[tuple]:
    return None if value is None else tuple(tuple(pair) for pair in value)


def _decode(data: Any) -> Union[ProjectPage, ProjectList]:
    if "names" in data:
        return ProjectList(data["names"])
    files = []
    for fields in data["files"]:
        entry = FileEntry(*fields)
        files.append(entry._replace(hashes=_pairs(entry.hashes), metadata=_pairs(entry.metadata)))
    return ProjectPage(
        NormalizedName(data["name"]),
        tuple(files),
        tuple(data["versions"]),
        data["all_sizes_known"],
        data.get("status"),
        data.get("status_reason"),
    )


class PageStore:
    """Saved pages of one index, under ``<cache dir>/index/<hash of the index URL>/``."""

    def __init__(self, cache_dir: str, index_url: str, budget: Optional[SavedPagesBudget] = None) -> None:
        # Named by the URL without credentials: no password to guess from the name,
        # and a changed password keeps the saved pages.
        self._index_url = redact_url(index_url)
        digest = hashlib.sha256(self._index_url.encode()).hexdigest()[:16]
        self.directory = os.path.join(cache_dir, "index", digest)
        self._budget = budget  # what every store's pages may take together

    @classmethod
    def saved_indexes(cls, cache_dir: str) -> list:
        """(index URL, store) for every index with pages saved under *cache_dir*."""
        found = []
        root = os.path.join(cache_dir, "index")
        with contextlib.suppress(OSError):
            for name in sorted(os.listdir(root)):
                with contextlib.suppress(OSError, ValueError):  # ValueError: not UTF-8
                    with open(os.path.join(root, name, URL_FILE), encoding="utf-8") as file:
                        url = file.read().strip()
                    store = cls(cache_dir, url)
                    store.directory = os.path.join(root, name)
                    found.append((url, store))
        return found

    def _path(self, key: str) -> str:
        # key is LIST_KEY or a NormalizedName, checked by names.parse_project_name
        return os.path.join(self.directory, key + ".json")

    def stamp(self, key: str) -> Optional[tuple]:
        """What tells the saved page of *key* changed (rewritten, replaced); None: none saved."""
        try:
            found = os.stat(self._path(key))
        except OSError:
            return None
        return found.st_mtime_ns, found.st_size, found.st_ino

    def load(self, key: str) -> Optional[SavedPage]:
        """The saved page for *key* (a project name or LIST_KEY), if any and readable."""
        try:
            return self.read(key)
        except (FileNotFoundError, OtherFormat):
            return None
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable saved page %s: %s", self._path(key), exc)
            return None

    def read(self, key: str) -> SavedPage:
        """The saved page for *key*, strictly (``verify`` reports what ``load`` skips).

        :raises OSError: it cannot be read (FileNotFoundError: there is none).
        :raises ValueError: it does not parse (OtherFormat: it is of another format
            version, which ``load`` skips quietly).
        """
        with open(self._path(key), "rb") as file:
            data = file.read()
        head, _, body = data.partition(b"\n")
        try:
            record = json.loads(head)
            if record.get("format") == _RAW_FORMAT and key != LIST_KEY:
                # A body cut off (a copy cut short, a disk's fault) may still parse.
                if len(body) != record["size"] or hashlib.sha256(body).hexdigest() != record["sha256"]:
                    raise ValueError("the page saved is cut off or altered")
                page = parse_project_page(body, record["content_type"], record["url"], NormalizedName(key))
                value: Union[ProjectPage, ProjectList] = servable(page)[0]
            elif record.get("format") == _FORMAT:
                value = _decode(record["value"])
                if isinstance(value, ProjectList) != (key == LIST_KEY):
                    raise ValueError("the page saved is of another kind than its name says")
            else:
                raise OtherFormat(f"format {record.get('format')!r}, not {_FORMAT} or {_RAW_FORMAT}")
            ask_again = record.get("ask_again") is True
            return SavedPage(value, record["url"], record["etag"], record["last_modified"], ask_again)
        except BadUpstreamPage as exc:
            raise ValueError(exc.message) from None
        except (KeyError, TypeError, AttributeError, RecursionError) as exc:  # RecursionError: "[[[[..."
            raise ValueError(f"{type(exc).__name__}: {exc}") from None

    def save(self, key: str, page: SavedPage, raw: Optional[RawPage] = None) -> bool:
        """Save *page*, as *raw* (what it was parsed from) if given; a failure (disk
        full, read-only) is logged and gives False."""
        record = {
            "format": _FORMAT if raw is None else _RAW_FORMAT,
            "saved": time.time(),
            "url": page.url,
            "etag": page.etag,
            "last_modified": page.last_modified,
        }
        if page.ask_again:
            record["ask_again"] = True
        if raw is None:
            record["value"] = _encode(page.value)
            data = json.dumps(record, separators=(",", ":")).encode()
        else:
            record.update(content_type=raw.content_type, size=len(raw.body), sha256=hashlib.sha256(raw.body).hexdigest())
            data = json.dumps(record, separators=(",", ":")).encode() + b"\n" + raw.body
        try:
            os.makedirs(self.directory, exist_ok=True)
            url_file = os.path.join(self.directory, URL_FILE)
            if not os.path.exists(url_file):  # the first save, or the folder was removed since
                write_atomically(url_file, self._index_url.encode(), durable=True)
            # Durable: a machine restarted during an outage serves what was saved.
            write_atomically(self._path(key), data, durable=True)
        except OSError as exc:
            logger.warning("cannot save index page %s: %s", self._path(key), exc)
            return False
        if self._budget is not None:
            self._budget.saved(self._path(key), len(data))
        return True

    def touch(self, key: str) -> bool:
        """The saved page for *key* was fetched again, unchanged: the most recently
        fetched now, the last a budget drops. False if none is saved (it could not be,
        or was pruned): save it again."""
        path = self._path(key)
        try:
            os.utime(path)
            size = os.stat(path).st_size
        except OSError:
            return False
        if self._budget is not None:
            self._budget.saved(path, size)
        return True

    def delete(self, key: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self._path(key))
        if self._budget is not None:
            self._budget.deleted(self._path(key))

    def saved_projects(self) -> list[str]:
        """Names of the projects with a saved page."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            return []
        return sorted(
            name[:-5] for name in names if name.endswith(".json") and name != LIST_KEY + ".json"
        )
