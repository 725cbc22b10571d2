"""Live events over a WebSocket, and historical replay at a chosen speed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Annotated

import numpy as np
import orjson
import pyarrow as pa
from fastapi import APIRouter, Depends, Query, WebSocket, WebSocketDisconnect
from starlette.responses import StreamingResponse

from tickpipe.api.auth import authorize_websocket, require
from tickpipe.api.context import ApiContext
from tickpipe.api.encode import records_json, with_type_and_time
from tickpipe.api.errors import ApiError
from tickpipe.api.params import parse_range, parse_symbols, parse_types
from tickpipe.api.routes import context
from tickpipe.errors import QueryError
from tickpipe.events import Kind
from tickpipe.store.keystore import ApiKey

router = APIRouter(tags=["stream"])
Ctx = Annotated[ApiContext, Depends(context)]
STREAM_KINDS = (Kind.TRADE, Kind.QUOTE, Kind.BOOK, Kind.OPTION)
QUEUE_BATCHES = 256


async def _refuse(ws: WebSocket, code: str, message: str) -> None:
    """Accept, say why in JSON, close: browsers cannot read a refused handshake."""
    await ws.accept()
    await ws.send_text(orjson.dumps({"error": {"code": code, "message": message}}).decode())
    await ws.close(code=1008)


@router.websocket("/api/v1/stream")
async def stream(ws: WebSocket) -> None:
    """Every accepted event as it is accepted: text frames, each a JSON array of events.

    Query: `symbols` (required), `types` (default trade,quote,book,option), `token` (the key,
    for browsers; or an `Authorization: Bearer` header). A client that falls more than
    256 deliveries behind gets `{"error": {"code": "slow_consumer"}}` and is closed: it
    never slows the pipeline."""
    ctx: ApiContext = ws.app.state.ctx
    try:
        authorize_websocket(ws, "stream")
        symbols = parse_symbols(ws.query_params.get("symbols", ""))
        kinds = parse_types(ws.query_params.get("types"), STREAM_KINDS)
    except ApiError as exc:
        await _refuse(ws, exc.code, exc.message)
        return
    except QueryError as exc:
        await _refuse(ws, exc.code, str(exc))
        return
    sub = ctx.bus.subscribe(frozenset(kinds), frozenset(symbols), maxsize=QUEUE_BATCHES)
    await ws.accept()
    try:
        hello = {"type": "subscribed", "symbols": symbols, "types": [k.value for k in kinds]}
        await ws.send_text(orjson.dumps(hello).decode())
        async with asyncio.TaskGroup() as group:
            sender = group.create_task(_send(ws, sub))
            receiver = group.create_task(_drain_client(ws))
            await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
            for task in (sender, receiver):
                task.cancel()
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        ctx.bus.unsubscribe(sub)


async def _send(ws: WebSocket, sub: object) -> None:
    from tickpipe.store.bus import Subscription

    assert isinstance(sub, Subscription)
    while True:
        kind, batch = await sub.get()
        if sub.dropped:
            message = f"client fell behind; {sub.dropped} events dropped; reconnect and read faster"
            await ws.send_text(
                orjson.dumps({"error": {"code": "slow_consumer", "message": message}}).decode()
            )
            await ws.close(code=1013)
            return
        table = with_type_and_time(pa.Table.from_batches([batch]), kind.value)
        await ws.send_text(records_json(table).decode())


async def _drain_client(ws: WebSocket) -> None:
    """Notice the client leaving even when no events flow."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            await ws.receive_text()


@router.get("/api/v1/replay", summary="Historical events in time order at a chosen speed (NDJSON)")
async def replay(
    ctx: Ctx,
    _: Annotated[ApiKey, Depends(require("read"))],
    symbols: Annotated[str, Query(examples=["SPY"])],
    start_time: Annotated[str, Query(examples=["2026-11-26T14:30:00Z"])],
    end_time: Annotated[str, Query(examples=["2026-11-26T14:35:00Z"])],
    speed: Annotated[
        float, Query(ge=0, le=100_000, description="x real time; 0 = as fast as possible")
    ] = 1.0,
    types: Annotated[str | None, Query(description="default trade,quote")] = None,
) -> StreamingResponse:
    """One JSON event per line, each with its `type`, in (ts_event, type, symbol, seq) order,
    emitted at `speed` times the pace at which they happened."""
    syms = parse_symbols(symbols)
    kinds = parse_types(types, (Kind.TRADE, Kind.QUOTE))
    start_ns, end_ns = parse_range(start_time, end_time)
    reader = await asyncio.to_thread(_replay_reader, ctx, syms, kinds, start_ns, end_ns)
    return StreamingResponse(_paced(reader, speed), media_type="application/x-ndjson")


def _replay_reader(
    ctx: ApiContext, symbols: list[str], kinds: list[Kind], start_ns: int, end_ns: int
) -> pa.RecordBatchReader | None:
    return ctx.query.replay_reader([k.value for k in kinds], symbols, start_ns, end_ns)


def _next_batch(reader: pa.RecordBatchReader) -> pa.RecordBatch | None:
    """StopIteration must not cross into a Future (it would hang the awaiting task)."""
    try:
        return reader.read_next_batch()
    except StopIteration:
        return None


async def _paced(reader: pa.RecordBatchReader | None, speed: float) -> AsyncIterator[bytes]:
    if reader is None:
        return
    started = time.monotonic()
    first_ts: int | None = None
    while True:
        batch = await asyncio.to_thread(_next_batch, reader)
        if batch is None:
            return
        ts = batch.column(0).to_numpy()
        lines = batch.column(1).to_pylist()
        if speed == 0:
            yield ("\n".join(lines) + "\n").encode()
            continue
        if first_ts is None:
            first_ts = int(ts[0])
        due = (ts - first_ts) / 1e9 / speed  # seconds after start each event is due
        pos = 0
        while pos < len(lines):
            now = time.monotonic() - started
            upto = int(np.searchsorted(due, now, side="right"))
            if upto <= pos:
                await asyncio.sleep(float(due[pos]) - now)
                continue
            yield ("\n".join(lines[pos:upto]) + "\n").encode()
            pos = upto
