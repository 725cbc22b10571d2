"""The one place that owns reconnects: start every source, watch it, restart it with backoff.

Each source runs in its own task of the supervisor's TaskGroup, and each attempt
(``source.run(ctx)``) runs inside that task under ``asyncio.timeout`` for the idle
watchdog, so a shutdown or restart cancel cannot be lost between two awaits (the
``wait_for`` race of Python 3.11). A failure moves the source to ``backoff`` for
``min(cap, initial * 2**n)`` seconds times a jitter in [0.5, 1.0], using the source's own
policy; the attempt counter resets after a delivery. A ``ConfigError`` stops the source
(``failed``) with its sentence and no retry. A source whose ``run`` returns is
``finished``. ``restart(name)`` cuts the current attempt (or backoff, or failure) short and
starts again at once; ``stop(name)`` ends it until the next restart.
"""

from __future__ import annotations

import asyncio
import logging
import random

from tickpipe.clock import NS_PER_SECOND, Clock
from tickpipe.errors import ConfigError, ParseError, TransportError, first_cause
from tickpipe.sources.base import Source, SourceState, SourceStatus
from tickpipe.sources.context import ContextFactory, LiveContext
from tickpipe.status import LatencyMs, SourceStats

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(
        self,
        sources: list[Source],
        contexts: ContextFactory,
        clock: Clock,
        *,
        rng: random.Random | None = None,
    ) -> None:
        names = [s.name for s in sources]
        duplicated = {n for n in names if names.count(n) > 1}
        if duplicated:
            raise ConfigError(f"two sources share the name {sorted(duplicated)[0]!r}")
        self.sources = {s.name: s for s in sources}
        self.states = {s.name: SourceState(s.name) for s in sources}
        self.contexts: dict[str, LiveContext] = {
            s.name: contexts(s, self.states[s.name]) for s in sources
        }
        self._clock = clock
        self._rng = rng or random.Random()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.finished = {s.name: asyncio.Event() for s in sources}
        """set when a source's ``run`` returned for good"""
        self._started: set[str] = set()
        self._requests: dict[str, str] = {}
        """name -> "restart" | "stop": why this supervisor cancelled a source's task"""

    def backoff_delay(self, name: str, failures: int) -> float:
        """Capped exponential backoff with jitter; ``failures`` counts from 1."""
        policy = self.sources[name].policy
        base = min(policy.backoff_max_s, policy.backoff_initial_s * 2 ** max(failures - 1, 0))
        return float(base * (0.5 + 0.5 * self._rng.random()))

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for name in self.sources:
                self._tasks[name] = group.create_task(self._supervise(name), name=f"source:{name}")

    def restart(self, name: str) -> bool:
        """Start one source again now, whatever its state; False if no such source."""
        return self._request(name, "restart")

    def stop(self, name: str) -> bool:
        """Stop one source until ``restart``; False if no such source."""
        return self._request(name, "stop")

    def _request(self, name: str, what: str) -> bool:
        if name not in self.sources:
            return False
        pending = name in self._requests
        self._requests[name] = what  # the latest request wins
        task = self._tasks.get(name)
        if not pending and name in self._started and task is not None and not task.done():
            task.cancel()  # once: each cancel() counts, and uncancel() takes back only one
        return True

    async def _supervise(self, name: str) -> None:
        state = self.states[name]
        failures = 0
        self._started.add(name)  # from here on a request may cancel this task
        while True:
            try:
                if self._requests.pop(name, None) == "stop":  # asked before this task ran
                    state.status = SourceStatus.STOPPED
                    await self._parked(name)
                failures = await self._attempt_and_backoff(name, failures)
                if failures < 0:
                    return
            except asyncio.CancelledError:
                request = self._requests.pop(name, None)
                task = asyncio.current_task()
                if request is None or task is None or task.uncancel() > 0:
                    state.status = SourceStatus.STOPPED
                    raise
                if request == "stop":
                    state.status = SourceStatus.STOPPED
                    state.phase = "stopped by request"
                    await self._parked(name)
                state.restarts += 1
                failures = 0

    async def _parked(self, name: str) -> None:
        """Wait, stopped or failed, until a restart request (a shutdown cancel propagates)."""
        while True:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                request = self._requests.pop(name, None)
                task = asyncio.current_task()
                if request is None or task is None or task.uncancel() > 0:
                    raise
                if request == "restart":
                    return

    async def _attempt_and_backoff(self, name: str, failures: int) -> int:
        """One attempt, then the wait that follows a failure. Returns the failure count for
        the next attempt, or -1 when the source finished for good."""
        source, state, ctx = self.sources[name], self.states[name], self.contexts[name]
        state.status = SourceStatus.STARTING
        state.phase = "starting"
        state.started_ns = self._clock.now_ns()
        events_before = state.events
        idle = source.policy.idle_timeout_s
        deadline = asyncio.timeout(idle)
        try:
            async with deadline:
                ctx.attach_deadline(deadline, idle)
                try:
                    await source.run(ctx)
                except BaseExceptionGroup as group:  # a source's own TaskGroup failed
                    raise first_cause(group) from group
        except ConfigError as exc:
            ctx.attach_deadline(None, None)
            self._failed(state, exc)
            log.error("source %s stopped: %s", name, exc)
            await self._parked(name)
            state.restarts += 1
            return 0
        except TimeoutError as exc:
            error: Exception = exc
            if deadline.expired():
                error = TransportError(f"no data or heartbeat for {idle:g}s", source=name)
        except ParseError as exc:
            await ctx.reject(exc.raw or "", str(exc), symbol=exc.symbol)
            error = exc
        except Exception as exc:
            error = exc
        else:
            ctx.attach_deadline(None, None)
            state.status = SourceStatus.FINISHED
            state.phase = "finished"
            self.finished[name].set()
            return -1
        ctx.attach_deadline(None, None)
        ctx.attempt_failed()
        if state.events > events_before:
            failures = 0
        failures += 1
        state.restarts += 1
        state.last_error = f"{type(error).__name__}: {error}"
        state.last_error_ns = self._clock.now_ns()
        delay = self.backoff_delay(name, failures)
        state.status = SourceStatus.BACKOFF
        state.next_retry_ns = self._clock.now_ns() + int(delay * NS_PER_SECOND)
        log.warning("source %s failed (%s); retrying in %.1fs", name, state.last_error, delay)
        await asyncio.sleep(delay)
        state.next_retry_ns = None
        return failures

    def _failed(self, state: SourceState, exc: ConfigError) -> None:
        state.status = SourceStatus.FAILED
        state.phase = "needs a settings change"
        state.last_error = str(exc)
        state.last_error_ns = self._clock.now_ns()
        state.next_retry_ns = None

    def stats(self, name: str, latency_ms: dict[str, float] | None = None) -> SourceStats:
        state = self.states[name]
        return SourceStats(
            name=state.name,
            status=state.status.value,
            phase=state.phase,
            events=state.events,
            batches=state.batches,
            by_kind=dict(state.by_kind),
            rejected=state.rejected,
            restarts=state.restarts,
            started_ns=state.started_ns,
            last_event_ns=state.last_event_ns,
            last_alive_ns=state.last_alive_ns,
            last_error=state.last_error,
            last_error_ns=state.last_error_ns,
            next_retry_ns=state.next_retry_ns,
            latency_ms=LatencyMs(**latency_ms) if latency_ms else None,
            backlog_bytes=state.backlog_bytes,
            backlog_max_bytes=state.backlog_max_bytes,
            behind_since_ns=state.behind_since_ns,
            behind_episodes=state.behind_episodes,
            counters=dict(state.counters),
            details=dict(state.details),
        )
