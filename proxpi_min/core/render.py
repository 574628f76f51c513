"""Simple-API pages (PEP 503, 691, 700, 792) rendered to bytes, compressed and tagged; pure functions."""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import json
import re
import urllib.parse
from typing import Iterable, NamedTuple, Optional

from .markup import escape as _esc
from .names import canonicalize_name
from .simple import JSON_TYPE, FileEntry, Hashes, ProjectList, ProjectPage, best_hash

__all__ = [
    "Rendered",
    "gzip_etag",
    "gzipped",
    "identity_body",
    "render",
    "render_project_list",
    "render_project_page",
    "with_files_rendered_anew",
    "worth_compressing",
]

# uv rejects any other algorithm in an HTML fragment; we check every hash ourselves, so
# leaving an unusable one out loses nothing.
_FRAGMENT_HASHES = ("sha256", "sha512", "sha384", "md5")
_json_string = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]
# Names that urllib.parse.quote leaves as they are (RFC 3986 unreserved characters):
# nearly every file name, so most links skip quote, which costs more than the rest of
# a link put together.
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*\Z")
_GZIP_MIN = 1024  # smaller bodies gain nothing from compression
# Level 3 is much quicker than the default 6 for a few more bytes: the CPU is spent on
# each new version of each page, the bytes on a LAN.
_GZIP_LEVEL = 3


class Rendered(NamedTuple):
    """A page rendered once, in one media type and content coding, with a strong ETag."""

    body: bytes
    etag: str
    encoding: Optional[str]  # "gzip", or None for the identity coding


def render(body: bytes, media: str, compress: bool) -> Rendered:
    """*body*, a page in *media*, ready to send: gzip-compressed if *compress* and worth it.

    Each media type and each coding gets its own ETag: a strong tag names one
    representation (RFC 9110 8.8.1), and text/html and the v1+html type send the same
    bytes under two Content-Types; a coding sends other bytes (8.8.3).
    """
    # SHA-256 (96 bits of it): the SHA extensions of today's x86 and ARM CPUs make it
    # quicker than BLAKE2b.
    digest = hashlib.sha256(media.encode("ascii") + b"\n")
    digest.update(body)
    plain = Rendered(body, f'"{digest.hexdigest()[:24]}"', None)
    return gzipped(plain) if compress else plain


def worth_compressing(page: Rendered) -> bool:
    """Whether :func:`gzipped` would compress *page* (its identity form)."""
    return page.encoding is None and len(page.body) >= _GZIP_MIN


def gzipped(page: Rendered) -> Rendered:
    """*page* (its identity form) in the gzip coding, if worth it, else *page*."""
    if not worth_compressing(page):
        return page
    return Rendered(gzip.compress(page.body, _GZIP_LEVEL, mtime=0), gzip_etag(page.etag), "gzip")


def identity_body(page: Rendered) -> bytes:
    """The body of *page* in the identity coding."""
    return gzip.decompress(page.body) if page.encoding == "gzip" else page.body


def gzip_etag(etag: str) -> str:
    """The ETag of the gzip form of the page whose identity form has *etag*: another
    one, as RFC 9110 8.8.3 asks of another content coding."""
    return etag[:-1] + '-gzip"'


# ---------------------------------------------------------------------------- pages


def _fragment(hashes: Hashes) -> str:
    best = best_hash(hashes, _FRAGMENT_HASHES)
    return "" if best is None else f"#{best[0]}={best[1]}"


def _quote(filename: str) -> str:
    return filename if _UNRESERVED.match(filename) else urllib.parse.quote(filename)


def _html_link(entry: FileEntry) -> str:
    # Links are relative to the page (/index/<project>/), so they work whatever host
    # name and port the client used to reach us; "+" must stay %2B, never a space.
    parts = [f'<a href="{_quote(entry.filename)}{_fragment(entry.hashes)}"']
    if entry.requires_python:
        parts.append(f' data-requires-python="{_esc(entry.requires_python)}"')
    if entry.yanked is not None:
        parts.append(f' data-yanked="{_esc(entry.yanked)}"')
    if entry.metadata is not None:
        # PEP 714: both names, same value; never "false" (pip reads it as present).
        value = _esc(_fragment(entry.metadata)[1:] or "true")
        parts.append(f' data-dist-info-metadata="{value}" data-core-metadata="{value}"')
    if entry.gpg_sig is not None:
        parts.append(f' data-gpg-sig="{"true" if entry.gpg_sig else "false"}"')
    if entry.provenance:
        parts.append(f' data-provenance="{_esc(entry.provenance)}"')
    parts.append(f">{_esc(entry.filename)}</a><br>\n")
    return "".join(parts)


def _encode_batched(parts: Iterable[str]) -> bytes:
    """Encode and join *parts* a batch at a time: a list of every part of PyPI's
    project list at once would take far more memory than the page."""
    out = io.BytesIO()
    parts = iter(parts)
    while True:
        batch = "".join(itertools.islice(parts, 4096))
        if not batch:
            return out.getvalue()
        # "replace": a JSON page may carry a lone surrogate ("\ud800"), which UTF-8 cannot.
        out.write(batch.encode("utf-8", "replace"))


_VERSION_META = '<meta name="pypi:repository-version" content="1.1">\n'


def _html_document(title: str, meta: str, body: Iterable[str]) -> bytes:
    head = (
        f"<!DOCTYPE html>\n<html>\n<head>\n{meta}"
        f"<title>{_esc(title)}</title>\n</head>\n<body>\n<h1>{_esc(title)}</h1>\n"
    )
    return _encode_batched(itertools.chain((head,), body, ("</body>\n</html>\n",)))


def _html_meta(page: ProjectPage) -> str:
    """A project page's meta tags: its repository version (PEP 629) and status (PEP 792,
    which the version must then say is 1.4)."""
    if page.status is None:
        return _VERSION_META
    meta = (
        '<meta name="pypi:repository-version" content="1.4">\n'
        f'<meta name="pypi:project-status" content="{_esc(page.status)}">\n'
    )
    if page.status_reason:
        meta += f'<meta name="pypi:project-status-reason" content="{_esc(page.status_reason)}">\n'
    return meta


def _json_hashes(hashes: Hashes) -> str:
    if len(hashes) == 1:
        ((name, value),) = hashes
        return f"{{{_json_string(name)}:{_json_string(value)}}}"
    # A repeated name keeps its last value, as in a dict.
    pairs = dict(hashes).items()
    return "{" + ",".join([f"{_json_string(name)}:{_json_string(value)}" for name, value in pairs]) + "}"


def _json_file(entry: FileEntry) -> str:
    """One file's object, exactly as ``json.dumps(..., separators=(",", ":"))`` writes
    the dict it stands for (same keys, same order, strings through json's own escaping),
    written as text, which is quicker than building the dict for json."""
    # Unpacked once: ten attribute lookups on a named tuple cost more than the rest.
    filename, _, hashes, requires_python, yanked, metadata, size, upload_time, gpg_sig, provenance = entry
    name = _json_string(filename)
    # An unreserved name is its own URL, and needs the same (no) escaping.
    url = name if _UNRESERVED.match(filename) else _json_string(urllib.parse.quote(filename))
    text = f'{{"filename":{name},"url":{url},"hashes":{_json_hashes(hashes)}'
    if requires_python:
        text += f',"requires-python":{_json_string(requires_python)}'
    if yanked is not None:  # PEP 691: a reason string, or true
        text += f',"yanked":{_json_string(yanked)}' if yanked else ',"yanked":true'
    if metadata is not None:
        # PEP 714: never the old key "dist-info-metadata" (pip 22.3-23.1 crash on it).
        text += f',"core-metadata":{_json_hashes(metadata)}' if metadata else ',"core-metadata":true'
    if size is not None:
        text += f',"size":{int.__repr__(size)}'
    if upload_time:
        text += f',"upload-time":{_json_string(upload_time)}'
    if gpg_sig is not None:
        text += ',"gpg-sig":true' if gpg_sig else ',"gpg-sig":false'
    if provenance:
        text += f',"provenance":{_json_string(provenance)}'
    return text + "}"


def _json_head(page: ProjectPage) -> dict:
    """The JSON project page but its files, keys in PyPI's order."""
    versions = list(page.versions)
    # PEP 700 (1.1) makes "size" mandatory: without every size the page says 1.0, and so
    # leaves out the status, which needs 1.4 (PEP 792).
    if not page.all_sizes_known:
        return {"meta": {"api-version": "1.0"}, "name": page.name, "versions": versions}
    if page.status is None:
        return {"meta": {"api-version": "1.1"}, "name": page.name, "versions": versions}
    status = {"status": page.status, "reason": page.status_reason} if page.status_reason else {"status": page.status}
    return {"meta": {"api-version": "1.4"}, "name": page.name, "project-status": status, "versions": versions}


def render_project_page(page: ProjectPage, media: str) -> bytes:
    """The project page as bytes in *media* (HTML or PEP 691 JSON)."""
    if media == JSON_TYPE:
        # Written as json.dumps would write the whole document with "files" last.
        text = json.dumps(_json_head(page), separators=(",", ":"))[:-1]
        return f'{text},"files":[{",".join(map(_json_file, page.files))}]}}'.encode("ascii")
    return _html_document(f"Links for {page.name}", _html_meta(page), map(_html_link, page.files))


def with_files_rendered_anew(body: bytes, media: str, entries: Iterable[FileEntry]) -> Optional[bytes]:
    """*body*, a project page :func:`render_project_page` wrote in *media*, with the
    file of each of *entries* written anew from it: the bytes a whole new render would
    give when only those files changed, for a fraction of its cost on a large page.
    None if a file is not listed exactly once (the page must then be rendered whole)."""
    cuts = []
    for entry in entries:
        if media == JSON_TYPE:  # files are the document's last member: '{...},{...}]}'
            start = _only(body, f'{{"filename":{_json_string(entry.filename)},'.encode("ascii"), None)
            end = body.find(b',{"filename":', start + 1)
            end = len(body) - 2 if end < 0 else end
            text = _json_file(entry).encode("ascii")
        else:  # the name is followed by its hash fragment or by the attribute's end
            start = _only(body, f'<a href="{_quote(entry.filename)}'.encode("ascii"), (b"#", b'"'))
            end = body.find(b"<br>\n", start) + len(b"<br>\n")
            text = _html_link(entry).encode("utf-8", "replace")
        if start < 0:
            return None
        cuts.append((start, end, text))
    cuts.sort()
    parts, position = [], 0
    for start, end, text in cuts:
        if start < position:  # one file given twice
            return None
        parts += (body[position:start], text)
        position = end
    parts.append(body[position:])
    return b"".join(parts)


def _only(body: bytes, mark: bytes, followers: Optional[tuple]) -> int:
    """Where *mark* (followed by one of *followers*, if given) is in *body*: -1 if it is
    nowhere, or in more than one place."""
    found, at = -1, body.find(mark)
    while at >= 0:
        if followers is None or body[at + len(mark) : at + len(mark) + 1] in followers:
            if found >= 0:
                return -1
            found = at
        at = body.find(mark, at + 1)
    return found


def render_project_list(projects: ProjectList, media: str) -> bytes:
    """The root page listing *projects* in *media*."""
    if media == JSON_TYPE:
        # Written piecewise rather than through one huge list of dicts (see above).
        items = (f'{{"name":{_json_string(name)}}}' for name in projects)
        separated = itertools.chain.from_iterable(zip(itertools.chain(("",), itertools.repeat(",")), items))
        return _encode_batched(
            itertools.chain(('{"meta":{"api-version":"1.0"},"projects":[',), separated, ("]}",))
        )
    return _html_document(
        "Simple index",
        _VERSION_META,
        (f'<a href="{_esc(canonicalize_name(name))}/">{_esc(name)}</a><br>\n' for name in projects),
    )


