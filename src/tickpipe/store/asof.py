"""Trades with the bid and ask prevailing at each one: an as-of join in DuckDB, whole
(JSON pages) or in pages that carry the prevailing quote from one to the next."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from tickpipe.events import SCHEMAS, Kind
from tickpipe.store.ranges import (
    NS,
    Ranges,
    after_condition,
    clamp,
    retry_once_on_vanished_file,
    symbol_params,
)


class AsofQueries(Ranges):
    @retry_once_on_vanished_file
    def trades_with_quotes(
        self,
        symbols: list[str],
        start_ns: int,
        end_ns: int,
        *,
        lookback_ns: int = 3600 * NS,
        limit: int | None = None,
        after: tuple[int, str, str, int] | None = None,
    ) -> pa.Table:
        """Each trade with the bid and ask prevailing at its time (an as-of join in DuckDB);
        quotes up to ``lookback_ns`` before ``start`` count as prevailing."""
        built = self._asof_sql(symbols, start_ns, end_ns, lookback_ns, limit, after)
        if built is None:
            return TRADES_ASOF_SCHEMA.empty_table()
        con, sql, params = built
        return con.sql(sql, params=params).to_arrow_table().cast(TRADES_ASOF_SCHEMA)

    @retry_once_on_vanished_file
    def prevailing_quotes(
        self, symbols: list[str], start_ns: int, end_ns: int, base: pa.Table | None
    ) -> pa.Table:
        """The latest quote per symbol among ``base`` (an earlier answer of this method)
        and the quotes in [start, end): symbol, ts_event, bid, bid_size, ask, ask_size."""
        start_ns, end_ns = clamp(start_ns), clamp(end_ns)
        con = self._con()
        params: dict[str, object] = {}
        parts = []
        if base is not None and base.num_rows:
            con.register("base", base)
            parts.append(f"SELECT {_QUOTE_SIDE}, -1 AS seq FROM base")
        quotes, more = self._from_clause(con, Kind.QUOTE.value, start_ns, end_ns)
        if quotes:
            params.update(more, start=start_ns, end=end_ns)
            in_symbols = symbol_params(symbols, params)
            parts.append(
                f"SELECT {_QUOTE_SIDE}, seq FROM {quotes} WHERE ts_event >= $start "
                f"AND ts_event < $end AND symbol IN ({in_symbols})"
            )
        if not parts:
            return _PREVAILING_SCHEMA.empty_table()
        latest = ", ".join(
            f"arg_max({c}, ts_event::HUGEINT * 18446744073709551616 + seq + 1) AS {c}"
            for c in _QUOTE_SIDE.split(", ")
            if c != "symbol"
        )
        sql = f"SELECT symbol, {latest} FROM ({' UNION ALL '.join(parts)}) GROUP BY symbol"
        return con.sql(sql, params=params).to_arrow_table().cast(_PREVAILING_SCHEMA)

    @retry_once_on_vanished_file
    def trades_with_quotes_page(
        self,
        symbols: list[str],
        start_ns: int,
        end_ns: int,
        after: tuple[int, str, str, int] | None,
        limit: int,
        prevailing: pa.Table,
    ) -> pa.Table:
        """Up to ``limit`` trades in [start, end) after ``after``, each with the bid and
        ask prevailing at its time among ``prevailing`` (the latest quote per symbol
        before ``start``, from ``prevailing_quotes``) and the quotes in [start, end)."""
        start_ns, end_ns = clamp(start_ns), clamp(end_ns)
        con = self._con()
        trades, params = self._from_clause(con, Kind.TRADE.value, start_ns, end_ns)
        if not trades:
            return TRADES_ASOF_SCHEMA.empty_table()
        params.update(start=start_ns, end=end_ns)
        in_symbols = symbol_params(symbols, params)
        where = ["ts_event >= $start", "ts_event < $end", f"symbol IN ({in_symbols})"]
        if after is not None:
            where.append(after_condition("", after, params))
        sides = []
        if prevailing.num_rows:
            con.register("prevailing", prevailing)
            sides.append(f"SELECT {_QUOTE_SIDE} FROM prevailing")
        quotes, more = self._from_clause(con, Kind.QUOTE.value, start_ns, end_ns)
        if quotes:
            params.update(more)
            sides.append(
                f"SELECT {_QUOTE_SIDE} FROM {quotes} WHERE ts_event >= $start "
                f"AND ts_event < $end AND symbol IN ({in_symbols})"
            )
        page = (
            f"SELECT * FROM {trades} WHERE {' AND '.join(where)} "
            f"ORDER BY ts_event, symbol, source, seq LIMIT {int(limit)}"
        )
        if sides:
            sql = (
                f"SELECT t.*, q.bid, q.bid_size, q.ask, q.ask_size FROM ({page}) t "
                f"ASOF LEFT JOIN ({' UNION ALL '.join(sides)}) q "
                "ON t.symbol = q.symbol AND t.ts_event >= q.ts_event "
                "ORDER BY t.ts_event, t.symbol, t.source, t.seq"
            )
        else:
            sql = (
                "SELECT *, NULL::DOUBLE AS bid, NULL::DOUBLE AS bid_size, NULL::DOUBLE AS ask, "
                f"NULL::DOUBLE AS ask_size FROM ({page}) ORDER BY ts_event, symbol, source, seq"
            )
        return con.sql(sql, params=params).to_arrow_table().cast(TRADES_ASOF_SCHEMA)

    def _asof_sql(
        self,
        symbols: list[str],
        start_ns: int,
        end_ns: int,
        lookback_ns: int,
        limit: int | None,
        after: tuple[int, str, str, int] | None,
    ) -> tuple[duckdb.DuckDBPyConnection, str, dict[str, object]] | None:
        start_ns, end_ns = clamp(start_ns), clamp(end_ns)
        q_start = clamp(start_ns - lookback_ns)
        con = self._con()
        trades, params = self._from_clause(con, Kind.TRADE.value, start_ns, end_ns)
        if not trades:
            return None
        quotes, qparams = self._from_clause(con, Kind.QUOTE.value, q_start, end_ns)
        params.update(qparams)
        where = [
            "t.ts_event >= $start",
            "t.ts_event < $end",
            f"t.symbol IN ({symbol_params(symbols, params)})",
        ]
        if after is not None:
            where.append(after_condition("t.", after, params))
        if quotes:
            join = (
                f"ASOF LEFT JOIN (SELECT symbol, ts_event, bid, bid_size, ask, ask_size FROM {quotes} "
                "WHERE ts_event >= $q_start AND ts_event < $end) q "
                "ON t.symbol = q.symbol AND t.ts_event >= q.ts_event"
            )
            cols = "q.bid, q.bid_size, q.ask, q.ask_size"
            params["q_start"] = q_start
        else:
            join = ""
            cols = "NULL::DOUBLE AS bid, NULL::DOUBLE AS bid_size, NULL::DOUBLE AS ask, NULL::DOUBLE AS ask_size"
        sql = (
            f"SELECT t.*, {cols} FROM {trades} t {join} WHERE {' AND '.join(where)} "
            "ORDER BY t.ts_event, t.symbol, t.source, t.seq"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        params.update(start=start_ns, end=end_ns)
        return con, sql, params


TRADES_ASOF_SCHEMA = pa.schema(
    [*SCHEMAS[Kind.TRADE]]
    + [pa.field(n, pa.float64()) for n in ("bid", "bid_size", "ask", "ask_size")]
)

_QUOTE_SIDE = "symbol, ts_event, bid, bid_size, ask, ask_size"
_PREVAILING_SCHEMA = pa.schema(
    [("symbol", pa.string()), ("ts_event", pa.int64())]
    + [pa.field(n, pa.float64()) for n in ("bid", "bid_size", "ask", "ask_size")]
)
