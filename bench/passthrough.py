"""A proxy that answers a JSON project page with the upstream's own bytes, rewritten,
and parses the page only after the answer: what a cold page could cost a client if a
caching proxy passed pages through rather than parsing and rendering them first.

A project page (``/simple/<project>/``, JSON) is read whole, its links made relative
to the page and, if it gives no metadata of its own, every wheel given
``"core-metadata": true`` (PEP 714) with two regular expressions over the bytes, and sent; then one thread parses, filters and renders it
with proxpi_min's own functions, as much CPU as a caching proxy spends on it, off the
client's clock. ``<file>.metadata`` is read from the wheel with range requests (the
zip's end, then the member), nothing stored. Any other request is forwarded as
``bench/forward.py`` does. The upstream must keep its files at ``/files/<name>`` (the
bench's local upstream does).

    python bench/passthrough.py --port 5996 --upstream 127.0.0.1:8080
"""

from __future__ import annotations

import functools
import gzip
import queue
import re
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from forward import FORWARDED_RESPONSE, Forwarder, serve  # noqa: E402
from proxpi_min.core import wheelmeta  # noqa: E402
from proxpi_min.core.byteranges import parse_content_range  # noqa: E402
from proxpi_min.core.render import render_project_page  # noqa: E402
from proxpi_min.core.simple import JSON_TYPE, servable  # noqa: E402
from proxpi_min.core.simple_parse import parse_project_page  # noqa: E402

_LINK = re.compile(rb'"url":\s*"[^"]*/')
_WHEEL = re.compile(rb'("filename":\s*"[^"]*\.whl",)')
_parse_later: "queue.Queue[tuple]" = queue.Queue()


def _parse_pages() -> None:
    while True:
        project, url, body = _parse_later.get()
        try:
            page = servable(parse_project_page(body, JSON_TYPE, url, project))[0]
            render_project_page(page, JSON_TYPE)
        except Exception as exc:  # a page proxpi-min would refuse: say so, parse the next
            print(f"{url}: {exc!r}", file=sys.stderr, flush=True)


class PassThrough(Forwarder):
    def do_GET(self) -> None:
        project, rest = self._route()
        if project is not None and not rest:
            self._page(project)
        elif rest and rest.endswith(".metadata"):
            self._metadata(rest.removesuffix(".metadata"))
        else:
            self._forward("GET")

    def do_HEAD(self) -> None:
        self._route()
        self._forward("HEAD")

    def _route(self) -> tuple:
        """(project, what follows it) of a /simple/ path, else (None, None); a file's
        path is turned into the upstream's (``/files/<name>``) on the way."""
        path = self.path.partition("?")[0]
        project, slash, rest = path.removeprefix("/simple/").partition("/")
        if not path.startswith("/simple/") or not slash:
            return None, None
        if rest and not rest.endswith(".metadata"):
            self.path = f"/files/{rest}"
        return project, rest

    def _page(self, project: str) -> None:
        accept = self.headers.get("Accept", "")
        asked = self._ask("GET", self.path, {"Accept": accept, "Accept-Encoding": "gzip"})
        if asked is None:
            self.send_error(502)
            return
        response, body = asked
        if response.getheader("content-encoding") == "gzip":
            body = gzip.decompress(body)
        kind = response.getheader("content-type") or ""
        if response.status != 200 or not kind.startswith(JSON_TYPE):
            self._send(response.status, body, response)
            return
        answer = _LINK.sub(b'"url":"', body)
        if b'metadata"' not in answer:  # the index gives no metadata: advertise every wheel's
            answer = _WHEEL.sub(rb'\1"core-metadata":true,', answer)
        self._send(200, answer, content_type=kind)
        _parse_later.put((project, f"http://{self.upstream[0]}:{self.upstream[1]}{self.path}", body))

    def _metadata(self, wheel: str) -> None:
        read_range = functools.partial(self._range, f"/files/{wheel}")
        try:
            content = wheelmeta.metadata_from_ranges(read_range, wheel, wheelmeta.TAIL_READ)
        except Exception as exc:  # a broken wheel, or a zip64 record that does not unpack
            self.send_error(502, explain=repr(exc))
            return
        if content is None:
            self.send_error(502, explain="the upstream did not answer the range requests")
        else:
            self._send(200, content, content_type="application/octet-stream")

    def _range(self, path: str, header: str):
        """(bytes, offset of the first, file size), or None without a 206 of known size."""
        asked = self._ask("GET", path, {"Range": header})
        if asked is None or asked[0].status != 206:
            return None
        where = parse_content_range(asked[0].getheader("content-range"))
        return None if where is None else (asked[1], *where)

    def _send(self, status: int, body: bytes, response=None, content_type: str = "") -> None:
        """*body* (identity coding) with *response*'s headers that forward.py passes on,
        or with *content_type*."""
        self.send_response(status)
        for name in FORWARDED_RESPONSE if response is not None else ():
            value = response.getheader(name) if name != "content-encoding" else None
            if value:
                self.send_header(name, value)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main(argv: list) -> int:
    threading.Thread(target=_parse_pages, name="parse-later", daemon=True).start()
    return serve(argv, PassThrough, __doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
