"""Market-depth (.depth) files replayed into BookUpdate rows."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from tickpipe.clock import FakeClock
from tickpipe.events import Kind
from tickpipe.sources.sierra.importer import DepthImport, ImportFile

from .fakectx import FakeContext
from .scidfile import depth_file, sc_time, unix_ns

DAY = dt.datetime(2025, 11, 26, 14, 30, tzinfo=dt.UTC)
T0 = sc_time(DAY)
CLEAR, ADD_BID, ADD_ASK, MOD_BID, MOD_ASK, DEL_BID, DEL_ASK = 1, 2, 3, 4, 5, 6, 7
BOOK = [
    (T0, CLEAR, 0, 0.0, 0),
    (T0, ADD_BID, 3, 6000.0, 10),
    (T0, ADD_BID, 2, 5999.75, 20),
    (T0, ADD_BID, 5, 6000.25, 5),  # a better bid: rank 0, the others move down
    (T0, ADD_ASK, 1, 6000.5, 7),
    (T0 + 1000, MOD_BID, 4, 6000.0, 12),
    (T0 + 2000, DEL_BID, 0, 6000.25, 0),
    (T0 + 3000, 0, 0, 0.0, 0),  # no command: nothing to show
    (T0 + 4000, CLEAR, 0, 0.0, 0),
]


def run(path: Path, chunk: int = 100, checkpoint: dict[str, object] | None = None) -> FakeContext:
    import asyncio

    ctx = FakeContext(checkpoint=checkpoint)
    items = [ImportFile(path, "/ESZ25", 0.25)]
    asyncio.run(DepthImport(items, FakeClock(), chunk_records=chunk).run(ctx))
    return ctx


def test_the_book_is_replayed_into_ranked_levels(tmp_path: Path) -> None:
    ctx = run(depth_file(tmp_path / "ESZ25-CME.2025-11-26.depth", BOOK))
    rows = [(r["side"], r["level"], r["price"], r["size"]) for r in ctx.rows(Kind.BOOK)]
    assert rows == [
        ("B", 0, 6000.0, 10.0),
        ("B", 1, 5999.75, 20.0),
        ("B", 0, 6000.25, 5.0),
        ("A", 0, 6000.5, 7.0),
        ("B", 1, 6000.0, 12.0),
        ("B", 0, 6000.25, 0.0),  # deleted: size 0 at the rank it had
        # the clear removes what is left, level by level
        ("B", 0, 6000.0, 0.0),
        ("B", 1, 5999.75, 0.0),
        ("A", 0, 6000.5, 0.0),
    ]
    book = ctx.rows(Kind.BOOK)
    assert book[0]["orders"] == 3 and book[0]["ts_event"] == unix_ns(DAY)
    assert book[4]["ts_event"] == unix_ns(DAY) + 1_000_000
    day = (DAY - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)).days
    assert [r["seq"] for r in book] == [(day << 32) + i for i in range(1, 10)]
    assert ctx.counters["skipped"] == 1


def test_a_resumed_depth_import_emits_only_the_rest_with_the_same_levels(tmp_path: Path) -> None:
    path = depth_file(tmp_path / "ESZ25-CME.2025-11-26.depth", BOOK)
    whole = run(path, chunk=3)
    first_part = {"depth": {str(path): {"records": 6, "fingerprint": _fingerprint(whole, path)}}}
    rest = run(path, chunk=3, checkpoint=first_part)
    assert rest.rows(Kind.BOOK) == whole.rows(Kind.BOOK)[5:]
    again = run(path, checkpoint=whole.checkpoint)
    assert again.rows(Kind.BOOK) == []


def _fingerprint(ctx: FakeContext, path: Path) -> str:
    assert ctx.checkpoint is not None
    return str(ctx.checkpoint["depth"][str(path)]["fingerprint"])


def test_a_scid_file_given_as_depth_is_refused_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "ESZ25-CME.depth"
    path.write_bytes(b"SCID" + b"\0" * 100)
    ctx = run(path)
    ((_, reason, _),) = ctx.rejected
    assert "not a Sierra Chart .depth file" in reason and ctx.counters["files_failed"] == 1
