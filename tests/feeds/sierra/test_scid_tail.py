"""The live tail on a folder the test writes into as Sierra Chart would."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tickpipe.clock import FakeClock
from tickpipe.config import Settings
from tickpipe.errors import ConfigError
from tickpipe.events import Kind
from tickpipe.sources.sierra import build
from tickpipe.sources.sierra.tail import ScidTail

from .fakectx import FakeContext
from .scidfile import Rec, append, sc_time, tick, unix_ns, write

NOW = dt.datetime(2025, 11, 26, 15, 0, tzinfo=dt.UTC)
T0 = sc_time(NOW - dt.timedelta(minutes=5))


def ticks(first: int, count: int) -> list[Rec]:
    """``count`` trades, one every 100 ms, numbered by price so each is recognisable."""
    return [
        tick(T0 + (first + i) * 100_000, 6000 + (first + i) * 0.25, 5999.0, 6100.0)
        for i in range(count)
    ]


def make_settings(tmp_path: Path, **extra: Any) -> Settings:
    (tmp_path / "Data").mkdir(exist_ok=True)
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path / "data",
        sierra_scid_dir=tmp_path / "Data",
        sierra_poll_interval_s=0.01,
        sierra_tick_sizes={"ES": 0.25},
        **extra,
    )


@asynccontextmanager
async def running(settings: Settings, ctx: FakeContext) -> AsyncIterator[FakeContext]:
    ctx.clock = FakeClock(unix_ns(NOW))
    (source,) = build(settings, ctx.clock)
    task = asyncio.create_task(source.run(ctx))
    try:
        yield ctx
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def prices(ctx: FakeContext) -> list[float]:
    return [t["price"] for t in ctx.rows(Kind.TRADE)]


def has(n: int, ctx: FakeContext) -> Callable[[], bool]:
    return lambda: len(ctx.rows(Kind.TRADE)) >= n


async def test_records_appended_while_following_are_emitted_with_their_offsets(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path)
    path = write(settings.sierra_scid_dir / "ESZ25-CME.scid", ticks(0, 3))  # type: ignore[operator]
    async with running(settings, FakeContext()) as ctx:
        await ctx.wait_for(has(3, ctx))
        append(path, ticks(3, 2))
        await ctx.wait_for(has(5, ctx))
    trades = ctx.rows(Kind.TRADE)
    assert [t["seq"] for t in trades] == [1, 2, 3, 4, 5]
    assert prices(ctx) == [6000.0, 6000.25, 6000.5, 6000.75, 6001.0]
    assert {t["symbol"] for t in trades} == {"/ESZ25"}
    assert ctx.checkpoint is not None
    assert ctx.checkpoint["tail"]["files"][str(path)]["offset"] == 56 + 5 * 40


async def test_a_restart_from_the_checkpoint_neither_repeats_nor_loses(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    path = write(settings.sierra_scid_dir / "ESZ25-CME.scid", ticks(0, 4))  # type: ignore[operator]
    async with running(settings, FakeContext()) as first:
        await first.wait_for(has(4, first))
    append(path, ticks(4, 3))  # written while tickpipe was down
    async with running(settings, FakeContext(checkpoint=first.checkpoint)) as second:
        await second.wait_for(has(3, second))
        append(path, ticks(7, 1))
        await second.wait_for(has(4, second))
    assert [t["seq"] for t in second.rows(Kind.TRADE)] == [5, 6, 7, 8]


async def test_a_partial_record_waits_until_sierra_has_written_all_of_it(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    whole = ticks(1, 1)[0].pack()
    path = write(settings.sierra_scid_dir / "ESZ25-CME.scid", ticks(0, 1), torn=whole[:25])  # type: ignore[operator]
    async with running(settings, FakeContext()) as ctx:
        await ctx.wait_for(has(1, ctx))
        polls = ctx.alive_calls
        await ctx.wait_for(lambda: ctx.alive_calls > polls + 2)  # polled again: still waiting
        assert len(ctx.rows(Kind.TRADE)) == 1 and ctx.rejected == []
        with open(path, "ab") as f:
            f.write(whole[25:])
        await ctx.wait_for(has(2, ctx))
    assert prices(ctx) == [6000.0, 6000.25]


async def test_a_file_rewritten_shorter_is_rescanned_after_the_last_record_delivered(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path)
    path = write(settings.sierra_scid_dir / "ESZ25-CME.scid", ticks(0, 6))  # type: ignore[operator]
    async with running(settings, FakeContext()) as ctx:
        await ctx.wait_for(has(6, ctx))
        # Sierra compressed the old part of the file into fewer records, then went on
        write(path, [ticks(0, 1)[0], *ticks(4, 2), *ticks(6, 2)])
        await ctx.wait_for(has(8, ctx))
    assert prices(ctx)[6:] == [6001.5, 6001.75]
    assert [t["seq"] for t in ctx.rows(Kind.TRADE)] == list(range(1, 9))
    assert ctx.counters["rescans"] == 1


async def test_the_last_bar_waits_for_a_newer_record(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    bar = Rec(T0, 6000.0, 6001.0, 5999.0, 6000.5, 10, 25, 12, 13)
    path = write(settings.sierra_scid_dir / "ESZ25-CME.scid", [bar])  # type: ignore[operator]
    async with running(settings, FakeContext()) as ctx:
        polls = ctx.alive_calls
        await ctx.wait_for(lambda: ctx.alive_calls > polls + 2)
        assert ctx.rows(Kind.BAR) == []
        write(
            path, [Rec(T0, 6000.0, 6001.5, 5999.0, 6001.25, 11, 27, 12, 15)]
        )  # rewritten in place
        append(path, [Rec(T0 + 60_000_000, 6001.25, 6001.25, 6001.25, 6001.25, 1, 1, 0, 1)])
        await ctx.wait_for(lambda: len(ctx.rows(Kind.BAR)) >= 1)
    (first,) = ctx.rows(Kind.BAR)
    assert (first["high"], first["close"], first["volume"]) == (6001.5, 6001.25, 27.0)


async def test_a_new_file_starts_where_the_import_left_it(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    path = write(settings.sierra_scid_dir / "ESZ25-CME.scid", ticks(0, 5))  # type: ignore[operator]
    from tickpipe.sources.sierra import files

    fingerprint = files.look(path).fingerprint
    imported = {"imports": {str(path): {"offset": 56 + 3 * 40, "fingerprint": fingerprint}}}
    async with running(settings, FakeContext(checkpoint=imported)) as ctx:
        await ctx.wait_for(has(2, ctx))
    assert [t["seq"] for t in ctx.rows(Kind.TRADE)] == [4, 5]
    assert ctx.checkpoint is not None and ctx.checkpoint["imports"] == imported["imports"]


async def test_history_older_than_the_quality_max_age_is_left_to_the_import(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    old = sc_time(NOW - dt.timedelta(days=30))
    history = [tick(old + i, 5000.0, 4999.75, 5000.0) for i in range(3)]
    write(settings.sierra_scid_dir / "ESZ25-CME.scid", history + ticks(0, 2))  # type: ignore[operator]
    async with running(settings, FakeContext()) as ctx:
        await ctx.wait_for(has(2, ctx))
    assert [t["seq"] for t in ctx.rows(Kind.TRADE)] == [4, 5]


async def test_a_foreign_file_is_quarantined_once_and_the_rest_followed(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    folder: Path = settings.sierra_scid_dir  # type: ignore[assignment]
    (folder / "NQZ25-CME.scid").write_bytes(b"garbage, not SCID")
    (folder / "ESZ25-CME.dly").write_text("a daily file, not followed")
    write(folder / "ESZ25-CME.scid", ticks(0, 2))
    async with running(settings, FakeContext()) as ctx:
        await ctx.wait_for(has(2, ctx))
        polls = ctx.alive_calls
        await ctx.wait_for(lambda: ctx.alive_calls > polls + 3)
    (rejected,) = ctx.rejected
    assert "is not a Sierra Chart .scid file" in rejected[1]
    assert ctx.counters["files_failed"] == 1


async def test_sierra_symbols_choose_the_files_and_name_their_symbols(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, sierra_symbols="ESZ25-CME=/ES")
    folder: Path = settings.sierra_scid_dir  # type: ignore[assignment]
    write(folder / "ESZ25-CME.scid", ticks(0, 2))
    write(folder / "NQZ25-CME.scid", ticks(0, 2))
    async with running(settings, FakeContext()) as ctx:
        await ctx.wait_for(has(2, ctx))
        polls = ctx.alive_calls
        await ctx.wait_for(lambda: ctx.alive_calls > polls + 2)
    assert {t["symbol"] for t in ctx.rows(Kind.TRADE)} == {"/ES"}
    assert len(ctx.rows(Kind.TRADE)) == 2


async def test_a_missing_folder_stops_the_source_with_the_setting_to_fix(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, sierra_scid_dir=tmp_path / "nope")  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="SIERRA_SCID_DIR"):
        await ScidTail(settings, FakeClock()).run(FakeContext())
