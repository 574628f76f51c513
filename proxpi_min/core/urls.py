"""URL helpers: credentials kept out of what is shown, the file name a URL ends in."""

from __future__ import annotations

import re
import urllib.parse

__all__ = ["last_segment", "redact_setting", "redact_url"]

# A URL's (or a scheme-less proxy address's) "user:password@", for a text urlsplit refuses.
_USERINFO = re.compile(r"^((?:[A-Za-z][A-Za-z0-9+.-]*:)?//)?[^/?#]*@")


def redact_url(url: str) -> str:
    """*url* with any ``user:password@`` removed, also from a URL without a scheme
    (``user:password@proxy:3128``, as curl and pip take a proxy)."""
    scheme_less = "://" not in url
    try:
        parts = urllib.parse.urlsplit("//" + url if scheme_less else url)
    except ValueError:  # not a URL (an unclosed IPv6 bracket): its credentials cut all the same
        return _USERINFO.sub(r"\1", url)
    if "@" not in parts.netloc:
        return url
    redacted = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return redacted[2:] if scheme_less else redacted


def redact_setting(raw: str) -> str:
    """A URL setting as an error shows it: without credentials, also where an unencoded
    "/", "?" or "#" in a password hides them from urlsplit (all from the scheme to the
    last "@" goes: a setting in error may be anything)."""
    shown = redact_url(raw)
    scheme, sep, rest = shown.rpartition("://") if "://" in shown else ("", "", shown)
    return f"{scheme}{sep}***@{rest.rpartition('@')[2]}" if "@" in rest else shown


def last_segment(url: str) -> str:
    """The last segment of *url*'s path, percent-decoded: the file name a link points at."""
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
