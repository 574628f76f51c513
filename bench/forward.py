"""A proxy that only forwards: the floor under any threaded standard-library proxy.

Each request goes upstream as it came (method, path, the headers pip and uv send that
matter), on one kept-alive connection per thread, and the answer streams back as it
comes (or, with ``--whole``, once read whole: what a proxy that parses a page must
wait for). No cache, no parsing, no rewriting: the upstream's pages keep their links,
which lead clients back here (they are relative to the upstream's root). What a run
through it costs over direct is what forwarding alone costs in Python on this machine.

    python bench/forward.py --port 5997 --upstream 127.0.0.1:8080
"""

from __future__ import annotations

import argparse
import http.client
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

FORWARDED_REQUEST = ("accept", "accept-encoding", "range", "user-agent")
FORWARDED_RESPONSE = ("content-type", "content-encoding", "content-range", "accept-ranges", "etag", "location")
CHUNK = 64 * 1024


class Forwarder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else each answer's body waits on the header's ACK
    upstream: tuple = ("127.0.0.1", 80)
    whole = False
    connections = threading.local()

    def log_message(self, format: str, *args) -> None:
        pass  # one line per request would cost more than the forwarding

    def log_error(self, format: str, *args) -> None:
        super().log_message(format, *args)

    def do_GET(self) -> None:
        self._forward("GET")

    def do_HEAD(self) -> None:
        self._forward("HEAD")

    def _forward(self, method: str) -> None:
        headers = {k: v for k, v in self.headers.items() if k.lower() in FORWARDED_REQUEST}
        asked = self._ask(method, self.path, headers, stream=not self.whole and method == "GET")
        if asked is None:
            self.send_error(502)
            return
        response, body = asked
        streamed = body is None
        self.send_response(response.status)
        for name in FORWARDED_RESPONSE:
            value = response.getheader(name)
            if value:
                self.send_header(name, value)
        length = response.getheader("content-length") if streamed or method == "HEAD" else str(len(body))
        if length is not None:
            self.send_header("Content-Length", length)
        self.end_headers()
        if method == "HEAD":
            return
        sent = 0
        if not streamed:
            self.wfile.write(body)
            sent = len(body)
        while streamed:
            chunk = response.read1(CHUNK)
            if not chunk:
                break
            self.wfile.write(chunk)
            sent += len(chunk)
        if sent != int(length):  # cut short upstream: the client must not wait for the rest
            self.log_error("%s: %d of %s bytes", self.path, sent, length)
            self.close_connection = True

    def _ask(self, method: str, path: str, headers: dict, stream: bool = False) -> Optional[tuple]:
        """(response, its body read whole) from upstream, on this thread's kept-alive
        connection; with *stream*, an answer of known length comes with body None, to be
        read from the response. None if the upstream cannot be reached."""
        for attempt in range(2):  # once more on a new connection (the upstream closed a kept-alive one)
            connection = getattr(self.connections, "upstream", None) or http.client.HTTPConnection(*self.upstream)
            self.connections.upstream = connection
            try:
                connection.request(method, path, headers=headers)
                response = connection.getresponse()
                streamed = stream and response.getheader("content-length") is not None
                return response, None if streamed else response.read()
            except (http.client.HTTPException, OSError):
                connection.close()
                self.connections.upstream = None
        return None


class Server(ThreadingHTTPServer):
    request_queue_size = 256  # uv opens dozens of connections at once


def serve(argv: list, handler: type, doc: str) -> int:
    """Serve *handler* (a Forwarder) on the port the command line *argv* gives."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True, help="host:port of the upstream")
    p.add_argument("--whole", action="store_true", help="read each answer whole before sending it")
    args = p.parse_args(argv)
    host, _, port = args.upstream.rpartition(":")
    handler.upstream = (host, int(port))
    handler.whole = args.whole
    server = Server(("127.0.0.1", args.port), handler)
    print(f"{handler.__name__} on http://127.0.0.1:{args.port}/, upstream {args.upstream}", flush=True)
    server.serve_forever()
    return 0


def main(argv: list) -> int:
    return serve(argv, Forwarder, __doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
