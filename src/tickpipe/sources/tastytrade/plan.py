"""What to subscribe: settings entries to DXLink symbols and event types.

``TASTYTRADE_SYMBOLS`` takes canonical symbols (``SPY``, ``$SPX``, ``/ES``, ``/ESZ25``, OCC
options) or DXLink streamer symbols (``SPX``, ``.SPY251219C600``, ``/ESZ25:XCME``).
Futures without an exchange are looked up in the instruments API (tastytrade says not to
build them by hand); a root (``/ES``) means the active month and its events keep the
name ``/ES``. ``TASTYTRADE_CHAIN_SYMBOLS`` names underlyings whose option chain (from the
option-chains endpoint, expiries within ``TASTYTRADE_CHAIN_MAX_DAYS``) is streamed for GEX.
"""

from __future__ import annotations

import dataclasses
import re

from tickpipe.errors import ConfigError
from tickpipe.sources.tastytrade.symbols import to_canonical, to_dxlink
from tickpipe.symbols import AssetClass, asset_class, parse_occ

UNDERLYING_TYPES = ("Quote", "Trade", "TimeAndSale")
OPTION_TYPES = ("Quote", "Greeks", "Summary", "Trade")
_FUTURE_ROOT = re.compile(r"^/([A-Z0-9]{1,4}?)(?:[FGHJKMNQUVXZ]\d{1,2})?$")


@dataclasses.dataclass(frozen=True, slots=True)
class Wanted:
    canonical: str
    dx: str | None
    """None: a future whose streamer symbol comes from the instruments API"""
    option: bool = False

    @property
    def product_code(self) -> str:
        match = _FUTURE_ROOT.match(self.canonical)
        return match[1] if match else self.canonical.lstrip("/")

    @property
    def is_root(self) -> bool:
        return _FUTURE_ROOT.match(self.canonical) is not None and self.canonical == (
            "/" + self.product_code
        )


def wanted(entry: str, setting: str) -> Wanted:
    """One settings entry; ConfigError naming ``setting`` when it cannot be streamed."""
    text = entry.strip()
    try:
        if text.startswith(".") or ":" in text:
            listing = to_canonical(text)
            return Wanted(listing.canonical, text, listing.is_option)
        if text.startswith("/"):
            if asset_class(text) is not AssetClass.FUTURE:
                raise ValueError(text)
            return Wanted(text, None)
        if len(text) > 10:
            canonical = parse_occ(text).occ()
            return Wanted(canonical, to_dxlink(canonical), True)
        if text.startswith("$"):
            asset_class(text)
            return Wanted(text, text[1:])
        return Wanted(to_canonical(text).canonical, text)
    except Exception as exc:  # QueryError or ValueError: both mean "not a symbol we stream"
        raise ConfigError(
            f"{setting}: {text!r} is not a symbol tastytrade streams "
            "(e.g. SPY, $SPX, /ES, /ESZ25:XCME, .SPY251219C600)"
        ) from exc


def from_settings(symbols: list[str], chains: list[str]) -> tuple[list[Wanted], list[Wanted]]:
    streamed = [wanted(s, "TASTYTRADE_SYMBOLS") for s in symbols]
    underlyings = [wanted(s, "TASTYTRADE_CHAIN_SYMBOLS") for s in chains]
    for item in underlyings:
        if item.option or item.dx is None or item.canonical.startswith("/"):
            raise ConfigError(
                f"TASTYTRADE_CHAIN_SYMBOLS: {item.canonical!r} must be an equity or index "
                "underlying (futures option chains are not supported)"
            )
    return streamed, underlyings


def items(types: tuple[str, ...], symbols: list[str]) -> list[dict[str, str]]:
    """FEED_SUBSCRIPTION ``add`` entries, every type for each symbol in turn."""
    return [{"type": t, "symbol": s} for s in symbols for t in types]
