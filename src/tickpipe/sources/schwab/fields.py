"""Schwab streamer services and their field numbers, as data.

Numbers follow Schwab's "Trader API - Streamer Guide" where real captures agree with it, and
the captures where they do not (CHART_EQUITY: field 1 is a sequence, not the open). Each
service lists every field number the guide defines (``names``: anything else is an unknown
field, ignored and counted) and the few it maps to event columns (``roles``), which are also
the fields subscribed. Note the asymmetries kept here rather than in code: equities send the
ask exchange in 6 and the bid in 7, futures the other way round; option IV is in percent.
"""

from __future__ import annotations

import dataclasses
from enum import StrEnum


class Shape(StrEnum):
    LEVEL_ONE = "level_one"
    """"Change" delivery: the first item per key is complete, later ones carry changes only"""
    BOOK = "book"
    """"Whole" delivery: every item is a full snapshot of price levels"""
    CHART = "chart"
    """"All Sequence" delivery: one complete bar per item"""


@dataclasses.dataclass(frozen=True)
class Service:
    name: str
    shape: Shape
    names: dict[int, str]
    roles: dict[str, int]
    """event column (or merge role) -> field number"""
    text_roles: frozenset[str] = frozenset()
    """roles whose values are strings (the rest must be numbers)"""
    time_roles: frozenset[str] = frozenset()
    """roles holding epoch milliseconds"""

    @property
    def subscribe_fields(self) -> str:
        """The ``fields`` parameter: 0 (always required) and every mapped field, ascending."""
        return ",".join(str(n) for n in sorted({0, *self.roles.values()}))


def _table(text: str) -> dict[int, str]:
    """``"0 Symbol, 1 Bid Price, ..."`` -> {0: "Symbol", 1: "Bid Price", ...}"""
    out = {}
    for part in text.split(","):
        number, name = part.strip().split(" ", 1)
        out[int(number)] = name
    return out


LEVELONE_EQUITIES = Service(
    "LEVELONE_EQUITIES",
    Shape.LEVEL_ONE,
    _table(
        "0 Symbol, 1 Bid Price, 2 Ask Price, 3 Last Price, 4 Bid Size, 5 Ask Size, 6 Ask ID, "
        "7 Bid ID, 8 Total Volume, 9 Last Size, 10 High Price, 11 Low Price, 12 Close Price, "
        "13 Exchange ID, 14 Marginable, 15 Description, 16 Last ID, 17 Open Price, "
        "18 Net Change, 19 52 Week High, 20 52 Week Low, 21 PE Ratio, "
        "22 Annual Dividend Amount, 23 Dividend Yield, 24 NAV, 25 Exchange Name, "
        "26 Dividend Date, 27 Regular Market Quote, 28 Regular Market Trade, "
        "29 Regular Market Last Price, 30 Regular Market Last Size, "
        "31 Regular Market Net Change, 32 Security Status, 33 Mark Price, 34 Quote Time, "
        "35 Trade Time, 36 Regular Market Trade Time, 37 Bid Time, 38 Ask Time, "
        "39 Ask MIC ID, 40 Bid MIC ID, 41 Last MIC ID, 42 Net Percent Change, "
        "43 Regular Market Percent Change, 44 Mark Price Net Change, "
        "45 Mark Price Percent Change, 46 Hard To Borrow Quantity, 47 Hard To Borrow Rate, "
        "48 Hard To Borrow, 49 Shortable, 50 Post-Market Net Change, "
        "51 Post-Market Percent Change"
    ),
    roles={
        "bid": 1,
        "ask": 2,
        "last": 3,
        "bid_size": 4,
        "ask_size": 5,
        "volume": 8,
        "last_size": 9,
        "quote_time": 34,
        "trade_time": 35,
        "exchange": 41,
    },
    text_roles=frozenset({"exchange"}),
    time_roles=frozenset({"quote_time", "trade_time"}),
)

LEVELONE_FUTURES = Service(
    "LEVELONE_FUTURES",
    Shape.LEVEL_ONE,
    _table(
        "0 Symbol, 1 Bid Price, 2 Ask Price, 3 Last Price, 4 Bid Size, 5 Ask Size, 6 Bid ID, "
        "7 Ask ID, 8 Total Volume, 9 Last Size, 10 Quote Time, 11 Trade Time, 12 High Price, "
        "13 Low Price, 14 Close Price, 15 Exchange ID, 16 Description, 17 Last ID, "
        "18 Open Price, 19 Net Change, 20 Future Percent Change, 21 Exchange Name, "
        "22 Security Status, 23 Open Interest, 24 Mark, 25 Tick, 26 Tick Amount, 27 Product, "
        "28 Future Price Format, 29 Future Trading Hours, 30 Future Is Tradable, "
        "31 Future Multiplier, 32 Future Is Active, 33 Future Settlement Price, "
        "34 Future Active Symbol, 35 Future Expiration Date, 36 Expiration Style, "
        "37 Ask Time, 38 Bid Time, 39 Quoted In Session, 40 Settlement Date"
    ),
    roles={
        "bid": 1,
        "ask": 2,
        "last": 3,
        "bid_size": 4,
        "ask_size": 5,
        "volume": 8,
        "last_size": 9,
        "quote_time": 10,
        "trade_time": 11,
        "exchange": 21,
    },
    text_roles=frozenset({"exchange"}),
    time_roles=frozenset({"quote_time", "trade_time"}),
)

LEVELONE_OPTIONS = Service(
    "LEVELONE_OPTIONS",
    Shape.LEVEL_ONE,
    _table(
        "0 Symbol, 1 Description, 2 Bid Price, 3 Ask Price, 4 Last Price, 5 High Price, "
        "6 Low Price, 7 Close Price, 8 Total Volume, 9 Open Interest, 10 Volatility, "
        "11 Money Intrinsic Value, 12 Expiration Year, 13 Multiplier, 14 Digits, "
        "15 Open Price, 16 Bid Size, 17 Ask Size, 18 Last Size, 19 Net Change, "
        "20 Strike Price, 21 Contract Type, 22 Underlying, 23 Expiration Month, "
        "24 Deliverables, 25 Time Value, 26 Expiration Day, 27 Days to Expiration, 28 Delta, "
        "29 Gamma, 30 Theta, 31 Vega, 32 Rho, 33 Security Status, "
        "34 Theoretical Option Value, 35 Underlying Price, 36 UV Expiration Type, "
        "37 Mark Price, 38 Quote Time, 39 Trade Time, 40 Exchange, 41 Exchange Name, "
        "42 Last Trading Day, 43 Settlement Type, 44 Net Percent Change, "
        "45 Mark Price Net Change, 46 Mark Price Percent Change, 47 Implied Yield, "
        "48 isPennyPilot, 49 Option Root, 50 52 Week High, 51 52 Week Low, "
        "52 Indicative Ask Price, 53 Indicative Bid Price, 54 Indicative Quote Time, "
        "55 Exercise Type"
    ),
    roles={
        "bid": 2,
        "ask": 3,
        "last": 4,
        "volume": 8,
        "open_interest": 9,
        "iv_pct": 10,
        "bid_size": 16,
        "ask_size": 17,
        "last_size": 18,
        "underlying": 22,
        "delta": 28,
        "gamma": 29,
        "quote_time": 38,
        "trade_time": 39,
    },
    text_roles=frozenset({"underlying"}),
    time_roles=frozenset({"quote_time", "trade_time"}),
)

LEVELONE_FUTURES_OPTIONS = Service(
    "LEVELONE_FUTURES_OPTIONS",
    Shape.LEVEL_ONE,
    _table(
        "0 Symbol, 1 Bid Price, 2 Ask Price, 3 Last Price, 4 Bid Size, 5 Ask Size, 6 Bid ID, "
        "7 Ask ID, 8 Total Volume, 9 Last Size, 10 Quote Time, 11 Trade Time, 12 High Price, "
        "13 Low Price, 14 Close Price, 15 Last ID, 16 Description, 17 Open Price, "
        "18 Open Interest, 19 Mark, 20 Tick, 21 Tick Amount, 22 Future Multiplier, "
        "23 Future Settlement Price, 24 Underlying Symbol, 25 Strike Price, "
        "26 Future Expiration Date, 27 Expiration Style, 28 Contract Type, "
        "29 Security Status, 30 Exchange, 31 Exchange Name"
    ),
    roles={
        "bid": 1,
        "ask": 2,
        "last": 3,
        "bid_size": 4,
        "ask_size": 5,
        "volume": 8,
        "last_size": 9,
        "quote_time": 10,
        "trade_time": 11,
        "open_interest": 18,
        "underlying": 24,
        "strike": 25,
        "expiry_time": 26,
        "right": 28,
    },
    text_roles=frozenset({"underlying", "right"}),
    time_roles=frozenset({"quote_time", "trade_time", "expiry_time"}),
)

_BOOK_NAMES = _table("0 Symbol, 1 Market Snapshot Time, 2 Bid Side Levels, 3 Ask Side Levels")
_BOOK_ROLES = {"time": 1, "bids": 2, "asks": 3}
NYSE_BOOK = Service("NYSE_BOOK", Shape.BOOK, _BOOK_NAMES, _BOOK_ROLES)
NASDAQ_BOOK = Service("NASDAQ_BOOK", Shape.BOOK, _BOOK_NAMES, _BOOK_ROLES)
OPTIONS_BOOK = Service("OPTIONS_BOOK", Shape.BOOK, _BOOK_NAMES, _BOOK_ROLES)

BOOK_LEVEL = {"price": "0", "size": "1", "orders": "2", "makers": "3"}
"""keys of one price level object inside a book side"""

CHART_EQUITY = Service(
    "CHART_EQUITY",
    Shape.CHART,
    # the guide's table is wrong here (schwab-py #80; real captures): 1 is a sequence
    _table(
        "0 Symbol, 1 Sequence, 2 Open Price, 3 High Price, 4 Low Price, 5 Close Price, "
        "6 Volume, 7 Chart Time, 8 Chart Day"
    ),
    roles={"open": 2, "high": 3, "low": 4, "close": 5, "volume": 6, "time": 7},
    time_roles=frozenset({"time"}),
)

CHART_FUTURES = Service(
    "CHART_FUTURES",
    Shape.CHART,
    _table(
        "0 Symbol, 1 Chart Time, 2 Open Price, 3 High Price, 4 Low Price, 5 Close Price, 6 Volume"
    ),
    roles={"time": 1, "open": 2, "high": 3, "low": 4, "close": 5, "volume": 6},
    time_roles=frozenset({"time"}),
)

SERVICES: dict[str, Service] = {
    s.name: s
    for s in (
        LEVELONE_EQUITIES,
        LEVELONE_FUTURES,
        LEVELONE_OPTIONS,
        LEVELONE_FUTURES_OPTIONS,
        NYSE_BOOK,
        NASDAQ_BOOK,
        OPTIONS_BOOK,
        CHART_EQUITY,
        CHART_FUTURES,
    )
}

META_KEYS = frozenset({"key", "delayed", "assetMainType", "assetSubType", "cusip", "seq"})
"""content keys that are not field numbers"""

BAR_SECONDS = 60.0
"""both chart services deliver one-minute bars"""

INDEX_OPTION_ROOTS: dict[str, str] = {
    "SPX": "$SPX",
    "SPXW": "$SPX",
    "SPXQ": "$SPX",
    "XSP": "$XSP",
    "NDX": "$NDX",
    "NDXP": "$NDX",
    "RUT": "$RUT",
    "RUTW": "$RUT",
    "VIX": "$VIX",
    "VIXW": "$VIX",
    "DJX": "$DJX",
    "OEX": "$OEX",
    "XEO": "$OEX",
}
"""option roots (and bare underlyings) of cash-settled indices -> the index symbol, so the
streamer's SPXW options and the chain poller's ``$SPX`` chain share one underlying"""


class ResponseCode:
    """Streamer ``content.code`` values (Streamer Guide 1.4)."""

    SUCCESS = 0
    LOGIN_DENIED = 3
    UNKNOWN_FAILURE = 9
    SERVICE_NOT_AVAILABLE = 11
    CLOSE_CONNECTION = 12
    REACHED_SYMBOL_LIMIT = 19
    STREAM_CONN_NOT_FOUND = 20
    BAD_COMMAND_FORMAT = 21
    STOP_STREAMING = 30

    SEVERED = frozenset({LOGIN_DENIED, CLOSE_CONNECTION, STOP_STREAMING})
    """codes after which the server closes the connection"""
    SUCCEEDED = frozenset({SUCCESS, 26, 27, 28, 29})


RESPONSE_NAMES = {
    0: "SUCCESS",
    3: "LOGIN_DENIED",
    9: "UNKNOWN_FAILURE",
    11: "SERVICE_NOT_AVAILABLE",
    12: "CLOSE_CONNECTION",
    19: "REACHED_SYMBOL_LIMIT",
    20: "STREAM_CONN_NOT_FOUND",
    21: "BAD_COMMAND_FORMAT",
    22: "FAILED_COMMAND_SUBS",
    23: "FAILED_COMMAND_UNSUBS",
    24: "FAILED_COMMAND_ADD",
    25: "FAILED_COMMAND_VIEW",
    26: "SUCCEEDED_COMMAND_SUBS",
    27: "SUCCEEDED_COMMAND_UNSUBS",
    28: "SUCCEEDED_COMMAND_ADD",
    29: "SUCCEEDED_COMMAND_VIEW",
    30: "STOP_STREAMING",
}
