"""``tickpipe import scid``: .scid files into the lake, as a finite source for the backfill.

Each chunk of records (125,000 by default) is emitted with a checkpoint holding every
file's byte offset, so events and checkpoint are committed together: an import stopped
half-way resumes after the last committed chunk, and importing a file again reads nothing.
A file whose header or first record changed since (Sierra rewrote it) is read again from
the start; the backfill's exact (source, symbol, seq) check drops what the lake holds.

The checkpoint is shared with the live tail (both are source "sierra"); each keeps its own
section (``imports``, ``tail``) and carries the other's over unchanged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from tickpipe.clock import Clock
from tickpipe.events import Kind
from tickpipe.sources.base import Checkpoint, SourceContext, SourcePolicy
from tickpipe.sources.sierra import depth, files, scid

log = logging.getLogger(__name__)

SOURCE_NAME = "sierra"
IMPORTS = "imports"
DEPTH = "depth"
CHUNK_RECORDS = 1_000_000
"""records per chunk of a .depth import (each replays the book)"""
SCID_CHUNK_RECORDS = 125_000
"""records per chunk (and checkpoint) of a .scid import: a chunk's columns (~10 MB a
kind) stay in the processor's cache from decoding to the journal; measured on 10 M
records, 1 M-record chunks took ~20 % more processor time (the quality checks most), and
smaller ones than this saved nothing more"""
RAW_PER_REJECT = 200
"""bad records whose bytes go into one quarantine record (their hex stays under 64 k chars)"""


@dataclasses.dataclass(frozen=True, slots=True)
class ImportFile:
    path: Path
    symbol: str
    tick_size: float | None


async def reject_bad(ctx: SourceContext, symbol: str, where: str, bad: scid.BadRecords) -> None:
    """Quarantine bad records with their bytes, a few hundred per record, none unnamed."""
    ctx.count("bad_records", int(bad.indices.size))
    kept = len(bad.raw)
    for start in range(0, kept, RAW_PER_REJECT):
        part = bad.raw[start : start + RAW_PER_REJECT]
        idx = bad.indices[start : start + len(part)]
        lines = "\n".join(f"record {i}: {raw.hex()}" for i, raw in zip(idx, part, strict=True))
        await ctx.reject(lines, f"{where}: {len(part)} records: {bad.reason}", symbol=symbol)
    if bad.indices.size > kept:
        rest = bad.indices[kept:]
        await ctx.reject(
            f"records {int(rest[0])}..{int(rest[-1])}",
            f"{where}: {rest.size} more records: {bad.reason}",
            symbol=symbol,
        )


class ScidImport:
    """A finite source: the given files, each from where the last import left it."""

    def __init__(
        self, items: list[ImportFile], clock: Clock, *, chunk_records: int = SCID_CHUNK_RECORDS
    ) -> None:
        self.name = SOURCE_NAME
        self.policy = SourcePolicy(idle_timeout_s=None)
        self._items = items
        self._clock = clock
        self._chunk = chunk_records

    async def run(self, ctx: SourceContext) -> None:
        saved: Checkpoint = dict(ctx.checkpoint or {})
        done: dict[str, Any] = dict(saved.get(IMPORTS) or {})
        plans: list[tuple[ImportFile, files.FileView, int]] = []
        ctx.phase("reading headers")
        for item in self._items:
            view = await self._look(ctx, item)
            if view is not None:
                plans.append((item, view, self._resume_index(ctx, view, done)))
        total = sum(view.records - start for _, view, start in plans)
        progress = 0
        ctx.info(progress_total=total, progress_done=0, progress_unit="records")
        ctx.phase("importing")
        for item, view, start in plans:
            key = str(view.path)
            read_from = start
            async for index, decoded in self._chunks(item, view, start):
                for bad in decoded.bad:
                    await reject_bad(ctx, item.symbol, key, bad)
                done[key] = {
                    "offset": view.offset_of(index),
                    "fingerprint": view.fingerprint,
                    "symbol": item.symbol,
                }
                await ctx.emit(decoded.batches, checkpoint={**saved, IMPORTS: dict(done)})
                ctx.count("skipped", decoded.skipped)
                ctx.count("records", index - read_from)
                progress += index - read_from
                read_from = index
                ctx.info(progress_done=progress)
            ctx.count("files")
            if view.torn_bytes:
                await self._torn(ctx, item, view)
        ctx.phase("done")

    async def _look(self, ctx: SourceContext, item: ImportFile) -> files.FileView | None:
        """The file's header, or a quarantine record and a failed-file count saying why not."""
        try:
            return await asyncio.to_thread(files.look, item.path)
        except scid.ScidError as exc:
            reason, raw = str(exc), exc.raw or b""
        except OSError as exc:
            reason, raw = f"{item.path}: cannot read: {exc.strerror or exc}", b""
        log.error("%s", reason)
        ctx.count("files_failed")
        ctx.info(last_file_error=reason)
        await ctx.reject(raw.hex() if isinstance(raw, bytes) else raw, reason, symbol=item.symbol)
        return None

    def _resume_index(self, ctx: SourceContext, view: files.FileView, done: dict[str, Any]) -> int:
        previous = done.get(str(view.path))
        if not previous:
            return 0
        if previous.get("fingerprint") == view.fingerprint and previous["offset"] <= view.size:
            return view.index_of(int(previous["offset"]))
        log.warning("%s changed since it was imported: reading it again from the start", view.path)
        ctx.count("files_rewritten")
        return 0

    async def _chunks(
        self, item: ImportFile, view: files.FileView, start: int
    ) -> AsyncIterator[tuple[int, scid.Decoded]]:
        """(end index, decoded chunk) pairs; the next chunk is read and decoded while the
        caller hands this one over."""

        def work(first: int) -> tuple[int, scid.Decoded]:
            records = files.read_records(view, first, min(self._chunk, view.records - first))
            decoded = scid.decode(
                records,
                symbol=item.symbol,
                first_index=first,
                recv_ns=self._clock.now_ns(),
                tick_size=item.tick_size,
            )
            return first + records.shape[0], decoded

        index = start
        pending = (
            asyncio.ensure_future(asyncio.to_thread(work, index)) if index < view.records else None
        )
        try:
            while pending is not None:
                index, decoded = await pending
                pending = None
                if index < view.records:
                    pending = asyncio.ensure_future(asyncio.to_thread(work, index))
                yield index, decoded
        finally:
            if pending is not None:
                pending.cancel()

    async def _torn(self, ctx: SourceContext, item: ImportFile, view: files.FileView) -> None:
        """A partial last record: still being written, or cut off. Not imported; the next
        import reads it once it is whole."""
        tail = await asyncio.to_thread(files.read_tail_bytes, view)
        ctx.count("torn_records")
        await ctx.reject(
            tail.hex(),
            f"{view.path}: torn final record ({view.torn_bytes} of {scid.RECORD_SIZE} bytes); "
            "left for the next import",
            symbol=item.symbol,
        )


class DepthImport:
    """A finite source: .depth files to BookUpdate rows, each file replayed from its start
    (the book needs every record), emitting only what the last import did not."""

    def __init__(
        self, items: list[ImportFile], clock: Clock, *, chunk_records: int = CHUNK_RECORDS
    ) -> None:
        self.name = SOURCE_NAME
        self.policy = SourcePolicy(idle_timeout_s=None)
        self._items = items
        self._clock = clock
        self._chunk = chunk_records

    async def run(self, ctx: SourceContext) -> None:
        saved: Checkpoint = dict(ctx.checkpoint or {})
        done: dict[str, Any] = dict(saved.get(DEPTH) or {})
        plans = []
        for item in self._items:
            try:
                plans.append((item, *await asyncio.to_thread(_look_depth, item.path)))
            except (scid.ScidError, OSError) as exc:
                reason = str(exc) if isinstance(exc, scid.ScidError) else f"{item.path}: {exc}"
                raw = exc.raw if isinstance(exc, scid.ScidError) else b""
                ctx.count("files_failed")
                ctx.info(last_file_error=reason)
                await ctx.reject(
                    raw.hex() if isinstance(raw, bytes) else str(raw), reason, symbol=item.symbol
                )
        ctx.info(progress_total=sum(p[3] for p in plans), progress_done=0, progress_unit="records")
        progress = 0
        for item, header_size, fingerprint, records in plans:
            key = str(item.path)
            previous = done.get(key) or {}
            resume = (
                int(previous.get("records", 0)) if previous.get("fingerprint") == fingerprint else 0
            )
            resume = min(resume, records)
            replay = depth.DepthReplay(item.symbol, item.tick_size)
            index = 0
            while index < records and resume < records:
                data = await asyncio.to_thread(
                    _read_depth, item.path, header_size, index, min(self._chunk, records - index)
                )
                batch, bad, noop = replay.decode(
                    data, first_index=index, recv_ns=self._clock.now_ns(), emit_from=resume
                )
                index += data.shape[0]
                if index <= resume:
                    continue
                for found in bad:
                    await reject_bad(ctx, item.symbol, key, found)
                done[key] = {"records": index, "fingerprint": fingerprint, "symbol": item.symbol}
                await ctx.emit(
                    {Kind.BOOK: batch} if batch is not None else {},
                    checkpoint={**saved, DEPTH: dict(done)},
                )
                ctx.count("skipped", noop)
                ctx.count("records", index - max(resume, index - data.shape[0]))
            progress += records
            ctx.info(progress_done=progress)
            ctx.count("files")


def _look_depth(path: Path) -> tuple[int, str, int]:
    """(header size, fingerprint, whole records) of a .depth file."""
    with open(path, "rb") as f:
        head = f.read(depth.HEADER_SIZE)
        header_size = depth.parse_header(head, where=str(path))
        f.seek(0)
        start = f.read(header_size + depth.RECORD_SIZE)
        size = f.seek(0, 2)
    records = max(size - header_size, 0) // depth.RECORD_SIZE
    return header_size, hashlib.blake2b(start, digest_size=8).hexdigest(), records


def _read_depth(path: Path, header_size: int, start: int, count: int) -> Any:
    with open(path, "rb") as f:
        f.seek(header_size + start * depth.RECORD_SIZE)
        data = f.read(count * depth.RECORD_SIZE)
    usable = len(data) - len(data) % depth.RECORD_SIZE
    return np.frombuffer(data, dtype=depth.RECORD_DTYPE, count=usable // depth.RECORD_SIZE)
