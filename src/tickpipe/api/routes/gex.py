"""GEX per underlying, served from the engine's precomputed results (never computed here)."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query
from starlette.responses import Response

from tickpipe.api.auth import require
from tickpipe.api.context import ApiContext
from tickpipe.api.errors import ApiError
from tickpipe.api.routes import context
from tickpipe.store.keystore import ApiKey
from tickpipe.symbols import parse_symbol_list

router = APIRouter(tags=["gex"])
NS = 1_000_000_000


@router.get("/api/v1/gex/{symbol}", summary="Gamma exposure: levels, per-strike ladder, profile")
async def gex(
    ctx: Annotated[ApiContext, Depends(context)],
    _: Annotated[ApiKey, Depends(require("read"))],
    symbol: Annotated[
        str, Path(examples=["SPY"], description="the underlying, canonical (SPY, $SPX)")
    ],
    category: Annotated[
        Literal["full", "zero", "one"],
        Query(
            description="full: expiries up to 90 days; zero: the next expiry; one: the one after"
        ),
    ] = "full",
    basis: Annotated[
        Literal["oi", "volume"], Query(description="weight by open interest or by today's volume")
    ] = "oi",
) -> Response:
    """`spot`, `zero_gamma`, `call_wall`, `put_wall`, `abs_gamma_strike`,
    `total_gex_usd_per_1pct`, then `strikes` (the ladder), `profile` (GEX repriced over
    spot ±15 %), `expiries`, `as_of`, `chain_age_s`, `spot_age_s`, `source`. Dollar values
    are per 1 % move of the underlying; the sign convention is named in `convention`."""
    (underlying,) = parse_symbol_list(symbol, max_symbols=1)
    answer = await ctx.gex(underlying, category, basis)
    if answer is None:
        raise ApiError(404, "not_found", f"no option chain for {underlying!r} yet")
    now = time.time_ns()
    chain_age = (now - answer.chain_updated_ns) / NS
    if chain_age > ctx.settings.gex_max_chain_age_s:
        raise ApiError(
            503,
            "stale_chain",
            f"the {underlying} chain is {chain_age:.0f}s old (limit {ctx.settings.gex_max_chain_age_s:g}s): "
            "its feed is not updating",
        )
    spot_age = (now - answer.spot_updated_ns) / NS
    ages = f'{{"chain_age_s":{chain_age:.3f},"spot_age_s":{spot_age:.3f},'.encode()
    return Response(ages + answer.body[1:], media_type="application/json")
