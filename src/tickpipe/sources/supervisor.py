"""The one place that owns reconnects: start every source, watch it, restart it with backoff.

Each source runs in its own task of the pipeline's TaskGroup. A failure (exception or an
idle feed past the watchdog) moves it to ``backoff`` for ``min(cap, initial * 2**n)``
seconds times a jitter in [0.5, 1.0], then it is started again; the attempt counter resets
after a delivery. A source whose stream ends is ``finished``. ``restart(name)`` cuts the
current attempt short and starts again at once (the dashboard's restart button).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from tickpipe.clock import NS_PER_SECOND, Clock
from tickpipe.errors import TransportError
from tickpipe.sources.base import Batches, Source, SourceState, SourceStatus

log = logging.getLogger(__name__)

Ingest = Callable[[str, Batches], Awaitable[None]]


class Supervisor:
    def __init__(
        self,
        sources: list[Source],
        ingest: Ingest,
        clock: Clock,
        *,
        backoff_initial_s: float,
        backoff_max_s: float,
        idle_timeout_s: float,
        rng: random.Random | None = None,
    ) -> None:
        self.sources = {s.name: s for s in sources}
        self.states = {s.name: SourceState(s.name) for s in sources}
        self._ingest = ingest
        self._clock = clock
        self._initial = backoff_initial_s
        self._cap = backoff_max_s
        self._idle = idle_timeout_s
        self._rng = rng or random.Random()
        self._attempts: dict[str, asyncio.Task[None]] = {}
        self._restart_requested: set[str] = set()

    def backoff_delay(self, failures: int) -> float:
        """Capped exponential backoff with jitter; ``failures`` counts from 1."""
        base = min(self._cap, self._initial * 2 ** max(failures - 1, 0))
        return float(base * (0.5 + 0.5 * self._rng.random()))

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for name in self.sources:
                group.create_task(self._supervise(name), name=f"source:{name}")

    def restart(self, name: str) -> bool:
        """Restart one source now; False if no such source."""
        if name not in self.sources:
            return False
        self._restart_requested.add(name)
        attempt = self._attempts.get(name)
        if attempt is not None and not attempt.done():
            attempt.cancel()
        return True

    async def _supervise(self, name: str) -> None:
        state = self.states[name]
        failures = 0
        while True:
            state.status = SourceStatus.STARTING
            state.started_ns = self._clock.now_ns()
            events_before = state.events
            attempt = asyncio.create_task(self._consume(name), name=f"attempt:{name}")
            self._attempts[name] = attempt
            try:
                await attempt
            except asyncio.CancelledError:
                if name in self._restart_requested and not _current_cancelling():
                    self._restart_requested.discard(name)
                    state.restarts += 1
                    failures = 0
                    continue
                attempt.cancel()
                state.status = SourceStatus.STOPPED
                raise
            except Exception as exc:
                if state.events > events_before:
                    failures = 0
                failures += 1
                state.restarts += 1
                state.last_error = f"{type(exc).__name__}: {exc}"
                state.last_error_ns = self._clock.now_ns()
                delay = self.backoff_delay(failures)
                state.status = SourceStatus.BACKOFF
                state.next_retry_ns = self._clock.now_ns() + int(delay * NS_PER_SECOND)
                log.warning(
                    "source %s failed (%s); retrying in %.1fs", name, state.last_error, delay
                )
                await asyncio.sleep(delay)
                continue
            finally:
                self._attempts.pop(name, None)
            state.status = SourceStatus.FINISHED
            return

    async def _consume(self, name: str) -> None:
        source, state = self.sources[name], self.states[name]
        stream = source.stream()
        try:
            while True:
                try:
                    batches = await asyncio.wait_for(anext(stream), timeout=self._idle)
                except StopAsyncIteration:
                    return
                except TimeoutError as exc:
                    raise TransportError(f"no data for {self._idle:.0f}s", source=name) from exc
                state.status = SourceStatus.RUNNING
                state.next_retry_ns = None
                state.batches += 1
                rows = 0
                for kind, batch in batches.items():
                    rows += batch.num_rows
                    state.by_kind[kind.value] = state.by_kind.get(kind.value, 0) + batch.num_rows
                if rows:
                    state.events += rows
                    state.last_event_ns = self._clock.now_ns()
                    await self._ingest(name, batches)
        finally:
            await stream.aclose()  # type: ignore[attr-defined]


def _current_cancelling() -> int:
    task = asyncio.current_task()
    return task.cancelling() if task is not None else 0
