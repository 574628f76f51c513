"""downloads.RateGuard: the minimum transfer rate, on a clock the test moves."""

from __future__ import annotations

import pytest

from proxpi_min.core.errors import UpstreamTimeout
from proxpi_min.files.downloads import RATE_WINDOW, RateGuard


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
