"""The simple repository API's data (PEP 503, 592, 658, 691, 700, 714, 792): the values
pages are parsed into (``simple_parse``) and rendered from (``render``), and what is done
with them whole (merging several indices' pages).
"""

from __future__ import annotations

import functools
import re
from typing import Any, Iterable, NamedTuple, Optional, Sequence

from .names import NormalizedName, canonicalize_name, is_safe_filename

__all__ = [
    "FileEntry", "Hashes", "JSON_TYPE", "HTML_TYPE", "HTML_TYPES", "ProjectList", "ProjectPage",
    "TEXT_HTML", "VERIFY_HASHES", "best_hash", "is_hex", "make_entry", "media_type",
    "merge_lists", "merge_pages", "servable", "with_metadata",
]

# The simple API's media types (PEP 691), and the plain HTML that PEP 503 pages are.
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPE = "application/vnd.pypi.simple.v1+html"
TEXT_HTML = "text/html"
HTML_TYPES = frozenset({HTML_TYPE, TEXT_HTML})
_LINE = re.compile(r"[^\n]+")
_HEX = re.compile(r"[0-9a-fA-F]+\Z")

# (algorithm, hexdigest) pairs, algorithm names lowercase as hashlib spells them.
Hashes = tuple  # tuple[tuple[str, str], ...]
# The hashes a downloaded file is checked against, strongest first.
VERIFY_HASHES = ("sha256", "sha512", "sha384", "blake2b", "sha3_256", "sha224", "sha1", "md5")


class FileEntry(NamedTuple):
    """One distribution file as an index lists it."""

    filename: str
    url: str  # absolute upstream URL, without fragment
    hashes: Hashes = ()
    requires_python: Optional[str] = None
    yanked: Optional[str] = None  # PEP 592: None = not yanked, else the reason ("" if none)
    metadata: Optional[Hashes] = None  # PEP 658/714: None = no .metadata file; () = no hash
    size: Optional[int] = None  # PEP 700
    upload_time: Optional[str] = None  # PEP 700
    gpg_sig: Optional[bool] = None
    provenance: Optional[str] = None  # PEP 740, an absolute https URL


# A FileEntry from all ten fields in order: tuple.__new__ directly, where FileEntry(...)
# would run namedtuple's __new__ in Python (parsing makes one per file of every page).
make_entry = functools.partial(tuple.__new__, FileEntry)


def with_metadata(entry: FileEntry, metadata: Optional[Hashes]) -> FileEntry:
    """*entry* with its ``metadata`` replaced (what ``_replace`` does, a third of the time)."""
    return make_entry(entry[:5] + (metadata,) + entry[6:])


class ProjectPage(NamedTuple):
    """A project's files, from one index or merged from several."""

    name: NormalizedName
    files: tuple  # tuple[FileEntry, ...]
    versions: tuple  # tuple[str, ...]
    all_sizes_known: bool = False  # True when every file has a size
    status: Optional[str] = None  # PEP 792: "active", "archived", "quarantined", "deprecated"
    status_reason: Optional[str] = None  # PEP 792: why the project has its status


class ProjectList:
    """Project display names, held as one newline-joined string to stay compact
    (PyPI lists close to a million names). Immutable."""

    __slots__ = ("names",)

    def __init__(self, names: str) -> None:
        object.__setattr__(self, "names", names)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("ProjectList is immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ProjectList) and other.names == self.names

    def __hash__(self) -> int:
        return hash(self.names)

    def __repr__(self) -> str:
        return f"ProjectList({len(self)} names)"

    def __reduce__(self):
        return ProjectList, (self.names,)

    @classmethod
    def from_names(cls, names: Iterable[str]) -> "ProjectList":
        return cls("\n".join(names))

    def __iter__(self):
        # One name at a time: a list of every name of PyPI's would be large.
        return (match.group() for match in _LINE.finditer(self.names))

    def __len__(self) -> int:
        return self.names.count("\n") + 1 if self.names else 0


def best_hash(hashes: Hashes, preference: Sequence[str] = VERIFY_HASHES) -> Optional[tuple[str, str]]:
    """(algorithm, hexdigest) of the first algorithm in *preference* that *hashes* has,
    or None."""
    found = dict(hashes)
    for name in preference:
        if name in found:
            return name, found[name]
    return None


def media_type(content_type: Optional[str]) -> str:
    """The bare, lowercase media type of a Content-Type header (parameters dropped)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_hex(value: str) -> bool:
    """Whether *value* is a non-empty run of hexadecimal digits (a digest as written)."""
    return _HEX.match(value) is not None


def servable(page: ProjectPage) -> tuple:
    """(*page* without the files the file route would refuse, their names).

    A name that cannot be one safe path segment (``evil-1.0-py3-none-any.whl"><b>x.whl``)
    would be listed and then answered 400, and pip, having picked it, would fail: such
    entries are left out of the page instead.
    """
    refused = tuple(entry.filename for entry in page.files if not is_safe_filename(entry.filename))
    if not refused:
        return page, ()
    return page._replace(files=tuple(e for e in page.files if is_safe_filename(e.filename))), refused


def merge_pages(project: NormalizedName, pages: Iterable[ProjectPage]) -> ProjectPage:
    """One page from several indices' pages, first index first; a file name listed by
    several indices is kept from the first that lists it, the status (PEP 792) from the
    first that states one, but for a quarantine while other indices list files."""
    pages = list(pages)
    files: dict[str, FileEntry] = {}
    versions: dict[str, None] = {}
    sizes_known = True
    for page in pages:
        sizes_known = sizes_known and page.all_sizes_known
        versions.update(dict.fromkeys(page.versions))
        for entry in page.files:
            files.setdefault(entry.filename, entry)
    stated = next((page for page in pages if page.status is not None), pages[0])
    status = (stated.status, stated.status_reason)
    if status[0] == "quarantined" and files:  # that index withholds its own files, not the others'
        status = (None, None)
    return ProjectPage(project, tuple(files.values()), tuple(versions), sizes_known, *status)


def merge_lists(lists: Iterable[ProjectList]) -> ProjectList:
    """The union of several project lists, one name per normalised name."""
    lists = list(lists)
    if len(lists) == 1:
        return lists[0]
    seen: dict[str, str] = {}
    for project_list in lists:
        for name in project_list:
            seen.setdefault(canonicalize_name(name), name)
    return ProjectList.from_names(seen.values())
