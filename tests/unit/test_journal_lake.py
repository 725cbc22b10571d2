"""Journal and lake: nothing acknowledged is lost, nothing is written twice."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tickpipe.clock import NS_PER_SECOND, FakeClock
from tickpipe.events import Kind, Trade, to_batch
from tickpipe.store import layout
from tickpipe.store.journal import Journal, closed_segments, read_segment
from tickpipe.store.lake import LakeWriter

DAY = layout.NS_PER_DAY


def make_trades(start_ns: int, n: int, symbol: str = "SPY", seq0: int = 1) -> pa.RecordBatch:
    return to_batch(
        Kind.TRADE,
        [
            Trade(start_ns + i * 1000, start_ns + i * 1000, symbol, 600 + i / 100, 1, "t", seq0 + i)
            for i in range(n)
        ],
    )


def journal(tmp_path: Path, clock: FakeClock, **kw: object) -> Journal:
    opts: dict[str, object] = {"segment_seconds": 60, "segment_bytes": 1 << 30} | kw
    return Journal(tmp_path / "journal", clock, **opts)  # type: ignore[arg-type]


def lake_table(tmp_path: Path, dataset: str = "trade") -> pa.Table:
    files = layout.lake_files(tmp_path / "lake", dataset)
    return pa.concat_tables([pq.read_table(f, partitioning=None) for f in files])


def test_segments_close_by_age_and_flush_to_sorted_parquet(
    tmp_path: Path, clock: FakeClock
) -> None:
    j = journal(tmp_path, clock, segment_seconds=5)
    b1 = make_trades(clock.now_ns(), 3, "SPY")
    b2 = make_trades(clock.now_ns(), 2, "AAA")
    j.append([("trade", b1), ("trade", b2)])
    assert closed_segments(tmp_path / "journal", "trade") == []
    clock.advance(6)
    assert len(j.maybe_roll()) == 1
    writer = LakeWriter(tmp_path / "lake", tmp_path / "journal", 3)
    assert writer.flush_closed() == 5
    assert closed_segments(tmp_path / "journal", "trade") == []
    table = lake_table(tmp_path)
    assert table.column("symbol").to_pylist() == ["AAA", "AAA", "SPY", "SPY", "SPY"]


def test_a_torn_tail_loses_only_the_unacknowledged_write(tmp_path: Path, clock: FakeClock) -> None:
    j = journal(tmp_path, clock)
    j.append([("trade", make_trades(clock.now_ns(), 4))])
    (path,) = (tmp_path / "journal" / "trade").glob("*.open")
    acknowledged = path.stat().st_size
    j.append([("trade", make_trades(clock.now_ns() + 10**6, 4, seq0=5))])
    with open(path, "r+b") as fh:  # a crash in the middle of the second write
        fh.truncate(acknowledged + 40)
    table = read_segment(path)
    assert table is not None
    assert table.column("seq").to_pylist() == [1, 2, 3, 4]


def test_recovery_closes_leftovers_and_flushes_them(tmp_path: Path, clock: FakeClock) -> None:
    j = journal(tmp_path, clock)
    j.append([("trade", make_trades(clock.now_ns(), 10))])
    # the process dies here: the segment is still ".open"
    restarted = journal(tmp_path, clock)
    assert len(restarted.recover()) == 1
    assert LakeWriter(tmp_path / "lake", tmp_path / "journal", 3).flush_closed() == 10
    assert lake_table(tmp_path).num_rows == 10


def test_reflushing_a_segment_overwrites_and_never_duplicates(
    tmp_path: Path, clock: FakeClock
) -> None:
    j = journal(tmp_path, clock)
    j.append([("trade", make_trades(clock.now_ns(), 10))])
    (segment,) = j.roll()
    copy = segment.read_bytes()
    writer = LakeWriter(tmp_path / "lake", tmp_path / "journal", 3)
    writer.flush_closed()
    segment.write_bytes(copy)  # crash after the Parquet rename, before the segment delete
    writer.flush_closed()
    assert lake_table(tmp_path).num_rows == 10
    assert len(layout.lake_files(tmp_path / "lake", "trade")) == 1


def test_a_segment_spanning_midnight_lands_in_two_partitions(
    tmp_path: Path, clock: FakeClock
) -> None:
    j = journal(tmp_path, clock)
    midnight = (clock.now_ns() // DAY + 1) * DAY
    j.append([("trade", make_trades(midnight - 2000, 4))])
    j.roll()
    LakeWriter(tmp_path / "lake", tmp_path / "journal", 3).flush_closed()
    parts = sorted(p.parent.name for p in layout.lake_files(tmp_path / "lake", "trade"))
    assert len(parts) == 2 and parts[0] < parts[1]
    assert lake_table(tmp_path).num_rows == 4


def test_trades_compress_to_about_a_seventh_of_csv(tmp_path: Path, clock: FakeClock) -> None:
    from tickpipe.config import Settings
    from tickpipe.sources.simulator import Simulator

    settings = Settings(_env_file=None, data_dir=tmp_path, simulator_seed=3, simulator_bad_share=0)  # type: ignore[call-arg]
    sim = Simulator(settings, clock)
    j = journal(tmp_path, clock)
    for _ in range(10):
        j.append([("trade", sim.step(40_000, 40 * NS_PER_SECOND)[Kind.TRADE])])
    j.roll()
    writer = LakeWriter(tmp_path / "lake", tmp_path / "journal", 3)
    rows = writer.flush_closed()
    # 1 000 trades/s over five symbols, microsecond stamps: CSV takes ~60 bytes a trade
    assert writer.lake_bytes() / rows < 10


def test_a_failed_append_can_be_retried_without_a_second_copy(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from tickpipe.errors import StorageError

    j = journal(tmp_path, clock)
    j.append([("trade", make_trades(clock.now_ns(), 5))])
    second = make_trades(clock.now_ns() + 10**6, 5, seq0=6)
    real_fsync = os.fsync

    def disk_error(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_error)
    with pytest.raises(StorageError, match="No space left"):
        j.append([("trade", second)])
    monkeypatch.setattr(os, "fsync", real_fsync)
    j.append([("trade", second)])
    j.roll()
    LakeWriter(tmp_path / "lake", tmp_path / "journal", 3).flush_closed()
    assert sorted(lake_table(tmp_path).column("seq").to_pylist()) == list(range(1, 11))
