"""The answer the connection thread gives itself, without a request thread: a liveness
probe's, while every request thread is busy (a hanging upstream holding them), so that
a load balancer or Docker does not restart a process that a restart would not help."""

from __future__ import annotations

from typing import Optional

from .http1 import header_lines, response_head

__all__ = ["SUCCESS", "probe_answer"]

# What proxpi answers /health and a DELETE /cache/... with: probes and scripts read it.
SUCCESS = b'{"status": "success", "data": null}\n'


def probe_answer(received: bytes) -> Optional[tuple]:
    """(the whole answer, whether it closes the connection) when *received*, what a
    connection sent while every request thread is busy, is one ``GET`` or ``HEAD
    /health`` head and nothing more (no body, nothing pipelined after it); None for
    anything else, which waits for a thread (RFC 9112 9.3: HTTP/1.1 persists unless
    told to close, HTTP/1.0 the reverse)."""
    method, _, rest = received.partition(b" ")
    if method not in (b"GET", b"HEAD") or not rest.startswith((b"/health HTTP/1.1\r\n", b"/health HTTP/1.0\r\n")):
        return None
    # One head, CRLF throughout, ending where what was sent ends (RFC 9112 2.2).
    if not received.endswith(b"\r\n\r\n") or received.find(b"\n\r\n") != len(received) - 3 or b"\n\n" in received:
        return None
    lines = received.lower().split(b"\r\n")
    if any(line.startswith((b"content-length:", b"transfer-encoding:")) for line in lines):
        return None  # a body to frame: a thread reads it
    connection = next((line[11:].strip() for line in lines if line.startswith(b"connection:")), b"")
    close = b"close" in connection or (rest.startswith(b"/health HTTP/1.0") and b"keep-alive" not in connection)
    headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store"), ("Content-Length", str(len(SUCCESS)))]
    return response_head(200, header_lines(headers), close=close) + (SUCCESS if method == b"GET" else b""), close
