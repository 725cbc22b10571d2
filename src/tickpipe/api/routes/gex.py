"""GEX per underlying, served from the engine's precomputed results (never computed here).

Like the real-time route, it reads its own parameters: a cached answer should cost what
``/api/v1/health`` costs, and FastAPI's dependency solver cost more than the rest."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from starlette.responses import Response

from tickpipe.api.auth import authorize_request
from tickpipe.api.context import ApiContext
from tickpipe.api.errors import ApiError
from tickpipe.symbols import parse_symbol_list

router = APIRouter(tags=["gex"])
NS = 1_000_000_000
CATEGORIES = ("full", "zero", "one")
BASES = ("oi", "volume")

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
    openapi_extra={"parameters": PARAMETERS},
)
async def gex(request: Request) -> Response:
    """`spot`, `zero_gamma`, `call_wall`, `put_wall`, `abs_gamma_strike`,
    `total_gex_usd_per_1pct`, then `strikes` (the ladder, as columns), `profile` (GEX
    repriced over spot ±15 %, as columns), `expiries`, `as_of`, `chain_age_s`, `spot_age_s`,
    `source`. Dollar values are per 1 % move of the underlying; the sign convention is
    named in `convention`."""
    ctx: ApiContext = request.app.state.ctx
    authorize_request(request, "read")
    query = request.query_params
    category = _choice(query.get("category"), "category", CATEGORIES)
    basis = _choice(query.get("basis"), "basis", BASES)
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
    return Response(ages + answer.body[1:], media_type="application/json")
