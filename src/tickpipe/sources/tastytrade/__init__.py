"""tastytrade market data over dxFeed DXLink: quotes, time and sales, greeks, open interest.

Modules: ``session`` (OAuth refresh-token grant, quote token, REST lookups), ``dxlink``
(the websocket protocol), ``parse`` (FEED_DATA, pure), ``decoder`` (events to tickpipe
batches), ``batches`` (Arrow batches, seq numbering), ``indexed`` (snapshot flags),
``options`` (OptionQuote merge), ``symbols`` (DXLink <-> canonical), ``plan`` (settings to
subscriptions), ``feed`` (the source). The user's guide is the README (tastytrade).
"""

from __future__ import annotations

from tickpipe.clock import Clock
from tickpipe.config import Settings
from tickpipe.errors import ConfigError
from tickpipe.sources.base import Source


def build(settings: Settings, clock: Clock) -> list[Source]:
    """The tastytrade source; ConfigError naming what is missing, before anything starts."""
    missing = [
        name
        for name, value in (
            ("TASTYTRADE_CLIENT_SECRET", settings.tastytrade_client_secret),
            ("TASTYTRADE_REFRESH_TOKEN", settings.tastytrade_refresh_token),
        )
        if value is None or not value.get_secret_value().strip()
    ]
    if missing:
        raise ConfigError(
            f"TASTYTRADE_ENABLED=true needs {' and '.join(missing)} "
            "(the README (tastytrade) says how to get them)"
        )
    if not settings.tastytrade_symbols and not settings.tastytrade_chain_symbols:
        raise ConfigError(
            "TASTYTRADE_ENABLED=true needs TASTYTRADE_SYMBOLS (e.g. SPY,$SPX) or "
            "TASTYTRADE_CHAIN_SYMBOLS (e.g. SPY)"
        )
    from tickpipe.sources.tastytrade.feed import TastytradeFeed

    return [TastytradeFeed(settings, clock)]
