"""In-process hot store: a ring of Arrow slices per (kind, symbol), trimmed by event count.

Each delivery adds one slice per symbol; a ring that collects more than ``MAX_SLICES``
small slices is merged into one batch, so thousands of thinly quoted option contracts
cost a few Arrow objects each, not one per delivery."""

from __future__ import annotations

from collections import deque

import pyarrow as pa

from tickpipe.columnar import Grouped
from tickpipe.events import SCHEMAS, Kind


class _Ring:
    __slots__ = ("rows", "slices", "version")

    def __init__(self) -> None:
        self.slices: deque[pa.RecordBatch] = deque()
        self.rows = 0
        self.version = 0


MAX_SLICES = 32


class MemoryHotStore:
    name = "memory"

    def __init__(self, capacity: int | dict[str, int]) -> None:
        self._capacity = capacity if isinstance(capacity, dict) else dict.fromkeys(Kind, capacity)
        self._rings: dict[tuple[Kind, str], _Ring] = {}
        self._quotes: dict[str, pa.RecordBatch] = {}

    async def write(self, kind: Kind, grouped: Grouped) -> None:
        capacity = self._capacity[kind]
        for symbol, part in grouped.slices():
            ring = self._rings.get((kind, symbol))
            if ring is None:
                ring = self._rings[(kind, symbol)] = _Ring()
            ring.slices.append(part)
            ring.rows += part.num_rows
            ring.version += 1
            while ring.rows - ring.slices[0].num_rows >= capacity:
                ring.rows -= ring.slices.popleft().num_rows
            if len(ring.slices) > MAX_SLICES:
                merged = pa.concat_batches(list(ring.slices))
                merged = merged.slice(max(merged.num_rows - capacity, 0))
                ring.slices = deque([merged])
                ring.rows = merged.num_rows
            if kind is Kind.QUOTE:
                self._quotes[symbol] = part.slice(part.num_rows - 1, 1)

    async def latest(self, kind: Kind, symbol: str, limit: int) -> pa.Table:
        ring = self._rings.get((kind, symbol))
        if ring is None or limit <= 0:
            return SCHEMAS[kind].empty_table()
        taken: list[pa.RecordBatch] = []
        rows = 0
        for part in reversed(ring.slices):
            taken.append(part)
            rows += part.num_rows
            if rows >= limit:
                break
        table = pa.Table.from_batches(list(reversed(taken)), schema=SCHEMAS[kind])
        limit = min(limit, self._capacity[kind])
        return table.slice(max(table.num_rows - limit, 0))

    async def latest_quotes(self, symbols: list[str]) -> pa.Table:
        rows = [self._quotes[s] for s in symbols if s in self._quotes]
        return pa.Table.from_batches(rows, schema=SCHEMAS[Kind.QUOTE])

    async def symbols(self, kind: Kind) -> list[str]:
        return sorted(sym for k, sym in self._rings if k is kind)

    def version(self, kind: Kind, symbol: str) -> int | None:
        ring = self._rings.get((kind, symbol))
        return 0 if ring is None else ring.version

    async def close(self) -> None:
        self._rings.clear()
