"""What the fake upstream index sends, computed without I/O: its pages (PEP 503 HTML,
PEP 691 JSON), the PEP 691 choice between them, ETags, single byte ranges and the
reply value the HTTP handler sends."""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import urllib.parse
from typing import Any, Iterable

from .dists import Dist, canonicalize

__all__ = [
    "HTML_TYPE",
    "JSON_TYPE",
    "FileEntry",
    "Reply",
    "etag",
    "etag_matches",
    "negotiate_json",
    "parse_range",
    "render_project_html",
    "render_project_json",
    "render_root_html",
    "render_root_json",
    "text_reply",
]

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPE = "text/html"


@dataclasses.dataclass(frozen=True)
class FileEntry:
    """One file as the index lists it."""

    dist: Dist
    yanked: bool | str | None = None
    metadata: bool = True
    upload_time: str | None = None

    @property
    def has_metadata(self) -> bool:
        """PEP 658: advertised and served only for wheels that have METADATA."""
        return self.metadata and self.dist.is_wheel and self.dist.metadata is not None

    @property
    def is_yanked(self) -> bool:
        return self.yanked is not None and self.yanked is not False


def negotiate_json(accept: str | None) -> bool:
    """PEP 691 choice the way PyPI makes it: the highest q wins, a tie goes to HTML."""
    if not accept:
        return False
    q_json = 0.0
    q_html = 0.0
    for part in accept.split(","):
        media, _, params = part.partition(";")
        media = media.strip().lower()
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        if media in (JSON_TYPE, "application/vnd.pypi.simple.latest+json"):
            q_json = max(q_json, q)
        elif media in (HTML_TYPE, "application/vnd.pypi.simple.v1+html",
                       "application/vnd.pypi.simple.latest+html", "*/*", "text/*"):
            q_html = max(q_html, q)
    return q_json > q_html


def etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _attr(value: str) -> str:
    return html.escape(value, quote=True)


def render_root_html(names: Iterable[str]) -> bytes:
    links = "".join(
        f'    <a href="{_attr(canonicalize(n))}/">{html.escape(n)}</a><br />\n' for n in names
    )
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        '    <meta name="pypi:repository-version" content="1.0">\n'
        "    <title>Simple index</title>\n  </head>\n  <body>\n"
        f"{links}  </body>\n</html>\n"
    ).encode("utf-8")


def render_project_html(display: str, normalized: str, entries: Iterable[FileEntry]) -> bytes:
    anchors = []
    for entry in entries:
        dist = entry.dist
        # Relative to /simple/<normalized>/, on purpose: the proxy must resolve it.
        href = f"../../files/{normalized}/{urllib.parse.quote(dist.filename)}#sha256={dist.sha256}"
        attrs = [f'href="{_attr(href)}"']
        if dist.requires_python is not None:
            attrs.append(f'data-requires-python="{_attr(dist.requires_python)}"')
        if entry.is_yanked:
            reason = entry.yanked if isinstance(entry.yanked, str) else ""
            attrs.append(f'data-yanked="{_attr(reason)}"')
        if entry.has_metadata:
            value = f"sha256={dist.metadata_sha256}"
            attrs.append(f'data-dist-info-metadata="{value}"')
            attrs.append(f'data-core-metadata="{value}"')
        anchors.append(f"    <a {' '.join(attrs)}>{html.escape(dist.filename)}</a><br />\n")
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        '    <meta name="pypi:repository-version" content="1.0">\n'
        f"    <title>Links for {html.escape(display)}</title>\n  </head>\n  <body>\n"
        f"    <h1>Links for {html.escape(display)}</h1>\n"
        f"{''.join(anchors)}  </body>\n</html>\n"
    ).encode("utf-8")


def render_root_json(names: Iterable[str]) -> bytes:
    document = {"meta": {"api-version": "1.1"}, "projects": [{"name": n} for n in names]}
    return json.dumps(document, indent=1).encode("utf-8")


def render_project_json(normalized: str, entries: list[FileEntry], base_url: str) -> bytes:
    files: list[dict[str, Any]] = []
    versions: list[str] = []
    for entry in entries:
        dist = entry.dist
        if dist.version not in versions:
            versions.append(dist.version)
        core_metadata: Any = {"sha256": dist.metadata_sha256} if entry.has_metadata else False
        item: dict[str, Any] = {
            "filename": dist.filename,
            "url": f"{base_url}/files/{normalized}/{urllib.parse.quote(dist.filename)}",
            "hashes": {"sha256": dist.sha256},
            "requires-python": dist.requires_python,
            "core-metadata": core_metadata,
            # PyPI's non-standard alias (see the API notes, section 10.4); a proxy
            # must not turn it into the key "dist-info-metadata".
            "data-dist-info-metadata": core_metadata,
            "size": dist.size,
            "yanked": entry.yanked if entry.is_yanked else False,
        }
        if entry.upload_time is not None:
            item["upload-time"] = entry.upload_time
        files.append(item)
    document = {
        "meta": {"api-version": "1.1", "_last-serial": 1},
        "name": normalized,
        "versions": versions,
        "files": files,
    }
    return json.dumps(document, indent=1).encode("utf-8")


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate.startswith("W/"):
            candidate = candidate[2:]
        if candidate in ("*", etag):
            return True
    return False


def parse_range(value: str, size: int) -> tuple[int, int] | None | str:
    """(first, last) for a single satisfiable range, "unsatisfiable", or None to
    ignore the header (malformed or multi-range: a full 200 is allowed then)."""
    unit, _, spec = value.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    start_text, dash, end_text = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if start_text == "":
            suffix = int(end_text)
            if suffix <= 0:
                return "unsatisfiable"
            return max(0, size - suffix), size - 1
        first = int(start_text)
        last = int(end_text) if end_text else size - 1
    except ValueError:
        return None
    if first >= size:
        return "unsatisfiable"
    if first > last:
        return None
    return first, min(last, size - 1)


@dataclasses.dataclass
class Reply:
    """An answer of the fake index before it goes on the wire."""

    status: int
    headers: list  # of (name, value)
    body: bytes = b""
    is_file: bool = False


def text_reply(status: int, message: str, extra: list | None = None) -> Reply:
    headers = [("Content-Type", "text/plain; charset=utf-8")] + (extra or [])
    return Reply(status, headers, (message + "\n").encode("utf-8"))
