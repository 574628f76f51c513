"""file:// indices: pages read from a directory and files from disk, answered as an HTTP index would."""

from __future__ import annotations

import email.message
import mimetypes
import os
import urllib.parse
import urllib.request
from typing import Optional

from ..core.byteranges import ByteRange, parse_range
from ..core.errors import BadUpstreamPage, NotFound, RangeNotSatisfiable, UpstreamError
from ..core.simple import JSON_TYPE, TEXT_HTML
from .responses import FileResponse, PageResponse

__all__ = ["LocalFileResponse", "local_file", "local_page"]

_WHOLE_FILE = ByteRange(0, None)  # "bytes=0-": answered 200 with the whole file


class LocalFileResponse(FileResponse):
    """A file:// upstream file: 200 (whole), 206 (the range asked for) or 416 (a range
    outside the file, RFC 9110 15.5.17), with the headers an HTTP index would send."""

    def __init__(self, url: str, path: str, byte_range: Optional[ByteRange]) -> None:
        file = open(path, "rb")
        try:
            size = os.fstat(file.fileno()).st_size
            headers = email.message.Message()
            if byte_range is None or byte_range == _WHOLE_FILE:
                status, start, stop = 200, 0, size
            else:
                try:
                    start, stop = byte_range.resolve(size)
                except RangeNotSatisfiable:
                    status, start, stop = 416, size, size
                    headers["Content-Range"] = f"bytes */{size}"
                else:
                    status = 206
                    headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
            file.seek(start)
        except BaseException:
            file.close()
            raise
        super().__init__(url, status, headers, stop - start)
        self._file = file
        self._left = stop - start

    def read(self, size: int) -> bytes:
        data = self._file.read(min(size, self._left))
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._file.close()


def _local_path(url: str) -> str:
    return urllib.request.url2pathname(urllib.parse.urlsplit(url).path)


def local_page(url: str, max_size: int) -> PageResponse:
    """A page from a file:// index: a directory's index.json (else index.html), or the
    file itself; 404 when there is none.

    :raises UpstreamError: it cannot be read.
    :raises BadUpstreamPage: it is over *max_size* bytes.
    """
    path = _local_path(url)
    candidates = [path]
    if os.path.isdir(path):
        candidates = [os.path.join(path, "index.json"), os.path.join(path, "index.html")]
    for candidate in candidates:
        try:
            with open(candidate, "rb") as file:
                body = file.read(max_size + 1)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise UpstreamError(f"cannot read {url}: {exc.strerror}") from exc
        if len(body) > max_size:
            raise BadUpstreamPage(f"upstream page over {max_size} bytes: {url}")
        kind = JSON_TYPE if candidate.endswith(".json") else mimetypes.guess_type(candidate)[0] or TEXT_HTML
        return PageResponse(200, body, kind, url, None, None)
    return PageResponse(404, b"", "", url, None, None)


def local_file(url: str, range_header: Optional[str]) -> LocalFileResponse:
    """Start reading a file of a file:// index, the part *range_header* asks for.

    :raises NotFound: there is no such file.
    :raises UpstreamError: it cannot be read.
    """
    try:
        return LocalFileResponse(url, _local_path(url), parse_range(range_header))
    except FileNotFoundError:
        raise NotFound(f"upstream has no file at {url}") from None
    except OSError as exc:
        raise UpstreamError(f"cannot read {url}: {exc.strerror}") from exc
