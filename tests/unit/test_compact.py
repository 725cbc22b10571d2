"""Compaction merges small files without ever showing a row twice or losing one."""

from __future__ import annotations

from pathlib import Path

from tickpipe.clock import FakeClock
from tickpipe.events import Kind, Trade, to_batch
from tickpipe.store import layout
from tickpipe.store.compact import Compactor
from tickpipe.store.hot_memory import MemoryHotStore
from tickpipe.store.journal import Journal
from tickpipe.store.lake import LakeWriter
from tickpipe.store.query import Query


def fill(
    tmp_path: Path, clock: FakeClock, segments: int, per: int = 10
) -> tuple[Journal, LakeWriter]:
    journal = Journal(tmp_path / "journal", clock, segment_seconds=60, segment_bytes=1 << 30)
    lake = LakeWriter(tmp_path / "lake", tmp_path / "journal", 3)
    for s in range(segments):
        t0 = clock.now_ns()
        trades = [
            Trade(t0 + i, t0 + i, "SPY", 600.0 + i / 100, 1, "t", s * per + i + 1)
            for i in range(per)
        ]
        journal.append([("trade", to_batch(Kind.TRADE, trades))])
        journal.roll()
        lake.flush_closed()
        clock.advance(1)
    return journal, lake


def seqs(tmp_path: Path, clock: FakeClock) -> list[int]:
    query = Query(tmp_path / "lake", tmp_path / "journal", MemoryHotStore(1))
    table = query.events(Kind.TRADE, ["SPY"], 0, clock.now_ns() + 10**12)
    return sorted(table.column("seq").to_pylist())


def compactor(tmp_path: Path, min_files: int = 5) -> Compactor:
    return Compactor(
        tmp_path / "lake", tmp_path / "journal", min_files=min_files, max_rows=10**9, zstd_level=3
    )


def test_many_files_become_one_and_every_row_stays_once(tmp_path: Path, clock: FakeClock) -> None:
    fill(tmp_path, clock, 12)
    before = seqs(tmp_path, clock)
    assert len(layout.lake_files(tmp_path / "lake", "trade")) == 12
    c = compactor(tmp_path)
    assert c.run_once() == 2 * 12  # the trade files and their 1 s rollups
    (only,) = layout.lake_files(tmp_path / "lake", "trade")
    assert only.name.startswith(layout.COMPACT_PREFIX)
    assert seqs(tmp_path, clock) == before == list(range(1, 121))
    assert len(list((tmp_path / "lake" / "trade").rglob("*.parquet"))) == 1  # merged files are gone
    assert seqs(tmp_path, clock) == before


def test_files_left_covered_by_a_crash_are_hidden_then_deleted(
    tmp_path: Path, clock: FakeClock
) -> None:
    fill(tmp_path, clock, 6)
    before = seqs(tmp_path, clock)
    leftovers = {p: p.read_bytes() for p in (tmp_path / "lake" / "trade").rglob("*.parquet")}
    c = compactor(tmp_path)
    c.run_once()
    for path, data in leftovers.items():  # as if the process died before deleting them
        path.write_bytes(data)
    assert seqs(tmp_path, clock) == before  # hidden: every row once
    c.run_once()
    assert len(list((tmp_path / "lake" / "trade").rglob("*.parquet"))) == 1


def test_compacted_files_are_merged_again_with_newer_ones(tmp_path: Path, clock: FakeClock) -> None:
    fill(tmp_path, clock, 6)
    c = compactor(tmp_path)
    c.run_once()
    fill(tmp_path, clock, 6)  # six newer files beside the compacted one
    assert c.run_once() == 2 * 7
    c.run_once()
    (only,) = list((tmp_path / "lake" / "trade").rglob("*.parquet"))
    first, last = layout.compact_range(only) or ("", "")
    assert first < last
    assert len(seqs(tmp_path, clock)) == 120


def test_files_newer_than_a_segment_still_in_the_journal_wait(
    tmp_path: Path, clock: FakeClock
) -> None:
    journal, _ = fill(tmp_path, clock, 3)
    t0 = clock.now_ns()
    journal.append(
        [("trade", to_batch(Kind.TRADE, [Trade(t0, t0, "SPY", 1.0, 1, "t", 999)]))]
    )  # open segment
    clock.advance(1)
    fill(tmp_path, clock, 6)
    c = compactor(tmp_path, min_files=3)
    assert c.run_once() == 2 * 3  # only the files older than the open segment (and rollups)
    assert len(seqs(tmp_path, clock)) == 3 * 10 + 6 * 10 + 1
