"""What parsing a Schwab frame yields, and the column lists events are collected in.

Events are appended column by column (one Python list per field of the kind's schema) and
become one ``pa.RecordBatch`` per kind at the end of the frame: no per-event objects.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pyarrow as pa

from tickpipe.events import SCHEMAS, Kind
from tickpipe.sources.base import Batches
from tickpipe.sources.schwab.fields import INDEX_OPTION_ROOTS

MS = 1_000_000
NAN = math.nan
MISSING = -999.0
"""Schwab's "could not compute" value for greeks and volatility"""
NEW_YORK = ZoneInfo("America/New_York")


@dataclasses.dataclass(frozen=True, slots=True)
class Response:
    """A ``response`` item, or a ``notify`` item that carries a code (an admin notice)."""

    service: str
    command: str
    requestid: str
    code: int
    msg: str


@dataclasses.dataclass(frozen=True, slots=True)
class Reject:
    raw: str
    reason: str
    kind: Kind | None = None
    symbol: str = ""


@dataclasses.dataclass
class Decoded:
    batches: Batches = dataclasses.field(default_factory=dict)
    responses: list[Response] = dataclasses.field(default_factory=list)
    heartbeats: int = 0
    rejects: list[Reject] = dataclasses.field(default_factory=list)
    unknown_fields: int = 0
    field_updates: int = 0


def missing_as_nan(value: float) -> float:
    """-999 (and anything below) means "not computed"."""
    return NAN if value <= MISSING else value


def index_underlying(name: str) -> str:
    """``SPXW`` / ``SPX`` -> ``$SPX``; other roots and equities unchanged."""
    return INDEX_OPTION_ROOTS.get(name.lstrip("$"), name)


def ny_date(ms: float) -> dt.date:
    return dt.datetime.fromtimestamp(ms / 1000, NEW_YORK).date()


class Rows:
    """Column lists per kind for one frame, with seq numbers per (kind, symbol)."""

    def __init__(self, seqs: dict[Kind, dict[str, int]]) -> None:
        self.cols: dict[Kind, dict[str, list[Any]]] = {}
        self._seqs = seqs

    def add(self, kind: Kind, symbol: str, **values: Any) -> None:
        cols = self.cols.get(kind)
        if cols is None:
            cols = self.cols[kind] = {name: [] for name in SCHEMAS[kind].names}
        counters = self._seqs[kind]
        seq = counters.get(symbol, 0) + 1
        counters[symbol] = seq
        cols["symbol"].append(symbol)
        cols["seq"].append(seq)
        for name, value in values.items():
            cols[name].append(value)

    def batches(self, recv_ns: int) -> Batches:
        out: Batches = {}
        for kind, cols in self.cols.items():
            n = len(cols["symbol"])
            cols["ts_recv"] = [recv_ns] * n
            cols["source"] = [""] * n  # set to the source's name by the context
            schema = SCHEMAS[kind]
            arrays = [
                pa.array(cols[f.name], f.type) if cols[f.name] else pa.nulls(n, f.type)
                for f in schema
            ]
            out[kind] = pa.RecordBatch.from_arrays(arrays, schema=schema)
        return out


def dump(value: Any) -> str:
    """JSON text of a piece of a frame, for a quarantine record."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
