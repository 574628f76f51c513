"""URL helpers: credentials kept out of what is shown, the file name a URL ends in."""

from __future__ import annotations

import urllib.parse

__all__ = ["last_segment", "redact_url"]


def redact_url(url: str) -> str:
    """*url* with any ``user:password@`` removed, also from a URL without a scheme
    (``user:password@proxy:3128``, as curl and pip take a proxy)."""
    scheme_less = "://" not in url
    parts = urllib.parse.urlsplit("//" + url if scheme_less else url)
    if "@" not in parts.netloc:
        return url
    redacted = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return redacted[2:] if scheme_less else redacted


def last_segment(url: str) -> str:
    """The last segment of *url*'s path, percent-decoded: the file name a link points at."""
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
