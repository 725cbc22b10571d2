"""Request pacing for the gexbot poller: a token bucket, an answered-requests window and
``Retry-After``.

gexbot asks for at most one request per second per ticker and category and answers
bursts with 429. Pacing at the client is not enough on its own: a request that leaves late
(a stalled event loop, a slow connection) lands at the server close to the next one. So
the poller spaces requests evenly (``TokenBucket``, burst of one) and also lets a request
leave only when the server cannot count it in the same second as the ``limit`` requests
before it (``AnsweredWindow``: measured from when their answers came back, which is after
the server saw them). Each (ticker, category) is likewise asked again only a second after
its last answer. All of it paces ``PACING_MARGIN`` slower than the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email.utils
from collections.abc import AsyncIterator, Awaitable, Callable

PACING_MARGIN = 1.05
"""intervals are 5 % longer than the limit's"""
MAX_RETRY_AFTER_S = 3600.0
"""a Retry-After longer than this is taken as this (a broken header must not park us for days)"""
HEARTBEAT_S = 5.0
"""while waiting, report liveness at least this often (a deliberate wait is not a dead feed)"""


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


class TokenBucket:
    """At most ``rate`` acquisitions per second on average, at most ``burst`` at once;
    ``pause(s)`` stops every acquisition for ``s`` seconds (a 429's Retry-After).

    Waiters are served first come, first served (one lock). ``now`` and ``sleep`` are
    injectable so tests run on a fake timeline."""

    def __init__(
        self,
        rate: float,
        *,
        burst: float = 1.0,
        now: Callable[[], float] = _loop_time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._now = now
        self._sleep = sleep
        self._tokens = burst
        self._stamp: float | None = None
        self.paused_until = float("-inf")
        self._lock = asyncio.Lock()

    def _refill(self, now: float) -> None:
        if self._stamp is None:
            self._stamp = now
        elif now > self._stamp:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now

    def available(self) -> float:
        """Requests that could go now without waiting (0 while paused)."""
        now = self._now()
        if now < self.paused_until:
            return 0.0
        self._refill(now)
        return round(self._tokens, 3)

    def pause(self, seconds: float) -> None:
        """No acquisition for ``seconds`` from now; then one may go at once."""
        until = self._now() + max(seconds, 0.0)
        if until > self.paused_until:
            self.paused_until = until
            self._tokens = min(1.0, self.burst)
            self._stamp = until

    async def acquire(self, heartbeat: Callable[[], None] | None = None) -> None:
        """Wait for a token; ``heartbeat`` is called every few seconds meanwhile."""
        async with self._lock:
            while True:
                now = self._now()
                wait = self.paused_until - now
                if wait <= 0:
                    self._refill(now)
                    if self._tokens >= 1 - 1e-9:
                        self._tokens = max(self._tokens - 1, 0.0)
                        return
                    wait = (1 - self._tokens) / self.rate
                if heartbeat is not None:
                    heartbeat()
                await self._sleep(min(wait, HEARTBEAT_S))


class AnsweredWindow:
    """At most ``count`` requests in any ``seconds`` as the server sees them, whatever the
    delays on the way: ``count`` slots, each reusable ``seconds`` after the answer of the
    request that held it came back (an answer comes after the server saw the request, so
    two requests of one slot reach it at least ``seconds`` apart)."""

    def __init__(
        self,
        count: int,
        seconds: float,
        *,
        now: Callable[[], float] = _loop_time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if count < 1 or seconds <= 0:
            raise ValueError("a window needs count >= 1 and seconds > 0")
        self.count = count
        self.seconds = seconds
        self._now = now
        self._sleep = sleep
        self._free_at = [float("-inf")] * count
        """per slot: when it may be used again (+inf while its request is unanswered)"""
        self._answered = asyncio.Event()

    @contextlib.asynccontextmanager
    async def slot(self, heartbeat: Callable[[], None] | None = None) -> AsyncIterator[None]:
        """Hold a slot for one request; it is released when the block ends (answered,
        failed or cancelled alike: the server may have seen it either way)."""
        index = await self._take(heartbeat)
        try:
            yield
        finally:
            self._free_at[index] = self._now() + self.seconds
            self._answered.set()

    async def _take(self, heartbeat: Callable[[], None] | None) -> int:
        while True:
            index = min(range(self.count), key=self._free_at.__getitem__)
            wait = self._free_at[index] - self._now()
            if wait <= 0:
                self._free_at[index] = float("inf")
                return index
            if heartbeat is not None:
                heartbeat()
            if wait == float("inf"):  # every slot's request is still out: wait for an answer
                self._answered.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(HEARTBEAT_S):
                        await self._answered.wait()
            else:
                await self._sleep(min(wait, HEARTBEAT_S))


def retry_after_seconds(value: str | None, now: dt.datetime | None = None) -> float | None:
    """A ``Retry-After`` header in seconds (delay-seconds or an HTTP date), capped at
    ``MAX_RETRY_AFTER_S``; None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = (when - (now or dt.datetime.now(dt.UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)
