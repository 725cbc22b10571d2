"""Recent quality records: gaps and quarantined events."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from tickpipe.api.auth import require
from tickpipe.api.context import ApiContext
from tickpipe.api.encode import data_json, iso_times, records_json
from tickpipe.api.params import MAX_TIME_NS, NS, int_query, parse_optional_symbols, parse_time
from tickpipe.api.routes import context
from tickpipe.datasets import GAPS, QUARANTINE
from tickpipe.errors import QueryError
from tickpipe.store.keystore import ApiKey

router = APIRouter(tags=["quality"])
Read = Annotated[ApiKey, Depends(require("read"))]
Ctx = Annotated[ApiContext, Depends(context)]


async def _recent(
    ctx: ApiContext,
    dataset: str,
    symbols: str | None,
    start: str | None,
    end: str | None,
    limit: int,
) -> Response:
    end_ns = parse_time(end, "end_time") if end is not None else time.time_ns() + 60 * NS
    start_ns = (
        parse_time(start, "start_time") if start is not None else max(end_ns - 86_400 * NS, 0)
    )
    if start_ns >= end_ns:
        raise QueryError("start_time must be before end_time", code="bad_range")
    end_ns = min(end_ns, MAX_TIME_NS)
    syms = parse_optional_symbols(symbols)
    table = await asyncio.to_thread(
        ctx.query.events, dataset, syms, start_ns, end_ns, limit, newest_first=True
    )
    table = table.add_column(1, "time", iso_times(table.column("ts_event")))
    return Response(data_json([records_json(table)]), media_type="application/json")


def _route(dataset: str, path: str, summary: str) -> None:
    """Register one 'recent records' route; gaps and quarantine differ only in dataset."""

    async def recent(
        ctx: Ctx,
        _: Read,
        symbols: Annotated[
            str | None, Query(description="comma-separated; leave out for every symbol")
        ] = None,
        start_time: Annotated[
            str | None, Query(description="default: 24 h before end_time")
        ] = None,
        end_time: Annotated[str | None, Query(description="default: now")] = None,
        limit: Annotated[
            int,
            Query(ge=1, le=10_000, description="records, newest first"),
            int_query("limit", 1, 10_000),
        ] = 100,
    ) -> Response:
        return await _recent(ctx, dataset, symbols, start_time, end_time, limit)

    router.add_api_route(path, recent, methods=["GET"], summary=summary, name=dataset)


_route(GAPS, "/api/v1/quality/gaps", "Recent gaps, newest first")
_route(QUARANTINE, "/api/v1/quality/quarantine", "Recent quarantined events, newest first")
