"""DTC protocol (v8) message tables: type numbers and binary layouts, as data, not code.

Binary messages are little-endian C structs that start ``uint16 Size, uint16 Type``
(``#pragma pack(8)`` for most; the compact ``pack(1)`` ones say so). Each layout lists the
struct format (padding as ``x``) and the field names in struct order, which are also the
JSON encoding's keys and the order of JSON-compact's ``"F"`` array. Sources: Sierra Chart's
``DTCProtocol.h`` (v8); types 147/148 from community code (not in the v8 header).
"""

from __future__ import annotations

import dataclasses
import struct
from enum import IntEnum

PROTOCOL_VERSION = 8
DBL_UNSET = 1.7976931348623157e308
"""DBL_MAX: a double field the server leaves unset"""
FLT_UNSET = 3.4028234663852886e38
UNSET_ABOVE = 1e37
"""any price at or above this is an unset marker (DBL_MAX, FLT_MAX), not a price"""


class T(IntEnum):
    LOGON_REQUEST = 1
    LOGON_RESPONSE = 2
    HEARTBEAT = 3
    LOGOFF = 5
    ENCODING_REQUEST = 6
    ENCODING_RESPONSE = 7
    MARKET_DATA_FEED_STATUS = 100
    MARKET_DATA_REQUEST = 101
    MARKET_DATA_REJECT = 103
    MARKET_DATA_SNAPSHOT = 104
    TRADE = 107
    BID_ASK = 108
    TRADE_COMPACT = 112
    SESSION_VOLUME = 113
    SESSION_HIGH = 114
    SESSION_LOW = 115
    FEED_SYMBOL_STATUS = 116
    BID_ASK_COMPACT = 117
    SESSION_SETTLEMENT = 119
    SESSION_OPEN = 120
    OPEN_INTEREST = 124
    LAST_TRADE_SNAPSHOT = 134
    SESSION_NUM_TRADES = 135
    TRADING_SESSION_DATE = 136
    TRADE_WITH_UNBUNDLED_INDICATOR = 137
    TRADING_SYMBOL_STATUS = 138
    TRADE_NO_TIMESTAMP = 142
    BID_ASK_NO_TIMESTAMP = 143
    BID_ASK_FLOAT_WITH_MICROSECONDS = 144
    TRADE_WITH_UNBUNDLED_INDICATOR_2 = 146
    TRADE_V2 = 147
    BID_ASK_DOUBLE_WITH_MICROSECONDS = 148


class Encoding(IntEnum):
    BINARY = 0
    BINARY_WITH_VARIABLE_LENGTH_STRINGS = 1
    JSON = 2
    JSON_COMPACT = 3
    PROTOCOL_BUFFERS = 4


class LogonStatus(IntEnum):
    SUCCESS = 1
    ERROR = 2
    ERROR_NO_RECONNECT = 3
    RECONNECT_NEW_ADDRESS = 4


class Time(IntEnum):
    """How a message stamps its event (the DTC epoch is Unix, not 1899)."""

    NONE = 0
    SECONDS = 1
    """t_DateTime / t_DateTime4Byte: whole seconds"""
    FLOAT_SECONDS = 2
    """t_DateTimeWithMilliseconds: a double of seconds"""
    MICROSECONDS = 3
    """t_DateTimeWithMicrosecondsInt"""


@dataclasses.dataclass(frozen=True)
class Layout:
    fmt: str
    """struct format of the whole message, Size and Type included"""
    fields: tuple[str, ...]
    """names after Size and Type, in struct order; also the JSON keys"""

    @property
    def size(self) -> int:
        return struct.calcsize(self.fmt)


def _layout(fmt: str, names: str) -> Layout:
    layout = Layout("<HH" + fmt, tuple(names.split()))
    counted = len(struct.unpack(layout.fmt, bytes(layout.size))) - 2
    assert counted == len(layout.fields), (fmt, names)
    return layout


LAYOUTS: dict[int, Layout] = {
    T.LOGON_REQUEST: _layout(
        "i32s32s64siiii32s64s32si",
        "ProtocolVersion Username Password GeneralTextData Integer_1 Integer_2 "
        "HeartbeatIntervalInSeconds Unused1 TradeAccount HardwareIdentifier ClientName "
        "MarketDataTransmissionInterval",
    ),
    T.LOGON_RESPONSE: _layout(
        "ii96s64si60sBBBB4sBBBBBBBBB3x",
        "ProtocolVersion Result ResultText ReconnectAddress Integer_1 ServerName "
        "MarketDepthUpdatesBestBidAndAsk TradingIsSupported OCOOrdersSupported "
        "OrderCancelReplaceSupported SymbolExchangeDelimiter SecurityDefinitionsSupported "
        "HistoricalPriceDataSupported ResubscribeWhenMarketDataFeedAvailable "
        "MarketDepthIsSupported OneHistoricalPriceDataRequestPerConnection "
        "BracketOrdersSupported Unused_1 UsesMultiplePositionsPerSymbolAndTradeAccount "
        "MarketDataSupported",
    ),
    T.HEARTBEAT: _layout("Iq", "NumDroppedMessages CurrentDateTime"),
    T.LOGOFF: _layout("96sB3x", "Reason DoNotReconnect"),
    T.ENCODING_REQUEST: _layout("ii4s", "ProtocolVersion Encoding ProtocolType"),
    T.ENCODING_RESPONSE: _layout("ii4s", "ProtocolVersion Encoding ProtocolType"),
    T.MARKET_DATA_FEED_STATUS: _layout("i", "Status"),
    T.MARKET_DATA_REQUEST: _layout(
        "iI64s16sI",
        "RequestAction SymbolID Symbol Exchange IntervalForSnapshotUpdatesInMilliseconds",
    ),
    T.MARKET_DATA_REJECT: _layout("I96s", "SymbolID RejectText"),
    T.MARKET_DATA_SNAPSHOT: _layout(
        "I5dII6d2dIIb7xd",
        "SymbolID SessionSettlementPrice SessionOpenPrice SessionHighPrice SessionLowPrice "
        "SessionVolume SessionNumTrades OpenInterest BidPrice AskPrice AskQuantity "
        "BidQuantity LastTradePrice LastTradeVolume LastTradeDateTime BidAskDateTime "
        "SessionSettlementDateTime TradingSessionDate TradingStatus MarketDepthUpdateDateTime",
    ),
    T.TRADE: _layout("IH6xddd", "SymbolID AtBidOrAsk Price Volume DateTime"),
    T.BID_ASK: _layout("Idf4xdfI", "SymbolID BidPrice BidQuantity AskPrice AskQuantity DateTime"),
    T.TRADE_COMPACT: _layout("ffIIH2x", "Price Volume DateTime SymbolID AtBidOrAsk"),
    T.SESSION_VOLUME: _layout("IdIB3x", "SymbolID Volume TradingSessionDate IsFinalSessionVolume"),
    T.SESSION_HIGH: _layout("IdI4x", "SymbolID Price TradingSessionDate"),
    T.SESSION_LOW: _layout("IdI4x", "SymbolID Price TradingSessionDate"),
    T.FEED_SYMBOL_STATUS: _layout("Ii", "SymbolID Status"),
    T.BID_ASK_COMPACT: _layout(
        "ffffII", "BidPrice BidQuantity AskPrice AskQuantity DateTime SymbolID"
    ),
    T.SESSION_SETTLEMENT: _layout("IdI4x", "SymbolID Price DateTime"),
    T.SESSION_OPEN: _layout("IdI4x", "SymbolID Price TradingSessionDate"),
    T.OPEN_INTEREST: _layout("III", "SymbolID OpenInterest TradingSessionDate"),
    T.LAST_TRADE_SNAPSHOT: _layout(
        "Iddd", "SymbolID LastTradePrice LastTradeVolume LastTradeDateTime"
    ),
    T.SESSION_NUM_TRADES: _layout("IiI", "SymbolID NumTrades TradingSessionDate"),
    T.TRADING_SESSION_DATE: _layout("II", "SymbolID Date"),
    T.TRADE_WITH_UNBUNDLED_INDICATOR: _layout(
        "IBbBBIdIId",
        "SymbolID AtBidOrAsk UnbundledTradeIndicator TradeCondition Reserve_1 Reserve_2 "
        "Price Volume Reserve_3 DateTime",
    ),
    T.TRADING_SYMBOL_STATUS: _layout("Ib3x", "SymbolID Status"),
    T.TRADE_NO_TIMESTAMP: _layout(
        "IfIBbB", "SymbolID Price Volume AtBidOrAsk UnbundledTradeIndicator TradeCondition"
    ),
    T.BID_ASK_NO_TIMESTAMP: _layout("IfIfI", "SymbolID BidPrice BidQuantity AskPrice AskQuantity"),
    T.BID_ASK_FLOAT_WITH_MICROSECONDS: _layout(
        "Iffffq", "SymbolID BidPrice BidQuantity AskPrice AskQuantity DateTime"
    ),
    T.TRADE_WITH_UNBUNDLED_INDICATOR_2: _layout(
        "IfIqBbb",
        "SymbolID Price Volume DateTime AtBidOrAsk UnbundledTradeIndicator TradeCondition",
    ),
    T.TRADE_V2: _layout(
        "IddqBbb",
        "SymbolID Price Volume DateTime AtBidOrAsk UnbundledTradeIndicator TradeCondition",
    ),
    T.BID_ASK_DOUBLE_WITH_MICROSECONDS: _layout(
        "Iddddq", "SymbolID BidPrice BidQuantity AskPrice AskQuantity DateTime"
    ),
}

TRADES: dict[int, Time] = {
    T.TRADE: Time.FLOAT_SECONDS,
    T.TRADE_COMPACT: Time.SECONDS,
    T.TRADE_WITH_UNBUNDLED_INDICATOR: Time.FLOAT_SECONDS,
    T.TRADE_NO_TIMESTAMP: Time.NONE,
    T.TRADE_WITH_UNBUNDLED_INDICATOR_2: Time.MICROSECONDS,
    T.TRADE_V2: Time.MICROSECONDS,
}
"""every trade variant and how it stamps its time"""

BID_ASKS: dict[int, Time] = {
    T.BID_ASK: Time.SECONDS,
    T.BID_ASK_COMPACT: Time.SECONDS,
    T.BID_ASK_NO_TIMESTAMP: Time.NONE,
    T.BID_ASK_FLOAT_WITH_MICROSECONDS: Time.MICROSECONDS,
    T.BID_ASK_DOUBLE_WITH_MICROSECONDS: Time.MICROSECONDS,
}
"""every bid/ask variant and how it stamps its time"""

SESSION_FIELDS: dict[int, tuple[str, str]] = {
    T.SESSION_VOLUME: ("Volume", "session_volume"),
    T.SESSION_HIGH: ("Price", "session_high"),
    T.SESSION_LOW: ("Price", "session_low"),
    T.SESSION_OPEN: ("Price", "session_open"),
    T.SESSION_SETTLEMENT: ("Price", "settlement"),
    T.OPEN_INTEREST: ("OpenInterest", "open_interest"),
    T.SESSION_NUM_TRADES: ("NumTrades", "session_trades"),
    T.TRADING_SESSION_DATE: ("Date", "trading_session_date"),
    T.LAST_TRADE_SNAPSHOT: ("LastTradePrice", "last_trade_price"),
}
"""session statistics: (field, name in /status); facts about the day, not events"""

AT_BID, AT_ASK = 1, 2
FIRST_SUB_TRADE, LAST_SUB_TRADE = 1, 2
TRADING_STATUS = {0: "unknown", 1: "pre-open", 2: "open", 3: "close", 4: "trading halt"}
FEED_STATUS = {1: "unavailable", 2: "available"}
