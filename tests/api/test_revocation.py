"""Revoking a key ends its open streams within a second (issue 20: a revoked key kept
streaming 209 frames in 20 s), also when another process revokes it (``tickpipe keys
revoke`` writes the key database through its own connection): the WebSocket with a
``key_revoked`` frame and close code 4401, a running replay with a ``key_revoked`` line."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import pytest
import websockets

from tickpipe.api.revocation import KeyWatch
from tickpipe.clock import NS_PER_SECOND, SystemClock
from tickpipe.events import Kind, Trade, to_batch
from tickpipe.store.keystore import KeyStore

from .conftest import Api

HOUR = 3600 * NS_PER_SECOND


def revoke_elsewhere(api: Api, name: str) -> float:
    """Revoke as the CLI does, through a connection of its own; returns when (monotonic)."""
    other = KeyStore(api.ctx.settings.keys_path)
    other.revoke(name)
    other.close()
    return time.monotonic()


async def test_revoking_a_key_closes_its_websocket_within_a_second(served: Api) -> None:
    api = served
    token, _ = api.ctx.keys.create("doomed", ["read", "stream"], 1000)
    url = api.base_url.replace("http://", "ws://") + f"/api/v1/stream?symbols=SPY&token={token}"
    async with websockets.connect(url) as ws:
        assert orjson.loads(await ws.recv())["type"] == "subscribed"
        t0 = SystemClock().now_ns() - NS_PER_SECOND
        await api.feed({Kind.TRADE: to_batch(Kind.TRADE, [Trade(t0, t0, "SPY", 1.0, 1, "f", 1)])})
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 5))[0]["symbol"] == "SPY"

        revoked_at = revoke_elsewhere(api, "doomed")
        notice = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        elapsed = time.monotonic() - revoked_at
    assert notice["error"]["code"] == "key_revoked"
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    assert elapsed < 1.0, f"closed {elapsed:.2f} s after the revocation"


async def test_revoking_a_key_ends_its_running_replay_within_a_second(served: Api) -> None:
    api = served
    token, _ = api.ctx.keys.create("doomed", ["read"], 1000)
    t0 = SystemClock().now_ns() - 2 * HOUR
    trades = [Trade(t0 + i * HOUR, t0, "SPY", 600.0, 1, "f", i + 1) for i in range(2)]
    await api.feed({Kind.TRADE: to_batch(Kind.TRADE, trades)})
    params = {"symbols": "SPY", "start_time": t0, "end_time": t0 + 2 * HOUR, "speed": 1}
    async with (
        httpx.AsyncClient(base_url=api.base_url) as client,
        client.stream(
            "GET", "/api/v1/replay", params=params, headers={"Authorization": f"Bearer {token}"}
        ) as response,
    ):
        lines = response.aiter_lines()
        first = orjson.loads(await anext(lines))  # the second event is an hour away
        revoked_at = revoke_elsewhere(api, "doomed")
        async with asyncio.timeout(5):
            rest = [orjson.loads(line) async for line in lines if line]
        elapsed = time.monotonic() - revoked_at
    assert first["seq"] == 1
    assert rest == [
        {
            "error": {
                "code": "key_revoked",
                "message": "this API key was revoked; the stream is closed",
            }
        }
    ]
    assert elapsed < 1.0, f"ended {elapsed:.2f} s after the revocation"


async def test_the_watch_asks_sqlite_once_per_interval_whatever_the_number_of_streams(
    api: Api,
) -> None:
    tokens = [api.ctx.keys.create(f"k{i}", ["read"], 1000)[0] for i in range(3)]
    watch = KeyWatch(api.ctx.keys, check_s=0.05)
    watch.generation()
    assert watch._con is not None
    statements: list[str] = []
    watch._con.set_trace_callback(statements.append)
    streams = [asyncio.create_task(watch.revoked(tokens[i % 3])) for i in range(300)]
    started = time.monotonic()
    await asyncio.sleep(0.5)  # 300 streams watching for half a second
    watched = time.monotonic() - started
    for task in streams:
        task.cancel()
    await asyncio.gather(*streams, return_exceptions=True)
    watch.close()
    assert 1 <= len(statements) <= watched / 0.05 + 2, len(statements)
