"""Which streamer service each configured symbol goes to, checked before anything starts.

``SCHWAB_SYMBOLS``: equities and ETFs (``SPY``) -> LEVELONE_EQUITIES and CHART_EQUITY;
indices (``$SPX``) -> LEVELONE_EQUITIES; futures (``/ES``, ``/ESZ25``) -> LEVELONE_FUTURES and
CHART_FUTURES; OCC options (``SPXW  251219C06000000``, padding optional) -> LEVELONE_OPTIONS;
futures options (``./OZCZ23C565``) -> LEVELONE_FUTURES_OPTIONS. ``SCHWAB_BOOK_SYMBOLS``:
equities -> NASDAQ_BOOK (``NYSE:F`` picks NYSE_BOOK), OCC options -> OPTIONS_BOOK. One book
service per symbol: two venues' books under one symbol would interleave their levels.
"""

from __future__ import annotations

import dataclasses
import re

from tickpipe.errors import ConfigError
from tickpipe.symbols import AssetClass, asset_class, is_canonical, parse_occ

MAX_SYMBOLS = 1_000
BATCH = 100
"""keys per SUBS/ADD request (Schwab publishes no per-request limit)"""
_FUTURES_OPTION = re.compile(r"^\./[A-Z0-9]{1,6}[FGHJKMNQUVXZ]\d{2}[CP]\d+(?:\.\d+)?$")
_HINT = (
    "equities SPY, indices $SPX, futures /ES or /ESZ25, options in OCC form "
    "(SPXW  251219C06000000), futures options ./OZCZ23C565"
)


@dataclasses.dataclass(frozen=True)
class Plan:
    keys: dict[str, tuple[str, ...]]
    """service -> keys, in the order configured"""

    @property
    def symbols(self) -> int:
        return len({k for keys in self.keys.values() for k in keys})

    def requests(self, batch: int = BATCH) -> list[tuple[str, str, tuple[str, ...]]]:
        """(service, command, keys): SUBS for a service's first batch, ADD for the rest."""
        out = []
        for service, keys in self.keys.items():
            for start in range(0, len(keys), batch):
                out.append((service, "SUBS" if start == 0 else "ADD", keys[start : start + batch]))
        return out


def _option(symbol: str) -> str | None:
    if len(symbol) <= 10:
        return None
    try:
        return parse_occ(symbol).occ()
    except ValueError:
        return None


def plan_subscriptions(symbols: list[str], book_symbols: list[str]) -> Plan:
    keys: dict[str, dict[str, None]] = {}

    def add(service: str, key: str) -> None:
        keys.setdefault(service, {})[key] = None

    for raw in symbols:
        symbol = raw.strip().upper()
        occ = _option(symbol)
        if occ is not None:
            add("LEVELONE_OPTIONS", occ)
        elif symbol.startswith("./"):
            if not _FUTURES_OPTION.match(symbol):
                raise ConfigError(f"SCHWAB_SYMBOLS: {raw!r} is not a futures option ({_HINT})")
            add("LEVELONE_FUTURES_OPTIONS", symbol)
        elif not is_canonical(symbol):
            raise ConfigError(f"SCHWAB_SYMBOLS: {raw!r} is not a symbol tickpipe knows ({_HINT})")
        elif asset_class(symbol) is AssetClass.FUTURE:
            add("LEVELONE_FUTURES", symbol)
            add("CHART_FUTURES", symbol)
        elif asset_class(symbol) is AssetClass.INDEX:
            add("LEVELONE_EQUITIES", symbol)
        else:
            add("LEVELONE_EQUITIES", symbol)
            add("CHART_EQUITY", symbol)
    for raw in book_symbols:
        venue, _, name = raw.strip().upper().rpartition(":")
        occ = _option(name)
        if occ is not None and venue in ("", "OPTIONS"):
            add("OPTIONS_BOOK", occ)
        elif venue in ("", "NASDAQ", "NYSE") and is_canonical(name):
            if asset_class(name) is not AssetClass.EQUITY:
                raise ConfigError(
                    f"SCHWAB_BOOK_SYMBOLS: {raw!r}: Schwab has books for equities and options only"
                )
            add(f"{venue or 'NASDAQ'}_BOOK", name)
        else:
            raise ConfigError(
                f"SCHWAB_BOOK_SYMBOLS: {raw!r} is not an equity (NASDAQ_BOOK; NYSE:F for "
                "NYSE_BOOK) or an OCC option (OPTIONS_BOOK)"
            )
    plan = Plan({service: tuple(names) for service, names in keys.items()})
    if plan.symbols > MAX_SYMBOLS:
        raise ConfigError(
            f"SCHWAB_SYMBOLS and SCHWAB_BOOK_SYMBOLS name {plan.symbols} symbols: at most "
            f"{MAX_SYMBOLS:,} per streamer connection"
        )
    return plan
