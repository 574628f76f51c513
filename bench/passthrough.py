"""A proxy that answers a JSON project page with the upstream's own bytes, rewritten,
and parses the page only after the answer: what a cold page could cost a client if a
caching proxy passed pages through rather than parsing and rendering them first.

A project page (``/simple/<project>/``, JSON) is read whole, its links made relative
to the page and every wheel given ``"core-metadata": true`` (PEP 714) with two regular
expressions over the bytes, and sent; then one thread parses, filters and renders it
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

from forward import Forwarder, serve  # noqa: E402
from proxpi_min.core import wheelmeta  # noqa: E402
from proxpi_min.core.render import render_project_page  # noqa: E402
from proxpi_min.core.simple import JSON_TYPE, parse_project_page, servable  # noqa: E402

_LINK = re.compile(rb'"url":\s*"[^"]*/')
_WHEEL = re.compile(rb'("filename":\s*"[^"]*\.whl",)')
_parse_later: "queue.Queue[tuple]" = queue.Queue()


def _parse_pages() -> None:
    while True:
        project, url, body = _parse_later.get()
        page = servable(parse_project_page(body, JSON_TYPE, url, project))[0]
        render_project_page(page, JSON_TYPE)


class PassThrough(Forwarder):
    def do_GET(self) -> None:
        project, slash, rest = self.path.removeprefix("/simple/").partition("/")
        if not self.path.startswith("/simple/") or not slash:
            self._forward("GET")
        elif not rest:
            self._page(project)
        elif rest.endswith(".metadata"):
            self._metadata(rest.removesuffix(".metadata"))
        else:
            self.path = f"/files/{rest}"
            self._forward("GET")

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
        if response.status == 200 and kind.startswith(JSON_TYPE):
            answer = _WHEEL.sub(rb'\1"core-metadata":true,', _LINK.sub(b'"url":"', body))
            self._send(200, kind, answer)
            _parse_later.put((project, f"http://{self.upstream[0]}:{self.upstream[1]}{self.path}", body))
        else:
            self._send(response.status, kind, body)

    def _metadata(self, wheel: str) -> None:
        read_range = functools.partial(self._range, f"/files/{wheel}")
        try:
            content = wheelmeta.metadata_from_ranges(read_range, wheel, wheelmeta.TAIL_READ)
        except wheelmeta.BrokenWheel as exc:
            self.send_error(502, str(exc))
            return
        if content is None:
            self.send_error(502, "the upstream did not answer the range requests")
        else:
            self._send(200, "application/octet-stream", content)

    def _range(self, path: str, header: str):
        """(bytes, offset of the first, file size), or None without a 206."""
        asked = self._ask("GET", path, {"Range": header})
        if asked is None or asked[0].status != 206:
            return None
        span, _, total = (asked[0].getheader("content-range") or "").partition("/")
        return asked[1], int(span.rpartition(" ")[2].partition("-")[0]), int(total)

    def _send(self, status: int, kind: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main(argv: list) -> int:
    threading.Thread(target=_parse_pages, name="parse-later", daemon=True).start()
    return serve(argv, PassThrough, __doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
