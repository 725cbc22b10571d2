"""The live .scid tail: follows Sierra Chart's intraday files while Sierra appends to them.

Every ``SIERRA_POLL_INTERVAL_S`` (0.2 s) each followed file's size is looked at; whole new
40-byte records are read, decoded and emitted with a checkpoint holding each file's byte
offset, last DateTime and last seq. The pipeline commits the checkpoint after the events
it covers, so a restart (or SIGKILL) resumes exactly after the last accepted record.

- A partial last record is left for the next poll (Sierra is still writing it).
- A file that shrank or whose header/first record changed was rewritten by Sierra (history
  filled in, data edited, old records compressed): the tail rescans it and resumes after
  the last DateTime it delivered, continuing the seq (nothing lost, nothing twice).
- With bar storage Sierra may rewrite the last, still open bar in place, so a bar that is
  the file's last record waits until a newer record follows it.
- A file seen for the first time starts where ``tickpipe import scid`` left it, if it did;
  else at the first record younger than the quality stage's ``max_age_s`` (history older
  than that would be quarantined as ``ancient_ts``: import it instead).

Sierra flushes its files every 5 s by default ("Intraday File Flush Time in Milliseconds");
set it to 1000 or less for fresh ticks. Same source name as the import ("sierra") and the
same seq (record number in the file), so a record imported and later tailed is one event.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from tickpipe.clock import Clock
from tickpipe.config import Settings
from tickpipe.errors import ConfigError
from tickpipe.sources.base import Checkpoint, SourceContext, SourcePolicy
from tickpipe.sources.sierra import files, scid
from tickpipe.sources.sierra.importer import IMPORTS, SOURCE_NAME, reject_bad
from tickpipe.sources.sierra.names import parse_mapping, symbol_of_file, tick_size_for

log = logging.getLogger(__name__)

TAIL = "tail"
CHUNK_RECORDS = 500_000


@dataclasses.dataclass
class Followed:
    """Where the tail stands in one file; what the checkpoint stores per file."""

    offset: int
    fingerprint: str
    last_dt: int
    last_seq: int
    seq_offset: int = 0

    def dump(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class _Step:
    """What one look at one file produced (built in a worker thread)."""

    path: Path
    symbol: str
    decoded: scid.Decoded | None
    state: Followed | None
    more: bool = False
    error: scid.ScidError | None = None
    rescanned: bool = False


class ScidTail:
    def __init__(self, settings: Settings, clock: Clock) -> None:
        if settings.sierra_scid_dir is None:
            raise ConfigError("the Sierra Chart tail needs SIERRA_SCID_DIR")
        self.name = SOURCE_NAME
        self.policy = SourcePolicy(
            idle_timeout_s=None,
            backoff_initial_s=settings.supervisor_backoff_initial_s,
            backoff_max_s=settings.supervisor_backoff_max_s,
        )
        self._dir = settings.sierra_scid_dir
        self._clock = clock
        self._poll_s = settings.sierra_poll_interval_s
        self._ticks = settings.sierra_tick_sizes
        self._settings = settings
        pairs = [parse_mapping(entry) for entry in settings.sierra_symbols]
        self._wanted = {name.upper(): symbol for name, symbol in pairs}
        """Sierra name (file stem, upper case) -> symbol; empty: every mappable file"""
        self._state: dict[str, Followed] = {}
        self._stamps: dict[str, tuple[int, int]] = {}
        """(size, mtime) per file at its last look: unchanged files are not opened"""
        self._behind: dict[str, bool] = {}
        """files with whole records left after the last chunk read"""
        self._shown: dict[str, dict[str, Any]] = {}
        """per file name, for /status: symbol, byte offset and seq reached"""
        self._bad: dict[str, int] = {}
        """files that are no .scid, by size when last reported (reported again on change)"""

    async def run(self, ctx: SourceContext) -> None:
        if not self._dir.is_dir():
            raise ConfigError(f"SIERRA_SCID_DIR {self._dir} is not a directory")
        saved: Checkpoint = dict(ctx.checkpoint or {})
        section = saved.get(TAIL) or {}
        self._state = {p: Followed(**v) for p, v in (section.get("files") or {}).items()}
        imported: dict[str, Any] = saved.get(IMPORTS) or {}
        ctx.phase("following")
        first = True
        while True:
            steps = await asyncio.to_thread(self._poll, imported)
            more = False
            emitted = False
            for step in steps:
                more |= step.more
                emitted |= await self._deliver(ctx, saved, step)
            if first and not emitted:
                await ctx.emit({})  # running (and nothing new yet): /status says so
            elif not emitted:
                ctx.alive()
            first = False
            if not more:
                await asyncio.sleep(self._poll_s)

    async def _deliver(self, ctx: SourceContext, saved: Checkpoint, step: _Step) -> bool:
        key = str(step.path)
        if step.error is not None:
            ctx.count("files_failed")
            ctx.info(last_file_error=str(step.error))
            raw = step.error.raw
            await ctx.reject(raw.hex() if isinstance(raw, bytes) else raw or "", str(step.error))
            return False
        if step.rescanned:
            ctx.count("rescans")
        if step.decoded is None or step.state is None:
            return False
        for bad in step.decoded.bad:
            await reject_bad(ctx, step.symbol, key, bad)
        self._state[key] = step.state
        checkpoint = {
            **saved,
            TAIL: {"files": {p: s.dump() for p, s in self._state.items()}},
        }
        await ctx.emit(step.decoded.batches, checkpoint=checkpoint)
        ctx.count("skipped", step.decoded.skipped)
        self._shown[step.path.name] = {
            "symbol": step.symbol,
            "offset": step.state.offset,
            "seq": step.state.last_seq,
        }
        ctx.info(files=dict(self._shown))
        return True

    def _targets(self) -> list[tuple[Path, str, tuple[int, int]]]:
        """Followed files with their (size, mtime): one directory scan, no file opened."""
        found: list[tuple[Path, str, tuple[int, int]]] = []
        with os.scandir(self._dir) as entries:
            for entry in entries:
                if not entry.name.lower().endswith(".scid") or not entry.is_file():
                    continue
                stem = entry.name[: -len(".scid")].upper()
                path = Path(entry.path)
                symbol = self._wanted.get(stem) if self._wanted else symbol_of_file(path)
                if symbol is not None:
                    stat = entry.stat()
                    found.append((path, symbol, (stat.st_size, stat.st_mtime_ns)))
        return sorted(found)

    def _poll(self, imported: dict[str, Any]) -> list[_Step]:
        """One look at every followed file whose size or time changed (in a worker
        thread: file I/O and numpy)."""
        steps = []
        for path, symbol, stamp in self._targets():
            key = str(path)
            if key in self._state and self._stamps.get(key) == stamp and not self._behind.get(key):
                continue
            self._stamps[key] = stamp
            try:
                steps.append(self._step(path, symbol, imported))
            except scid.ScidError as exc:
                size = path.stat().st_size
                if self._bad.get(str(path)) != size:
                    self._bad[str(path)] = size
                    steps.append(_Step(path, symbol, None, None, error=exc))
            except FileNotFoundError:
                continue
        return steps

    def _step(self, path: Path, symbol: str, imported: dict[str, Any]) -> _Step:
        view = files.look(path)
        key = str(path)
        self._bad.pop(key, None)
        state = self._state.get(key)
        rescanned = False
        if state is None:
            state = self._first_sight(view, symbol, imported.get(key))
        elif state.fingerprint != view.fingerprint or view.size < state.offset:
            index = files.first_index_after_dt(view, state.last_dt)
            log.warning("%s was rewritten: resuming after its last delivered record", path)
            state = Followed(
                offset=view.offset_of(index),
                fingerprint=view.fingerprint,
                last_dt=state.last_dt,
                last_seq=state.last_seq,
                seq_offset=state.last_seq - index,
            )
            rescanned = True
        start = view.index_of(state.offset)
        count = min(view.records - start, CHUNK_RECORDS)
        if count <= 0:
            if rescanned or key not in self._state:
                self._state[key] = state
            return _Step(path, symbol, None, None, rescanned=rescanned)
        records = files.read_records(view, start, count)
        if start + records.shape[0] == view.records and _is_open_bar(records[-1:]):
            records = records[:-1]  # the last bar may still be rewritten in place
        if records.shape[0] == 0:
            self._state.setdefault(key, state)
            return _Step(path, symbol, None, None, rescanned=rescanned)
        decoded = scid.decode(
            records,
            symbol=symbol,
            first_index=start,
            recv_ns=self._clock.now_ns(),
            tick_size=tick_size_for(symbol, self._ticks, name=path.stem),
            seq_offset=state.seq_offset,
        )
        end = start + records.shape[0]
        new_state = Followed(
            offset=view.offset_of(end),
            fingerprint=view.fingerprint,
            last_dt=decoded.last_dt if decoded.last_dt is not None else state.last_dt,
            last_seq=end + state.seq_offset,
            seq_offset=state.seq_offset,
        )
        self._behind[key] = end < view.records
        return _Step(path, symbol, decoded, new_state, more=end < view.records, rescanned=rescanned)

    def _first_sight(
        self, view: files.FileView, symbol: str, imported: dict[str, Any] | None
    ) -> Followed:
        """Start after what the import read, or at the records young enough to be live
        (the symbol's ``max_age_s``; 0 turns that rule off: the whole file)."""
        max_age_s = self._settings.thresholds(symbol).max_age_s
        index = 0
        if max_age_s > 0:
            since_us = (self._clock.now_ns() // 1000) - int(max_age_s * 1e6)
            index = files.first_index_since(view, since_us)
        if imported and imported.get("fingerprint") == view.fingerprint:
            index = max(index, view.index_of(int(imported["offset"])))
        return Followed(
            offset=view.offset_of(index),
            fingerprint=view.fingerprint,
            last_dt=0,
            last_seq=index,
        )


def _is_open_bar(records: np.ndarray[Any, Any]) -> bool:
    """True if this (last) record is a bar: its Open is a price, not 0 or a marker."""
    if records.shape[0] == 0:
        return False
    value = float(records["open"][0])
    return value != 0.0 and value > float(scid.MARKER_BELOW)
