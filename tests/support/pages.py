"""Read simple-API pages the way a client does (HTML anchors, JSON file lists)."""

from __future__ import annotations

import json
import urllib.parse
from html.parser import HTMLParser
from typing import Any, NamedTuple

__all__ = ["Anchor", "json_files", "parse_anchors", "resolve", "split_href"]


class Anchor(NamedTuple):
    """One ``<a>``: its text and attributes (values unescaped; None when bare)."""

    text: str
    attrs: dict


class _AnchorParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[Anchor] = []
        self._current: dict | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "a":
            self._current = dict(attrs)
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._current is not None:
            self.anchors.append(Anchor("".join(self._text).strip(), self._current))
            self._current = None


def parse_anchors(body: bytes) -> dict[str, dict]:
    """Anchor text -> attributes. Fails on duplicate texts (a file listed twice)."""
    parser = _AnchorParser()
    parser.feed(body.decode("utf-8"))
    parser.close()
    result: dict[str, dict] = {}
    for anchor in parser.anchors:
        if anchor.text in result:
            raise AssertionError(f"{anchor.text!r} is listed more than once")
        result[anchor.text] = anchor.attrs
    return result


def split_href(href: str) -> tuple[str, str]:
    """``(url, fragment)`` of a link."""
    url, _, fragment = href.partition("#")
    return url, fragment


def json_files(body: bytes) -> dict[str, dict[str, Any]]:
    """filename -> file object of a PEP 691 project page. Fails on duplicates."""
    document = json.loads(body)
    result: dict[str, dict[str, Any]] = {}
    for item in document["files"]:
        if item["filename"] in result:
            raise AssertionError(f"{item['filename']!r} is listed more than once")
        result[item["filename"]] = item
    return result


def resolve(page_url: str, href: str) -> str:
    """An href resolved against the page URL, without its fragment."""
    return urllib.parse.urljoin(page_url, split_href(href)[0])

