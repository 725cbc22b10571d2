"""Request pacing for the gexbot poller: a token bucket and ``Retry-After``.

gexbot asks for at most one request per second per ticker and category and answers
bursts with 429. The poller keeps one bucket shared by every request (at most
``GEXBOT_REQUESTS_PER_SECOND``, a burst of one: evenly spaced, so any window of one second
holds at most the limit) and spaces each (ticker, category) one second after its previous
answer. Both pace a little slower than the limit (``PACING_MARGIN``) so scheduling and
network jitter never make the server count more.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
from collections.abc import Awaitable, Callable

PACING_MARGIN = 1.05
"""intervals are 5 % longer than the limit's: 50 ms of jitter in any second is absorbed"""
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
