"""upstream_body.RateGuard: the minimum transfer rate, on a clock the test moves;
upstream_body.VerifiedChunks: an upstream body read through the hash and the rate."""

from __future__ import annotations

import hashlib
import io
import time
from typing import Optional

import pytest

from proxpi_min.core.errors import HashMismatch, IntegrityError, UpstreamTimeout
from proxpi_min.core.simple import FileEntry
from proxpi_min.files import upstream_body
from proxpi_min.files.upstream_body import CHUNK, RATE_WINDOW, RateGuard, VerifiedChunks
from proxpi_min.files.layout import Target


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_window_under_the_rate_is_cut():
    clock = Clock()
    guard = RateGuard(1000, "http://u/f.whl", clock)
    clock.now += RATE_WINDOW / 2
    guard.add(10)  # within the window: not judged yet
    clock.now += RATE_WINDOW / 2
    with pytest.raises(UpstreamTimeout, match="under the minimum of 1000 bytes a second: http://u/f.whl"):
        guard.add(10)


def test_each_window_is_judged_on_its_own():
    clock = Clock()
    guard = RateGuard(1000, "u", clock)
    clock.now += RATE_WINDOW
    guard.add(int(1000 * RATE_WINDOW))  # a fast first window ...
    clock.now += RATE_WINDOW
    with pytest.raises(UpstreamTimeout):  # ... does not pay for a stalled second one
        guard.add(1)


def test_a_steady_transfer_and_no_minimum_pass():
    clock = Clock()
    steady, unlimited = RateGuard(1000, "u", clock), RateGuard(0, "u", clock)
    for _ in range(10):
        clock.now += RATE_WINDOW / 3
        steady.add(int(1000 * RATE_WINDOW / 3) + 1)
        unlimited.add(0)


def test_time_waiting_on_a_slow_client_is_not_the_upstreams():
    clock = Clock()
    guard = RateGuard(1000, "u", clock)
    with guard.client_time():
        clock.now += 10 * RATE_WINDOW  # the client reads slowly
    clock.now += RATE_WINDOW
    guard.add(int(1000 * RATE_WINDOW))  # the upstream kept the rate while it was asked
    clock.now += RATE_WINDOW
    with pytest.raises(UpstreamTimeout):  # and is still judged when it stalls
        guard.add(1)


BODY = b"w" * (CHUNK + 10)


class Response:
    """An upstream body read in the sizes asked for, *pause* seconds a read."""

    def __init__(self, body: bytes, pause: float = 0.0, length: Optional[int] = None) -> None:
        self._body = io.BytesIO(body)
        self._pause = pause
        self.length = length  # announced (Content-Length), or None
        self.asked: list = []

    def read(self, size: int) -> bytes:
        self.asked.append(size)
        time.sleep(self._pause)
        return self._body.read(size)


def _target(digest: str) -> Target:
    entry = FileEntry("w-1.0-py3-none-any.whl", "http://u/w-1.0-py3-none-any.whl", (("sha256", digest),))
    return Target("/c/files", "w", entry, metadata=False)


def test_VerifiedChunks_gives_the_body_a_chunk_at_a_time_and_checks_its_hash():
    response = Response(BODY)
    body = VerifiedChunks(response, _target(hashlib.sha256(BODY).hexdigest()), min_rate=0)
    assert [len(chunk) for chunk in body] == [CHUNK, 10]
    assert response.asked == [CHUNK, CHUNK, CHUNK]  # the last read finds the end
    body.check()


@pytest.mark.parametrize("length", [None, len(BODY)], ids=["unannounced", "announced"])
def test_VerifiedChunks_check_refuses_bytes_without_the_index_hash(length):
    body = VerifiedChunks(Response(BODY, length=length), _target("00" * 32), min_rate=0)
    assert b"".join(body) == BODY
    with pytest.raises(HashMismatch, match="w-1.0-py3-none-any.whl: downloaded bytes do not match the index hash"):
        body.check()


def test_VerifiedChunks_check_takes_the_index_size_where_no_length_is_announced():
    # A body delimited by the connection's close, cut: the index's size tells it short.
    entry = FileEntry("w-1.0-py3-none-any.whl", "http://u/w-1.0-py3-none-any.whl",
                      (("sha256", hashlib.sha256(BODY).hexdigest()),), size=len(BODY))
    body = VerifiedChunks(Response(BODY[:100]), Target("/c/files", "w", entry, metadata=False), min_rate=0)
    assert b"".join(body) == BODY[:100]
    with pytest.raises(IntegrityError, match=f"upstream sent 100 of {len(BODY)} bytes") as raised:
        body.check()
    assert not isinstance(raised.value, HashMismatch)


def test_VerifiedChunks_check_tells_a_body_cut_short_from_a_mismatch():
    # Fewer bytes than announced: the upstream's failure, worth asking again, whatever
    # the hash of what came says.
    body = VerifiedChunks(Response(BODY[:100], length=len(BODY)), _target(hashlib.sha256(BODY).hexdigest()), min_rate=0)
    assert b"".join(body) == BODY[:100]
    with pytest.raises(IntegrityError, match=f"upstream sent 100 of {len(BODY)} bytes") as raised:
        body.check()
    assert not isinstance(raised.value, HashMismatch)


def test_VerifiedChunks_cuts_an_upstream_under_the_minimum_rate(monkeypatch):
    monkeypatch.setattr(upstream_body, "RATE_WINDOW", 0.001)
    body = VerifiedChunks(Response(BODY, pause=0.01), _target(hashlib.sha256(BODY).hexdigest()), min_rate=10**12)
    with pytest.raises(UpstreamTimeout, match="under the minimum of 1000000000000 bytes a second: http://u/w-1.0"):
        list(body)
