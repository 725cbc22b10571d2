"""Real-time and historical ticks, OHLCV bars and latest quotes.

Every history request is priced before its query runs (``Limits``): raw downloads by rows
x columns (a count pruned by row-group statistics), bars by intervals x symbols over the
span that can hold data. Over the limit is a 400 ``range_too_large`` that says how to
split the request. Every history answer is admitted first (``admission.py``: a 429 or
503 with ``Retry-After`` past the budget); downloads are read page by page
(``store/pages.py``) as the client takes them (``streaming.py``), so memory stays bounded
per request and in total however large the answer and however slowly it is read.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from typing import Annotated, Any, Literal, TypeVar

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from tickpipe.api import observe
from tickpipe.api.admission import Admission, Ticket, busy
from tickpipe.api.auth import authorize_scope, request_token, require
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
    int_query,
    parse_int,
    parse_range,
    parse_symbols,
    parse_types,
)
from tickpipe.api.revocation import KeyWatch
from tickpipe.api.routes import context
from tickpipe.api.streaming import BoundedStream, in_threads
from tickpipe.errors import QueryError
from tickpipe.events import SCHEMAS, Kind
from tickpipe.store.asof import TRADES_ASOF_SCHEMA
from tickpipe.store.keystore import ApiKey
from tickpipe.store.pages import asof_pages, bar_pages, event_pages
from tickpipe.store.query import interval_ns
from tickpipe.store.rollup import BARS_SCHEMA

router = APIRouter(tags=["ticks"])
Read = Annotated[ApiKey, Depends(require("read"))]
Ctx = Annotated[ApiContext, Depends(context)]

JSON = "application/json"
_HIGH = "\uffff"
_ASOF_COLUMNS = 4
_ASOF_LOOKBACK_NS = 3600 * NS
T = TypeVar("T")


REALTIME_PARAMS = [
    {
        "name": "symbols",
        "in": "query",
        "required": True,
        "example": "SPY,QQQ",
        "schema": {"type": "string"},
        "description": "comma-separated canonical symbols (at most 100)",
    },
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 10_000, "default": 100},
        "description": "events per symbol *and per type*: limit=50 with the default "
        "types=trade,quote returns up to 100 events per symbol",
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


def freshness(
    symbols: list[str], newest: dict[str, int | None], stale_after_s: float, now_ns: int
) -> dict[str, dict[str, object]]:
    """Per symbol: ``last_ts_event`` (its newest event here), ``age_s`` (now minus that)
    and ``stale`` (older than ``stale_after_s``, or nothing at all)."""
    out: dict[str, dict[str, object]] = {}
    for symbol in symbols:
        last = newest.get(symbol)
        age = None if last is None else round((now_ns - last) / NS, 3)
        out[symbol] = {
            "last_ts_event": last,
            "age_s": age,
            "stale": age is None or age > stale_after_s,
        }
    return out


def _newest(table: pa.Table) -> int | None:
    if table.num_rows == 0:
        return None
    value: int | None = pc.max(table.column("ts_event")).as_py()
    return value


@router.get(
    "/api/v1/ticks/realtime",
    summary="Latest events per symbol, from the hot store",
    openapi_extra={"parameters": REALTIME_PARAMS, "x-tickpipe-scope": "read"},
)
async def realtime(request: Request) -> Response:
    """`{"data": [...], "freshness": {...}}`: per type, per symbol, the last `limit` events,
    oldest first (so up to `limit` x types events per symbol). Each record has `symbol`,
    `type`, `ts_event` (int ns), `time` (ISO-8601 UTC) and its fields. `freshness` gives
    each symbol's `last_ts_event`, `age_s` and `stale` (older than `TICKPIPE_STALE_AFTER_S`,
    or no data)."""
    answer: Realtime = request.app.state.realtime
    return await answer(request)


@dataclasses.dataclass(slots=True)
class _Plan:
    """A parsed real-time query string, and the last answer built for it."""

    symbols: list[str]
    limit: int
    keys: list[tuple[Kind, str]]
    versions: tuple[int | None, ...] = ()
    inner: bytes = b""
    rows: int = 0
    newest: dict[str, int | None] = dataclasses.field(default_factory=dict)


_PLANS_MAX = 1024
_Part = tuple[bytes, int | None]
"""one (kind, symbol, limit) part of an answer: its JSON array and its newest ts_event"""


class Realtime:
    """The real-time route of one app: the hottest route, served by ``HotApp`` without
    FastAPI's stack (see ``api/hotpath.py``).

    Two caches keep a repeated request to the price of its freshness: the parsed query
    string (parsing cost more than serving), and per query string the joined answer, keyed
    to the hot store's versions of every (kind, symbol) it covers; below that,
    ``ctx.latest_json`` keeps each (kind, symbol, limit) part encoded once per update."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self._plans: dict[bytes, _Plan] = {}
        self._reading: dict[tuple[Kind, str, int], tuple[int, asyncio.Future[_Part]]] = {}

    async def __call__(self, request: Request) -> Response:
        ctx = self.ctx
        authorize_scope(ctx, request.scope, "read")
        raw = request.scope.get("query_string", b"")
        plan = self._plans.get(raw)
        if plan is None:
            plan = self._plan(request)
            if len(self._plans) >= _PLANS_MAX:
                self._plans.clear()
            self._plans[raw] = plan
        hot = ctx.query.hot
        versions = tuple([hot.version(kind, symbol) for kind, symbol in plan.keys])
        if versions == plan.versions and None not in versions:
            observe.note(request, rows=plan.rows, cache="hit")
        else:
            await self._build(plan, versions, request)
        fresh = freshness(plan.symbols, plan.newest, ctx.settings.stale_after_s, time.time_ns())
        body = b"".join((b'{"data":[', plan.inner, b'],"freshness":', orjson.dumps(fresh), b"}"))
        return Response(body, media_type=JSON)

    def _plan(self, request: Request) -> _Plan:
        query = request.query_params
        if "symbols" not in query:
            raise ApiError(422, "invalid_parameter", "symbols: Field required")
        limit = _int_param(query.get("limit"), "limit", 100, 1, 10_000)
        syms = parse_symbols(query["symbols"])
        kinds = parse_types(query.get("types"), (Kind.TRADE, Kind.QUOTE))
        return _Plan(syms, limit, [(kind, symbol) for kind in kinds for symbol in syms])

    async def _build(self, plan: _Plan, versions: tuple[int | None, ...], request: Request) -> None:
        cache = self.ctx.latest_json
        parts = []
        newest: dict[str, int | None] = {}
        hits = 0
        for (kind, symbol), version in zip(plan.keys, versions, strict=True):
            key = (kind, symbol, plan.limit)
            cached = cache.get(key)
            if cached is not None and version is not None and cached[0] == version:
                encoded, last = cached[1], cached[2]
                hits += 1
            else:
                encoded, last = await self._part(key, version)
            parts.append(encoded)
            if last is not None and last > (newest.get(symbol) or -1):
                newest[symbol] = last
        plan.inner = b",".join([p[1:-1] for p in parts if p != b"[]"])
        # flat records: '},{"' only ever separates two of them (as observe.count_rows)
        plan.rows = plan.inner.count(b'},{"') + 1 if plan.inner else 0
        plan.newest = newest
        plan.versions = versions
        observe.note(request, rows=plan.rows, cache="hit" if hits == len(parts) else "miss")

    async def _part(self, key: tuple[Kind, str, int], version: int | None) -> _Part:
        """One (kind, symbol, limit) part, read and encoded once per hot-store version
        however many requests want it meanwhile: a store that reads over the network (an
        API worker's mirror) lets other requests run while the first one waits, and each
        of them encoding the same part again cost more than the reads (measured: 2.6 times
        the encodes of one process with a memory hot store, at 16 connections)."""
        if version is None:
            return await self._read_part(key)
        reading = self._reading.get(key)
        if reading is not None and reading[0] == version:
            try:
                return await asyncio.shield(reading[1])
            except asyncio.CancelledError:
                if not reading[1].cancelled():
                    raise  # this request was cancelled, not the read it waited for
            return await self._part(key, version)  # that read failed: try again
        future: asyncio.Future[_Part] = asyncio.get_running_loop().create_future()
        self._reading[key] = (version, future)
        try:
            part = await self._read_part(key)
        except BaseException:
            future.cancel()
            raise
        finally:
            if self._reading.get(key, (0, None))[1] is future:
                del self._reading[key]
        future.set_result(part)
        _remember(self.ctx.latest_json, key, (version, *part))
        return part

    async def _read_part(self, key: tuple[Kind, str, int]) -> _Part:
        kind, symbol, limit = key
        table = await self.ctx.query.hot.latest(kind, symbol, limit)
        return records_json(with_type_and_time(table, kind.value)), _newest(table)


_LATEST_JSON_MAX = 4096


def _int_param(value: str | None, name: str, default: int, low: int, high: int) -> int:
    return default if value is None else parse_int(value, name, low, high)


def _remember(
    cache: dict[tuple[Kind, str, int], tuple[int, bytes, int | None]],
    key: tuple[Kind, str, int],
    entry: tuple[int, bytes, int | None],
) -> None:
    """Encode once per hot-store update, serve many: the real-time path's main saving."""
    if len(cache) >= _LATEST_JSON_MAX:
        cache.pop(next(iter(cache)))
    cache[key] = entry


@router.get(
    "/api/v1/quotes/latest",
    summary="Latest top of book per symbol, with its age",
)
async def latest_quotes(
    ctx: Ctx, _: Read, symbols: Annotated[str, Query(examples=["SPY,QQQ"])]
) -> Response:
    """`{"data": [...], "freshness": {...}}`: the latest quote of each symbol that has one,
    each with `age_s` (now minus its `ts_event`) and `stale` (older than
    `TICKPIPE_STALE_AFTER_S`); `freshness` covers every symbol asked, those without a quote
    as `stale` with `age_s` null."""
    syms = parse_symbols(symbols)
    table = await ctx.query.hot.latest_quotes(syms)
    now = time.time_ns()
    stale_after = ctx.settings.stale_after_s
    ages = pc.round(pc.divide(pc.subtract(now, table.column("ts_event")).cast(pa.float64()), NS), 3)
    table = with_type_and_time(table, Kind.QUOTE.value)
    table = table.append_column("age_s", ages).append_column("stale", pc.greater(ages, stale_after))
    newest = dict(
        zip(table.column("symbol").to_pylist(), table.column("ts_event").to_pylist(), strict=True)
    )
    fresh = freshness(syms, newest, stale_after, now)
    return Response(
        data_json([records_json(table)], b',"freshness":' + orjson.dumps(fresh)), media_type=JSON
    )


@router.get(
    "/api/v1/ticks/historical",
    summary="Raw events or OHLCV bars for a time range",
    openapi_extra={"x-tickpipe-download": True},
)
async def historical(
    request: Request,
    ctx: Ctx,
    key: Read,
    symbols: Annotated[
        str,
        Query(
            examples=["SPY"],
            description="comma-separated canonical symbols; options "
            "in padded OCC form, e.g. `SPY   261218C00600000` (URL-encode the spaces)",
        ),
    ],
    start_time: Annotated[
        str, Query(examples=["2026-11-26T14:30:00Z"], description="ISO-8601, date or int ns")
    ],
    end_time: Annotated[str, Query(examples=["2026-11-26T21:00:00Z"])],
    interval: Annotated[str | None, Query(description="1s 5s 1m 5m 15m 1h 1d: OHLCV bars")] = None,
    types: Annotated[str | None, Query(description="raw events: default trade")] = None,
    format: Annotated[Literal["json", "csv", "arrow", "parquet"], Query()] = "json",
    limit: Annotated[
        int, Query(ge=1, le=50_000, description="JSON page size"), int_query("limit", 1, 50_000)
    ] = 1000,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    fill: Annotated[
        Literal["none", "prev"],
        Query(description="bars: carry the close over empty intervals, up to the last trade"),
    ] = "none",
    asof: Annotated[
        Literal["none", "quote"], Query(description="trades: add the prevailing bid/ask")
    ] = "none",
) -> Response:
    """JSON pages (`{"data": [...], "next_cursor": ...}`), or one Arrow IPC stream, Parquet
    file or CSV streamed whole. Each request's cost is checked first: over the limit is a
    400 `range_too_large` naming the limit and how to split the request. Past the server's
    budget of downloads (`TICKPIPE_STREAMS_MAX`, `TICKPIPE_STREAMS_PER_KEY`) or of JSON
    answers computed at once: 503 `server_busy` or 429 `too_many_streams`, with
    `Retry-After`."""
    syms = parse_symbols(symbols)
    if interval is not None:
        return await _bars(
            request, ctx, key, syms, start_time, end_time, interval, format, fill == "prev"
        )
    if fill != "none":
        raise QueryError(
            "fill applies to bars: add interval=1m (or another interval)", code="bad_parameter"
        )
    kinds = parse_types(types, (Kind.TRADE,))
    if asof == "quote" and kinds != [Kind.TRADE]:
        raise QueryError("asof=quote applies to trades only: use types=trade", code="bad_parameter")
    if format == "json":
        start_ns, end_ns = parse_range(
            start_time, end_time, max_ns=ctx.limits.json_range_ns, what=" for JSON"
        )
        after = decode_cursor(cursor) if cursor else None
        return await json_answer(
            request,
            key,
            functools.partial(
                _json_page, ctx, syms, kinds, start_ns, end_ns, limit, after, asof == "quote"
            ),
        )
    if cursor:
        raise QueryError(
            "cursor applies to format=json; binary formats stream the whole range",
            code="bad_parameter",
        )
    if len(kinds) != 1:
        raise QueryError(
            f"format={format} carries one type per request; got {len(kinds)}", code="bad_parameter"
        )
    kind = kinds[0]
    start_ns, end_ns = parse_range(start_time, end_time)
    ticket = await admission(request).admit(key)
    try:
        rows = await in_worker(ctx.query.count, kind.value, syms, start_ns, end_ns)
        columns = len(SCHEMAS[kind]) + (_ASOF_COLUMNS if asof == "quote" else 0)
        check_cells(ctx, rows * columns, f"{rows:,} rows x {columns} columns", end_ns - start_ns)
        if asof == "quote":
            pages = asof_pages(
                ctx.query, syms, start_ns, end_ns, lookback_ns=_ASOF_LOOKBACK_NS, expected_rows=rows
            )
        else:
            pages = event_pages(ctx.query, kind, syms, start_ns, end_ns, expected_rows=rows)
        schema = TRADES_ASOF_SCHEMA if asof == "quote" else SCHEMAS[kind]
        return download(request, ticket, format, schema, pages)
    except BaseException:
        ticket.release()
        raise


async def json_answer(
    request: Request, key: ApiKey, build: Callable[[], tuple[bytes, int]]
) -> BoundedStream:
    """A JSON history answer: admitted, built in a worker thread (``builds_max`` at once),
    then sent as the client reads it, holding its ticket until then."""
    budget = admission(request)
    ticket = await budget.admit(key)
    try:
        async with budget.building():
            body, rows = await in_worker(build)
        observe.note(request, rows=rows)
        return BoundedStream(
            _once(body), media_type=JSON, ticket=ticket, revoked=key_revoked(request)
        )
    except BaseException:
        ticket.release()
        raise


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def in_worker(work: Callable[..., T], *args: Any) -> T:
    """``work`` in a worker thread. DuckDB out of memory (its limit is shared by every
    query of the process) is the server being busy, said as such: 503 with Retry-After."""
    try:
        return await asyncio.to_thread(work, *args)
    except duckdb.OutOfMemoryException as exc:
        raise busy("the query engine's memory is taken by other queries") from exc


def admission(request: Request) -> Admission:
    """The app's budget of history answers (``admission.py``)."""
    found: Admission = request.app.state.admission
    return found


def key_revoked(request: Request) -> Callable[[], Coroutine[Any, Any, None]]:
    """Awaitable that returns once the key of ``request`` is revoked (``revocation.py``)."""
    watch: KeyWatch = request.app.state.key_watch
    return functools.partial(watch.revoked, request_token(request))


def download(
    request: Request, ticket: Ticket, fmt: str, schema: pa.Schema, pages: Iterable[pa.Table]
) -> BoundedStream:
    """``pages`` as one Arrow IPC stream, Parquet file or CSV, each page read and encoded
    only when the client has taken the previous one."""
    return BoundedStream(
        in_threads(STREAMERS[fmt](schema, _batches(pages))),
        media_type=MEDIA_TYPES[fmt],
        ticket=ticket,
        revoked=key_revoked(request),
        headers={"Content-Disposition": f'attachment; filename="tickpipe.{fmt}"'},
    )


def _batches(pages: Iterable[pa.Table]) -> Iterator[pa.RecordBatch]:
    for page in pages:
        yield from page.combine_chunks().to_batches()


def check_cells(ctx: ApiContext, cells: int, what: str, range_ns: int) -> None:
    """Refuse a download of more than ``limits.stream_cells`` values, saying how to split it."""
    limit = ctx.limits.stream_cells
    if cells <= limit:
        return
    window = max(range_ns * limit // cells, NS)
    raise QueryError(
        f"request too large: {what} = {cells:,} values; the limit is {limit:,} per request. "
        f"Split the time range into windows of about {_duration(window)} or less, or ask "
        "for fewer symbols",
        code="range_too_large",
    )


def _duration(ns: int) -> str:
    seconds = ns / NS
    for unit, size in (("days", 86_400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} seconds"


def _json_page(
    ctx: ApiContext,
    symbols: list[str],
    kinds: list[Kind],
    start_ns: int,
    end_ns: int,
    limit: int,
    after: Cursor | None,
    asof: bool,
) -> tuple[bytes, int]:
    """One page across kinds, ordered by (ts_event, type, symbol, source, seq); at most
    ``limit`` rows, so its cost is bounded by the page size: each kind's rows are read in
    windows that hold about a page (``store/pages.py``), never sorted whole."""
    tables = []
    for kind in sorted(kinds, key=lambda k: k.value):
        kind_after = _after_for(kind.value, after)
        if asof:
            pages = asof_pages(
                ctx.query,
                symbols,
                start_ns,
                end_ns,
                lookback_ns=_ASOF_LOOKBACK_NS,
                rows=limit + 1,
                after=kind_after,
            )
            schema = TRADES_ASOF_SCHEMA
        else:
            pages = event_pages(
                ctx.query, kind, symbols, start_ns, end_ns, rows=limit + 1, after=kind_after
            )
            schema = SCHEMAS[kind]
        table = pa.Table.from_batches(
            [b for page in pages.take(limit + 1) for b in page.to_batches()], schema=schema
        )
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
    return data_json([records_json(page)], extra), page.num_rows


def _after_for(kind: str, cursor: Cursor | None) -> tuple[int, str, str, int] | None:
    """Translate the cross-type cursor into one kind's (ts, symbol, source, seq) bound."""
    if cursor is None:
        return None
    ts, c_kind, symbol, source, seq = cursor
    if kind < c_kind:
        return (ts, _HIGH, _HIGH, 2**62)  # only later timestamps
    if kind > c_kind:
        return (max(ts - 1, 0), _HIGH, _HIGH, 2**62)  # this timestamp onwards
    return (ts, symbol, source, seq)


def bars_estimate(
    ctx: ApiContext, n_symbols: int, start_ns: int, end_ns: int, step: int, now_ns: int
) -> int:
    """Intervals x symbols over the part of [start, end) that can hold trades: from the
    first stored day, up to the last stored trade and never past now."""
    span = ctx.query.span(Kind.TRADE.value)
    if span is None:
        return 0
    lo = max(start_ns, span[0] - span[0] % step)
    hi = min(end_ns, span[1] + 1, now_ns + step)
    if hi <= lo:
        return 0
    return -(-(hi - lo) // step) * n_symbols


async def _bars(
    request: Request,
    ctx: ApiContext,
    key: ApiKey,
    symbols: list[str],
    start: str,
    end: str,
    interval: str,
    fmt: str,
    fill: bool,
) -> Response:
    step = interval_ns(interval)
    start_ns, end_ns = parse_range(start, end)
    bars = await asyncio.to_thread(
        bars_estimate, ctx, len(symbols), start_ns, end_ns, step, time.time_ns()
    )
    limit = ctx.limits.json_bars if fmt == "json" else ctx.limits.stream_bars
    if bars > limit:
        hint = "" if fmt != "json" else ", or format=arrow|parquet|csv"
        raise QueryError(
            f"too many bars: up to {bars:,} ({interval} intervals x {len(symbols)} symbols over "
            f"the stored part of the range); the limit is {limit:,} for format={fmt}: use a "
            f"coarser interval, fewer symbols or a shorter range{hint}",
            code="range_too_large",
        )
    if fmt != "json":
        ticket = await admission(request).admit(key)
        pages = bar_pages(ctx.query, symbols, start_ns, end_ns, interval, fill=fill)
        return download(request, ticket, fmt, BARS_SCHEMA, pages)
    return await json_answer(
        request,
        key,
        functools.partial(_json_bars, ctx, symbols, start_ns, end_ns, interval, fill),
    )


def _json_bars(
    ctx: ApiContext, symbols: list[str], start_ns: int, end_ns: int, interval: str, fill: bool
) -> tuple[bytes, int]:
    table = ctx.query.bars(symbols, start_ns, end_ns, interval, fill=fill)
    table = table.rename_columns(["time_ns" if c == "time" else c for c in table.column_names])
    table = table.add_column(1, "time", iso_times(table.column("time_ns")))
    return data_json([records_json(table)]), table.num_rows
