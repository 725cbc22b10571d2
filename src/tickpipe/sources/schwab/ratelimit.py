"""One token bucket for every Schwab REST call of a process (token, userPreference, chains).

Schwab publishes no market-data limit; about 120 requests a minute is the community figure,
so ``SCHWAB_REQUESTS_PER_MINUTE`` defaults below it. A 429 drains the bucket for the server's
``Retry-After`` seconds or, without one, for a delay that doubles per consecutive 429 (1 s to
2 min) and resets on the next success.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

MAX_PENALTY_S = 120.0


class TokenBucket:
    def __init__(
        self,
        per_minute: float,
        *,
        burst: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate = per_minute / 60.0
        self.capacity = burst if burst is not None else max(1.0, min(10.0, self.rate * 5))
        self._tokens = self.capacity
        self._monotonic = monotonic
        self._sleep = sleep
        self._stamp = monotonic()
        self._blocked_until = 0.0
        self._strikes = 0
        self.waited_s = 0.0
        self.acquired = 0
        self.throttled = 0
        """429 answers seen"""

    def _refill(self) -> None:
        now = self._monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self) -> None:
        """Wait for a token (and for any 429 penalty to pass)."""
        while True:
            now = self._monotonic()
            if now < self._blocked_until:
                wait = self._blocked_until - now
            else:
                self._refill()
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    self.acquired += 1
                    return
                wait = (1.0 - self._tokens) / self.rate
            self.waited_s += wait
            await self._sleep(wait)

    def throttle(self, retry_after_s: float | None) -> float:
        """The server said 429: hold every caller back; returns the delay chosen."""
        self.throttled += 1
        self._strikes += 1
        if retry_after_s is None or retry_after_s < 0:
            delay = min(MAX_PENALTY_S, 2.0 ** (self._strikes - 1))
        else:
            delay = min(MAX_PENALTY_S, retry_after_s)
        self._blocked_until = max(self._blocked_until, self._monotonic() + delay)
        self._tokens = 0.0
        self._stamp = self._monotonic()
        return delay

    def succeeded(self) -> None:
        self._strikes = 0
