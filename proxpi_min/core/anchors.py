"""The anchors of a simple page's HTML (PEP 503), and what says whether it is one; pure.

Simple pages have one shape wherever they come from (PyPI, devpi, Nexus, pypiserver,
GitLab, this proxy): a head, a heading, then one ``<a href="...">name</a>`` per file.
Such a page is read by a scan of its anchors, four times quicker than ``html.parser``
(bench/README.md). A page with anything else in it (a script, an attribute not in
double quotes, an anchor in a heading or in a comment) is read by ``html.parser``;
both read the usual shape alike (a test holds them to it).
"""

from __future__ import annotations

import functools
import html
import re
from html.parser import HTMLParser
from typing import NamedTuple, Optional

__all__ = ["Anchors", "read_anchors"]

# Where a simple page (PEP 503) has words of its own: "Links for <project>".
_HEADINGS = frozenset({"title", "h1", "h2", "h3", "h4", "h5", "h6"})
# What a <meta name=...> says of the page (PEP 792, PEP 629), as the field both readers set.
_META = {
    "pypi:project-status": "status",
    "pypi:project-status-reason": "status_reason",
    "pypi:repository-version": "api_version",
}
# Elements no simple page has, and maintenance, login and portal pages do.
_FOREIGN = frozenset({"form", "input", "script", "iframe", "img", "button", "p", "table"})

# The usual shape, and nothing else, is left to the scan. Within a tag, only the spaces
# that end a tag name for html.parser (a vertical tab or a no-break space do not).
_SPACE = r"[\t\n\r\f ]"
_ATTRIBUTES = rf'(?:{_SPACE}+[a-z][a-z0-9_.:-]*="[^"<>]*")*'
_ANCHOR = re.compile(rf"<a({_ATTRIBUTES}){_SPACE}*>([^<]*)</a>")
_ATTRIBUTE = re.compile(rf'{_SPACE}+([a-z][a-z0-9_.:-]*)="([^"<>]*)"')
_LINE_BREAKS = re.compile(rf"(?:\s|<br{_SPACE}*/?>)*\Z")  # what lies between two files' anchors
_PIECE = re.compile(r"<[^<>]*>|[^<]+|<")
_TAG = re.compile(rf"<(/?)(html|head|body|title|meta|base|br|h[1-6])({_ATTRIBUTES}){_SPACE}*(/?)>\Z")
# Character references every version of html.parser reads alike: ended by ";". Others
# (``&reg=`` in a URL's query) newer versions leave as written in attribute values
# (HTML5), older ones decode, so a page that has them is left to the html.parser at hand.
_PLAIN_REFERENCE = re.compile(r"&(?:[a-zA-Z][a-zA-Z0-9]{0,31}|#[0-9]{1,6}|#[xX][0-9a-fA-F]{1,5});")
_DOCTYPE = re.compile(r"<!doctype[^<>]*>\Z", re.IGNORECASE)
_COMMENT = re.compile(r"<!--[^<>]*-->\Z")  # PyPI ends its pages with <!--SERIAL n-->
MAX_UNCLOSED = 1000  # more "<" than ">" in a page given to html.parser (see _parse)


class Anchors(NamedTuple):
    """What a page's markup says."""

    anchors: list  # (attributes, text) of each <a> closed, in order
    base: Optional[str]  # the first <base href>, as written
    status: Optional[str]  # PEP 792's pypi:project-status
    status_reason: Optional[str]  # PEP 792's pypi:project-status-reason
    api_version: Optional[str]  # PEP 629's pypi:repository-version
    foreign: bool  # words outside headings and links, or a form, a script...

    @property
    def simple(self) -> bool:  # says so (PEP 629, PEP 792 meta), or only headings (PEP 503)
        return self.api_version is not None or self.status is not None or not self.foreign


def read_anchors(text: str) -> Anchors:
    """The anchors and the rest of what *text*, a page's HTML, says.

    :raises Exception: ``html.parser`` gave up on the markup.
    """
    scanned = _scan(text)
    return scanned if scanned is not None else _parse(text)


# ---------------------------------------------------------------------------- the scan


class _Scan:
    """The scan's state between anchors: the head's tags and words."""

    def __init__(self) -> None:
        self.base: Optional[str] = None
        self.status: Optional[str] = None
        self.status_reason: Optional[str] = None
        self.api_version: Optional[str] = None
        self.foreign = False
        self.headings = 0
        self.in_title = False  # newer html.parser reads a title's content as text only

    def markup(self, text: str) -> bool:
        """Take in *text*, markup between anchors; False if it is not of the usual shape."""
        for piece in _PIECE.findall(text):
            if piece[0] != "<":
                if not _plain(piece):
                    return False
                if not self.headings and not self.foreign:
                    self.foreign = bool(_unescape(piece).strip())
                continue
            tag = _TAG.match(piece)
            if tag is None:
                if self.in_title or (_DOCTYPE.match(piece) is None and _COMMENT.match(piece) is None):
                    return False
                continue
            closing, name, attributes, empty = tag.groups()
            if self.in_title and not (closing and name == "title"):
                return False
            if closing:
                if attributes or empty:
                    return False
                self.in_title = False
                if name in _HEADINGS and self.headings:
                    self.headings -= 1
                continue
            if name == "title" and (attributes or empty):
                return False
            found = _attributes(attributes)
            if found is None:
                return False
            self._open(name, found)
            self.in_title = name == "title"
            if empty and name in _HEADINGS and self.headings:
                self.headings -= 1
        return True

    def _open(self, name: str, attributes: dict) -> None:
        if name == "base" and self.base is None:
            self.base = attributes.get("href")
        elif name == "meta":
            if attributes.get("name") in _META:
                setattr(self, _META[attributes["name"]], attributes.get("content"))
        elif name in _HEADINGS:
            self.headings += 1


# Values repeat from file to file (">=3.8"): each is unescaped once.
_unescape_value = functools.lru_cache(maxsize=1024)(html.unescape)


def _plain(text: str) -> bool:
    """Whether every "&" in *text* starts a reference every html.parser reads alike."""
    return "&" not in text or text.count("&") == len(_PLAIN_REFERENCE.findall(text))


def _unescape(text: str) -> str:
    return html.unescape(text) if "&" in text else text


def _attributes(text: str) -> Optional[dict]:
    """The attributes written in *text*, or None if a value has a reference read
    differently by different html.parser versions."""
    pairs = _ATTRIBUTE.findall(text)
    if "&" in text:
        if not _plain(text):
            return None
        return {name: _unescape_value(value) if "&" in value else value for name, value in pairs}
    return dict(pairs)


def _scan(text: str) -> Optional[Anchors]:
    """The page read by a scan of its anchors, or None if it is not of the usual shape."""
    state = _Scan()
    anchors = []
    end = 0
    for match in _ANCHOR.finditer(text):
        start = match.start()
        if _LINE_BREAKS.match(text, end, start) is None:
            if not state.markup(text[end:start]):
                return None
        if state.headings:  # an anchor in a title: read as text or as a link, by Python version
            return None
        attributes, words = _attributes(match.group(1)), match.group(2)
        if attributes is None or not _plain(words):
            return None
        anchors.append((attributes, _unescape(words).strip()))
        end = match.end()
    if not state.markup(text[end:]):
        return None
    return Anchors(anchors, state.base, state.status, state.status_reason, state.api_version, state.foreign)


# ---------------------------------------------------------------------------- html.parser


class _AnchorParser(HTMLParser):
    """Collects ``<a>`` elements (attributes and text) and ``<base href>``; notes what
    says the page is a simple page or is not."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list = []
        self.base: Optional[str] = None
        self.status: Optional[str] = None
        self.status_reason: Optional[str] = None
        self.api_version: Optional[str] = None
        self.foreign = False
        self._current: Optional[dict] = None
        self._text: list = []
        self._headings = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "a":
            self._current = dict(attrs)
            self._text = []
        elif tag == "base" and self.base is None:
            self.base = dict(attrs).get("href")
        elif tag == "meta":
            found = dict(attrs)
            if found.get("name") in _META:
                setattr(self, _META[found["name"]], found.get("content"))
        elif tag in _HEADINGS:
            self._headings += 1
        elif tag in _FOREIGN:
            self.foreign = True

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self._text.append(data)
        elif not self._headings and data.strip():
            self.foreign = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._current is not None:
            self.anchors.append((self._current, "".join(self._text).strip()))
            self._current = None
        elif tag in _HEADINGS and self._headings:
            self._headings -= 1


def _parse(text: str) -> Anchors:
    # html.parser takes time quadratic in the tags left open ("<a <a <a ...": 4,000 of
    # them take over a second): a page with that many is refused before it is read.
    unclosed = text.count("<") - text.count(">")
    if unclosed > MAX_UNCLOSED:
        raise ValueError(f"{unclosed} more '<' than '>': tags left open")
    parser = _AnchorParser()
    parser.feed(text)
    parser.close()
    return Anchors(
        parser.anchors, parser.base, parser.status, parser.status_reason, parser.api_version, parser.foreign
    )
