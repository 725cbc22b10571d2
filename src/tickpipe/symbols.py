"""Canonical symbols inside tickpipe, and OCC option symbols.

Equities and ETFs ``SPY``; indices ``$SPX``; futures ``/ES`` (root) or ``/ESZ25``
(contract); options in OCC form: root padded to 6, ``YYMMDD``, ``C``/``P``, strike x1000
in 8 digits, e.g. ``SPY   251219C00600000``; futures options ``./`` + contract + right +
strike, e.g. ``./OZCZ23C565`` (they have no OCC form). Each adapter maps its feed's
spelling here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from enum import StrEnum

from tickpipe.errors import QueryError, SymbolError


class AssetClass(StrEnum):
    EQUITY = "equity"
    INDEX = "index"
    FUTURE = "future"
    OPTION = "option"
    FUTURE_OPTION = "future_option"


_EQUITY = re.compile(r"^[A-Z][A-Z0-9.\-]{0,9}$")
_INDEX = re.compile(r"^\$[A-Z][A-Z0-9.]{0,9}$")
_FUTURE = re.compile(r"^/[A-Z0-9]{1,4}?(?:[FGHJKMNQUVXZ]\d{1,2})?$")
_FUTURE_OPTION = re.compile(r"^\./[A-Z0-9]{1,6}[FGHJKMNQUVXZ]\d{2}[CP]\d+(?:\.\d+)?$")
_OCC = re.compile(r"^(?P<root>[A-Z0-9.$ ]{1,6}?) *(?P<date>\d{6})(?P<right>[CP])(?P<strike>\d{8})$")


@dataclasses.dataclass(frozen=True, slots=True)
class OptionSymbol:
    underlying: str
    expiry: dt.date
    right: str
    strike: float

    def occ(self) -> str:
        return occ_symbol(self.underlying, self.expiry, self.right, self.strike)


def occ_symbol(root: str, expiry: dt.date, right: str, strike: float) -> str:
    """OCC 21-character option symbol: root padded to 6, YYMMDD, C/P, strike x1000."""
    if right not in ("C", "P"):
        raise ValueError(f"option right must be C or P, got {right!r}")
    millis = round(strike * 1000)
    if not 0 <= millis < 100_000_000:
        raise ValueError(f"strike {strike} does not fit the OCC format")
    return f"{root.lstrip('$'):<6}{expiry:%y%m%d}{right}{millis:08d}"


def parse_occ(symbol: str) -> OptionSymbol:
    """Parse an OCC option symbol (padded or with the padding squeezed out)."""
    match = _OCC.match(symbol.strip().upper())
    if match is None:
        raise ValueError(f"not an OCC option symbol: {symbol!r}")
    date = dt.datetime.strptime(match["date"], "%y%m%d").date()
    return OptionSymbol(
        underlying=match["root"].strip(),
        expiry=date,
        right=match["right"],
        strike=int(match["strike"]) / 1000,
    )


def asset_class(symbol: str) -> AssetClass:
    """Classify a canonical symbol; raises SymbolError for anything not canonical."""
    if _INDEX.match(symbol):
        return AssetClass.INDEX
    if symbol.startswith("/") and _FUTURE.match(symbol):
        return AssetClass.FUTURE
    if symbol.startswith("./") and _FUTURE_OPTION.match(symbol):
        return AssetClass.FUTURE_OPTION
    if len(symbol) > 10 and _OCC.match(symbol):
        return AssetClass.OPTION
    if _EQUITY.match(symbol):
        return AssetClass.EQUITY
    raise SymbolError(f"not a canonical symbol: {symbol!r}")


def is_canonical(symbol: str) -> bool:
    try:
        asset_class(symbol)
    except SymbolError:
        return False
    return True


def parse_symbol_list(text: str, *, max_symbols: int = 100) -> list[str]:
    """A comma-separated list from a query string, each checked, order kept, no repeats."""
    symbols = list(dict.fromkeys(s.strip().upper() for s in text.split(",") if s.strip()))
    if not symbols:
        raise QueryError("at least one symbol is required", code="bad_symbol")
    if len(symbols) > max_symbols:
        raise QueryError(f"at most {max_symbols} symbols per request", code="too_many_symbols")
    for symbol in symbols:
        asset_class(symbol)
    return symbols
