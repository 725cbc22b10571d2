"""``tickpipe import scid`` end to end: a file written byte by byte, the lake, the API."""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tickpipe.backfill import run_backfill
from tickpipe.cli import main
from tickpipe.clock import SystemClock
from tickpipe.config import Settings
from tickpipe.sources.base import SourceContext
from tickpipe.sources.sierra.importer import ImportFile, ScidImport
from tickpipe.store import layout
from tickpipe.store.keystore import KeyStore

from ...conftest import free_port
from ...e2e.helpers import PipelineProcess
from .scidfile import FIRST_SUB, LAST_SUB, Rec, depth_file, sc_time, tick, unix_ns, write

START = dt.datetime(2025, 11, 26, 14, 30, 0, 125_000, tzinfo=dt.UTC)
T = sc_time(START)
MINUTE = 60_000_000
RECORDS = [
    tick(T, 6000.0, 6000.0, 6000.25, size=2, side="S"),
    tick(T + 1000, 6000.25, 6000.0, 6000.25, size=5, side="B", marker=FIRST_SUB),
    tick(T + 1001, 6000.25, 6000.0, 6000.25, size=3, side="B"),
    tick(T + 1002, 6000.5, 6000.25, 6000.5, size=1, side="B", marker=LAST_SUB),
    tick(T + 2000, 6000.25, 6000.25, 6000.5, side="S"),  # two trades in one millisecond
    tick(T + 2001, 6000.25, 6000.25, 6000.5, side="S"),
    Rec(T + MINUTE, 6000.0, 6001.0, 5999.5, 6000.75, 40, 120, 55, 65),  # a 1-minute bar
    Rec(T + MINUTE + 30_000_000, 0.0, 6000.75, 6000.5, 0.0, 1, 0, 12, 9),  # bid/ask only
]
TORN = tick(T + 2 * MINUTE, 6001.0, 6000.75, 6001.0).pack()[:23]

# what the file holds, written out by hand: (seq, price, size, aggressor, flags)
TRADES = [
    (1, 6000.0, 2.0, "S", 0),
    (2, 6000.25, 5.0, "B", 1),
    (3, 6000.25, 3.0, "B", 0),
    (4, 6000.5, 1.0, "B", 2),
    (5, 6000.25, 1.0, "S", 0),
    (6, 6000.25, 1.0, "S", 0),
]
QUOTES = [
    (1, 6000.0, 0.0, 6000.25, 0.0),
    (2, 6000.0, 0.0, 6000.25, 0.0),
    (3, 6000.0, 0.0, 6000.25, 0.0),
    (4, 6000.25, 0.0, 6000.5, 0.0),
    (5, 6000.25, 0.0, 6000.5, 0.0),
    (6, 6000.25, 0.0, 6000.5, 0.0),
    (8, 6000.5, 12.0, 6000.75, 9.0),
]


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TICKPIPE_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def lake(data: Path, dataset: str) -> list[dict[str, Any]]:
    files = layout.lake_files(data / "lake", dataset)
    if not files:
        return []
    table = pa.concat_tables([pq.read_table(f, partitioning=None) for f in files])
    return sorted(table.to_pylist(), key=lambda r: (r.get("seq", 0), str(r.get("reason"))))


def trades(data: Path) -> list[tuple[Any, ...]]:
    return [
        (r["seq"], r["price"], r["size"], r["aggressor"], r["flags"]) for r in lake(data, "trade")
    ]


def quotes(data: Path) -> list[tuple[Any, ...]]:
    return [
        (r["seq"], r["bid"], r["bid_size"], r["ask"], r["ask_size"]) for r in lake(data, "quote")
    ]


def test_a_documented_file_imports_exactly_and_a_second_import_adds_nothing(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "ESZ25-CME.scid", RECORDS, torn=TORN)
    assert main(["import", "scid", str(path), "--tick-size", "0.25"]) == 0
    summary = capsys.readouterr().out
    assert "sierra: 14 accepted (1 bars, 7 quote, 6 trade), 1 quarantined" in summary
    assert "8 records" in summary and "1 torn_records" in summary
    assert trades(data) == TRADES
    assert quotes(data) == QUOTES
    first = lake(data, "trade")[0]
    assert first["ts_event"] == unix_ns(START) and first["symbol"] == "/ESZ25"
    assert first["source"] == "sierra"
    assert [r["ts_event"] - first["ts_event"] for r in lake(data, "trade")][4:] == [
        2_000_000,
        2_001_000,
    ]
    (bar,) = lake(data, "bars")
    assert (bar["open"], bar["high"], bar["low"], bar["close"]) == (6000.0, 6001.0, 5999.5, 6000.75)
    assert (bar["volume"], bar["trades"], bar["seq"]) == (120.0, 40, 7)
    (torn,) = lake(data, "quarantine")
    assert "torn final record (23 of 40 bytes)" in torn["reason"] and torn["payload"] == TORN.hex()

    assert main(["import", "scid", str(path), "--tick-size", "0.25"]) == 0
    assert "0 accepted (nothing new)" in capsys.readouterr().out
    assert trades(data) == TRADES and quotes(data) == QUOTES


class _PowerCut:
    """The importer, stopped hard after a number of committed chunks."""

    def __init__(self, inner: ScidImport, chunks: int) -> None:
        self.name, self.policy, self._inner, self._chunks = inner.name, inner.policy, inner, chunks

    async def run(self, ctx: SourceContext) -> None:
        real_emit, left = ctx.emit, [self._chunks]

        async def emit(batches: Any, checkpoint: Any = None) -> None:
            if left[0] == 0:
                raise OSError("power cut")
            left[0] -= 1
            await real_emit(batches, checkpoint=checkpoint)

        ctx.emit = emit  # type: ignore[method-assign]
        await self._inner.run(ctx)


def test_an_interrupted_import_resumes_to_the_same_result(tmp_path: Path, data: Path) -> None:
    path = write(tmp_path / "ESZ25-CME.scid", RECORDS)
    settings = Settings(_env_file=None, data_dir=data)  # type: ignore[call-arg]
    items = [ImportFile(path.resolve(), "/ESZ25", 0.25)]
    cut = _PowerCut(ScidImport(items, SystemClock(), chunk_records=3), chunks=1)
    with pytest.raises(ExceptionGroup):
        asyncio.run(run_backfill(settings, [cut]))
    assert trades(data) == TRADES[:3]  # the first chunk, committed
    assert main(["import", "scid", str(path), "--tick-size", "0.25"]) == 0
    assert trades(data) == TRADES and quotes(data) == QUOTES


def test_imported_history_is_served_by_the_historical_api_and_as_bars(
    tmp_path: Path, data: Path
) -> None:
    path = write(tmp_path / "ESZ25-CME.scid", RECORDS)
    assert main(["import", "scid", str(path), "--tick-size", "0.25"]) == 0
    proc = PipelineProcess(
        free_port(),
        {"TICKPIPE_DATA_DIR": str(data), "TICKPIPE_SIMULATOR": "false"},
        tmp_path / "api.log",
    )
    proc.wait_ready()
    token, _ = KeyStore(Settings(_env_file=None, data_dir=data).keys_path).create(
        "t", ["read"], 1000
    )  # type: ignore[call-arg]
    window = "symbols=/ESZ25&start_time=2025-11-26&end_time=2025-11-27"
    with httpx.Client(
        base_url=proc.base, headers={"Authorization": f"Bearer {token}"}, timeout=10
    ) as api:
        got = api.get(f"/api/v1/ticks/historical?{window}&types=trade,quote").json()["data"]
        assert sorted((r["type"], r["seq"]) for r in got) == sorted(
            [("trade", t[0]) for t in TRADES] + [("quote", q[0]) for q in QUOTES]
        )
        assert [r["price"] for r in got if r["type"] == "trade"] == [t[1] for t in TRADES]
        (bar,) = api.get(f"/api/v1/ticks/historical?{window}&types=bars").json()["data"]
        assert bar["close"] == 6000.75 and bar["volume"] == 120
        minutes = api.get(f"/api/v1/ticks/historical?{window}&interval=1m").json()["data"]
        assert [(b["open"], b["close"], b["volume"]) for b in minutes] == [(6000.0, 6000.25, 13.0)]
    assert proc.stop(signal.SIGTERM) == 0


def test_a_file_that_is_not_scid_fails_the_import_with_its_reason(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bogus = tmp_path / "ESZ25-CME.scid"
    bogus.write_bytes(b"<html>not found</html>")
    assert main(["import", "scid", str(bogus)]) == 1
    captured = capsys.readouterr()
    assert "1 files_failed" in captured.out and "could not be imported" in captured.err
    (row,) = lake(data, "quarantine")
    assert "is not a Sierra Chart .scid file" in row["reason"]


def test_a_folder_imports_each_file_under_the_symbol_its_name_gives(
    tmp_path: Path, data: Path
) -> None:
    folder = tmp_path / "Data"
    folder.mkdir()
    write(folder / "ESZ25-CME.scid", RECORDS[:2])
    write(folder / "NQZ25-CME.scid", [tick(T, 21000.0, 20999.75, 21000.0)])
    (folder / "ESZ25-CME.dly").write_text("daily file: not imported")
    assert main(["import", "scid", str(folder), "--tick-size", "0.25"]) == 0
    assert sorted({r["symbol"] for r in lake(data, "trade")}) == ["/ESZ25", "/NQZ25"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.scid"], "no such file or folder"),
        (["a.scid", "b.scid", "--symbol", "/ESZ25"], "--symbol names the symbol of one file"),
        (["weird name.scid"], "cannot tell the symbol of weird name.scid"),
        (["a.scid", "--symbol", "not a symbol"], "not a tickpipe symbol"),
        (["ESZ25-CME.scid", "--tick-size", "-1"], "tick size must be a positive number"),
    ],
)
def test_wrong_arguments_get_one_sentence(
    tmp_path: Path,
    data: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("a.scid", "b.scid", "weird name.scid", "ESZ25-CME.scid"):
        write(tmp_path / name, RECORDS[:1])
    assert main(["import", "scid", *args]) == 2
    assert message in capsys.readouterr().err


def test_import_depth_puts_book_updates_in_the_lake(tmp_path: Path, data: Path) -> None:
    path = depth_file(
        tmp_path / "ESZ25-CME.2025-11-26.depth", [(T, 2, 3, 6000.0, 10), (T + 5, 3, 1, 6000.25, 4)]
    )
    assert main(["import", "depth", str(path), "--tick-size", "0.25"]) == 0
    rows = [(r["side"], r["level"], r["price"], r["size"], r["orders"]) for r in lake(data, "book")]
    assert rows == [("B", 0, 6000.0, 10.0, 3), ("A", 0, 6000.25, 4.0, 1)]
