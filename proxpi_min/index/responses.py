"""What an upstream index answers: a page, or a file being read (over HTTP or from file://)."""

from __future__ import annotations

import email.message
from typing import NamedTuple, Optional

__all__ = ["FileResponse", "PageResponse"]


class PageResponse(NamedTuple):
    """An index page: status 200 (with body), 304 (not modified) or 404."""

    status: int
    body: bytes
    content_type: str
    url: str  # the final URL, after redirects: relative links resolve against it
    etag: Optional[str]
    last_modified: Optional[str]
    # The index says the page is not to be reused without asking again (RFC 9111 5.2.2:
    # no-cache, no-store, max-age=0): a proxpi-min with a local index, or serving stale.
    # None: a 304 without Cache-Control, which leaves the stored page's as it was (4.3.4).
    ask_again: Optional[bool] = False
    stale: bool = False  # the index says it served a stale copy (a proxpi-min in an outage)


class FileResponse:
    """A file being read from upstream; call :meth:`close` when done with it (or use it
    as a context manager).

    ``status`` is 200, 206 or 416; ``length`` is the body length if announced.
    """

    def __init__(self, url: str, status: int, headers: email.message.Message, length: Optional[int]) -> None:
        self.url = url
        self.status = status
        self.headers = headers
        self.length = length

    def read(self, size: int) -> bytes:
        """Up to *size* bytes of the body; b"" at the end."""
        raise NotImplementedError

    def close(self) -> None:
        """Let go of what the response holds (a connection, an open file)."""
        raise NotImplementedError

    def __enter__(self) -> "FileResponse":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
