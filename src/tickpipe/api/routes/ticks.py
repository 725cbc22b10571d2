"""Real-time and historical ticks, OHLCV bars and latest quotes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Annotated, Literal

import pyarrow as pa
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response, StreamingResponse

from tickpipe.api.auth import authorize_request, require
from tickpipe.api.context import ApiContext
from tickpipe.api.encode import (
    MEDIA_TYPES,
    STREAMERS,
    data_json,
    iso_times,
    records_json,
    with_type_and_time,
)
from tickpipe.api.errors import ApiError
from tickpipe.api.params import (
    NS,
    Cursor,
    decode_cursor,
    encode_cursor,
    parse_range,
    parse_symbols,
    parse_types,
)
from tickpipe.api.routes import context
from tickpipe.errors import QueryError
from tickpipe.events import SCHEMAS, Kind
from tickpipe.store.keystore import ApiKey
from tickpipe.store.query import interval_ns

router = APIRouter(tags=["ticks"])
Read = Annotated[ApiKey, Depends(require("read"))]
Ctx = Annotated[ApiContext, Depends(context)]

MAX_JSON_RANGE_NS = 31 * 86_400 * NS
MAX_JSON_BARS = 200_000
STREAM_BATCH_ROWS = 65_536
JSON = "application/json"
_HIGH = "\uffff"


REALTIME_PARAMS = [
    {
        "name": "symbols",
        "in": "query",
        "required": True,
        "example": "SPY,QQQ",
        "schema": {"type": "string"},
        "description": "comma-separated canonical symbols",
    },
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 10_000, "default": 100},
        "description": "events per symbol and type",
    },
    {
        "name": "types",
        "in": "query",
        "required": False,
        "example": "trade,quote",
        "schema": {"type": "string"},
        "description": "default trade,quote",
    },
]


@router.get(
    "/api/v1/ticks/realtime",
    summary="Latest events per symbol, from the hot store",
    openapi_extra={"parameters": REALTIME_PARAMS},
)
async def realtime(request: Request) -> Response:
    """`{"data": [...]}`: per type, per symbol, the last `limit` events, oldest first. Each
    record has `symbol`, `type`, `ts_event` (int ns), `time` (ISO-8601 UTC) and its fields.

    The hottest route, so it reads its parameters itself instead of through FastAPI's
    dependency solver (which cost more than the rest of the request)."""
    ctx: ApiContext = request.app.state.ctx
    authorize_request(request, "read")
    query = request.query_params
    if "symbols" not in query:
        raise ApiError(422, "invalid_parameter", "symbols: Field required")
    limit = _int_param(query.get("limit"), "limit", 100, 1, 10_000)
    syms = parse_symbols(query["symbols"])
    kinds = parse_types(query.get("types"), (Kind.TRADE, Kind.QUOTE))
    hot = ctx.query.hot
    parts = []
    for kind in kinds:
        for symbol in syms:
            version = hot.version(kind, symbol)
            key = (kind, symbol, limit)
            cached = ctx.latest_json.get(key)
            if cached is not None and version is not None and cached[0] == version:
                parts.append(cached[1])
                continue
            table = await hot.latest(kind, symbol, limit)
            encoded = records_json(with_type_and_time(table, kind.value))
            if version is not None:
                _remember(ctx.latest_json, key, version, encoded)
            parts.append(encoded)
    return Response(data_json(parts), media_type=JSON)


_LATEST_JSON_MAX = 4096


def _int_param(value: str | None, name: str, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ApiError(
            422, "invalid_parameter", f"{name}: Input should be a valid integer"
        ) from None
    if not low <= number <= high:
        raise ApiError(422, "invalid_parameter", f"{name}: must be between {low} and {high}")
    return number


def _remember(
    cache: dict[tuple[Kind, str, int], tuple[int, bytes]],
    key: tuple[Kind, str, int],
    version: int,
    encoded: bytes,
) -> None:
    """Encode once per hot-store update, serve many: the real-time path's main saving."""
    if len(cache) >= _LATEST_JSON_MAX:
        cache.pop(next(iter(cache)))
    cache[key] = (version, encoded)


@router.get("/api/v1/quotes/latest", summary="Latest top of book per symbol")
async def latest_quotes(
    ctx: Ctx, _: Read, symbols: Annotated[str, Query(examples=["SPY,QQQ"])]
) -> Response:
    table = await ctx.query.hot.latest_quotes(parse_symbols(symbols))
    return Response(
        data_json([records_json(with_type_and_time(table, Kind.QUOTE.value))]), media_type=JSON
    )


@router.get("/api/v1/ticks/historical", summary="Raw events or OHLCV bars for a time range")
async def historical(
    ctx: Ctx,
    _: Read,
    symbols: Annotated[str, Query(examples=["SPY"])],
    start_time: Annotated[
        str, Query(examples=["2026-11-26T14:30:00Z"], description="ISO-8601, date or int ns")
    ],
    end_time: Annotated[str, Query(examples=["2026-11-26T21:00:00Z"])],
    interval: Annotated[str | None, Query(description="1s 5s 1m 5m 15m 1h 1d: OHLCV bars")] = None,
    types: Annotated[str | None, Query(description="raw events: default trade")] = None,
    format: Annotated[Literal["json", "csv", "arrow", "parquet"], Query()] = "json",
    limit: Annotated[int, Query(ge=1, le=50_000, description="JSON page size")] = 1000,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    fill: Annotated[
        Literal["none", "prev"], Query(description="bars: carry the close over empty intervals")
    ] = "none",
    asof: Annotated[
        Literal["none", "quote"], Query(description="trades: add the prevailing bid/ask")
    ] = "none",
) -> Response:
    syms = parse_symbols(symbols)
    if interval is not None:
        return await _bars(ctx, syms, start_time, end_time, interval, format, fill == "prev")
    if fill != "none":
        raise QueryError(
            "fill applies to bars: add interval=1m (or another interval)", code="bad_parameter"
        )
    kinds = parse_types(types, (Kind.TRADE,))
    if asof == "quote" and kinds != [Kind.TRADE]:
        raise QueryError("asof=quote applies to trades only: use types=trade", code="bad_parameter")
    if format == "json":
        start_ns, end_ns = parse_range(
            start_time, end_time, max_ns=MAX_JSON_RANGE_NS, what=" for JSON"
        )
        after = decode_cursor(cursor) if cursor else None
        body = await asyncio.to_thread(
            _json_page, ctx, syms, kinds, start_ns, end_ns, limit, after, asof == "quote"
        )
        return Response(body, media_type=JSON)
    if cursor:
        raise QueryError(
            "cursor applies to format=json; binary formats stream the whole range",
            code="bad_parameter",
        )
    if len(kinds) != 1:
        raise QueryError(
            f"format={format} carries one type per request; got {len(kinds)}", code="bad_parameter"
        )
    start_ns, end_ns = parse_range(start_time, end_time)
    if asof == "quote":
        table = await asyncio.to_thread(ctx.query.trades_with_quotes, syms, start_ns, end_ns)
        return _stream(format, table.schema, table.to_batches(STREAM_BATCH_ROWS))
    rel = await asyncio.to_thread(ctx.query.events_relation, kinds[0].value, syms, start_ns, end_ns)
    if rel is None:
        return _stream(format, SCHEMAS[kinds[0]], [])
    reader = rel.to_arrow_reader(STREAM_BATCH_ROWS)
    return _stream(format, reader.schema, reader)


def _stream(fmt: str, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> StreamingResponse:
    return StreamingResponse(
        STREAMERS[fmt](schema, batches),
        media_type=MEDIA_TYPES[fmt],
        headers={"Content-Disposition": f'attachment; filename="tickpipe.{fmt}"'},
    )


def _json_page(
    ctx: ApiContext,
    symbols: list[str],
    kinds: list[Kind],
    start_ns: int,
    end_ns: int,
    limit: int,
    after: Cursor | None,
    asof: bool,
) -> bytes:
    """One page across kinds, ordered by (ts_event, type, symbol, source, seq)."""
    tables = []
    for kind in sorted(kinds, key=lambda k: k.value):
        kind_after = _after_for(kind.value, after)
        if asof:
            table = ctx.query.trades_with_quotes(
                symbols, start_ns, end_ns, limit=limit + 1, after=kind_after
            )
        else:
            table = ctx.query.events(kind, symbols, start_ns, end_ns, limit + 1, after=kind_after)
        tables.append(with_type_and_time(table, kind.value))
    if len(tables) == 1:
        page = tables[0]
    else:
        page = pa.concat_tables(tables, promote_options="permissive")
        page = page.sort_by(
            [
                ("ts_event", "ascending"),
                ("type", "ascending"),
                ("symbol", "ascending"),
                ("source", "ascending"),
                ("seq", "ascending"),
            ]
        )
    more = page.num_rows > limit
    page = page.slice(0, limit)
    extra = b""
    if more:
        last = page.slice(page.num_rows - 1, 1).to_pylist()[0]
        token = encode_cursor(
            (last["ts_event"], last["type"], last["symbol"], last["source"], last["seq"])
        )
        extra = b',"next_cursor":"' + token.encode() + b'"'
    else:
        extra = b',"next_cursor":null'
    return data_json([records_json(page)], extra)


def _after_for(kind: str, cursor: Cursor | None) -> tuple[int, str, str, int] | None:
    """Translate the cross-type cursor into one kind's (ts, symbol, source, seq) bound."""
    if cursor is None:
        return None
    ts, c_kind, symbol, source, seq = cursor
    if kind < c_kind:
        return (ts, _HIGH, _HIGH, 2**62)  # only later timestamps
    if kind > c_kind:
        return (ts - 1, _HIGH, _HIGH, 2**62)  # this timestamp onwards
    return (ts, symbol, source, seq)


async def _bars(
    ctx: ApiContext, symbols: list[str], start: str, end: str, interval: str, fmt: str, fill: bool
) -> Response:
    step = interval_ns(interval)
    start_ns, end_ns = parse_range(start, end)
    if fmt == "json" and (end_ns - start_ns) // step * len(symbols) > MAX_JSON_BARS:
        raise QueryError(
            f"time range too large for JSON: more than {MAX_JSON_BARS:,} bars; use a coarser "
            "interval, a shorter range, or format=arrow|parquet|csv",
            code="range_too_large",
        )
    table = await asyncio.to_thread(ctx.query.bars, symbols, start_ns, end_ns, interval, fill=fill)
    if fmt != "json":
        return _stream(fmt, table.schema, table.to_batches(STREAM_BATCH_ROWS))
    table = table.rename_columns(["time_ns" if c == "time" else c for c in table.column_names])
    table = table.add_column(1, "time", iso_times(table.column("time_ns")))
    return Response(data_json([records_json(table)]), media_type=JSON)
