"""A minimal upstream on 127.0.0.1 whose answers a test sets per path: for answers the
fake index of upstream.py cannot give (wrong shapes, redirect loops, huge or trickling
bodies)."""

from __future__ import annotations

import collections
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["Scripted", "reply"]


def reply(handler: BaseHTTPRequestHandler, status: int, headers: dict, body: bytes) -> None:
    """Answer *handler*'s request with *status*, *headers*, a Content-Length and *body*."""
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # The proxy cutting an endless or oversized answer is what those tests want.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Scripted:
    """A minimal upstream on 127.0.0.1 whose answers the test sets per path.

    ``routes[path]`` is ``(status, headers, body)`` or a callable taking the handler;
    anything else is a 404. ``hits`` counts requests per path (query dropped).
    """

    def __init__(self):
        self.routes = {}
        self.hits = collections.Counter()
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                path = urllib.parse.urlsplit(self.path).path
                outer.hits[path] += 1
                route = outer.routes.get(path, (404, {"Content-Type": "text/plain"}, b"not found\n"))
                if callable(route):
                    route(self)
                    return
                reply(self, *route)

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.002}, daemon=True)
        self.thread.start()

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def url(self):
        return f"{self.base_url}/simple/"

    def stop(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
