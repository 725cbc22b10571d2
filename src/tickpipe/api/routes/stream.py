"""Live events over a WebSocket, and historical replay at a chosen speed.

Both end within a second of their key's revocation (``revocation.py``): the WebSocket with
a ``key_revoked`` error frame and close code 4401, a replay with a ``key_revoked`` error
line. A replay is read page by page (``store/pages.py``), a short query each, paced in
between: no query stays open for the replay's length.
"""

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
from fastapi import APIRouter, Depends, Query, Request, WebSocket, WebSocketDisconnect
from starlette.responses import StreamingResponse

from tickpipe.api import observe
from tickpipe.api.auth import authorize_websocket, request_token, require
from tickpipe.api.context import ApiContext
from tickpipe.api.encode import records_json, with_type_and_time
from tickpipe.api.errors import ApiError
from tickpipe.api.params import parse_int, parse_range, parse_symbols, parse_types
from tickpipe.api.revocation import REVOKED_MESSAGE, KeyWatch
from tickpipe.api.routes import context
from tickpipe.api.routes.ticks import admission, check_cells, in_worker, key_revoked
from tickpipe.api.streaming import FAREWELL_S, REVOKED_LINE, BoundedStream
from tickpipe.errors import QueryError
from tickpipe.events import SCHEMAS, Kind
from tickpipe.store.bus import Subscription
from tickpipe.store.keystore import ApiKey
from tickpipe.store.pages import KeysetPages, replay_pages

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
REVOKED_CLOSE = 4401
"""close code of a stream whose key was revoked (4000 + the HTTP status it stands for)"""


async def _refuse(ws: WebSocket, status: int, code: str, message: str) -> None:
    """Accept, say why in JSON, close: browsers cannot read a refused handshake. The
    access log shows the refusal's own status (401, 403, 400), not the handshake's 101."""
    observe.note(ws, status=status)
    await ws.accept()
    await ws.send_text(orjson.dumps({"error": {"code": code, "message": message}}).decode())
    await ws.close(code=1008)


def _conflate_param(value: str | None) -> float:
    if value is None:
        return 0.0
    low, high = CONFLATE_MS
    ms = parse_int(value, "conflate", 0, high)
    if 0 < ms < low:
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
        await _refuse(ws, exc.status, exc.code, exc.message)
        return
    except QueryError as exc:
        await _refuse(ws, exc.status, exc.code, str(exc))
        return
    watch: KeyWatch = ws.app.state.key_watch
    token = request_token(ws, query_token=True)
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
            revoked = group.create_task(watch.revoked(token))
            tasks = {sender, receiver, revoked}
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
        if revoked.done() and not revoked.cancelled():
            await _revoked(ws)
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


async def _revoked(ws: WebSocket) -> None:
    """Tell the client its key was revoked, then close with 4401; a client that does not
    read is given ``FAREWELL_S`` for it, then left (the server closes the socket)."""
    body = orjson.dumps({"error": {"code": "key_revoked", "message": REVOKED_MESSAGE}}).decode()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(FAREWELL_S):
            await ws.send_text(body)
            await ws.close(code=REVOKED_CLOSE)


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
    request: Request,
    ctx: Ctx,
    key: Annotated[ApiKey, Depends(require("read"))],
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
) -> BoundedStream:
    """One JSON event per line, each with its `type`, in (ts_event, type, symbol, seq) order,
    emitted at `speed` times the pace at which they happened. Priced like a download
    (rows x columns, checked before the query runs) and admitted like one (503
    `server_busy` or 429 `too_many_streams` with `Retry-After` past the budget). If the
    key is revoked meanwhile, the last line is `{"error": {"code": "key_revoked", ...}}`."""
    syms = parse_symbols(symbols)
    kinds = parse_types(types, (Kind.TRADE, Kind.QUOTE))
    start_ns, end_ns = parse_range(start_time, end_time)
    ticket = await admission(request).admit(key)
    try:
        cells = rows = 0
        for kind in kinds:
            found = await in_worker(ctx.query.count, kind.value, syms, start_ns, end_ns)
            cells += found * len(SCHEMAS[kind])
            rows += found
        check_cells(ctx, cells, "the events asked for", end_ns - start_ns)
        pages = replay_pages(ctx.query, kinds, syms, start_ns, end_ns, expected_rows=rows)
        return BoundedStream(
            _paced(pages, speed),
            media_type=NDJSON,
            ticket=ticket,
            revoked=key_revoked(request),
            farewell=REVOKED_LINE,
        )
    except BaseException:
        ticket.release()
        raise


def _ndjson(lines: pa.Array, start: int, stop: int) -> bytes:
    """Lines ``start`` to ``stop`` (each already ending in a newline) as one bytes object:
    one copy out of the Arrow data buffer, no Python string per line."""
    offsets = np.frombuffer(
        lines.buffers()[1], dtype=np.int32, count=len(lines) + 1, offset=4 * lines.offset
    )
    data = lines.buffers()[2]
    first, last = int(offsets[start]), int(offsets[stop])
    return b"" if data is None else data[first:last].to_pybytes()


async def _paced(pages: KeysetPages, speed: float) -> AsyncIterator[bytes]:
    """The pages' lines at ``speed`` x their pace (0: at once). The next page is read while
    this one is paced, so a page boundary adds no delay: two pages held at most."""
    upcoming = asyncio.ensure_future(asyncio.to_thread(pages.next_page))
    started = 0.0
    first_ts: int | None = None
    try:
        while True:
            page = await upcoming
            if page is None:
                return
            upcoming = asyncio.ensure_future(asyncio.to_thread(pages.next_page))
            lines = page.column("line").combine_chunks()
            if speed == 0:
                yield _ndjson(lines, 0, len(lines))
                continue
            ts = page.column("ts_event").to_numpy()
            if first_ts is None:
                first_ts, started = int(ts[0]), time.monotonic()
            due = (ts - first_ts) / 1e9 / speed  # seconds after start each event is due
            pos = 0
            while pos < len(lines):
                now = time.monotonic() - started
                upto = int(np.searchsorted(due, now, side="right"))
                if upto <= pos:
                    await asyncio.sleep(float(due[pos]) - now)
                    continue
                yield _ndjson(lines, pos, upto)
                pos = upto
    finally:
        upcoming.cancel()
