"""Journal and lake: nothing acknowledged is lost, nothing is written twice."""

from __future__ import annotations

import errno
import io
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tickpipe.clock import NS_PER_SECOND, FakeClock
from tickpipe.events import Kind, Trade, to_batch
from tickpipe.store import layout
from tickpipe.store.journal import Journal, closed_segments, read_batches, read_segment
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


# ---- a full disk, and bad files on restart (issue 12, finding 2) ----------------------


class QuotaDisk:
    """A simulated filesystem of ``capacity`` bytes under ``root``: writes through
    ``open_for_write`` fail with ENOSPC (after writing what fits, as a real short write
    does) once the files under ``root`` would exceed it. Used where no small filesystem
    can be mounted; ``free(n)`` is space coming back."""

    def __init__(self, root: Path, capacity: int) -> None:
        self.root = root
        self.capacity = capacity

    def used(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())

    def open(self, path: Path) -> pa.NativeFile:
        disk = self

        class Writer(io.RawIOBase):
            def __init__(self) -> None:
                self.raw = open(path, "wb")  # noqa: SIM115 - closed by close()

            def writable(self) -> bool:
                return True

            def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
                room = disk.capacity - disk.used()
                chunk = bytes(data)
                if len(chunk) > room:
                    self.raw.write(chunk[: max(room, 0)])
                    self.raw.flush()
                    raise OSError(errno.ENOSPC, "No space left on device")
                self.raw.write(chunk)
                self.raw.flush()
                return len(chunk)

            def fileno(self) -> int:
                return self.raw.fileno()

            def tell(self) -> int:
                return self.raw.tell()

            def close(self) -> None:
                self.raw.close()
                super().close()

        writer = Writer()

        class File(pa.PythonFile):  # type: ignore[misc]
            def fileno(self) -> int:  # the journal fsyncs the real file
                return writer.fileno()

        return File(writer, mode="w")


@pytest.fixture
def small_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Path, Callable[[], None]]]:
    """(a directory on a ~3 MB filesystem, a function that frees its space). A tmpfs
    where this process may mount one, else the simulated ``QuotaDisk``."""
    from tickpipe.store import journal as journal_module

    mount = tmp_path / "small"
    mount.mkdir()
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True
        ).returncode
        == 0
    )
    ballast = mount / "ballast"
    if mounted:
        ballast.write_bytes(b"\0" * (2560 * 1024))  # about 0.5 MB left
        yield mount, lambda: ballast.unlink()
        subprocess.run(["umount", "-l", str(mount)], check=False)
        return
    disk = QuotaDisk(mount, 512 * 1024)
    monkeypatch.setattr(journal_module, "open_for_write", disk.open)

    def free() -> None:
        disk.capacity = 1 << 40

    yield mount, free


def test_a_full_disk_loses_no_acknowledged_event_and_corrupts_no_segment(
    small_disk: tuple[Path, Callable[[], None]], clock: FakeClock
) -> None:
    """Reported: after ENOSPC the writer that failed mid-message was written to again once
    space came back; the segment then held a half message followed by whole ones (invalid
    offsets on every restart, a SIGSEGV in the flusher) and its rows were lost."""
    from tickpipe.errors import StorageError

    root, free = small_disk
    j = Journal(root / "journal", clock, segment_seconds=1000, segment_bytes=1 << 40)
    acknowledged: list[int] = []
    failures = 0
    seq = 1
    while len(acknowledged) < 20_000:  # ~1.4 MB of journal: more than was left
        batch = make_trades(clock.now_ns() + seq, 500, seq0=seq)
        try:
            j.append([("trade", batch)])
        except StorageError as exc:
            assert "No space left" in str(exc)
            failures += 1
            assert failures < 10, "the journal did not resume once space came back"
            if failures == 3:
                free()
            continue  # the hub retries the same delivery, as here
        acknowledged += range(seq, seq + 500)
        seq += 500
    assert failures == 3
    j.roll()
    for path in (root / "journal" / "trade").glob("*.arrows"):
        read = read_batches(path)
        assert read is not None and read.invalid == 0
    writer = LakeWriter(root / "lake", root / "journal", 3)
    writer.flush_closed()
    seqs = pa.concat_tables(
        [pq.read_table(f, partitioning=None) for f in layout.lake_files(root / "lake", "trade")]
    ).column("seq")
    assert sorted(seqs.to_pylist()) == acknowledged  # all of them, once each


def test_closing_a_segment_on_a_full_disk_never_raises(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reported: an OSError from the writer's close, via the flusher, ended the process."""
    j = journal(tmp_path, clock, segment_seconds=5)
    j.append([("trade", make_trades(clock.now_ns(), 10))])
    (seg,) = j._open.values()

    class FullWriter:
        def __init__(self, real: pa.ipc.RecordBatchStreamWriter) -> None:
            self.real = real

        def close(self) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

    seg.writer = FullWriter(seg.writer)  # type: ignore[assignment]
    clock.advance(6)
    (closed,) = j.maybe_roll()  # the end marker did not fit: closed without it
    assert j.close_errors == 1
    assert read_segment(closed) is not None
    assert LakeWriter(tmp_path / "lake", tmp_path / "journal", 3).flush_closed() == 10


def write_stream(path: Path, batches: list[pa.RecordBatch]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, batches[0].schema) as w:
        for batch in batches:
            w.write_batch(batch)


def invalid_copy(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` with its ``source`` strings' offsets made non-monotonic (what a message
    written after a torn one decodes to): passes a cheap check, fails validate(full=True)."""
    col = batch.column("source")
    offsets = np.frombuffer(col.buffers()[1], dtype=np.int32)[: len(col) + 1].copy()
    offsets[1], offsets[2] = offsets[2] + 3, offsets[1]
    broken = pa.Array.from_buffers(
        pa.string(), len(col), [None, pa.py_buffer(offsets.tobytes()), col.buffers()[2]]
    )
    columns = [broken if n == "source" else batch.column(n) for n in batch.schema.names]
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema)


def test_recovery_salvages_a_segment_with_invalid_batches_batch_by_batch(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Reported: every restart crashed flushing a segment whose batch failed
    validate(full=True); only moving the file aside let it start, and its rows were lost."""
    good1, good2 = make_trades(clock.now_ns(), 5), make_trades(clock.now_ns() + 10**6, 5, seq0=6)
    bad = invalid_copy(make_trades(clock.now_ns() + 2 * 10**6, 5, seq0=11))
    with pytest.raises(pa.ArrowInvalid):
        bad.validate(full=True)
    name = layout.segment_name(clock.now_ns(), "dead00", 1)
    leftover = layout.journal_path(tmp_path / "journal", "trade", name, closed=False)
    write_stream(leftover, [good1, bad, good2])

    j = journal(tmp_path, clock)
    j.recover()
    assert (j.corrupt_segments, j.corrupt_batches) == (1, 1)
    aside = tmp_path / "journal" / "corrupt" / "trade" / f"{name}.arrows"
    assert aside.exists()  # the original, byte for byte, for whoever wants to look
    writer = LakeWriter(tmp_path / "lake", tmp_path / "journal", 3)
    assert writer.flush_closed() == 10
    assert sorted(lake_table(tmp_path).column("seq").to_pylist()) == list(range(1, 11))
    assert writer.flush_closed() == 0  # the corrupt directory is never flushed


def test_the_flusher_and_queries_never_read_an_invalid_batch(
    tmp_path: Path, clock: FakeClock
) -> None:
    from tickpipe.store.hot_memory import MemoryHotStore
    from tickpipe.store.query import Query

    t0 = clock.now_ns()
    name = layout.segment_name(t0, "dead00", 2)
    segment = layout.journal_path(tmp_path / "journal", "trade", name, closed=True)
    write_stream(segment, [make_trades(t0, 3), invalid_copy(make_trades(t0 + 10, 3, seq0=4))])
    query = Query(tmp_path / "lake", tmp_path / "journal", MemoryHotStore(10))
    assert query.events(Kind.TRADE, ["SPY"], t0, t0 + 10**9).column("seq").to_pylist() == [1, 2, 3]
    writer = LakeWriter(tmp_path / "lake", tmp_path / "journal", 3)
    assert writer.flush_closed() == 3 and writer.corrupt_segments == 1


def test_a_lake_flush_on_a_full_disk_is_a_state_not_an_exception(
    tmp_path: Path,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tickpipe.store import lake as lake_module

    j = journal(tmp_path, clock)
    j.append([("trade", make_trades(clock.now_ns(), 10))])
    j.roll()
    writer = LakeWriter(tmp_path / "lake", tmp_path / "journal", 3)

    def full(path: Path) -> pa.NativeFile:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(lake_module, "open_for_write", full)
    with caplog.at_level("WARNING", logger="tickpipe.store.lake"):
        for _ in range(5):
            assert writer.flush_closed() == 0
        assert writer.blocked_since is not None and "No space left" in (writer.last_error or "")
        monkeypatch.undo()
        assert writer.flush_closed() == 10
    assert writer.blocked_since is None
    assert [r.levelname for r in caplog.records] == ["ERROR", "WARNING"]  # once, then recovery
    assert not list((tmp_path / "lake").rglob(".*.tmp"))  # no half-written file kept
