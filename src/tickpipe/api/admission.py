"""Admission for history answers (raw events, bars, downloads, replays), so their memory
is bounded in total as well as per request.

- Every history answer holds a ``Ticket`` from the time it is admitted until its body is
  sent, however it ends: at most ``streams_max`` per API process and ``streams_per_key``
  per key. A request that finds no place waits for one up to ``ADMIT_WAIT_S`` (a burst
  of short JSON pages passes), at most ``WAIT_QUEUE`` of them; then a key at its own
  limit gets 429 ``too_many_streams``, any other 503 ``server_busy``; both with
  ``Retry-After``, never a 500.
- JSON answers are built whole before they are sent (their cost is bounded by ``limit``);
  at most ``builds_max`` are built at once (it is CPU work; the machine has few cores),
  the next ones wait their turn for up to ``BUILD_WAIT_S``, at most ``BUILD_QUEUE`` of
  them, then 503 ``server_busy``.

A download or a replay holds one page of rows at a time (``store/pages.py``), a JSON
answer its body, and every body is sent in small pieces as the client reads
(``streaming.py``), so what history answers hold together is bounded by these counts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from tickpipe.api.errors import ApiError
from tickpipe.config import Settings
from tickpipe.store.keystore import ApiKey

RETRY_AFTER_S = 2
ADMIT_WAIT_S = 2.0
BUILD_WAIT_S = 5.0
WAIT_QUEUE = 64


class Ticket:
    """One admitted stream; ``release`` gives its place back (idempotent)."""

    def __init__(self, admission: Admission, key_id: str) -> None:
        self._admission = admission
        self._key_id = key_id
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._admission._release(self._key_id)


class Admission:
    """The budget of history answers of one API process (one per app)."""

    def __init__(self, streams_max: int, streams_per_key: int, builds_max: int) -> None:
        self.streams_max = streams_max
        self.streams_per_key = streams_per_key
        self.builds_max = builds_max
        self.open = 0
        self.refused = 0
        self._per_key: dict[str, int] = {}
        self._builds = asyncio.Semaphore(builds_max)
        self._waiting = 0
        self._admitting = 0
        self._freed = asyncio.Event()

    @classmethod
    def from_settings(cls, settings: Settings) -> Admission:
        return cls(settings.streams_max, settings.streams_per_key, settings.json_builds_max)

    async def admit(self, key: ApiKey) -> Ticket:
        """A ticket for one more history answer of ``key``, waiting up to
        ``ADMIT_WAIT_S`` for a place; else a 429/503 ``ApiError``."""
        if not self._fits(key):
            if self._admitting >= WAIT_QUEUE:
                raise self._refusal(key)
            self._admitting += 1
            try:
                async with asyncio.timeout(ADMIT_WAIT_S):
                    while not self._fits(key):
                        await self._freed.wait()
            except TimeoutError:
                raise self._refusal(key) from None
            finally:
                self._admitting -= 1
        self.open += 1
        self._per_key[key.id] = self._per_key.get(key.id, 0) + 1
        return Ticket(self, key.id)

    def _fits(self, key: ApiKey) -> bool:
        return self.open < self.streams_max and self._per_key.get(key.id, 0) < self.streams_per_key

    def _refusal(self, key: ApiKey) -> ApiError:
        self.refused += 1
        held = self._per_key.get(key.id, 0)
        if held >= self.streams_per_key:
            return ApiError(
                429,
                "too_many_streams",
                f"this key has {held} history answers (downloads, replays, pages) open, its "
                f"limit (TICKPIPE_STREAMS_PER_KEY={self.streams_per_key}); retry when one has "
                "ended",
                {"Retry-After": str(RETRY_AFTER_S)},
            )
        return busy(
            f"the server is serving {self.open} history answers (downloads, replays, "
            f"pages), its limit (TICKPIPE_STREAMS_MAX={self.streams_max})"
        )

    def _release(self, key_id: str) -> None:
        self.open -= 1
        left = self._per_key.get(key_id, 1) - 1
        if left > 0:
            self._per_key[key_id] = left
        else:
            self._per_key.pop(key_id, None)
        freed, self._freed = self._freed, asyncio.Event()
        freed.set()  # every waiter looks again

    @contextlib.asynccontextmanager
    async def building(self) -> AsyncIterator[None]:
        """Hold one of the ``builds_max`` places while a JSON answer is built."""
        if self._builds.locked() and self._waiting >= WAIT_QUEUE:
            self.refused += 1
            raise busy(f"{self._waiting} JSON answers are waiting to be built already")
        self._waiting += 1
        try:
            async with asyncio.timeout(BUILD_WAIT_S):
                await self._builds.acquire()
        except TimeoutError:
            self.refused += 1
            raise busy(
                f"no JSON answer could start within {BUILD_WAIT_S:g} s "
                f"(TICKPIPE_JSON_BUILDS_MAX={self.builds_max} are built at once)"
            ) from None
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self._builds.release()


def busy(why: str) -> ApiError:
    """503 ``server_busy`` with ``Retry-After``, saying why."""
    return ApiError(
        503,
        "server_busy",
        f"{why}; retry in {RETRY_AFTER_S} s",
        {"Retry-After": str(RETRY_AFTER_S)},
    )
