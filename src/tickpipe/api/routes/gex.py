"""GEX per underlying: tickpipe's own (the engine's precomputed results, never computed
here), gexbot's (the latest levels the gexbot source stored in the hot store), and the two
side by side.

Like the real-time route, it reads its own parameters: a cached answer should cost what
``/api/v1/health`` costs, and FastAPI's dependency solver cost more than the rest."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from fastapi import APIRouter, Request
from starlette.responses import Response

from tickpipe.api import observe
from tickpipe.api.auth import authorize_request, authorize_scope
from tickpipe.api.context import ApiContext
from tickpipe.api.errors import ApiError
from tickpipe.events import Kind
from tickpipe.sources.gexbot.endpoints import canonical_symbol
from tickpipe.symbols import parse_symbol_list

router = APIRouter(tags=["gex"])
NS = 1_000_000_000
CATEGORIES = ("full", "zero", "one")
BASES = ("oi", "volume")
SOURCES = ("tickpipe", "gexbot")
GEXBOT = "gexbot"
JSON = "application/json"

PARAMETERS = [
    {
        "name": "symbol",
        "in": "path",
        "required": True,
        "example": "SPY",
        "schema": {"type": "string"},
        "description": "the underlying, canonical (SPY, $SPX)",
    },
    {
        "name": "category",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "enum": list(CATEGORIES), "default": "full"},
        "description": "full: expiries up to 90 days; zero: the next expiry; one: the one after",
    },
    {
        "name": "basis",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "enum": list(BASES), "default": "oi"},
        "description": "weight by open interest or by today's volume",
    },
]
SOURCE_PARAMETER = {
    "name": "source",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "enum": list(SOURCES), "default": "tickpipe"},
    "description": "tickpipe: our own computation from option chains; gexbot: the latest "
    "levels polled from gexbot (symbol as gexbot spells it, SPX, or canonical, $SPX)",
}


def _choice(value: str | None, name: str, choices: tuple[str, ...]) -> str:
    if value is None:
        return choices[0]
    if value not in choices:
        raise ApiError(
            422, "invalid_parameter", f"{name}: Input should be {' or '.join(map(repr, choices))}"
        )
    return value


@router.get(
    "/api/v1/gex/{symbol}",
    summary="Gamma exposure: levels, per-strike ladder, profile",
    openapi_extra={"parameters": [*PARAMETERS, SOURCE_PARAMETER]},
)
async def gex(request: Request) -> Response:
    """`spot`, `zero_gamma`, `call_wall`, `put_wall`, `abs_gamma_strike`,
    `total_gex_usd_per_1pct`, then `strikes` (the ladder, as columns), `profile` (GEX
    repriced over spot ±15 %, as columns), `expiries`, `as_of`, `chain_age_s`, `spot_age_s`,
    `source`. Dollar values are per 1 % move of the underlying; the sign convention is
    named in `convention`.

    `source=gexbot` answers in the same shape where the fields mean the same: `spot`,
    `zero_gamma`, `call_wall`/`put_wall` (gexbot's majors of the basis: strikes of the most
    positive and most negative net GEX), `total_gex_usd_per_1pct` (its net GEX of the
    basis), `strikes` (the OI ladder, `net_gex_usd_per_1pct`), `as_of`, plus gexbot's four
    majors and both net GEX figures; `age_s` is the time since gexbot computed them."""
    ctx: ApiContext = request.app.state.ctx
    authorize_scope(ctx, request.scope, "read")
    query = request.query_params
    category = _choice(query.get("category"), "category", CATEGORIES)
    basis = _choice(query.get("basis"), "basis", BASES)
    if _choice(query.get("source"), "source", SOURCES) == GEXBOT:
        symbol = _gexbot_symbol(request.path_params["symbol"])
        row = await _latest_gexbot(ctx, symbol, category)
        if row is None:
            raise ApiError(404, "not_found", _no_gexbot(symbol, category))
        return Response(orjson.dumps(_gexbot_body(ctx, row, basis)), media_type=JSON)
    (underlying,) = parse_symbol_list(request.path_params["symbol"], max_symbols=1)
    answer = await ctx.gex(underlying, category, basis)
    if answer is None:
        raise ApiError(404, "not_found", f"no option chain for {underlying!r} yet")
    now = time.time_ns()
    chain_age = (now - answer.chain_updated_ns) / NS
    limit = ctx.settings.gex_max_chain_age_s
    if chain_age > limit:
        raise ApiError(
            503,
            "stale_chain",
            f"the {underlying} chain is {chain_age:.0f}s old (limit {limit:g}s): its feed is not updating",
        )
    spot_age = (now - answer.spot_updated_ns) / NS
    ages = f'{{"chain_age_s":{chain_age:.3f},"spot_age_s":{spot_age:.3f},'.encode()
    observe.note(request, cache="hit")
    return Response(ages + answer.body[1:], media_type="application/json")


COMPARED = ("spot", "zero_gamma", "call_wall", "put_wall", "major_pos", "major_neg")
LOOKBACK = (32, 1_000)
"""hot-store rows read to find a symbol's latest gexbot levels: a few, then the whole ring"""


@router.get(
    "/api/v1/gex/{symbol}/compare",
    summary="tickpipe's GEX levels beside gexbot's, with their differences",
    openapi_extra={"parameters": PARAMETERS},
)
async def compare(request: Request) -> Response:
    """`tickpipe` and `gexbot`: `spot`, `zero_gamma`, `call_wall`, `put_wall`,
    `major_pos`/`major_neg` (strikes of the most positive and most negative net GEX, the
    one definition both share), `total_gex_usd_per_1pct`, `as_of`, `age_s`. `difference`
    is gexbot minus tickpipe (prices in points, `as_of_s` in seconds), `difference_pct` the
    same in % of tickpipe's spot, `total_gex_ratio` gexbot's net GEX over ours. 404 names
    the side that is missing."""
    ctx: ApiContext = request.app.state.ctx
    authorize_request(request, "read")
    query = request.query_params
    category = _choice(query.get("category"), "category", CATEGORIES)
    basis = _choice(query.get("basis"), "basis", BASES)
    symbol = _gexbot_symbol(request.path_params["symbol"])
    answer = await ctx.gex(symbol, category, basis)
    if answer is None:
        raise ApiError(
            404,
            "not_found",
            f"no tickpipe GEX for {symbol!r} yet: it is computed from an option chain of "
            f"{symbol} that a feed delivers",
        )
    row = await _latest_gexbot(ctx, symbol, category)
    if row is None:
        raise ApiError(404, "not_found", _no_gexbot(symbol, category))
    ours = _ours_side(orjson.loads(answer.body))
    theirs = _gexbot_body(ctx, row, basis)
    theirs_side = {k: theirs[k] for k in ("spot", "zero_gamma", "call_wall", "put_wall")}
    theirs_side |= {
        "major_pos": theirs[f"major_pos_{_SUFFIX[basis]}"],
        "major_neg": theirs[f"major_neg_{_SUFFIX[basis]}"],
        "total_gex_usd_per_1pct": theirs["total_gex_usd_per_1pct"],
        "as_of": theirs["as_of"],
        "as_of_ns": theirs["as_of_ns"],
        "age_s": theirs["age_s"],
    }
    difference: dict[str, float | None] = {
        k: _minus(theirs_side[k], ours[k]) for k in (*COMPARED, "total_gex_usd_per_1pct")
    }
    difference["as_of_s"] = (theirs_side["as_of_ns"] - ours["as_of_ns"]) / NS
    spot = ours["spot"]
    body = {
        "symbol": symbol,
        "category": category,
        "basis": basis,
        "tickpipe": ours,
        "gexbot": theirs_side,
        "difference": difference,
        "difference_pct": {
            k: None if difference[k] is None or not spot else round(difference[k] / spot * 100, 6)
            for k in COMPARED
        },
        "total_gex_ratio": _ratio(
            theirs_side["total_gex_usd_per_1pct"], ours["total_gex_usd_per_1pct"]
        ),
        "units": "prices in index points; GEX in USD per 1% move of the underlying",
    }
    return Response(orjson.dumps(body), media_type=JSON)


_SUFFIX = {"oi": "oi", "volume": "vol"}


def _gexbot_symbol(text: str) -> str:
    """gexbot's spelling (``SPX``, ``ES_SPX``) or tickpipe's (``$SPX``) -> canonical."""
    (symbol,) = parse_symbol_list(canonical_symbol(text), max_symbols=1)
    return symbol


def _no_gexbot(symbol: str, category: str) -> str:
    return (
        f"no gexbot levels for {symbol!r} ({category}) yet: gexbot is polled when "
        "GEXBOT_ENABLED=true and the ticker is in GEXBOT_TICKERS and the category in "
        "GEXBOT_CATEGORIES"
    )


async def _latest_gexbot(ctx: ApiContext, symbol: str, category: str) -> dict[str, Any] | None:
    """The newest gexbot chain of ``category`` in the hot store (else its newest majors)."""
    hot = ctx.query.hot
    for limit in LOOKBACK:
        table = await hot.latest(Kind.GEX, symbol, limit)
        mine = table.filter(pc.equal(table.column("source"), GEXBOT))
        for wanted in (category, f"{category}/majors"):
            rows = mine.filter(pc.equal(mine.column("category"), wanted))
            if rows.num_rows:
                return _last_row(rows)
        if table.num_rows < limit:
            return None
    return None


def _last_row(table: pa.Table) -> dict[str, Any]:
    row: dict[str, Any] = table.slice(table.num_rows - 1, 1).to_pylist()[0]
    return row


def _gexbot_body(ctx: ApiContext, row: dict[str, Any], basis: str) -> dict[str, Any]:
    """A stored gexbot GexLevels row in the GEX route's shape (see ``gex``)."""
    suffix = _SUFFIX[basis]
    as_of_ns = int(row["ts_event"])
    ladder = None
    if basis == "oi" and row["strikes"]:
        ladder = {"strike": row["strikes"], "net_gex_usd_per_1pct": row["gex_usd_per_1pct"]}
    net = row[f"net_gex_{suffix}"]
    return {
        "symbol": row["symbol"],
        "category": row["category"].split("/")[0],
        "basis": basis,
        "spot": row["spot"],
        "zero_gamma": row["zero_gamma"],
        "call_wall": row[f"major_pos_{suffix}"],
        "put_wall": row[f"major_neg_{suffix}"],
        "total_gex_usd_per_1pct": net,
        "major_pos_vol": row["major_pos_vol"],
        "major_pos_oi": row["major_pos_oi"],
        "major_neg_vol": row["major_neg_vol"],
        "major_neg_oi": row["major_neg_oi"],
        "net_gex_vol_usd_per_1pct": row["net_gex_vol"],
        "net_gex_oi_usd_per_1pct": row["net_gex_oi"],
        "strikes": ladder,
        "walls": "gexbot's majors: the strikes of the most positive (call_wall) and most "
        "negative (put_wall) net GEX",
        "units": "USD of dealer delta change per 1% move of the underlying (gexbot's values "
        f"x GEXBOT_GEX_UNIT_USD = {ctx.settings.gexbot_gex_unit_usd:g})",
        "as_of": _iso(as_of_ns),
        "as_of_ns": as_of_ns,
        "age_s": round((time.time_ns() - as_of_ns) / NS, 3),
        "received_ns": row["ts_recv"],
        "seq": row["seq"],
        "view": "majors" if row["category"].endswith("/majors") else "chain",
        "source": GEXBOT,
    }


def _ours_side(body: dict[str, Any]) -> dict[str, Any]:
    """Our levels, plus the strikes of the most positive and most negative net GEX."""
    ladder = body.get("strikes") or {}
    strikes, net = ladder.get("strike") or [], ladder.get("net_gex_usd_per_1pct") or []
    pos = max(range(len(net)), key=net.__getitem__, default=None)
    neg = min(range(len(net)), key=net.__getitem__, default=None)
    as_of_ns = int(body["as_of_ns"])
    return {
        "spot": body["spot"],
        "zero_gamma": body["zero_gamma"],
        "call_wall": body["call_wall"],
        "put_wall": body["put_wall"],
        "major_pos": strikes[pos] if pos is not None and net[pos] > 0 else None,
        "major_neg": strikes[neg] if neg is not None and net[neg] < 0 else None,
        "total_gex_usd_per_1pct": body["total_gex_usd_per_1pct"],
        "as_of": body["as_of"],
        "as_of_ns": as_of_ns,
        "age_s": round((time.time_ns() - as_of_ns) / NS, 3),
    }


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 6)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 6)


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / NS, dt.UTC).isoformat().replace("+00:00", "Z")
