"""A loopback TCP server for tests that script an upstream or a proxy byte by byte."""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Callable, Iterator

__all__ = ["raw_server"]


@contextlib.contextmanager
def raw_server(answer: Callable[[socket.socket], None]) -> Iterator[int]:
    """Runs *answer* on each connection accepted on 127.0.0.1, in a thread of its own
    (closing the connection is *answer*'s); yields the port; stops accepting at exit."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # the listener was shut down
                return
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.shutdown(socket.SHUT_RDWR)  # wakes the accept
        listener.close()
