"""Host names resolved for the upstream client, each answer kept a while: one lookup per
host at a time, however many connections open at once."""

from __future__ import annotations

import socket
import threading
import time
from typing import Optional

__all__ = ["DNS_ATTEMPTS", "DNS_TTL", "Resolver"]

# Host name answers are reused this long: a burst of parallel downloads (uv fetches
# dozens of files at once) must not each ask the resolver, which then fails or stalls.
DNS_TTL = 60.0
DNS_ATTEMPTS = 3  # a "temporary failure in name resolution" is worth asking again


class Resolver:
    """getaddrinfo with answers cached for DNS_TTL; one lookup per host at a time."""

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._answers: dict = {}  # (host, port) -> (expiry, addresses)
        self._lookups: dict = {}  # (host, port) -> lock held while that host is looked up
        self._lock = threading.Lock()

    def addresses(self, host: str, port: int) -> list:
        key = (host, port)
        with self._lock:
            answer = self._answers.get(key)
            if answer is not None and answer[0] > self._clock():
                return answer[1]
            lookup = self._lookups.setdefault(key, threading.Lock())
        with lookup:  # concurrent askers wait for the first one's answer
            with self._lock:
                answer = self._answers.get(key)
                if answer is not None and answer[0] > self._clock():
                    return answer[1]
            for attempt in range(1, DNS_ATTEMPTS + 1):
                try:
                    addresses = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
                    break
                except socket.gaierror as exc:
                    if exc.errno != socket.EAI_AGAIN or attempt == DNS_ATTEMPTS:
                        raise
                    time.sleep(0.1 * attempt)
            with self._lock:
                self._answers[key] = (self._clock() + DNS_TTL, addresses)
            return addresses

    def create_connection(self, address: tuple, timeout: Optional[float], source_address=None) -> socket.socket:
        """socket.create_connection, with cached name resolution."""
        error: Optional[OSError] = None
        for family, kind, proto, _, sockaddr in self.addresses(*address):
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
                sock.connect(sockaddr)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        raise error or OSError(f"no address for {address[0]}")
