"""Wiring: build every component from settings, recover, and run until told to stop.

sources -> intake (append) -> tick: quality once per source -> hub -> journal (fsync)
                                                                   -> hot store, bus, listeners
                                         flusher: closed segments -> Parquet lake
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TextIO

import orjson
import redis.asyncio as aioredis

from tickpipe.api.context import ApiContext, GexAnswer
from tickpipe.clock import Clock, SystemClock
from tickpipe.config import Settings
from tickpipe.errors import ConfigError
from tickpipe.events import Kind
from tickpipe.gex.engine import GexEngine
from tickpipe.hub import Hub
from tickpipe.intake import Intake
from tickpipe.quality.stage import QualityStage
from tickpipe.sources.base import Batches, Delivery, Source, SourceState
from tickpipe.sources.context import LiveContext
from tickpipe.sources.registry import build_sources
from tickpipe.sources.supervisor import Supervisor
from tickpipe.status import ApiProcess, JournalStats, LakeStats, Services, Status
from tickpipe.store import keys, layout
from tickpipe.store.bus import Bus
from tickpipe.store.catalog import refresh_catalog
from tickpipe.store.checkpoints import latest_checkpoints
from tickpipe.store.compact import Compactor
from tickpipe.store.hot import HotStore
from tickpipe.store.hot_memory import MemoryHotStore
from tickpipe.store.hot_redis import RedisHotStore
from tickpipe.store.journal import Journal
from tickpipe.store.keystore import KeyStore
from tickpipe.store.lake import LakeWriter
from tickpipe.store.lock import lock_data_dir
from tickpipe.store.query import Query
from tickpipe.store.redis_conn import redis_client
from tickpipe.ticker import check_tick

log = logging.getLogger(__name__)

FLUSH_TICK_S = 1.0
INLINE_TICK_EVENTS = 16_384
"""ticks up to this many events are checked on the event loop, bigger ones in a thread"""
SEED_LOOKBACK_DAYS = 3


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        clock: Clock | None = None,
        sources: list[Source] | None = None,
        role: str = "all",
    ) -> None:
        self.settings = settings
        self.role = role
        self.clock = clock or SystemClock()
        self.started = time.time()
        self._redis = redis_client(settings)
        hot: HotStore = (
            RedisHotStore(self._redis, settings.hot_capacities())
            if self._redis is not None
            else MemoryHotStore(settings.hot_capacities())
        )
        self.quality = QualityStage(settings, self.clock)
        self.intake = Intake()
        self.journal = Journal(
            settings.journal_dir,
            self.clock,
            segment_seconds=settings.journal_segment_seconds,
            segment_bytes=settings.journal_segment_bytes,
            fsync=settings.journal_fsync,
        )
        self.lake = LakeWriter(settings.lake_dir, settings.journal_dir, settings.lake_zstd_level)
        self.compactor = Compactor(
            settings.lake_dir,
            settings.journal_dir,
            min_files=settings.lake_compact_min_files,
            max_rows=settings.lake_compact_max_rows,
            zstd_level=settings.lake_zstd_level,
        )
        self._last_compaction = 0.0
        self.bus = Bus(settings, self._redis)
        self.hub = Hub(
            self.journal, hot, self.bus, visible_before_fsync=settings.visible_before_fsync
        )
        self.gex = GexEngine(settings, self.clock, redis=self._redis)
        self.hub.add_listener("gex", self.gex.accept)
        self.query = Query(settings.lake_dir, settings.journal_dir, hot)
        feeds = build_sources(settings, self.clock) if sources is None else sources
        self.supervisor = Supervisor([*feeds, self.gex], self._context, self.clock)
        self._catalog_views: set[str] = set()
        self.lake_bytes = 0
        self.flush_errors = 0
        self.ready = asyncio.Event()
        self._quality_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quality")
        self._lock: TextIO | None = None
        self.sources_done = asyncio.Event()

    @property
    def hot(self) -> HotStore:
        return self.hub.hot

    def _context(self, source: Source, state: SourceState) -> LiveContext:
        return LiveContext(source.name, state, self.clock, self.intake)

    async def ingest(self, source: str, batches: Batches) -> None:
        """One delivery on behalf of ``source`` (tools and benchmarks without a context):
        returns once the running pipeline's tick has checked it and queued it for the hub."""
        rows = sum(b.num_rows for b in batches.values())
        await self.intake.put(Delivery(source, batches, rows))
        await self.intake.settled()

    async def drained(self) -> None:
        """Return once everything sources handed over so far is committed and fanned out."""
        await self.intake.settled()
        await self.hub.drained()

    async def _tick(self) -> None:
        """Forever: take every pending delivery, check it once per source, hand it on.
        Small ticks run on the event loop (the checks are vectorised: a thread hop would
        cost more than they do); a bulk tick runs in the quality thread so the API keeps
        answering meanwhile (numpy and Arrow release the GIL in its big operations)."""
        linger = self.settings.intake_tick_ms / 1000
        while True:
            deliveries = await self.intake.take(linger, self.settings.intake_tick_events)
            now = self.clock.now_ns()
            if sum(d.rows for d in deliveries) <= INLINE_TICK_EVENTS:
                results = check_tick(self.quality, deliveries, now)
            else:
                loop = asyncio.get_running_loop()
                results = await loop.run_in_executor(
                    self._quality_thread, check_tick, self.quality, deliveries, now
                )
            for result in results:
                await self.hub.submit(result)
            self.intake.done()

    async def recover(self) -> None:
        """Flush what a previous run left in the journal, then resume quality state."""
        self._lock = lock_data_dir(self.settings.data_dir, "running the pipeline")
        if self._redis is not None:
            try:
                await self._redis.ping()
            except aioredis.RedisError as exc:
                raise ConfigError(f"cannot reach Redis at TICKPIPE_REDIS_URL: {exc}") from exc
        self.journal.recover()
        rows = await asyncio.to_thread(self.lake.flush_closed)
        if rows:
            log.info("recovered %d events from the journal into the lake", rows)
        await asyncio.to_thread(self._seed_quality)
        saved = await asyncio.to_thread(
            latest_checkpoints, self.settings.lake_dir, list(self.supervisor.sources)
        )
        for name, ctx in self.supervisor.contexts.items():
            ctx.sequences = self.quality.checkpoint(name)
            ctx.checkpoint = saved.get(name)
        await asyncio.to_thread(self._refresh_catalog)

    def _seed_quality(self) -> None:
        """Last seq and time per (kind, source, symbol) from recent lake partitions, so a
        re-delivery after a restart is caught as a duplicate."""
        now = self.clock.now_ns()
        first = layout.day_of_ns(now - SEED_LOOKBACK_DAYS * layout.NS_PER_DAY)
        for kind in Kind:
            files = layout.lake_files(self.settings.lake_dir, kind.value, first, None)
            if not files:
                continue
            rows = self.query.sql(
                "SELECT source, symbol, max(seq) AS seq, max(ts_event) AS ts "
                "FROM read_parquet($files) GROUP BY ALL",
                {"files": [f.as_posix() for f in files]},
            ).to_pylist()
            for row in rows:
                self.quality.seed(kind, row["source"], row["symbol"], row["seq"], row["ts"])

    def _refresh_catalog(self) -> None:
        self._catalog_views = refresh_catalog(
            self.settings.catalog_path, self.settings.lake_dir, self._catalog_views
        )

    async def _flusher(self, stop: asyncio.Event) -> None:
        """Roll aged segments and flush closed ones, off the event loop."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=FLUSH_TICK_S)
            await self.flush_once()
            await self._publish_status()
            if time.monotonic() - self._last_compaction >= self.settings.lake_compact_interval_s:
                self._last_compaction = time.monotonic()
                await self.compact_once()

    async def compact_once(self) -> None:
        try:
            await asyncio.to_thread(self.compactor.run_once)
        except Exception:
            log.exception("lake compaction failed; will retry")

    async def _publish_status(self) -> None:
        """With Redis, API processes (``--role api``) show the ingest process's status."""
        if self._redis is None:
            return
        try:
            await self._redis.set(keys.status_key(), orjson.dumps(self.status()), ex=10)
        except aioredis.RedisError as exc:
            log.warning("could not publish status to Redis: %s", exc)

    async def flush_once(self, *, force: bool = False) -> None:
        async with self.hub.journal_lock:
            if force:
                self.journal.roll()
            else:
                self.journal.maybe_roll()
        try:
            await asyncio.to_thread(self.lake.flush_closed)
            self.lake_bytes = await asyncio.to_thread(self.lake.lake_bytes)
            await asyncio.to_thread(self._refresh_catalog)
        except Exception:
            self.flush_errors += 1
            log.exception("lake flush failed; will retry")

    async def run(self, stop: asyncio.Event) -> None:
        """Recover, then run sources and the flusher until ``stop`` is set; flush on the way out."""
        await self.recover()
        self.ready.set()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._flusher(stop), name="flusher")
                hub = group.create_task(self.hub.run(), name="hub")
                tick = group.create_task(self._tick(), name="tick")
                sources = group.create_task(self._run_sources(), name="supervisor")
                await stop.wait()
                sources.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sources
                for ctx in self.supervisor.contexts.values():
                    await ctx.settled()
                await self.intake.settled()
                tick.cancel()
                await self.hub.close()
                await hub
        finally:
            await self.flush_once(force=True)
            await self.hot.close()
            self._quality_thread.shutdown(wait=False)
            if self._lock is not None:
                self._lock.close()  # releases the flock
                self._lock = None
            log.info("pipeline stopped; journal flushed to the lake")

    async def _run_sources(self) -> None:
        """Run every source; ``sources_done`` is set once the feeds (not the GEX engine's
        history source, which runs for as long as the pipeline) have all finished."""
        feeds = [n for n in self.supervisor.sources if n != self.gex.name]
        async with asyncio.TaskGroup() as group:
            group.create_task(self.supervisor.run())
            await asyncio.gather(*(self.supervisor.finished[n].wait() for n in feeds))
            self.sources_done.set()

    def status(self) -> dict[str, Any]:
        """The status as JSON-ready data (what /api/v1/status and Redis carry)."""
        return self.stats().model_dump(mode="json")

    def stats(self) -> Status:
        """Services, sources and counters; no market data."""
        q = self.quality
        sources = [
            self.supervisor.stats(name, q.latency_ms.get(name)) for name in self.supervisor.states
        ]
        hub = self.hub
        return Status(
            role=self.role,
            uptime_s=round(time.time() - self.started, 3),
            services=Services(
                hot_store=self.hot.name,
                bus=self.bus.name,
                journal=JournalStats(
                    rows_written=self.journal.rows_written,
                    open_rows=self.journal.open_rows,
                    fsyncs=self.journal.fsyncs,
                    bytes_written=self.journal.bytes_written,
                    appends=hub.journal_appends,
                    last_append_ms=round(hub.last_journal_ms, 3),
                    mean_append_ms=round(
                        1000 * hub.journal_seconds / max(hub.journal_appends, 1), 3
                    ),
                    errors=hub.journal_errors,
                    last_error=hub.last_error,
                    blocked_since=hub.journal_blocked_since,
                    append_errors=self.journal.append_errors,
                    close_errors=self.journal.close_errors,
                    corrupt_segments=self.journal.corrupt_segments + self.lake.corrupt_segments,
                    corrupt_batches=self.journal.corrupt_batches + self.lake.corrupt_batches,
                ),
                lake=LakeStats(
                    bytes=self.lake_bytes,
                    files_written=self.lake.files_written,
                    rows_written=self.lake.rows_written,
                    flush_errors=self.flush_errors + self.lake.errors,
                    segments_flushed=self.lake.segments_flushed,
                    compacted_files=self.compactor.merged_files,
                    compacted_files_deleted=self.compactor.deleted_files,
                    errors=self.lake.errors,
                    last_error=self.lake.last_error,
                    blocked_since=self.lake.blocked_since,
                ),
                bus_subscribers=len(self.bus.subscribers),
                bus_published=self.bus.published,
                bus_publish_failures=self.bus.publish_failures,
                bus_dropped=sum(s.dropped for s in self.bus.subscribers),
                hub_queue=hub.queue_depth,
            ),
            sources=sources,
            accepted=dict(hub.accepted),
            accepted_total=sum(hub.accepted.values()),
            quarantined_total=hub.quarantined,
            gaps_total=hub.gaps,
            quality=q.stats(),
            sinks={sink.name: sink.stats() for sink in hub.sinks},
            gex=self.gex.status(),
            api=ApiProcess(
                role=self.role, pid=os.getpid(), bus_subscribers=len(self.bus.subscribers)
            ),
        )


def api_context(pipeline: Pipeline) -> ApiContext:
    """What the API of an ingest process reads: this pipeline's stores and state."""
    settings = pipeline.settings

    async def gex(underlying: str, category: str, basis: str) -> GexAnswer | None:
        found = pipeline.gex.lookup(underlying, category, basis)
        return None if found is None else GexAnswer(*found)

    return ApiContext(
        settings=settings,
        query=pipeline.query,
        keys=KeyStore(settings.keys_path),
        bus=pipeline.bus,
        status=pipeline.status,
        restart_source=pipeline.supervisor.restart,
        stop_source=pipeline.supervisor.stop,
        ready=pipeline.ready.is_set,
        gex=gex,
    )
