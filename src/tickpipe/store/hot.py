"""The HotStore protocol: recent events per (kind, symbol) and the latest quote per symbol.

Two implementations pass one contract test suite: ``MemoryHotStore`` (default, no server)
and ``RedisHotStore`` (``TICKPIPE_REDIS_URL``).
"""

from __future__ import annotations

from typing import Protocol

import pyarrow as pa

from tickpipe.columnar import Grouped
from tickpipe.events import Kind


class HotStore(Protocol):
    name: str

    async def write(self, kind: Kind, grouped: Grouped) -> None:
        """Add one accepted, symbol-grouped batch."""
        ...

    async def latest(self, kind: Kind, symbol: str, limit: int) -> pa.Table:
        """Up to ``limit`` most recent events, oldest first."""
        ...

    async def latest_quotes(self, symbols: list[str]) -> pa.Table:
        """The latest quote of each symbol that has one, in the order asked."""
        ...

    async def symbols(self, kind: Kind) -> list[str]: ...

    def version(self, kind: Kind, symbol: str) -> int | None:
        """A number that changes whenever ``latest(kind, symbol)`` may; None if the store
        cannot tell cheaply (then readers must not cache)."""
        ...

    async def close(self) -> None: ...


def serialize(batch: pa.RecordBatch) -> bytes:
    """One batch as an Arrow IPC message without its schema (the kind implies it)."""
    data: bytes = batch.serialize().to_pybytes()
    return data


def deserialize(data: bytes, schema: pa.Schema) -> pa.RecordBatch:
    return pa.ipc.read_record_batch(pa.py_buffer(data), schema)
