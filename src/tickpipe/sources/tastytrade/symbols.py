"""DXLink streamer symbols <-> tickpipe's canonical symbols (see ``tickpipe.symbols``).

=====================  =======================  ==========================================
DXLink                 canonical                rule
=====================  =======================  ==========================================
``SPY``                ``SPY``                  equities and ETFs unchanged
``SPX``                ``$SPX``                 indices carry ``$`` (``INDICES`` below)
``.SPY251219C600``     ``SPY   251219C00600000`` ``.`` root YYMMDD C/P strike -> OCC
``.SPLG240315C24.5``   ``SPLG  240315C00024500`` fractional strikes keep their decimals
``/ESZ25:XCME``        ``/ESZ25``               futures: exchange dropped, 2-digit year
=====================  =======================  ==========================================

Futures need their exchange to go back to DXLink (``/ESZ25`` -> ``/ESZ25:XCME``); tastytrade
says to read it from the instruments API rather than build it, so ``to_dxlink`` wants it
given. Futures options (``./ESZ24C4500:XCME``), crypto (``BTC/USD:CXTALP``) and candle
symbols (``SPY{=5m}``) have no canonical form and raise ``ValueError``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from decimal import Decimal, InvalidOperation

from tickpipe.symbols import is_canonical, occ_symbol, parse_occ

INDICES = frozenset(
    {
        "SPX", "NDX", "RUT", "VIX", "DJX", "XSP", "OEX", "XEO", "XND", "MRUT",
        "VIX9D", "VIX3M", "VIX1D", "VVIX", "SKEW", "TNX", "TYX", "FVX", "IRX",
    }
)  # fmt: skip
"""plain DXLink tickers that are indices, written ``$X`` in tickpipe"""

OPTION_ROOT_UNDERLYING = {
    "SPXW": "$SPX", "NDXP": "$NDX", "RUTW": "$RUT", "VIXW": "$VIX", "MRUTW": "$MRUT",
}  # fmt: skip
"""weekly/PM-settled option roots whose underlying has another name"""

_OPTION = re.compile(r"^\.([A-Z][A-Z0-9]{0,5})(\d{6})([CP])(\d+(?:\.\d+)?)$")
_FUTURE = re.compile(r"^/([A-Z0-9]{1,4}?)([FGHJKMNQUVXZ])(\d{1,2})(?::([A-Z0-9]+))?$")


@dataclasses.dataclass(frozen=True, slots=True)
class Listing:
    """What a DXLink symbol is, in tickpipe's terms."""

    canonical: str
    underlying: str | None = None
    """options only: the canonical underlying (``$SPX`` for ``SPXW`` options)"""
    expiry: dt.date | None = None
    strike: float = 0.0
    right: str = ""

    @property
    def is_option(self) -> bool:
        return self.underlying is not None


def to_canonical(dx_symbol: str) -> Listing:
    """The canonical form of a DXLink streamer symbol; ValueError when there is none."""
    symbol = dx_symbol.strip()
    if symbol.startswith("./"):
        raise ValueError(f"futures option {symbol!r} has no canonical form in tickpipe")
    if symbol.startswith("."):
        return _option(symbol)
    if symbol.startswith("/"):
        match = _FUTURE.match(symbol)
        if match is None:
            raise ValueError(f"not a DXLink futures symbol: {symbol!r}")
        root, month, year = match[1], match[2], match[3]
        return Listing(f"/{root}{month}{int(year):02d}")
    if symbol in INDICES:
        return Listing(f"${symbol}")
    if any(c in symbol for c in "/:{=") or not is_canonical(symbol):
        raise ValueError(f"DXLink symbol {symbol!r} has no canonical form in tickpipe")
    return Listing(symbol)


def to_dxlink(canonical: str, *, exchange: str | None = None) -> str:
    """The DXLink streamer symbol of a canonical symbol (futures need their ``exchange``)."""
    symbol = canonical.strip()
    if symbol.startswith("$"):
        return symbol[1:]
    if symbol.startswith("/"):
        if ":" in symbol:
            return symbol
        if exchange is None:
            raise ValueError(f"futures symbol {symbol!r} needs its exchange, e.g. {symbol}:XCME")
        return f"{symbol}:{exchange}"
    if len(symbol) > 10:
        option = parse_occ(symbol)
        strike = Decimal(str(option.strike)).normalize()
        text = f"{strike:f}"
        return f".{option.underlying}{option.expiry:%y%m%d}{option.right}{text}"
    return symbol


def _option(symbol: str) -> Listing:
    match = _OPTION.match(symbol)
    if match is None:
        raise ValueError(f"not a DXLink option symbol: {symbol!r}")
    root, date, right, strike_text = match[1], match[2], match[3], match[4]
    try:
        expiry = dt.datetime.strptime(date, "%y%m%d").date()
        strike = Decimal(strike_text)
    except (ValueError, InvalidOperation) as exc:
        raise ValueError(f"not a DXLink option symbol: {symbol!r}") from exc
    if (strike * 1000) % 1:
        raise ValueError(f"strike of {symbol!r} is finer than OCC's 1/1000")
    underlying = OPTION_ROOT_UNDERLYING.get(root) or (f"${root}" if root in INDICES else root)
    return Listing(
        canonical=occ_symbol(root, expiry, right, float(strike)),
        underlying=underlying,
        expiry=expiry,
        strike=float(strike),
        right=right,
    )
