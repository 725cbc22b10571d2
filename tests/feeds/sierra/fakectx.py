"""A SourceContext that records what a source hands it, for tests without a pipeline."""

from __future__ import annotations

import asyncio
from typing import Any

import pyarrow as pa

from tickpipe.clock import Clock, FakeClock
from tickpipe.events import Kind
from tickpipe.sources.base import Batches, Checkpoint, SeqCheckpoint


class FakeContext:
    def __init__(
        self,
        name: str = "sierra",
        checkpoint: Checkpoint | None = None,
        clock: Clock | None = None,
        sequences: SeqCheckpoint | None = None,
        fail_after_emits: int | None = None,
    ) -> None:
        self.name = name
        self.clock = clock or FakeClock()
        self.checkpoint = checkpoint
        self.sequences: SeqCheckpoint = sequences or {}
        self.emitted: list[tuple[Batches, Checkpoint | None]] = []
        self.rejected: list[tuple[str, str, str]] = []
        self.counters: dict[str, int] = {}
        self.details: dict[str, Any] = {}
        self.phases: list[str] = []
        self.alive_calls = 0
        self.backlogs: list[int] = []
        self.changed = asyncio.Event()
        self._fail_after = fail_after_emits

    async def emit(self, batches: Batches, checkpoint: Checkpoint | None = None) -> None:
        if self._fail_after is not None and len(self.emitted) >= self._fail_after:
            raise asyncio.CancelledError  # the process stopped here: nothing more committed
        self.emitted.append((batches, checkpoint))
        if checkpoint is not None:
            self.checkpoint = checkpoint
        self.changed.set()

    async def reject(
        self,
        raw: str | bytes,
        reason: str,
        *,
        kind: Kind | None = None,
        symbol: str = "",
        rule: str = "parse_error",
    ) -> None:
        text = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else raw
        self.rejected.append((text, reason, symbol))
        self.changed.set()

    def alive(self) -> None:
        self.alive_calls += 1
        self.changed.set()

    def phase(self, phase: str) -> None:
        self.phases.append(phase)
        self.changed.set()

    def info(self, **details: Any) -> None:
        self.details.update(details)
        self.changed.set()

    def count(self, counter: str, n: int = 1) -> None:
        self.counters[counter] = self.counters.get(counter, 0) + n

    def backlog(self, unread_bytes: int) -> None:
        self.backlogs.append(unread_bytes)

    def rows(self, kind: Kind) -> list[dict[str, Any]]:
        batches = [b[kind] for b, _ in self.emitted if kind in b and b[kind].num_rows]
        if not batches:
            return []
        return pa.Table.from_batches(batches).to_pylist()

    async def wait_for(self, predicate: Any, timeout: float = 5.0) -> None:
        """Until ``predicate()`` holds after something the source did."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()
