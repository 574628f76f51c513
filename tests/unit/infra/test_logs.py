"""infra.logs: the batched writer of a server's log lines."""

from __future__ import annotations

import contextlib
import io
import logging
import select
import sys
from typing import Iterator

import pytest

from proxpi_min.infra import logs


class Recording(io.StringIO):
    """A stderr that keeps each write apart."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


@contextlib.contextmanager
def batched_to(stream: io.StringIO, monkeypatch) -> Iterator[logging.Logger]:
    """A logger whose records go through a BatchedStream to *stream* as stderr, closed
    (every record written) on leaving."""
    monkeypatch.setattr(sys, "stderr", stream)
    handler = logs.BatchedStream(logging.Formatter("%(message)s"))
    logger = logging.getLogger(f"test-batched-log-{id(stream)}")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield logger
    finally:
        logger.removeHandler(handler)
        handler.close()


def test_batched_log_writes_every_line_in_order_by_close(monkeypatch):
    stream = Recording()
    with batched_to(stream, monkeypatch) as logger:
        for number in range(2500):  # more than one batch
            logger.warning("line %d", number)
        logger.warning("bad %d", "not a number")  # reported, and the log goes on
        logger.warning("last")
    lines = stream.getvalue().splitlines()
    assert [line for line in lines if line.startswith("line ")] == [f"line {number}" for number in range(2500)]
    assert "last" in lines and "not a number" in stream.getvalue()


def test_batched_log_writes_whole_lines_no_more_than_a_pipe_keeps_whole(monkeypatch):
    """Several workers share one stderr pipe (journald, docker): each write is whole
    lines of at most PIPE_BUF bytes, which POSIX never interleaves with another's."""
    stream = Recording()
    with batched_to(stream, monkeypatch) as logger:
        for number in range(3000):
            logger.warning("a request line of some length, number %d %s", number, "x" * 60)
    assert len(stream.writes) > 1
    assert all(len(text.encode()) <= select.PIPE_BUF and text.endswith("\n") for text in stream.writes)
    assert len(stream.getvalue().splitlines()) == 3000


@pytest.fixture
def root_logging():
    """The root logger's handlers, level and logging's switches, put back after the test."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging._srcfile, logging.logThreads, logging.logProcesses,
             logging.logMultiprocessing)
    yield root
    for handler in root.handlers[:]:
        if handler not in saved[0]:
            handler.close()
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    logging._srcfile, logging.logThreads, logging.logProcesses, logging.logMultiprocessing = saved[2:]


@pytest.mark.parametrize("batched", [False, True])
def test_configure_logging_keeps_the_records_at_the_level_and_above(monkeypatch, root_logging, batched):
    stream = Recording()
    monkeypatch.setattr(sys, "stderr", stream)
    logs.configure_logging("text", "WARNING", batched=batched)
    logger = logging.getLogger("proxpi_min.web.routes")
    logger.info("a request line")
    logger.warning("upstream trouble")
    for handler in root_logging.handlers:
        handler.close()  # the batched writer writes out what is queued
    assert "upstream trouble" in stream.getvalue() and "a request line" not in stream.getvalue()
