"""A loopback TCP server for tests that script an upstream or a proxy byte by byte."""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Callable, Iterator

__all__ = ["Relay", "raw_server"]


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


class Relay:
    """A relay on 127.0.0.1 to the server at *port*: what a client sends goes on at once;
    what the server sends comes back as it comes or, once :meth:`trickle` was called, a
    byte each *every* seconds (so a real TLS server's handshake can be trickled)."""

    def __init__(self, port: int, every: float) -> None:
        self.port = 0
        self._target = port
        self._every = every
        self._slow = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list = []
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> "Relay":
        self.port = self._stack.enter_context(raw_server(self._relay))
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._drop()
        self._stack.close()

    def trickle(self) -> None:
        """Send slowly from now on, and drop the connections relayed so far: a client
        then connects, and shakes hands, again."""
        self._slow.set()
        self._drop()

    def _drop(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _relay(self, client: socket.socket) -> None:
        with client, socket.create_connection(("127.0.0.1", self._target)) as server:
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._forward, args=(client, server), daemon=True).start()
            with contextlib.suppress(OSError):
                while not self._stop.is_set():
                    slow = self._slow.is_set()
                    data = server.recv(1 if slow else 65536)
                    if not data:
                        break
                    client.sendall(data)
                    if slow:
                        self._stop.wait(self._every)

    @staticmethod
    def _forward(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
