"""A feed that falls behind is visible: unread bytes on its socket reach /status with a
log line when it falls behind and when it catches up, never silently."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from tickpipe.clock import FakeClock
from tickpipe.sources import backlog
from tickpipe.sources.base import SourceState
from tickpipe.sources.context import BEHIND_BYTES, LiveContext
from tickpipe.sources.supervisor import Supervisor

MARK = 16 * 1024
"""the falling-behind mark for this test: a loopback socket's receive queue always holds
more than this (how far past it a socket can buffer depends on the kernel's tuning)"""
PAYLOAD = 1 << 20


class NoIntake:
    def try_put(self, delivery: object) -> bool:
        return True

    async def put(self, delivery: object) -> None:
        return None


async def test_unread_bytes_on_a_real_socket_mark_the_source_behind_then_caught_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"x" * PAYLOAD)
        await writer.drain()
        await reader.read()  # until the client closes
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(flood, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**16)
    state = SourceState("feed")
    ctx = LiveContext("feed", state, FakeClock(), NoIntake())
    ctx.behind_bytes = MARK
    watcher = asyncio.create_task(backlog.watch(ctx, writer, every_s=0.01))
    try:
        async with asyncio.timeout(10):
            while state.behind_since_ns is None:  # sampled every 10 ms
                await asyncio.sleep(0.01)
        assert state.backlog_bytes >= MARK and state.behind_episodes == 1
        assert "source feed is falling behind its feed" in caplog.text
        got = 0
        async with asyncio.timeout(10):
            while got < PAYLOAD:  # the reader catches up
                got += len(await reader.read(1 << 20))
            while state.behind_since_ns is not None:
                await asyncio.sleep(0.01)
        assert "source feed caught up with its feed" in caplog.text
        assert state.backlog_max_bytes >= MARK
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
    assert state.backlog_bytes == 0  # a connection gone leaves nothing pending


def test_a_closed_or_foreign_object_reads_as_unknown_not_as_an_error() -> None:
    assert backlog.unread_bytes(None) is None
    assert backlog.unread_bytes(object()) is None
    assert backlog.transport_socket(object()) is None


def test_status_and_metrics_carry_the_backlog(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    state = SourceState("feed")
    ctx = LiveContext("feed", state, FakeClock(), NoIntake())
    ctx.backlog(3 * BEHIND_BYTES)
    sup = Supervisor([], lambda s, st: ctx, FakeClock())
    sup.states["feed"] = state
    shown = sup.stats("feed")
    assert shown.backlog_bytes == 3 * BEHIND_BYTES
    assert shown.behind_since_ns is not None and shown.behind_episodes == 1
    ctx.backlog(2 * BEHIND_BYTES)  # still behind: no second log line, no second episode
    assert caplog.text.count("falling behind") == 1 and state.behind_episodes == 1
