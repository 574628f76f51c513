"""Parsers of the simple repository API's pages (PEP 503 HTML, PEP 691 JSON) into the
values of ``simple``; pure: bytes, media type and the page's URL in, immutable values out.
"""

from __future__ import annotations

import datetime
import hashlib
import html
import json
import re
import sys
import urllib.parse
from typing import Any, Iterable, Optional

from .anchors import read_anchors
from .errors import BadUpstreamPage
from .names import NormalizedName, version_from_filename
from .simple import (
    HTML_TYPES,
    JSON_TYPE,
    FileEntry,
    Hashes,
    ProjectList,
    ProjectPage,
    is_hex,
    make_entry,
    media_type,
)
from .urls import last_segment

__all__ = ["parse_project_list", "parse_project_page"]

# A data-size: decimal digits, at most 19 so that it fits the 64-bit unsigned integer uv
# reads "size" into.
_SIZE = re.compile(r"[0-9]{1,19}\Z")
# PEP 700: an upload time is UTC in ISO 8601, "yyyy-mm-ddThh:mm:ss", then up to six
# digits of a second's fraction, then "Z"; each field in its range.
_UPLOAD_TIME = re.compile(
    r"([0-9]{4})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(?:\.[0-9]{1,6})?Z\Z"
)
# PEP 792's status markers; a project that states none is active.
_STATUSES = frozenset({"active", "archived", "quarantined", "deprecated"})
# A last path segment that urljoin leaves as it is (no query, parameters, spaces or
# control characters, which urllib.parse would strip or split off).
_PLAIN_SEGMENT = re.compile(r"[^/?#;\\\x00-\x20\x7f]+\Z")
# The root page is nothing but anchors whose text is a project name (PEP 503): this
# scan reads PyPI's far quicker, in far less memory, than html.parser; project pages,
# whose attributes matter, still go through html.parser. A tag ends before the next "<":
# else each of "<a<a<a..." would scan to the end, in time quadratic in the page.
_ANCHOR_TEXT = re.compile(rb"<a\b[^<>]*>([^<]*)</a\s*>", re.IGNORECASE)

_ALGORITHMS = {name: sys.intern(name) for name in hashlib.algorithms_guaranteed}


def _json_hashes(hashes: dict) -> Hashes:
    """:func:`_good_hashes` of a JSON "hashes" object, quicker for the usual one: a
    single SHA-256 (runs for every file of every page)."""
    if len(hashes) == 1:
        value = hashes.get("sha256")
        if value.__class__ is str and len(value) == 64 and is_hex(value):
            return (("sha256", value.lower()),)
    return _good_hashes(hashes.items()) if hashes else ()


def _good_hashes(pairs: Iterable[tuple[str, Any]]) -> Hashes:
    """Keep the pairs whose algorithm hashlib guarantees and whose value is hex."""
    out = []
    for name, value in pairs:
        algorithm = _ALGORITHMS.get(name) or _ALGORITHMS.get(name.lower())
        if algorithm is not None and isinstance(value, str) and is_hex(value):
            out.append((algorithm, value.lower()))
    return tuple(out)



def _split_fragment(url: str) -> tuple[str, Hashes]:
    """An href's URL without fragment, and the hashes its fragment names (PEP 503).

    Every "name=hexdigest" pair of the fragment counts, "&"-separated as pip reads them
    ("#md5=...&sha256=...", "#sha256=...&egg=..."); other pairs are ignored, and so is a
    name given again (pip checks the first).
    """
    url, _, fragment = url.partition("#")
    if not fragment:  # a JSON page's links (PEP 691 gives hashes apart)
        return url, ()
    if fragment.startswith("sha256=") and "&" not in fragment:  # nearly every HTML link: the quick way
        return url, _json_hashes({"sha256": fragment[7:]})
    found: dict[str, str] = {}
    for algorithm, digest in _good_hashes(pair.partition("=")[::2] for pair in fragment.split("&")):
        found.setdefault(algorithm, digest)
    return url, tuple(found.items())


def _already_absolute(url: str) -> bool:
    # Most URLs are absolute already (PyPI's are): urljoin would cost half the parse.
    return url.startswith(("https://", "http://")) and "/." not in url


def _absolute(url: str, base: str) -> str:
    return url if _already_absolute(url) else urllib.parse.urljoin(base, url)


def _scheme(url: str) -> str:
    return url.partition(":")[0].lower()


class _Links:
    """Resolves one page's file links to absolute URLs without fragment, refusing a
    scheme we must not follow: a page from an http(s) index may only point at http(s)
    files, never at file: URLs on our disk, whatever its links or its <base> say.

    A page's relative links share a handful of directories (``/files/``, ``../../``, or
    the page's own), so each directory is joined once and the file's name appended:
    urljoin for each of a large project's links would cost half the parse.
    """

    def __init__(self, base: str, page_url: str) -> None:
        self._base = base
        self._allowed = ("http", "https", "file") if _scheme(page_url) == "file" else ("http", "https")
        self._directories: dict = {}  # an href's part before its last "/" -> its URL, or None

    def resolve(self, href: str) -> Optional[tuple]:
        """(absolute URL without fragment, the hash the fragment names), or None."""
        path, hashes = _split_fragment(href)
        if _already_absolute(path):
            return path, hashes
        head, slash, tail = path.rpartition("/")
        if not path or not _PLAIN_SEGMENT.match(tail) or tail in (".", ".."):
            # Rare shapes (a query, parameters, a bare fragment): the general rule.
            url = self._join(href)
            return (_split_fragment(url)[0], hashes) if url is not None else None
        key = head if slash else None  # "x.whl" and "/x.whl" are in different directories
        directory = self._directories.get(key, False)
        if directory is False:
            directory = self._directories[key] = self._join(head + "/" if slash else "./")
        return None if directory is None else (directory + tail, hashes)

    def _join(self, href: str) -> Optional[str]:
        """*href* made absolute, or None: a scheme not allowed, or no URL (urljoin
        refuses an unclosed IPv6 bracket)."""
        try:
            url = urllib.parse.urljoin(self._base, href)
        except ValueError:
            return None
        return url if _scheme(url) in self._allowed else None


# ---------------------------------------------------------------------------- HTML


def _parse_html(body: bytes, url: str) -> tuple:
    """(the page's anchors and the rest of what its markup says, the URL its links
    resolve against)."""
    try:
        parsed = read_anchors(body.decode("utf-8", errors="replace"))
    except Exception as exc:  # html.parser gives up on some malformed markup
        raise BadUpstreamPage(f"upstream HTML does not parse: {exc!r}") from None
    try:
        base = _absolute(parsed.base, url) if parsed.base else url
        urllib.parse.urlsplit(base)  # an absolute <base> skips urljoin's checks
    except ValueError:
        raise BadUpstreamPage(f"upstream HTML's <base href> is no URL: {parsed.base!r}") from None
    # A <base> may move links to any http(s) URL, as pip and uv let it, or within the
    # page's own scheme; _Links refuses a target the page's scheme does not allow.
    return parsed, base if _scheme(base) in ("http", "https", _scheme(url)) else url


def _html_metadata(attrs: dict) -> Optional[Hashes]:
    # PEP 714: data-core-metadata first, then the older PEP 658 name. "true" means a
    # file without a hash; "false" or junk means none (pip would read those as present,
    # so we never pass them on).
    for key in ("data-core-metadata", "data-dist-info-metadata"):
        value = attrs.get(key)
        if value is None:
            continue
        if value.strip().lower() == "true":
            return ()
        name, sep, digest = value.partition("=")
        # "<hashname>=<hexdigest>" says the file exists, even with a hash we cannot use.
        return _good_hashes([(name, digest)]) if sep else None
    return None


def _file_from_html(attrs: dict, text: str, links: _Links) -> Optional[FileEntry]:
    href = attrs.get("href")
    resolved = links.resolve(href) if href else None
    if resolved is None:
        return None
    url, hashes = resolved
    # pip and uv name a file by its URL; PEP 503's "text matches the file name" is not
    # always kept (nginx's autoindex cuts long names, hand-written pages describe).
    filename = last_segment(url) or text
    yanked = attrs.get("data-yanked", False)
    gpg = attrs.get("data-gpg-sig")
    # Positional, in FileEntry's order (make_entry).
    return make_entry((
        filename,
        url,
        hashes,
        _shared(attrs.get("data-requires-python")),
        None if yanked is False else (yanked or ""),
        _html_metadata(attrs),
        _html_size(attrs.get("data-size")),
        _upload_time(attrs.get("data-upload-time")),
        None if gpg is None else gpg.strip().lower() == "true",
        _provenance(attrs.get("data-provenance")),
    ))


def _html_size(value: Optional[str]) -> Optional[int]:
    # Not in any PEP, but uv reads it from HTML as JSON's "size" (PEP 700).
    return int(value) if value and _SIZE.match(value) else None


def _upload_time(value: Any) -> Optional[str]:
    """*value* if it is a PEP 700 upload time of a real instant ("t" and "z" as RFC 3339
    allows them, made upper case), else None: uv refuses a whole page for one it cannot
    read, and the cooldown must not take one for a time (in HTML, where no PEP has it,
    uv reads it all the same, and ``uv --exclude-newer`` drops files without it)."""
    if value.__class__ is not str:
        return None
    match = _UPLOAD_TIME.match(value)
    if match is None:
        value = value.upper()
        match = _UPLOAD_TIME.match(value)
        if match is None:
            return None
    if match.group(3) > "28" or match.group(1) == "0000":  # else a day of every month, of a year
        try:
            datetime.date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
        except ValueError:  # a 30th of February
            return None
    return value


def _shared(value: Optional[str]) -> Optional[str]:
    """One copy of a string that thousands of files repeat (e.g. ">=3.8")."""
    return sys.intern(value) if value else None


def _provenance(value: Any) -> Optional[str]:
    # PEP 740: must be an absolute URL on a secure origin; anything else is dropped.
    return value if isinstance(value, str) and value.startswith("https://") else None


# ---------------------------------------------------------------------------- JSON


def _load_json(body: bytes) -> dict:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadUpstreamPage(f"upstream JSON does not parse: {exc}") from None
    if not isinstance(data, dict):
        raise BadUpstreamPage("upstream JSON is not an object")
    meta = data.get("meta")
    _check_api_version(meta.get("api-version") if isinstance(meta, dict) else None)
    return data


def _check_api_version(version: Any) -> None:
    """PEP 629: a page of a later major version than 1 is not to be read (a version
    that does not parse is left to the page's shape to judge).

    :raises BadUpstreamPage: it is one.
    """
    major = version.partition(".")[0] if isinstance(version, str) else ""
    if major.isascii() and major.isdigit() and int(major) > 1:
        raise BadUpstreamPage(f"upstream page is of API version {version[:20]!r}; only 1.x is read (PEP 629)")


# PEP 714 name first; PEP 658's name and PyPI's "data-" spelling as fallbacks.
_METADATA_KEYS = ("core-metadata", "dist-info-metadata", "data-dist-info-metadata")


def _json_metadata(item: dict) -> Optional[Hashes]:
    for key in _METADATA_KEYS:
        if key in item:
            value = item[key]
            if value is True:
                return ()
            if isinstance(value, dict):
                return _good_hashes(value.items()) if value else ()
            return None
    return None


def _file_from_json(item: Any, links: _Links) -> Optional[FileEntry]:
    # Run once per file of every page fetched: kept to plain lookups, the rare keys
    # tested for before anything is done with them.
    if not isinstance(item, dict):
        raise BadUpstreamPage("upstream JSON file entry is not an object")
    filename, href, hashes = item.get("filename"), item.get("url"), item.get("hashes", {})
    if not isinstance(filename, str) or not isinstance(href, str) or not isinstance(hashes, dict):
        raise BadUpstreamPage("upstream JSON file entry lacks filename, url or hashes")
    resolved = links.resolve(href)
    if resolved is None:
        return None
    yanked = item.get("yanked", False)
    size = item.get("size")
    upload_time = item.get("upload-time")
    requires_python = item.get("requires-python")
    gpg = item.get("gpg-sig")
    return make_entry((
        filename,
        resolved[0],
        _json_hashes(hashes) or resolved[1],
        _shared(requires_python) if isinstance(requires_python, str) else None,
        (yanked if isinstance(yanked, str) else "") if yanked else None,
        _json_metadata(item),
        size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None,
        _upload_time(upload_time),
        gpg if isinstance(gpg, bool) else None,
        _provenance(item["provenance"]) if "provenance" in item else None,
    ))


# ---------------------------------------------------------------------------- pages


def _status(status: Any, reason: Any) -> tuple:
    """(status, reason) as PEP 792 defines them: a status other than its four markers
    is none stated, and a reason is kept only with the status it explains."""
    if not isinstance(status, str) or status not in _STATUSES:
        return None, None
    return status, reason if isinstance(reason, str) and reason else None


def _page(
    project: NormalizedName, files: tuple, versions: tuple, sizes_known: bool, status: tuple
) -> ProjectPage:
    """The page, with no files if *status* (as :func:`_status` gives it) is quarantined."""
    if status[0] == "quarantined":  # PEP 792: the index must not offer any of its files
        return ProjectPage(project, (), versions, True, *status)
    return ProjectPage(project, files, versions, sizes_known, *status)


def _versions(files: Iterable[FileEntry], project: NormalizedName) -> tuple:
    seen = dict.fromkeys(
        version
        for version in (version_from_filename(entry.filename, project) for entry in files)
        if version
    )
    return tuple(seen)


def parse_project_page(
    body: bytes, content_type: Optional[str], url: str, project: NormalizedName
) -> ProjectPage:
    """Parse a project page (PEP 503 HTML or PEP 691 JSON); relative URLs resolve
    against *url*, the page's final URL.

    :raises BadUpstreamPage: an unknown media type or a page of the wrong shape.
    """
    kind = media_type(content_type)
    if kind == JSON_TYPE:
        data = _load_json(body)
        files = data.get("files")
        if not isinstance(files, list):
            raise BadUpstreamPage("upstream JSON project page has no 'files' list")
        links = _Links(url, url)
        entries = tuple(entry for entry in (_file_from_json(item, links) for item in files) if entry)
        versions = data.get("versions")
        if isinstance(versions, list) and all(isinstance(v, str) for v in versions):
            versions = tuple(versions)
        else:
            versions = _versions(entries, project)
        stated = data.get("project-status")
        status = _status(stated.get("status"), stated.get("reason")) if isinstance(stated, dict) else (None, None)
        return _page(project, entries, versions, all(entry.size is not None for entry in entries), status)
    if kind in HTML_TYPES:
        parsed, base = _parse_html(body, url)
        _check_api_version(parsed.api_version)
        links = _Links(base, url)
        entries = tuple(entry for entry in (_file_from_html(a, t, links) for a, t in parsed.anchors) if entry)
        if not entries and not parsed.simple:  # a maintenance, login or portal page
            raise BadUpstreamPage("upstream answered an HTML page that is not a simple-API page: no file links")
        return _page(
            project,
            entries,
            _versions(entries, project),
            all(entry.size is not None for entry in entries),
            _status(parsed.status, parsed.status_reason),
        )
    raise BadUpstreamPage(f"upstream answered with unknown media type {kind!r}")


def parse_project_list(body: bytes, content_type: Optional[str]) -> ProjectList:
    """Parse the root page: the display names of the projects an index has.

    :raises BadUpstreamPage: an unknown media type or a page of the wrong shape.
    """
    kind = media_type(content_type)
    if kind == JSON_TYPE:
        projects = _load_json(body).get("projects")
        if not isinstance(projects, list):
            raise BadUpstreamPage("upstream JSON project list has no 'projects' list")
        names = [item.get("name") if isinstance(item, dict) else None for item in projects]
    elif kind in HTML_TYPES:
        # A directory listing as a root page (python -m http.server) writes "name/".
        names = (_anchor_text(match.group(1)).rstrip("/") for match in _ANCHOR_TEXT.finditer(body))
    else:
        raise BadUpstreamPage(f"upstream answered with unknown media type {kind!r}")
    return ProjectList.from_names(
        name for name in names if isinstance(name, str) and name and "\n" not in name
    )


def _anchor_text(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace").strip()
    return html.unescape(text) if "&" in text else text
