"""Request pacing on a fake timeline: evenly spaced, paused by a 429, alive while waiting."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools

import pytest

from tickpipe.sources.gexbot.ratelimit import (
    HEARTBEAT_S,
    MAX_RETRY_AFTER_S,
    AnsweredWindow,
    TokenBucket,
    retry_after_seconds,
)


class Timeline:
    """A clock that moves only when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 100.0

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


async def test_requests_are_evenly_spaced_at_the_rate() -> None:
    line = Timeline()
    bucket = TokenBucket(4.0, now=line.time, sleep=line.sleep)
    stamps = []
    for _ in range(9):
        await bucket.acquire()
        stamps.append(line.now)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert stamps[0] == 100.0
    assert gaps == pytest.approx([0.25] * 8)


async def test_concurrent_waiters_share_one_budget() -> None:
    line = Timeline()
    bucket = TokenBucket(2.0, now=line.time, sleep=line.sleep)
    stamps: list[float] = []

    async def worker() -> None:
        for _ in range(3):
            await bucket.acquire()
            stamps.append(line.now)

    await asyncio.gather(*(worker() for _ in range(4)))
    stamps.sort()
    assert len(stamps) == 12
    # any window of one second holds at most two requests
    assert all(b - a >= 1.0 - 1e-9 for a, b in zip(stamps, stamps[2:], strict=False))


async def test_a_pause_holds_every_request_then_one_goes_at_once() -> None:
    line = Timeline()
    bucket = TokenBucket(10.0, now=line.time, sleep=line.sleep)
    await bucket.acquire()
    bucket.pause(3.0)
    assert bucket.available() == 0.0
    await bucket.acquire()
    assert line.now == pytest.approx(103.0)
    await bucket.acquire()
    assert line.now == pytest.approx(103.1)


async def test_a_long_wait_reports_liveness() -> None:
    line = Timeline()
    bucket = TokenBucket(1.0, now=line.time, sleep=line.sleep)
    beats: list[float] = []
    bucket.pause(4 * HEARTBEAT_S)
    await bucket.acquire(heartbeat=lambda: beats.append(line.now))
    assert len(beats) >= 4
    assert all(b - a <= HEARTBEAT_S + 1e-9 for a, b in itertools.pairwise(beats))


async def test_a_window_counts_from_answers_so_a_late_request_cannot_crowd_the_next() -> None:
    line = Timeline()
    window = AnsweredWindow(2, 1.0, now=line.time, sleep=line.sleep)
    starts: list[float] = []

    async def request(latency: float) -> None:
        async with window.slot():
            starts.append(line.now)
            await line.sleep(latency)  # on the way and back: the server saw it meanwhile

    await request(0.3)  # 100.0 -> answered 100.3
    await request(0.6)  # 100.3 -> answered 100.9
    await request(0.1)  # must wait for the first slot: 100.3 + 1.0
    await request(0.1)  # and the second: 100.9 + 1.0
    assert starts == pytest.approx([100.0, 100.3, 101.3, 101.9])


async def test_a_window_with_every_request_out_waits_for_an_answer() -> None:
    line = Timeline()
    window = AnsweredWindow(1, 1.0, now=line.time, sleep=line.sleep)
    answered = asyncio.Event()
    order: list[str] = []

    async def slow() -> None:
        async with window.slot():
            order.append("slow out")
            await answered.wait()
            order.append("slow answered")

    async def next_one() -> None:
        async with window.slot():
            order.append(f"next out at {line.now - 100:.1f}")

    first = asyncio.create_task(slow())
    await asyncio.sleep(0)
    second = asyncio.create_task(next_one())
    await asyncio.sleep(0)
    line.now += 2.0  # the slow answer comes back two seconds later
    answered.set()
    await asyncio.gather(first, second)
    assert order == ["slow out", "slow answered", "next out at 3.0"]


def test_retry_after_as_seconds_or_a_date() -> None:
    now = dt.datetime(2026, 12, 1, 12, 0, 0, tzinfo=dt.UTC)
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("0.5") == 0.5
    assert retry_after_seconds("Tue, 01 Dec 2026 12:00:07 GMT", now) == pytest.approx(7.0)
    assert retry_after_seconds("Tue, 01 Dec 2026 11:59:00 GMT", now) == 0.0
    assert retry_after_seconds("999999") == MAX_RETRY_AFTER_S
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None
