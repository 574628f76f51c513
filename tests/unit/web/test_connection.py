"""web.connection: a head is complete at its empty line (CRLF or bare LF); the parser's
reads start with the bytes the selector buffered, then read on, and stop short when the
client closes or times out; a body's minimum rate forgives a slow start, not a trickle."""

from __future__ import annotations

import pytest

from proxpi_min.web.connection import HEAD_MAX, Connection, MinimumRate


class _Script:
    """Stands in for a socket: recv() gives the scripted chunks, then b"" (closed);
    a BlockingIOError in the script is a timeout."""

    def __init__(self, *chunks) -> None:
        self.chunks = list(chunks)

    def recv(self, size: int, flags: int = 0) -> bytes:
        if not self.chunks:
            return b""
        chunk = self.chunks.pop(0)
        if isinstance(chunk, Exception):
            raise chunk
        return chunk

    def settimeout(self, seconds) -> None:
        """A timed-out recv is scripted as a BlockingIOError instead."""


def _connection(*chunks) -> Connection:
    return Connection(_Script(*chunks), ("127.0.0.1", 1), 0.0)


@pytest.mark.parametrize(
    "chunks, complete",
    [
        ([b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"], True),
        ([b"GET / HTTP/1.1\nHost: x\n\n"], True),  # RFC 9112 2.2: a bare LF
        ([b"GET / HTTP/1.1\r\nHost: x\r", b"\n\r", b"\n"], True),  # the end split across reads
        ([b"GET / HTTP/1.1\r\nHost: x\r\n"], False),
        ([b"GET / HT"], False),
        ([b"x" * HEAD_MAX], True),  # too long for a head: see too_long
    ],
)
def test_head_complete(chunks: list, complete: bool) -> None:
    connection = _connection(*chunks)
    for _ in chunks:
        assert connection.receive()
    assert connection.head_complete() is complete


def test_receive_says_when_the_client_closed() -> None:
    connection = _connection(b"GET")
    assert connection.receive() and connection.started()
    assert connection.receive() is False


def test_the_parser_reads_the_buffered_head_then_the_socket() -> None:
    connection = _connection(b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab")
    connection.receive()
    connection.sock.chunks = [b"cde", b"GET /next HTTP/1.1\r\n\r\n"]
    assert connection.readline(65537) == b"GET / HTTP/1.1\r\n"
    assert connection.readline(65537) == b"Content-Length: 5\r\n"
    assert connection.readline(65537) == b"\r\n"
    assert connection.read(5) == b"abcde"  # two bytes buffered, three read on
    assert connection.readline(65537) == b"GET /next HTTP/1.1\r\n"


def test_readline_stops_at_its_limit_and_at_a_close() -> None:
    connection = _connection(b"GET /aaaaaaaa")
    connection.receive()
    assert connection.readline(5) == b"GET /"
    assert connection.readline() == b"aaaaaaaa"  # closed mid-line: what there was
    assert connection.readline() == b""


def test_a_timed_out_read_ends_a_body_short() -> None:
    connection = _connection(b"DELETE / HTTP/1.1\r\n\r\nab")
    connection.receive()
    connection.sock.chunks = [BlockingIOError()]
    connection.readline()
    connection.readline()
    assert connection.read(10) == b"ab"


def test_discard_drops_the_buffered_bytes_then_reads_on_to_its_size() -> None:
    connection = _connection(b"POST / HTTP/1.1\r\n\r\nab")
    connection.receive()
    connection.sock.chunks = [b"cde", b"fgGET /next HTTP/1.1\r\n\r\n"]
    connection.client_timeout = 5.0  # as the first hand-over sets it
    connection.readline()
    connection.readline()
    assert connection.discard(7, 5.0) == 7
    assert connection.body_read == 7  # counted as a body read
    assert connection.readline() == b"GET /next HTTP/1.1\r\n"  # the bytes past it stay


@pytest.mark.parametrize("end", [b"", BlockingIOError()], ids=["closed", "silent"])
def test_discard_stops_when_the_client_closes_or_is_silent(end) -> None:
    connection = _connection(b"POST / HTTP/1.1\r\n\r\nab")
    connection.receive()
    connection.sock.chunks = [b"cde", end, b"never read"]
    connection.client_timeout = 5.0  # as the first hand-over sets it
    connection.readline()
    connection.readline()
    assert connection.discard(1000, 5.0) == 5


def test_heads_pipelined_behind_the_first_are_complete_as_soon_as_it_is_parsed() -> None:
    # Else each would wait for the linger before its thread saw it (next_ready).
    connection = _connection(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
    connection.receive()
    for path in (b"/a", b"/a", b"/a"):
        assert connection.head_complete()
        assert connection.readline() == b"GET " + path + b" HTTP/1.1\r\n"
        assert connection.readline() == b"Host: x\r\n"
        assert connection.readline() == b"\r\n"
    assert not connection.head_complete()


def test_compact_keeps_the_next_request_only() -> None:
    connection = _connection(b"GET /a HTTP/1.1\r\n\r\nGET /b")
    connection.receive()
    connection.readline()
    connection.readline()
    connection.compact()
    assert bytes(connection.buffer) == b"GET /b" and connection.started()
    assert not connection.head_complete()


@pytest.mark.parametrize(
    "head, status",
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n", 0),
        (b"GET /" + b"a" * HEAD_MAX, 414),
        (b"\r\nGET /" + b"a" * HEAD_MAX, 414),  # after the empty line RFC 9112 2.2 allows
        (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * HEAD_MAX, 431),
        (b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * (HEAD_MAX // 8), 431),
        pytest.param(b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * (HEAD_MAX // 8) + b"\r\n", 431, id="end-past-the-limit"),
        # A short head, then more than HEAD_MAX of its body or of pipelined requests.
        pytest.param(b"POST /upload/ HTTP/1.1\r\nContent-Length: 70000\r\n\r\n" + b"x" * 70000, 0, id="body"),
        pytest.param(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * (HEAD_MAX // 30), 0, id="pipelined"),
        pytest.param(b"GET /health HTTP/1.1\nHost: x\n\n" + b"x" * HEAD_MAX, 0, id="bare-lf-then-body"),
    ],
)
def test_too_long(head: bytes, status: int) -> None:
    connection = _connection(head)
    connection.receive()
    assert connection.too_long() == status


class _Clock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_minimum_rate_forgives_a_slow_start_within_the_grace() -> None:
    clock = _Clock()
    rate = MinimumRate(1000, 10.0, clock)
    assert rate.time_left() == 10.0  # the first read may wait one grace
    clock.now = 9.9
    assert rate.count(0)
    for _ in range(100):  # then 2000 bytes a second, for a minute
        clock.now += 0.5
        assert rate.count(1000)
    assert rate.received == 100_000


def test_minimum_rate_cuts_a_trickle_about_one_grace_after_the_start() -> None:
    clock = _Clock()
    rate = MinimumRate(1000, 10.0, clock)
    while rate.count(1):  # a byte every second: each read within any client timeout
        clock.now += 1.0
    assert 10.0 <= clock.now <= 11.0 and rate.elapsed() == clock.now


def test_minimum_rate_counts_a_read_that_ends_at_its_bound() -> None:
    """A read bounded by time_left returns at that time with what came: those bytes count."""
    clock = _Clock()
    rate = MinimumRate(1000, 10.0, clock)
    clock.now = rate.time_left()
    assert rate.count(5000)
    clock.now += rate.time_left()
    assert not rate.count(0)


def test_minimum_rate_a_burst_buys_one_grace_not_more() -> None:
    clock = _Clock()
    rate = MinimumRate(1000, 10.0, clock)
    assert rate.count(100_000_000)  # a day's worth at the minimum rate, in an instant
    assert rate.time_left() == 10.0
    clock.now = 9.0
    assert rate.count(0)  # a stall shorter than the grace
    clock.now = 10.0
    assert not rate.count(0)
