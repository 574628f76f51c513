"""A cached file that turns out shorter than the body sent from it (changed in place on
disk after it was opened): the response is cut, never left short and open."""

from __future__ import annotations

import socket
import threading

import pytest

from proxpi_min.core.errors import FileCutShort
from proxpi_min.files.bodies import CachedBody


def test_a_cached_file_shorter_than_its_body_is_cut_short_with_what_went(tmp_path) -> None:
    path = tmp_path / "a-1.0-py3-none-any.whl"
    path.write_bytes(b"x" * 200_000)
    with open(path, "rb") as file:
        body = CachedBody(file, 300_000, None)  # its size when opened; 100,000 bytes since cut
        ours, theirs = socket.socketpair()
        received = bytearray()

        def read() -> None:
            for chunk in iter(lambda: theirs.recv(65536), b""):
                received.extend(chunk)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            with pytest.raises(FileCutShort):
                body.send(ours, b"HTTP/1.1 200 OK\r\n\r\n", False)
        finally:
            ours.close()
            reader.join(5)
            theirs.close()
    assert body.sent == 200_000
    assert len(received) == len(b"HTTP/1.1 200 OK\r\n\r\n") + 200_000
