"""Injectable clock, so timestamps, backoff and the simulator are deterministic in tests."""

from __future__ import annotations

import time
from typing import Protocol

NS_PER_SECOND = 1_000_000_000


class Clock(Protocol):
    def now_ns(self) -> int:
        """Wall-clock time, int nanoseconds since the Unix epoch (UTC)."""
        ...

    def monotonic(self) -> float:
        """Monotonic seconds, for measuring intervals."""
        ...


class SystemClock:
    def now_ns(self) -> int:
        return time.time_ns()

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start_ns: int = 1_767_225_600 * NS_PER_SECOND) -> None:
        self._ns = start_ns
        self._mono = 0.0

    def now_ns(self) -> int:
        return self._ns

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._ns += int(seconds * NS_PER_SECOND)
        self._mono += seconds
