"""Indexed DXLink events (TimeAndSale, Greeks): snapshots, transactions and removals.

dxFeed marks indexed events with ``eventFlags`` bits::

    TX_PENDING 0x01   REMOVE_EVENT 0x02   SNAPSHOT_BEGIN 0x04   SNAPSHOT_END 0x08
    SNAPSHOT_SNIP 0x10   SNAPSHOT_MODE 0x40

A snapshot (newest first) is buffered from BEGIN until END or SNIP and applied whole, oldest
first; events flagged TX_PENDING wait for the next event without it; a REMOVE event is a
state change, never data (``14`` = BEGIN|END|REMOVE is an empty snapshot). With
``dedup``, a completed snapshot drops events at or below the last key already applied for
the symbol: after a reconnect the server re-sends its recent tape, and those trades are
already in the lake. Live events pass in arrival order (a late print is still a print).

Live messages carry no flags, so the common case is one vector check; the per-event loop
runs only for messages with flags or while a symbol has a snapshot or transaction open.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa

TX_PENDING = 0x01
REMOVE_EVENT = 0x02
SNAPSHOT_BEGIN = 0x04
SNAPSHOT_END = 0x08
SNAPSHOT_SNIP = 0x10


@dataclasses.dataclass
class IndexedStats:
    snapshots: int = 0
    removed: int = 0
    """REMOVE events (busted prints, empty snapshots): state changes, not data"""
    duplicates: int = 0
    """snapshot events already applied before (a re-sent snapshot after a reconnect)"""


class IndexedStream:
    """Per-symbol snapshot/transaction state of one indexed event type.

    ``apply`` takes a table with at least ``dx`` (the DXLink symbol), ``flags`` and ``key``
    (the event index, monotone in time for TimeAndSale) columns and returns the rows to
    use, in order. ``last_key`` survives reconnects; open snapshots and transactions don't.
    """

    def __init__(self, *, dedup: bool) -> None:
        self.dedup = dedup
        self.last_key: dict[str, int] = {}
        self.stats = IndexedStats()
        self._snapshot: dict[str, list[tuple[pa.Table, int]]] = {}
        self._pending: dict[str, list[tuple[pa.Table, int]]] = {}

    def new_connection(self) -> None:
        """A half-received snapshot or transaction from a dead connection is discarded:
        the server sends the whole snapshot again on the new one."""
        self._snapshot.clear()
        self._pending.clear()

    @property
    def open(self) -> bool:
        return bool(self._snapshot or self._pending)

    def apply(self, table: pa.Table) -> pa.Table:
        flags = table.column("flags").to_numpy()
        if not self.open and not flags.any():
            self._advance(table)
            return table
        pieces: list[tuple[pa.Table, int]] = []
        dx = table.column("dx").to_pylist()
        for row, (symbol, flag) in enumerate(zip(dx, flags.tolist(), strict=True)):
            if flag & SNAPSHOT_BEGIN:
                self._snapshot[symbol] = []
                self._pending.pop(symbol, None)
            if symbol in self._snapshot:
                self._snapshot[symbol].append((table, row))
                if flag & (SNAPSHOT_END | SNAPSHOT_SNIP):
                    pieces += self._complete_snapshot(symbol, self._snapshot.pop(symbol))
                continue
            if flag & TX_PENDING:
                self._pending.setdefault(symbol, []).append((table, row))
                continue
            for held in [*self._pending.pop(symbol, []), (table, row)]:
                if _flag(held) & REMOVE_EVENT:
                    self.stats.removed += 1
                else:
                    pieces.append(held)
                    self._raise_key(symbol, _key(held))
        return _gather(pieces, table.schema)

    def _complete_snapshot(
        self, symbol: str, held: list[tuple[pa.Table, int]]
    ) -> list[tuple[pa.Table, int]]:
        self.stats.snapshots += 1
        kept = []
        for item in held:
            if _flag(item) & REMOVE_EVENT:
                self.stats.removed += 1
            else:
                kept.append(item)
        kept.sort(key=_key)
        if self.dedup:
            floor = self.last_key.get(symbol)
            if floor is not None:
                fresh = [item for item in kept if _key(item) > floor]
                self.stats.duplicates += len(kept) - len(fresh)
                kept = fresh
        for item in kept:
            self._raise_key(symbol, _key(item))
        return kept

    def _raise_key(self, symbol: str, key: int) -> None:
        if key > self.last_key.get(symbol, -1):
            self.last_key[symbol] = key

    def _advance(self, table: pa.Table) -> None:
        """Fast path: the highest key per symbol of a flag-free table."""
        if table.num_rows == 0:
            return
        encoded = table.column("dx").combine_chunks().dictionary_encode()
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        keys = table.column("key").to_numpy()
        highest = np.full(len(encoded.dictionary), np.iinfo(np.int64).min, np.int64)
        np.maximum.at(highest, codes, keys)
        for symbol, key in zip(encoded.dictionary.to_pylist(), highest.tolist(), strict=True):
            self._raise_key(symbol, key)


def _flag(item: tuple[pa.Table, int]) -> int:
    table, row = item
    value: int = table.column("flags")[row].as_py()
    return value


def _key(item: tuple[pa.Table, int]) -> int:
    table, row = item
    value: int = table.column("key")[row].as_py()
    return value


def _gather(pieces: list[tuple[pa.Table, int]], schema: pa.Schema) -> pa.Table:
    """The chosen rows, in order, from this message's table and buffered earlier ones."""
    if not pieces:
        return schema.empty_table()
    parts: list[pa.Table] = []
    run_table, run_rows = pieces[0][0], [pieces[0][1]]
    for table, row in pieces[1:]:
        if table is run_table:
            run_rows.append(row)
            continue
        parts.append(run_table.take(pa.array(run_rows, pa.int64())))
        run_table, run_rows = table, [row]
    parts.append(run_table.take(pa.array(run_rows, pa.int64())))
    return pa.concat_tables(parts).combine_chunks()
