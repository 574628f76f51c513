"""What page and file answers tell clients and the caches in front of them: their
Cache-Control, and a page answer's header lines."""

from __future__ import annotations

import functools
import math
from typing import Optional

from ..core.simple import HTML_TYPE, JSON_TYPE, TEXT_HTML
from .http1 import header_lines

__all__ = [
    "FILE_CACHE_CONTROL", "ICON_CACHE_CONTROL", "REPLACEABLE_CACHE_CONTROL", "page_headers", "page_lifetime",
]

# Files never change once published (PyPI refuses a reused file name).
FILE_CACHE_CONTROL = "public, max-age=31536000, immutable"
# A local file may: its name is freed by a delete; and with a local index, so may every
# page. Kept, but checked by its ETag on each use (RFC 9111 5.2.2.4).
REPLACEABLE_CACHE_CONTROL = "no-cache"
ICON_CACHE_CONTROL = "public, max-age=604800"
_CHARSET = {TEXT_HTML: "; charset=utf-8", HTML_TYPE: "; charset=utf-8", JSON_TYPE: ""}


@functools.lru_cache(maxsize=1024)
def page_headers(
    media: str,
    etag: str,
    stale: bool,
    policies: str,
    encoding: Optional[str],
    length: Optional[int],
) -> str:
    """A page response's header lines but Cache-Control, made once per page and not per
    request."""
    headers = [
        ("Content-Type", media + _CHARSET[media]),
        ("Vary", "Accept, Accept-Encoding"),
        ("ETag", etag),
    ]
    if stale:
        # RFC 7234 5.5.1 warn-code 110; X-Proxpi-Stale for clients that drop Warning.
        headers += [("Warning", '110 - "Response is Stale"'), ("X-Proxpi-Stale", "1")]
    if policies:
        headers.append(("X-Proxpi-Policy", policies))  # the guard rails that changed the page
    if encoding:
        headers.append(("Content-Encoding", encoding))
    if length is not None:
        headers.append(("Content-Length", str(length)))
    return header_lines(headers)


def page_lifetime(max_age: int, fresh_for: Optional[float]) -> int:
    """A page's max-age: no longer than the proxy keeps it before asking upstream again,
    so that no cache in front holds a page past the index TTL from the upstream's answer
    (said as the lifetime left, not with Age, which nginx does not read)."""
    return max_age if fresh_for is None else max(0, min(max_age, math.ceil(fresh_for)))
