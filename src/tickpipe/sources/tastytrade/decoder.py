"""DXLink events to tickpipe's event model, column by column; pure (no I/O), stateful.

==============  =========================================================================
DXLink          tickpipe
==============  =========================================================================
Quote           Quote (options: the bid/ask of their OptionQuote)
TimeAndSale     Trade: the tape, one row per print (snapshots de-duplicated, see indexed)
Trade           last-trade state only (``last_trades``; options: OptionQuote last/volume)
Greeks          OptionQuote iv/delta/gamma (options only)
Summary         OptionQuote open_interest (options only)
==============  =========================================================================

Times are epoch ms (+ ``timeNanoPart`` ns); recorded sessions send 0 for quotes, so a zero
time falls back to the receive time. ``seq`` counts per (kind, symbol) and continues from
``resume`` across reconnects and restarts. A NaN size or side stays a missing value: null
where the event model's field is nullable, NaN otherwise (the quality stage then says why).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from tickpipe.errors import ParseError
from tickpipe.events import Kind
from tickpipe.sources.base import Checkpoint, SeqCheckpoint
from tickpipe.sources.tastytrade.batches import Batcher, missing
from tickpipe.sources.tastytrade.indexed import IndexedStream
from tickpipe.sources.tastytrade.options import OptionBook
from tickpipe.sources.tastytrade.parse import (
    FeedFields,
    IntArray,
    Run,
    decode_feed_data,
    floats,
    ints,
    texts,
)
from tickpipe.sources.tastytrade.symbols import Listing, to_canonical

SOURCE = "tastytrade"
NS_PER_MS = 1_000_000
BoolArray = npt.NDArray[np.bool_]
_NEW_PRINT = frozenset({None, "NEW", "0"})
_SIDES = {"BUY": "B", "SELL": "S"}


@dataclasses.dataclass(frozen=True, slots=True)
class LastTrade:
    price: float
    size: float
    day_volume: float
    ts_ns: int


@dataclasses.dataclass
class Output:
    """What one FEED_DATA message became."""

    batches: dict[Kind, pa.RecordBatch]
    problems: list[str]
    """why parts of the message were not used: the frame is quarantined with these"""
    counts: Counter[str]
    cancels: list[dict[str, Any]]
    """TimeAndSale CANCEL records: not prints, kept in quarantine (rule trade_cancel)"""
    tape_moved: bool
    """the TimeAndSale high-water marks moved: worth a checkpoint"""


@dataclasses.dataclass(frozen=True, slots=True)
class _Symbols:
    """A run's symbol column: a code per row, and per code its DXLink name and listing."""

    codes: IntArray
    dx: list[str]
    listings: list[Listing | None]
    option: BoolArray
    """per code: an option contract (its events feed the option book)"""
    mapped: BoolArray
    """per code: has a canonical symbol"""

    def rows(self, *, option: bool | None) -> IntArray:
        """Rows of mapped symbols; of options only, of the rest only, or all (None)."""
        per_code = self.mapped if option is None else self.mapped & (self.option == option)
        if per_code.all():
            return np.arange(self.codes.size)
        return np.flatnonzero(per_code[self.codes])

    @property
    def canonical(self) -> list[str]:
        return [x.canonical if x is not None else "" for x in self.listings]


class Decoder:
    def __init__(self, source: str = SOURCE) -> None:
        self.source = source
        self.fields = FeedFields()
        self.options = OptionBook()
        self.tape = IndexedStream(dedup=True)
        self.greeks = IndexedStream(dedup=False)
        self.last_trades: dict[str, LastTrade] = {}
        self._listings: dict[str, Listing | None] = {}
        self._batches = Batcher(source)
        self._handlers: dict[str, Callable[[Run, int, Output], pa.RecordBatch | None]] = {
            "Quote": self._quote,
            "TimeAndSale": self._time_and_sale,
            "Trade": self._trade,
            "Greeks": self._greeks,
            "Summary": self._summary,
        }

    def alias(self, dx_symbol: str, canonical: str) -> None:
        """Name a DXLink symbol's events as asked (``/ES`` resolved to ``/ESZ25:XCME``)."""
        self._listings[dx_symbol] = Listing(canonical)

    def resume(self, sequences: SeqCheckpoint, checkpoint: Checkpoint | None) -> None:
        """Continue seq after what the pipeline holds; tape high-water marks from the
        source's checkpoint, so a restart does not re-deliver the re-sent snapshot."""
        self._batches.resume(sequences)
        tape = (checkpoint or {}).get("tape")
        if isinstance(tape, dict):
            for dx, key in tape.items():
                if isinstance(key, int) and key > self.tape.last_key.get(dx, -1):
                    self.tape.last_key[dx] = key

    def checkpoint(self) -> Checkpoint:
        return {"tape": dict(self.tape.last_key)}

    def new_connection(self) -> None:
        self.fields.reset()
        self.tape.new_connection()
        self.greeks.new_connection()

    def feed_data(self, data: Any, recv_ns: int) -> Output:
        decoded = decode_feed_data(data, self.fields)
        out = Output({}, list(decoded.problems), Counter(), [], False)
        for event_type in decoded.unknown_types:
            out.counts["unknown_event_type"] += 1
            out.counts[f"unknown_event_type.{event_type}"] += 1
        parts: dict[Kind, list[pa.RecordBatch]] = {}
        for run in decoded.runs:
            handler = self._handlers.get(run.event_type)
            if handler is None:
                out.counts["unknown_event_type"] += run.size
                out.counts[f"unknown_event_type.{run.event_type}"] += run.size
                continue
            try:
                made = handler(run, recv_ns, out)
            except ParseError as exc:
                out.problems.append(f"{run.event_type}: {exc}")
                continue
            if made is not None:
                kind = Kind(made.schema.metadata[b"tickpipe.kind"].decode())
                parts.setdefault(kind, []).append(made)
        options = self.options.flush(recv_ns, self.source)
        if options is not None:
            parts.setdefault(Kind.OPTION, []).append(self._batches.numbered(Kind.OPTION, options))
        out.batches = {
            kind: batches[0] if len(batches) == 1 else pa.concat_batches(batches)
            for kind, batches in parts.items()
        }
        return out

    def _quote(self, run: Run, recv_ns: int, out: Output) -> pa.RecordBatch | None:
        syms = self._symbols(run, out)
        n = run.size
        bid, ask = floats(run.column("bidPrice"), n), floats(run.column("askPrice"), n)
        quoted_ms = np.maximum(ints(run.column("bidTime"), n), ints(run.column("askTime"), n))
        nanos = np.where(quoted_ms > 0, ints(run.column("timeNanoPart"), n), 0)
        ms = np.where(quoted_ms > 0, quoted_ms, ints(run.column("eventTime"), n))
        ts = _ns(ms, nanos, recv_ns)
        if syms.option.any():
            rows = syms.rows(option=True)
            slots = self._slots(syms, rows)
            self.options.update(slots, {"bid": bid[rows], "ask": ask[rows]}, ts[rows])
        rows = syms.rows(option=False)
        if rows.size == 0:
            return None
        bid_size, ask_size = floats(run.column("bidSize"), n), floats(run.column("askSize"), n)
        columns = {
            "ts_event": ts[rows],
            "ts_recv": np.full(rows.size, recv_ns, np.int64),
            "bid": missing(bid[rows], Kind.QUOTE, "bid"),
            "bid_size": missing(bid_size[rows], Kind.QUOTE, "bid_size"),
            "ask": missing(ask[rows], Kind.QUOTE, "ask"),
            "ask_size": missing(ask_size[rows], Kind.QUOTE, "ask_size"),
        }
        return self._batches.batch(Kind.QUOTE, columns, syms.codes[rows], syms.canonical)

    def _time_and_sale(self, run: Run, recv_ns: int, out: Output) -> pa.RecordBatch | None:
        syms = self._symbols(run, out)
        rows = syms.rows(option=None)
        if rows.size == 0:
            return None
        n = run.size
        time_ms = ints(run.column("time"), n)
        ms = np.where(time_ms > 0, time_ms, ints(run.column("eventTime"), n))
        ts = _ns(ms, ints(run.column("timeNanoPart"), n), recv_ns)
        index = ints(run.column("index"), n)
        sequence = ints(run.column("sequence"), n) & 0x3FFFFF
        fallback = ((ms // 1000) << 32) | ((ms % 1000) << 22) | sequence  # dxFeed's own layout
        take = pa.array(rows)
        codes = pa.array(syms.codes[rows])
        table = pa.table(
            {
                "dx": pa.array(syms.dx, pa.string()).take(codes),
                "symbol": pa.array(syms.canonical, pa.string()).take(codes),
                "ts_event": ts[rows],
                "price": floats(run.column("price"), n)[rows],
                "size": floats(run.column("size"), n)[rows],
                "exchange": texts(run.column("exchangeCode"), n).take(take),
                "conditions": texts(run.column("exchangeSaleConditions"), n).take(take),
                "aggressor": _aggressor(run.column("aggressorSide"), n).take(take),
                "type": texts(run.column("type"), n).take(take),
                "key": np.where(index != 0, index, fallback)[rows],
                "flags": ints(run.column("eventFlags"), n)[rows],
            }
        )
        before = self.tape.last_key.copy()
        table = self.tape.apply(table)
        out.tape_moved = out.tape_moved or self.tape.last_key != before
        table = self._cancels(table, out)
        if table.num_rows == 0:
            return None
        col = {name: table.column(name).combine_chunks() for name in table.column_names}
        columns = {
            "ts_event": col["ts_event"],
            "ts_recv": np.full(table.num_rows, recv_ns, np.int64),
            "price": col["price"],
            "size": col["size"],
            "exchange": col["exchange"],
            "conditions": col["conditions"],
            "aggressor": col["aggressor"],
        }
        index_of: dict[str, int] = {}
        symbols = col["symbol"].to_pylist()
        out_codes = np.fromiter((index_of.setdefault(x, len(index_of)) for x in symbols), np.int64)
        return self._batches.batch(Kind.TRADE, columns, out_codes, list(index_of))

    def _cancels(self, table: pa.Table, out: Output) -> pa.Table:
        """CANCEL records leave the tape (kept aside for quarantine); corrections are prints."""
        types = set(table.column("type").to_pylist())
        if types <= _NEW_PRINT:  # the usual case: no compute kernels
            return table
        kind = pc.utf8_upper(table.column("type"))
        cancel = pc.fill_null(pc.is_in(kind, pa.array(["CANCEL", "2"])), False)
        corrections = pc.sum(pc.is_in(kind, pa.array(["CORRECTION", "1"]))).as_py()
        out.counts["trade_corrections"] += corrections or 0
        if not pc.any(cancel).as_py():
            return table
        cancelled = table.filter(cancel).drop_columns(["flags"]).to_pylist()
        out.cancels += cancelled
        out.counts["trade_cancels"] += len(cancelled)
        return table.filter(pc.invert(cancel))

    def _trade(self, run: Run, recv_ns: int, out: Output) -> pa.RecordBatch | None:
        """Trade is the last regular-hours print, not the tape: state only."""
        syms = self._symbols(run, out)
        n = run.size
        time_ms = ints(run.column("time"), n)
        ms = np.where(time_ms > 0, time_ms, ints(run.column("eventTime"), n))
        ts = _ns(ms, ints(run.column("timeNanoPart"), n), recv_ns)
        price, volume = floats(run.column("price"), n), floats(run.column("dayVolume"), n)
        if syms.option.any():
            rows = syms.rows(option=True)
            values = {"last": price[rows], "volume": volume[rows]}
            self.options.update(self._slots(syms, rows), values, ts[rows])
        size = floats(run.column("size"), n)
        for row in _last_rows(syms.codes, syms.rows(option=False)):
            listing = syms.listings[syms.codes[row]]
            assert listing is not None
            self.last_trades[listing.canonical] = LastTrade(
                float(price[row]), float(size[row]), float(volume[row]), int(ts[row])
            )
        out.counts["trade_updates"] += n
        return None

    def _greeks(self, run: Run, recv_ns: int, out: Output) -> pa.RecordBatch | None:
        syms = self._symbols(run, out)
        rows = syms.rows(option=True)
        out.counts["greeks_not_option"] += run.size - rows.size
        if rows.size == 0:
            return None
        n = run.size
        time_ms = ints(run.column("time"), n)
        ms = np.where(time_ms > 0, time_ms, ints(run.column("eventTime"), n))
        index = ints(run.column("index"), n)
        table = pa.table(
            {
                "dx": pa.array(syms.dx, pa.string()).take(pa.array(syms.codes[rows])),
                "key": np.where(index != 0, index, ms)[rows],
                "flags": ints(run.column("eventFlags"), n)[rows],
                "ts": _ns(ms, np.zeros(n, np.int64), recv_ns)[rows],
                "iv": floats(run.column("volatility"), n)[rows],
                "delta": floats(run.column("delta"), n)[rows],
                "gamma": floats(run.column("gamma"), n)[rows],
            }
        )
        table = self.greeks.apply(table)
        if table.num_rows == 0:
            return None
        table = table.sort_by("key")  # the latest greeks of each contract win
        dx = table.column("dx").to_pylist()
        listings = [self._listing(d) for d in dx]
        slots = self.options.slots(dx, [x for x in listings if x is not None])
        values = {name: table.column(name).to_numpy() for name in ("iv", "delta", "gamma")}
        self.options.update(slots, values, table.column("ts").to_numpy())
        return None

    def _summary(self, run: Run, recv_ns: int, out: Output) -> pa.RecordBatch | None:
        syms = self._symbols(run, out)
        n = run.size
        rows = syms.rows(option=True)
        out.counts["summary_not_option"] += n - rows.size
        if rows.size == 0:
            return None
        ts = _ns(ints(run.column("eventTime"), n), np.zeros(n, np.int64), recv_ns)
        oi = floats(run.column("openInterest"), n)
        self.options.update(self._slots(syms, rows), {"open_interest": oi[rows]}, ts[rows])
        return None

    def _symbols(self, run: Run, out: Output) -> _Symbols:
        column = run.column("eventSymbol")
        if column is None:
            raise ParseError("no eventSymbol field")
        index: dict[str, int] = {}
        try:
            # a dict beats Arrow's dictionary_encode up to ~1000 rows (measured 2 vs 20 us at 10)
            codes = np.fromiter(
                (index.setdefault(s, len(index)) for s in column), np.int64, len(column)
            )
        except TypeError:
            raise ParseError("eventSymbol values are not all text") from None
        names = list(index)
        if not all(isinstance(name, str) for name in names):
            raise ParseError("eventSymbol values are not all text")
        listings = [self._listing(name) for name in names]
        for code, (name, listing) in enumerate(zip(names, listings, strict=True)):
            if listing is None:
                out.counts["unmapped_symbol"] += int((codes == code).sum())
                out.problems.append(f"{run.event_type}: {name!r} has no canonical symbol")
        option = np.array([x is not None and x.is_option for x in listings], bool)
        mapped = np.array([x is not None for x in listings], bool)
        return _Symbols(codes, names, listings, option, mapped)

    def _listing(self, dx: str) -> Listing | None:
        if dx not in self._listings:
            try:
                self._listings[dx] = to_canonical(dx)
            except ValueError:
                self._listings[dx] = None
        return self._listings[dx]

    def _slots(self, syms: _Symbols, rows: IntArray) -> IntArray:
        codes = syms.codes[rows]
        unique, inverse = np.unique(codes, return_inverse=True)
        listings = [syms.listings[c] for c in unique.tolist()]
        per_code = self.options.slots(
            [syms.dx[c] for c in unique.tolist()], [x for x in listings if x is not None]
        )
        slots: IntArray = per_code[inverse]
        return slots


def _ns(ms: IntArray, nanos: IntArray, recv_ns: int) -> IntArray:
    """Epoch ms (+ ns within the ms) to ns; 0 (unknown) becomes the receive time."""
    out: IntArray = np.where(ms > 0, ms * NS_PER_MS + nanos, recv_ns)
    return out


def _aggressor(values: list[Any] | None, n: int) -> pa.Array:
    """``aggressorSide`` BUY/SELL as B/S; UNDEFINED, empty or absent is null."""
    if values is None:
        return pa.nulls(n, pa.string())
    return pa.array([_SIDES.get(v) if isinstance(v, str) else None for v in values], pa.string())


def _last_rows(codes: IntArray, rows: IntArray) -> list[int]:
    """The last of ``rows`` for each distinct code."""
    if rows.size == 0:
        return []
    picked = codes[rows][::-1]
    first = np.unique(picked, return_index=True)[1]
    return sorted(rows[::-1][first].tolist())
