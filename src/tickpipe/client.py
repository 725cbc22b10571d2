"""Python client for models and backtests: Polars DataFrames in, async event streams out.

    from tickpipe.client import TickClient
    tp = TickClient("http://127.0.0.1:8877", api_key="tp_...")
    bars = tp.bars("SPY", "now-1h", "now", interval="1m")   # Polars DataFrame
    ticks = tp.historical("SPY", "today", "now")            # Arrow under the hood
    ticks.to_pandas()                                        # if you prefer pandas
    async for event in tp.stream("SPY,QQQ"): ...             # live, as accepted

Times are ISO-8601 strings, dates, ``datetime`` objects, int nanoseconds since the epoch,
or relative strings the server resolves: ``now``, ``today`` (midnight UTC), either with an
offset (``now-15m``, ``today-1d``). Errors raise ``TickClientError`` with the server's code
and message (``status`` 503 ``hot_store_unavailable``: Redis is down, retry shortly).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterable
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import polars as pl
import pyarrow as pa
import websockets

TimeLike = str | int | dt.datetime


class TickClientError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def _time(value: TimeLike) -> str:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.isoformat()
    return str(value)


def _symbols(value: str | Iterable[str]) -> str:
    return value if isinstance(value, str) else ",".join(value)


class TickClient:
    def __init__(self, base_url: str, api_key: str, *, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = api_key
        self._http = httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout
        )

    def __enter__(self) -> TickClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _get(self, path: str, params: dict[str, Any]) -> httpx.Response:
        response = self._http.get(path, params={k: v for k, v in params.items() if v is not None})
        if response.status_code >= 400:
            try:
                err = response.json()["error"]
                raise TickClientError(response.status_code, err["code"], err["message"])
            except (ValueError, KeyError, TypeError):
                raise TickClientError(
                    response.status_code, "http_error", response.text[:200]
                ) from None
        return response

    def _json_frame(self, path: str, params: dict[str, Any]) -> pl.DataFrame:
        data = orjson.loads(self._get(path, params).content)["data"]
        return pl.DataFrame(data) if data else pl.DataFrame()

    def _arrow_frame(self, path: str, params: dict[str, Any]) -> pl.DataFrame:
        raw = self._get(path, params | {"format": "arrow"}).content
        table = pa.ipc.open_stream(pa.py_buffer(raw)).read_all()
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        return frame

    def realtime(
        self, symbols: str | Iterable[str], limit: int = 100, types: str | None = None
    ) -> pl.DataFrame:
        """The latest ``limit`` events *per symbol and per type*, from the hot store: with
        the default types (trade and quote), ``limit=50`` returns up to 100 rows per symbol.
        Pass ``types="trade"`` for one type."""
        return self._json_frame(
            "/api/v1/ticks/realtime", {"symbols": _symbols(symbols), "limit": limit, "types": types}
        )

    def latest_quotes(self, symbols: str | Iterable[str]) -> pl.DataFrame:
        return self._json_frame("/api/v1/quotes/latest", {"symbols": _symbols(symbols)})

    def historical(
        self,
        symbols: str | Iterable[str],
        start: TimeLike,
        end: TimeLike,
        *,
        type: str = "trade",
        asof_quotes: bool = False,
    ) -> pl.DataFrame:
        """Raw events of one type in [start, end), downloaded as Arrow (no paging needed)."""
        return self._arrow_frame(
            "/api/v1/ticks/historical",
            {
                "symbols": _symbols(symbols),
                "start_time": _time(start),
                "end_time": _time(end),
                "types": type,
                "asof": "quote" if asof_quotes else None,
            },
        )

    def bars(
        self,
        symbols: str | Iterable[str],
        start: TimeLike,
        end: TimeLike,
        interval: str = "1m",
        *,
        fill: bool = False,
    ) -> pl.DataFrame:
        """OHLCV bars: symbol, time (bucket start, int ns), open, high, low, close, volume,
        trades, vwap."""
        return self._arrow_frame(
            "/api/v1/ticks/historical",
            {
                "symbols": _symbols(symbols),
                "start_time": _time(start),
                "end_time": _time(end),
                "interval": interval,
                "fill": "prev" if fill else None,
            },
        )

    async def stream(
        self, symbols: str | Iterable[str], types: str | None = None, *, conflate_ms: int = 0
    ) -> AsyncIterator[dict[str, Any]]:
        """Live events, one dict each, as the pipeline accepts them. ``conflate_ms`` (10 to
        60,000) asks for at most one batch per interval holding only the latest event per
        symbol and type (dashboards, slow links). A client that stops reading is dropped by
        the server: this raises ``TickClientError`` with code ``slow_consumer``."""
        ws_url = self.base_url.replace("http://", "ws://").replace("https://", "wss://")
        query = f"symbols={quote(_symbols(symbols), safe=',$/')}"
        query += f"&types={types}" if types else ""
        query += f"&conflate={conflate_ms}" if conflate_ms else ""
        headers = {"Authorization": f"Bearer {self._key}"}
        async with websockets.connect(
            f"{ws_url}/api/v1/stream?{query}", additional_headers=headers
        ) as ws:
            async for message in ws:
                payload = orjson.loads(message)
                if isinstance(payload, dict):
                    if "error" in payload:
                        err = payload["error"]
                        raise TickClientError(0, err["code"], err["message"])
                    continue  # the subscription acknowledgement
                for event in payload:
                    yield event
