"""The import source on files on disk, through a recording context (no pipeline)."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest

from tickpipe.clock import FakeClock
from tickpipe.events import Kind
from tickpipe.sources.sierra.importer import ImportFile, ScidImport

from .fakectx import FakeContext
from .scidfile import SAMPLE, append, sc_time, tick, write


def importer(paths: list[Path], chunk: int = 4) -> ScidImport:
    items = [ImportFile(p, "/ESH23", 0.25) for p in paths]
    return ScidImport(items, FakeClock(), chunk_records=chunk)


async def test_a_file_imports_in_chunks_each_with_its_checkpoint(tmp_path: Path) -> None:
    path = write(tmp_path / "ESH23-CME.scid", SAMPLE)
    ctx = FakeContext()
    await importer([path]).run(ctx)
    assert [t["seq"] for t in ctx.rows(Kind.TRADE)] == list(range(1, 11))
    offsets = [cp["imports"][str(path)]["offset"] for _, cp in ctx.emitted if cp]
    assert offsets == [56 + 4 * 40, 56 + 8 * 40, 56 + 10 * 40]
    assert ctx.counters["records"] == 10 and ctx.counters["skipped"] == 0
    assert len(ctx.rows(Kind.QUOTE)) == 10
    assert ctx.details["progress_total"] == ctx.details["progress_done"] == 10
    assert ctx.rejected == []


async def test_importing_the_same_file_again_reads_nothing(tmp_path: Path) -> None:
    path = write(tmp_path / "ESH23-CME.scid", SAMPLE)
    first = FakeContext()
    await importer([path]).run(first)
    again = FakeContext(checkpoint=first.checkpoint)
    await importer([path]).run(again)
    assert again.emitted == [] and again.counters.get("records", 0) == 0
    assert again.details["progress_total"] == 0


async def test_an_interrupted_import_resumes_to_the_same_result(tmp_path: Path) -> None:
    path = write(tmp_path / "ESH23-CME.scid", SAMPLE)
    whole = FakeContext()
    await importer([path], chunk=3).run(whole)
    stopped = FakeContext(fail_after_emits=2)
    with pytest.raises(asyncio.CancelledError):
        await importer([path], chunk=3).run(stopped)
    resumed = FakeContext(checkpoint=stopped.checkpoint)
    await importer([path], chunk=3).run(resumed)
    assert [t["seq"] for t in resumed.rows(Kind.TRADE)] == [7, 8, 9, 10]
    union = stopped.rows(Kind.TRADE) + resumed.rows(Kind.TRADE)
    assert union == whole.rows(Kind.TRADE)


async def test_a_grown_file_imports_only_its_new_records(tmp_path: Path) -> None:
    path = write(tmp_path / "ESH23-CME.scid", SAMPLE[:6])
    first = FakeContext()
    await importer([path]).run(first)
    append(path, SAMPLE[6:])
    second = FakeContext(checkpoint=first.checkpoint)
    await importer([path]).run(second)
    assert [t["seq"] for t in second.rows(Kind.TRADE)] == [7, 8, 9, 10]


async def test_a_torn_final_record_is_quarantined_and_read_once_whole(tmp_path: Path) -> None:
    whole = SAMPLE[9].pack()
    path = write(tmp_path / "ESH23-CME.scid", SAMPLE[:9], torn=whole[:17])
    ctx = FakeContext()
    await importer([path]).run(ctx)
    assert len(ctx.rows(Kind.TRADE)) == 9
    ((raw, reason, symbol),) = ctx.rejected
    assert "torn final record (17 of 40 bytes)" in reason and symbol == "/ESH23"
    assert raw == whole[:17].hex()
    assert ctx.counters["torn_records"] == 1
    with open(path, "ab") as f:  # Sierra finishes writing the record
        f.write(whole[17:])
    later = FakeContext(checkpoint=ctx.checkpoint)
    await importer([path]).run(later)
    assert [t["seq"] for t in later.rows(Kind.TRADE)] == [10] and later.rejected == []


async def test_a_file_that_is_not_scid_is_quarantined_and_the_others_still_import(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "notes.scid"
    bad.write_text("this is a text file, not market data\n")
    good = write(tmp_path / "ESH23-CME.scid", SAMPLE)
    ctx = FakeContext()
    await importer([bad, good]).run(ctx)
    assert len(ctx.rows(Kind.TRADE)) == 10
    ((raw, reason, _),) = ctx.rejected
    assert "is not a Sierra Chart .scid file" in reason and str(bad) in reason
    assert bytes.fromhex(raw).startswith(b"this")
    assert ctx.counters["files_failed"] == 1 and ctx.counters["files"] == 1


async def test_a_rewritten_file_is_read_again_from_the_start(tmp_path: Path) -> None:
    path = write(tmp_path / "ESH23-CME.scid", SAMPLE[5:])
    first = FakeContext()
    await importer([path]).run(first)
    write(path, SAMPLE)  # Sierra filled in older history in front
    second = FakeContext(checkpoint=first.checkpoint)
    await importer([path]).run(second)
    assert len(second.rows(Kind.TRADE)) == 10
    assert second.counters["files_rewritten"] == 1


async def test_bad_records_are_quarantined_with_their_position_and_bytes(tmp_path: Path) -> None:
    t0 = sc_time(dt.datetime(2025, 11, 26, 15, tzinfo=dt.UTC))
    broken = tick(-5, 6000.0, 5999.75, 6000.0)
    path = write(tmp_path / "ESZ25.scid", [tick(t0, 6000.0, 5999.75, 6000.0), broken])
    ctx = FakeContext()
    await importer([path]).run(ctx)
    ((raw, reason, _),) = ctx.rejected
    assert raw == f"record 1: {broken.pack().hex()}"
    assert "1 records: DateTime is no date" in reason
    assert ctx.counters["bad_records"] == 1 and len(ctx.rows(Kind.TRADE)) == 1


async def test_the_checkpoint_keeps_the_tails_section(tmp_path: Path) -> None:
    path = write(tmp_path / "ESH23-CME.scid", SAMPLE)
    tail = {"files": {"/elsewhere/NQZ25.scid": {"offset": 96}}}
    ctx = FakeContext(checkpoint={"tail": tail})
    await importer([path]).run(ctx)
    assert ctx.checkpoint is not None and ctx.checkpoint["tail"] == tail
