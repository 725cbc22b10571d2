"""Live events over a WebSocket, and historical replay at a chosen speed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Annotated, Any

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
from tickpipe.api.routes.ticks import check_cells
from tickpipe.errors import QueryError
from tickpipe.events import SCHEMAS, Kind
from tickpipe.store.bus import Subscription
from tickpipe.store.keystore import ApiKey

router = APIRouter(tags=["stream"])
Ctx = Annotated[ApiContext, Depends(context)]
STREAM_KINDS = (Kind.TRADE, Kind.QUOTE, Kind.BOOK, Kind.OPTION)
QUEUE_BATCHES = 256
"""per-client queue of symbol slices; overflow drops the oldest and ends the stream"""
SEND_TIMEOUT_S = 5.0
"""a send that cannot go out for this long means the client stopped reading"""
NOTICE_GRACE_S = 10.0
"""how long the slow_consumer notice and the close may wait for such a client"""
CONFLATE_MS = (10, 60_000)


async def _refuse(ws: WebSocket, code: str, message: str) -> None:
    """Accept, say why in JSON, close: browsers cannot read a refused handshake."""
    await ws.accept()
    await ws.send_text(orjson.dumps({"error": {"code": code, "message": message}}).decode())
    await ws.close(code=1008)


def _conflate_param(value: str | None) -> float:
    if value is None:
        return 0.0
    low, high = CONFLATE_MS
    try:
        ms = int(value) if len(value) <= 6 else -1
    except ValueError:
        ms = -1
    if ms != 0 and not low <= ms <= high:
        raise QueryError(
            f"conflate is milliseconds between frames: 0 (off) or {low} to {high:,}",
            code="bad_parameter",
        )
    return ms / 1000


@router.websocket("/api/v1/stream")
async def stream(ws: WebSocket) -> None:
    """Every accepted event as it is accepted: text frames, each a JSON array of events.

    Query: `symbols` (required), `types` (default trade,quote,book,option), `token` (the key,
    for browsers; or an `Authorization: Bearer` header), `conflate` (milliseconds: at most
    one frame per interval holding only the latest event per symbol and type; for screens
    and slow links). What piled up while a frame was being sent goes out in the next frame.
    A client whose queue overflows, or that does not read for `SEND_TIMEOUT_S`, gets
    `{"error": {"code": "slow_consumer"}}` and close code 1013: it never slows the pipeline."""
    ctx: ApiContext = ws.app.state.ctx
    try:
        authorize_websocket(ws, "stream")
        symbols = parse_symbols(ws.query_params.get("symbols", ""))
        kinds = parse_types(ws.query_params.get("types"), STREAM_KINDS)
        conflate_s = _conflate_param(ws.query_params.get("conflate"))
    except ApiError as exc:
        await _refuse(ws, exc.code, exc.message)
        return
    except QueryError as exc:
        await _refuse(ws, exc.code, str(exc))
        return
    sub = ctx.bus.subscribe(frozenset(kinds), frozenset(symbols), maxsize=QUEUE_BATCHES)
    await ws.accept()
    try:
        hello: dict[str, object] = {
            "type": "subscribed",
            "symbols": symbols,
            "types": [k.value for k in kinds],
        }
        if conflate_s:
            hello["conflate_ms"] = round(conflate_s * 1000)
        await ws.send_text(orjson.dumps(hello).decode())
        async with asyncio.TaskGroup() as group:
            sender = group.create_task(_send(ws, sub, conflate_s))
            receiver = group.create_task(_drain_client(ws))
            await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
            for task in (sender, receiver):
                task.cancel()
    except* (WebSocketDisconnect, RuntimeError):
        pass  # the client left, from either task: nothing to tell it
    finally:
        ctx.bus.unsubscribe(sub)


async def _send(ws: WebSocket, sub: Subscription, conflate_s: float) -> None:
    while True:
        if conflate_s:
            await asyncio.sleep(conflate_s)
        items = await sub.get_all()
        if sub.dropped:
            await _slow(ws, f"client fell behind; {sub.dropped} events dropped")
            return
        if conflate_s:
            items = _latest_rows(items)
        for frame in _shared.frames(items):
            try:
                async with asyncio.timeout(SEND_TIMEOUT_S):
                    await ws.send_text(frame)
            except TimeoutError:
                await _slow(ws, f"client read nothing for {SEND_TIMEOUT_S:g} s")
                return


async def _slow(ws: WebSocket, why: str) -> None:
    """Tell a slow client why it is dropped, then close. Its socket may still be full:
    the notice waits behind what it has not read, for at most ``NOTICE_GRACE_S``."""
    message = f"{why}; reconnect and read faster (or ask for conflate=250)"
    body = orjson.dumps({"error": {"code": "slow_consumer", "message": message}}).decode()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(NOTICE_GRACE_S):
            await ws.send_text(body)
            await ws.close(code=1013)


CHUNK_ROWS = 500
FRAME_BYTES = 512 * 1024
"""frames stay well under the 1 MiB a default websockets client accepts, however much
piled up while the previous frame was being sent"""


class _SharedJson:
    """JSON of the bus's slices, encoded once for every client: the bus hands each reader
    the same slice objects, so with 200 clients on one symbol a delivery is encoded once,
    and the frames made of the same slices are cut once."""

    def __init__(self, size: int = 1024) -> None:
        self._size = size
        self._chunks: OrderedDict[int, tuple[pa.RecordBatch, list[str]]] = OrderedDict()
        self._frames: OrderedDict[tuple[int, ...], tuple[list[pa.RecordBatch], list[str]]] = (
            OrderedDict()
        )
        self._last_rows: OrderedDict[int, tuple[pa.RecordBatch, pa.RecordBatch]] = OrderedDict()

    def chunks(self, kind: Kind, batch: pa.RecordBatch) -> list[str]:
        """The events of ``batch`` as JSON objects, comma-joined, ``CHUNK_ROWS`` a piece."""
        hit = self._chunks.get(id(batch))
        if hit is not None and hit[0] is batch:
            return hit[1]
        table = with_type_and_time(pa.Table.from_batches([batch]), kind.value)
        texts = [
            records_json(table.slice(start, CHUNK_ROWS)).decode()[1:-1]
            for start in range(0, table.num_rows, CHUNK_ROWS)
        ]
        self._put(self._chunks, id(batch), (batch, texts))
        return texts

    def frames(self, items: list[tuple[Kind, pa.RecordBatch]]) -> list[str]:
        """JSON arrays of at most about ``FRAME_BYTES`` each, in order."""
        key = tuple(id(b) for _, b in items)
        hit = self._frames.get(key)
        if hit is not None and all(a is b for a, (_, b) in zip(hit[0], items, strict=True)):
            return hit[1]
        frames: list[str] = []
        current: list[str] = []
        size = 0
        for kind, batch in items:
            for chunk in self.chunks(kind, batch):
                if current and size + len(chunk) > FRAME_BYTES:
                    frames.append("[" + ",".join(current) + "]")
                    current, size = [], 0
                current.append(chunk)
                size += len(chunk) + 1
        if current:
            frames.append("[" + ",".join(current) + "]")
        self._put(self._frames, key, ([b for _, b in items], frames))
        return frames

    def last_row(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        hit = self._last_rows.get(id(batch))
        if hit is not None and hit[0] is batch:
            return hit[1]
        row = batch.slice(batch.num_rows - 1, 1)
        self._put(self._last_rows, id(batch), (batch, row))
        return row

    def _put(self, cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
        cache[key] = value
        if len(cache) > self._size:
            cache.popitem(last=False)


_shared = _SharedJson()


def _latest_rows(items: list[tuple[Kind, pa.RecordBatch]]) -> list[tuple[Kind, pa.RecordBatch]]:
    """Conflation: the last event per (kind, symbol) of what piled up (each item is one
    symbol's slice of a delivery)."""
    latest: dict[tuple[Kind, str], pa.RecordBatch] = {}
    for kind, batch in items:
        if batch.num_rows:
            latest[(kind, batch.column("symbol")[0].as_py())] = batch
    return [(kind, _shared.last_row(batch)) for (kind, _), batch in latest.items()]


async def _drain_client(ws: WebSocket) -> None:
    """Notice the client leaving even when no events flow."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            await ws.receive_text()


NDJSON = "application/x-ndjson"


@router.get(
    "/api/v1/replay",
    summary="Historical events in time order at a chosen speed (NDJSON)",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "One JSON event per line",
            "content": {NDJSON: {"schema": {"type": "string"}}},
        }
    },
)
async def replay(
    ctx: Ctx,
    _: Annotated[ApiKey, Depends(require("read"))],
    symbols: Annotated[str, Query(examples=["SPY"])],
    start_time: Annotated[str, Query(examples=["2026-11-26T14:30:00Z"])],
    end_time: Annotated[str, Query(examples=["2026-11-26T14:35:00Z"])],
    speed: Annotated[
        float,
        Query(
            ge=0,
            le=100_000,
            allow_inf_nan=False,
            description="x real time; 0 = as fast as possible",
        ),
    ] = 1.0,
    types: Annotated[str | None, Query(description="default trade,quote")] = None,
) -> StreamingResponse:
    """One JSON event per line, each with its `type`, in (ts_event, type, symbol, seq) order,
    emitted at `speed` times the pace at which they happened. Priced like a download
    (rows x columns, checked before the query runs)."""
    syms = parse_symbols(symbols)
    kinds = parse_types(types, (Kind.TRADE, Kind.QUOTE))
    start_ns, end_ns = parse_range(start_time, end_time)
    cells = 0
    for kind in kinds:
        rows = await asyncio.to_thread(ctx.query.count, kind.value, syms, start_ns, end_ns)
        cells += rows * len(SCHEMAS[kind])
    check_cells(ctx, cells, "the events asked for", end_ns - start_ns)
    reader = await asyncio.to_thread(_replay_reader, ctx, syms, kinds, start_ns, end_ns)
    return StreamingResponse(_paced(reader, speed), media_type=NDJSON)


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
