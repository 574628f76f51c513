"""Content negotiation: which media type (PEP 691) and content coding a request gets."""

from __future__ import annotations

import functools
import math
from typing import Optional

from .errors import NotAcceptable
from .simple import HTML_TYPE, JSON_TYPE, TEXT_HTML

__all__ = ["accepts_gzip", "choose_media_type", "wants_json"]

# PEP 691: "latest" asks for the newest version, answered with the concrete type.
_ALIASES = {
    JSON_TYPE: JSON_TYPE,
    "application/vnd.pypi.simple.latest+json": JSON_TYPE,
    HTML_TYPE: HTML_TYPE,
    "application/vnd.pypi.simple.latest+html": HTML_TYPE,
    TEXT_HTML: TEXT_HTML,
}


def _parse_weighted(header: str) -> list[tuple[str, float]]:
    """(lowercase value, q) pairs of an Accept-style header; a bad q counts as 0."""
    items = []
    for item in header.split(","):
        value, *params = item.split(";")
        value = value.strip().lower()
        if not value:
            continue
        quality = 1.0
        for param in params:
            name, _, number = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(number)
                except ValueError:
                    quality = 0.0
                # NaN compares false with every q: beside it, another type's q counted for nothing.
                quality = min(max(quality, 0.0), 1.0) if math.isfinite(quality) else 0.0
        items.append((value, quality))
    return items


def _parse_accept(accept: str) -> list[tuple[str, float]]:
    return [(_ALIASES.get(media, media), quality) for media, quality in _parse_weighted(accept)]


def _quality(media: str, ranges: list[tuple[str, float]]) -> float:
    # RFC 9110 12.5.1: the most specific matching range decides (exact > type/* > */*).
    best_specificity, best_quality = 0, 0.0
    kind = media.split("/", 1)[0] + "/*"
    for candidate, quality in ranges:
        specificity = 3 if candidate == media else 2 if candidate == kind else 1 if candidate == "*/*" else 0
        if specificity > best_specificity:
            best_specificity, best_quality = specificity, quality
    return best_quality


@functools.lru_cache(maxsize=256)  # clients send a handful of distinct headers
def choose_media_type(accept: Optional[str], format_param: Optional[str]) -> str:
    """The Content-Type to answer a simple-API request with (PEP 691).

    ``?format=`` wins over Accept. No Accept header means ``*/*`` and gets HTML; on a
    tie HTML wins, as on PyPI (so clients that rank JSON first, pip and uv, get JSON).

    :raises NotAcceptable: the client named types and none of ours is among them.
    """
    if format_param is not None:
        # A "+" that arrives form-decoded as a space is still a "+".
        wanted = _ALIASES.get(format_param.strip().replace(" ", "+").lower())
        if wanted is None:
            raise NotAcceptable(f"unknown format {format_param!r}; use one of {_offer()}")
        return wanted
    ranges = _parse_accept(accept) if accept and accept.strip() else [("*/*", 1.0)]
    json_quality = _quality(JSON_TYPE, ranges)
    text_quality = _quality(TEXT_HTML, ranges)
    html_quality = _quality(HTML_TYPE, ranges)
    if json_quality > max(text_quality, html_quality):
        return JSON_TYPE
    if text_quality > 0 and text_quality >= html_quality:
        return TEXT_HTML
    if html_quality > 0:
        return HTML_TYPE
    raise NotAcceptable(f"none of the accepted types is available; use one of {_offer()}")


def wants_json(accept: Optional[str]) -> bool:
    """Whether a client of the home page prefers ``application/json`` to HTML (a tie,
    as from ``*/*``, goes to HTML)."""
    if not accept or "json" not in accept.lower():
        return False
    ranges = _parse_weighted(accept)
    return _quality("application/json", ranges) > _quality(TEXT_HTML, ranges)


def _offer() -> str:
    return ", ".join((JSON_TYPE, HTML_TYPE, TEXT_HTML))


@functools.lru_cache(maxsize=256)
def accepts_gzip(accept_encoding: Optional[str]) -> bool:
    """Whether an Accept-Encoding header admits gzip (RFC 9110 12.5.3: "*" stands
    only for codings the header does not name)."""
    if not accept_encoding:
        return False
    qualities = {coding: quality for coding, quality in _parse_weighted(accept_encoding)}
    for name in ("gzip", "x-gzip", "*"):
        if name in qualities:
            return qualities[name] > 0
    return False
