"""A bound on events in flight between two stages: producers wait, nothing is dropped."""

from __future__ import annotations

import asyncio


class Budget:
    """At most ``limit`` events taken and not yet given back; a single take larger than
    the limit is let through alone (so one huge delivery never waits forever)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self.taken = 0
        self._room = asyncio.Condition()

    async def take(self, events: int) -> None:
        async with self._room:
            await self._room.wait_for(lambda: self.taken == 0 or self.taken + events <= self._limit)
            self.taken += events

    async def give(self, events: int) -> None:
        async with self._room:
            self.taken -= events
            self._room.notify_all()
