"""The live intake: sources append deliveries, the pipeline takes them all once per tick.

A websocket frame carries 1–100 events; checking, journaling and fanning out each frame on
its own would cost a fixed ~1 ms per frame, so a busy feed would fall behind at a few
hundred frames a second. ``put`` therefore only appends (a list append and two counters)
and returns; the pipeline's tick takes everything pending, from every source, and pays the
fixed costs once for all of it. The buffer is bounded in deliveries and in events; a source
waits in ``put`` only when it is full (back-pressure, counted), which happens when the
journal or the tick itself cannot keep up, never under normal load.
"""

from __future__ import annotations

import asyncio
import time

from tickpipe.sources.base import Delivery

MAX_DELIVERIES = 16_384
MAX_EVENTS = 4 * 65_536


class Intake:
    """A bounded, append-only buffer between the sources and the pipeline's tick."""

    def __init__(self, max_deliveries: int = MAX_DELIVERIES, max_events: int = MAX_EVENTS):
        self._max_deliveries = max_deliveries
        self._max_events = max_events
        self._pending: list[Delivery] = []
        self._events = 0
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._taken = 0
        self._done = 0
        self.deliveries = 0
        self.ticks = 0
        self.full_waits = 0
        """times a source had to wait because the buffer was full"""
        self.full_seconds = 0.0
        self.max_tick_deliveries = 0
        self.max_tick_events = 0

    def try_put(self, delivery: Delivery) -> bool:
        """Append if there is room (one delivery always fits an empty buffer)."""
        if self._pending and (
            len(self._pending) >= self._max_deliveries
            or self._events + delivery.rows > self._max_events
        ):
            return False
        self._append(delivery)
        return True

    async def put(self, delivery: Delivery) -> None:
        """Append, waiting while the buffer is full."""
        if not self.try_put(delivery):
            await self._wait_for_room(delivery.rows)
            self._append(delivery)

    def _append(self, delivery: Delivery) -> None:
        self._pending.append(delivery)
        self._events += delivery.rows
        self.deliveries += 1
        self._idle.clear()
        self._wake.set()

    async def _wait_for_room(self, rows: int) -> None:
        self.full_waits += 1
        started = time.perf_counter()
        while self._pending and (
            len(self._pending) >= self._max_deliveries or self._events + rows > self._max_events
        ):
            self._room.clear()
            await self._room.wait()
        self.full_seconds += time.perf_counter() - started

    async def take(self, linger_s: float = 0.0, enough_events: int = MAX_EVENTS) -> list[Delivery]:
        """Everything pending, once there is something. With ``linger_s`` the tick waits
        that long for more to arrive (unless ``enough_events`` are already pending), so a
        burst of frames shares one tick instead of each paying for its own."""
        while not self._pending:
            self._wake.clear()
            await self._wake.wait()
        if linger_s > 0 and self._events < enough_events:
            await asyncio.sleep(linger_s)
        taken, self._pending = self._pending, []
        self._events = 0
        self._taken += 1
        self.ticks += 1
        self.max_tick_deliveries = max(self.max_tick_deliveries, len(taken))
        self.max_tick_events = max(self.max_tick_events, sum(d.rows for d in taken))
        self._room.set()
        return taken

    def done(self) -> None:
        """The tick that took the last batch has handed it on (to the hub)."""
        self._done = self._taken
        if not self._pending:
            self._idle.set()

    async def settled(self) -> None:
        """Return once everything put so far has been taken and handed on."""
        while self._pending or self._done != self._taken:
            self._idle.clear()
            await self._idle.wait()

    @property
    def pending_deliveries(self) -> int:
        return len(self._pending)

    @property
    def pending_events(self) -> int:
        return self._events
