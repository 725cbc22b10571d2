"""``GET /marketdata/v1/chains`` responses -> OptionQuote batches. Pure: no I/O.

The response nests contracts as ``callExpDateMap["2025-05-20:9"]["5765.0"] -> [contract]``
with the real (not the OpenAPI) key names: ``bid``, ``ask``, ``last``, ``totalVolume``,
``openInterest``, ``volatility`` (implied volatility in **percent**), ``delta``, ``gamma``,
``quoteTimeInLong`` (epoch ms). Greeks and volatility are -999 (or, in older payloads, the
string "NaN") when Schwab could not compute them: they become NaN, and the GEX engine solves
IV from the mid itself. ``openInterest`` 0 is a real value and is kept. One contract of the
recorded $SPX chain::

    {"putCall": "CALL", "symbol": "SPXW  250520C05765000", "bid": 28.9, "ask": 29.9,
     "last": 28.3, "totalVolume": 2, "volatility": 17.019, "delta": 0.275, "gamma": 0.002,
     "openInterest": 0, "strikePrice": 5765, "quoteTimeInLong": 1746824389531, ...}

The chain's own underlying price becomes a Quote of the underlying (bid and ask from the
``underlying`` object) or, for an index, which has a value but no bid and ask, a Trade of
size 0 marked ``conditions="index"``: that is the spot the GEX engine pairs with the chain.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from typing import Any

import orjson
import pyarrow as pa

from tickpipe.errors import ParseError
from tickpipe.events import SCHEMAS, Kind
from tickpipe.sources.base import Batches, SeqCheckpoint
from tickpipe.sources.schwab.decoded import MS, NAN, Reject, dump, missing_as_nan
from tickpipe.symbols import occ_symbol

RIGHTS = {"CALL": "C", "PUT": "P"}


@dataclasses.dataclass
class ChainResult:
    batches: Batches
    contracts: int
    truncated: bool
    underlying_price: float
    rejects: list[Reject]


def _num(value: Any) -> float:
    """A number, or NaN for anything else (None, "NaN", a missing key)."""
    if value.__class__ is float or value.__class__ is int:
        return float(value)
    return NAN


class ChainParser:
    """Numbers OptionQuotes per contract and remembers the last underlying print sent."""

    def __init__(self, *, equity_size_multiplier: float = 1.0) -> None:
        self._seqs: dict[Kind, dict[str, int]] = {kind: {} for kind in Kind}
        self._spot_sent: dict[str, tuple[float, ...]] = {}
        self._size_mult = equity_size_multiplier

    def resume(self, sequences: SeqCheckpoint) -> None:
        for (kind, symbol), (seq, _) in sequences.items():
            counters = self._seqs[kind]
            counters[symbol] = max(counters.get(symbol, 0), seq)

    def parse(
        self, body: bytes | str | dict[str, Any], recv_ns: int, requested: str
    ) -> ChainResult:
        if isinstance(body, dict):
            chain = body
        else:
            try:
                chain = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise ParseError(
                    f"chain is not JSON: {exc}", source="schwab-chains", symbol=requested, raw=body
                ) from exc
        if not isinstance(chain, dict):
            raise ParseError(
                "chain is not a JSON object",
                source="schwab-chains",
                symbol=requested,
                raw=str(body)[:2000],
            )
        named = chain.get("symbol")
        underlying: str = named if isinstance(named, str) and named else requested
        cols: dict[str, list[Any]] = {name: [] for name in SCHEMAS[Kind.OPTION].names}
        rejects: list[Reject] = []
        seqs = self._seqs[Kind.OPTION]
        for side in ("callExpDateMap", "putExpDateMap"):
            expirations = chain.get(side) or {}
            if not isinstance(expirations, dict):
                rejects.append(
                    Reject(
                        dump(expirations)[:2000],
                        f"{side} is not an object",
                        Kind.OPTION,
                        underlying,
                    )
                )
                continue
            for exp_key, strikes in expirations.items():
                try:
                    expiry = dt.date.fromisoformat(str(exp_key).split(":", 1)[0])
                except ValueError:
                    rejects.append(
                        Reject(
                            dump({exp_key: strikes})[:65536],
                            f"expiration key {exp_key!r} is not YYYY-MM-DD:days",
                            Kind.OPTION,
                            underlying,
                        )
                    )
                    continue
                if not isinstance(strikes, dict):
                    continue
                for contracts in strikes.values():
                    for c in contracts if isinstance(contracts, list) else [contracts]:
                        problem = _contract(c, expiry, underlying, recv_ns, cols, seqs)
                        if problem is not None:
                            rejects.append(Reject(dump(c), problem, Kind.OPTION, underlying))
        n = len(cols["symbol"])
        batches: Batches = {}
        if n:
            cols["ts_recv"] = [recv_ns] * n
            cols["source"] = [""] * n
            schema = SCHEMAS[Kind.OPTION]
            batches[Kind.OPTION] = pa.RecordBatch.from_arrays(
                [pa.array(cols[f.name], f.type) for f in schema], schema=schema
            )
        spot = _num(chain.get("underlyingPrice"))
        self._underlying(chain, underlying, spot, recv_ns, batches)
        return ChainResult(
            batches=batches,
            contracts=n,
            truncated=chain.get("isChainTruncated") is True,
            underlying_price=spot,
            rejects=rejects,
        )

    def _underlying(
        self, chain: dict[str, Any], symbol: str, spot: float, recv_ns: int, batches: Batches
    ) -> None:
        """The chain's spot as a Quote (or, for an index, a size-0 Trade), when it moved."""
        found = chain.get("underlying")
        quote: dict[str, Any] = found if isinstance(found, dict) else {}
        bid, ask = _num(quote.get("bid")), _num(quote.get("ask"))
        is_index = chain.get("isIndex") is True or symbol.startswith("$")
        if not is_index and bid > 0 and ask > 0:
            stamp = _num(quote.get("quoteTime"))
            sizes = (_num(quote.get("bidSize")), _num(quote.get("askSize")))
            if self._spot_sent.get(symbol) == (bid, ask, *sizes, stamp):
                return
            self._spot_sent[symbol] = (bid, ask, *sizes, stamp)
            bid_size, ask_size = (0.0 if math.isnan(s) else s * self._size_mult for s in sizes)
            ts = int(stamp) * MS if stamp > 0 else recv_ns
            quote_row: dict[str, Any] = {
                "ts_event": ts,
                "bid": bid,
                "bid_size": bid_size,
                "ask": ask,
                "ask_size": ask_size,
            }
            batches[Kind.QUOTE] = self._one(Kind.QUOTE, symbol, recv_ns, quote_row)
            return
        last = _num(quote.get("last"))
        price = last if last > 0 else spot
        if not price > 0:
            return
        stamp = _num(quote.get("tradeTime"))
        if self._spot_sent.get(symbol) == (price, stamp):
            return
        self._spot_sent[symbol] = (price, stamp)
        ts = int(stamp) * MS if stamp > 0 else recv_ns
        row: dict[str, Any] = {
            "ts_event": ts,
            "price": price,
            "size": 0.0,
            "conditions": "index" if is_index else "chain",
        }
        batches[Kind.TRADE] = self._one(Kind.TRADE, symbol, recv_ns, row)

    def _one(self, kind: Kind, symbol: str, recv_ns: int, row: dict[str, Any]) -> pa.RecordBatch:
        counters = self._seqs[kind]
        counters[symbol] = counters.get(symbol, 0) + 1
        full: dict[str, Any] = dict.fromkeys(SCHEMAS[kind].names)
        full.update(row, ts_recv=recv_ns, symbol=symbol, source="", seq=counters[symbol])
        return pa.RecordBatch.from_pylist([full], schema=SCHEMAS[kind])


def _contract(
    c: Any,
    expiry: dt.date,
    underlying: str,
    recv_ns: int,
    cols: dict[str, list[Any]],
    seqs: dict[str, int],
) -> str | None:
    """Append one contract's row to ``cols``; a reason when it cannot become an OptionQuote."""
    if not isinstance(c, dict):
        return "contract is not an object"
    right = RIGHTS.get(c.get("putCall"))  # type: ignore[arg-type]
    strike, bid, ask = _num(c.get("strikePrice")), _num(c.get("bid")), _num(c.get("ask"))
    symbol = c.get("symbol")
    if right is None or not isinstance(symbol, str):
        return "contract without putCall CALL/PUT and a symbol"
    if math.isnan(strike) or math.isnan(bid) or math.isnan(ask):
        return "contract without numeric strikePrice, bid and ask"
    if len(symbol) != 21:  # not the padded OSI form: rebuild it
        root = c.get("optionRoot")
        root = root if isinstance(root, str) else underlying
        try:
            symbol = occ_symbol(root, expiry, right, strike)
        except ValueError as exc:
            return str(exc)
    stamp = _num(c.get("quoteTimeInLong"))
    volume, oi = _num(c.get("totalVolume")), _num(c.get("openInterest"))
    seq = seqs.get(symbol, 0) + 1
    seqs[symbol] = seq
    cols["ts_event"].append(int(stamp) * MS if stamp > 0 else recv_ns)
    cols["symbol"].append(symbol)
    cols["underlying"].append(underlying)
    cols["expiry"].append(expiry)
    cols["strike"].append(strike)
    cols["right"].append(right)
    cols["bid"].append(bid)
    cols["ask"].append(ask)
    cols["last"].append(_num(c.get("last")))
    cols["volume"].append(0.0 if math.isnan(volume) else volume)
    cols["open_interest"].append(0.0 if math.isnan(oi) else oi)
    cols["iv"].append(missing_as_nan(_num(c.get("volatility"))) / 100)
    cols["delta"].append(missing_as_nan(_num(c.get("delta"))))
    cols["gamma"].append(missing_as_nan(_num(c.get("gamma"))))
    cols["seq"].append(seq)
    return None
