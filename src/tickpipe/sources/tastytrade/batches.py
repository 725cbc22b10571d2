"""Columns to event-model batches, with ``seq`` numbered per (kind, symbol).

``seq`` counts 1, 2, 3... per (kind, canonical symbol) and continues across messages,
reconnects and (through ``resume``) restarts: the quality stage reads a repeated seq as a
duplicate and a jump as a sequence gap, so a feed that numbers its own events must never
start over.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from tickpipe.events import SCHEMAS, Kind
from tickpipe.sources.base import SeqCheckpoint

IntArray = npt.NDArray[np.int64]


class Batcher:
    def __init__(self, source: str) -> None:
        self._source = source
        self._seq: dict[tuple[Kind, str], int] = {}

    def resume(self, sequences: SeqCheckpoint) -> None:
        """Continue after the last seq the pipeline holds for each (kind, symbol)."""
        for (kind, symbol), (seq, _) in sequences.items():
            self._seq[(kind, symbol)] = max(self._seq.get((kind, symbol), 0), seq)

    def batch(
        self, kind: Kind, columns: dict[str, Any], codes: IntArray, names: list[str]
    ) -> pa.RecordBatch:
        """One batch of ``kind``; ``codes`` index ``names`` (canonical symbols) per row."""
        n = codes.size
        columns["symbol"] = pa.array(names, pa.string()).take(pa.array(codes))
        columns["source"] = pa.array([self._source] * n, pa.string())
        columns["seq"] = self.number(kind, codes, names)
        arrays = [_arrow(columns.get(name), kind_type, n) for name, kind_type in _FIELDS[kind]]
        return pa.RecordBatch.from_arrays(arrays, schema=SCHEMAS[kind])

    def number(self, kind: Kind, codes: IntArray, names: list[str]) -> IntArray:
        """``seq`` = 1, 2, 3... per (kind, symbol), continuing across messages."""
        if len(set(names)) < len(names):  # two DXLink names, one canonical symbol
            unique = list(dict.fromkeys(names))
            remap = np.array([unique.index(name) for name in names], np.int64)
            return self.number(kind, remap[codes], unique)
        counts = np.bincount(codes, minlength=len(names))
        order = np.argsort(codes, kind="stable")
        position = np.empty(codes.size, np.int64)
        position[order] = np.arange(codes.size) - (np.cumsum(counts) - counts)[codes[order]]
        base = np.fromiter((self._seq.get((kind, s), 0) for s in names), np.int64, len(names))
        for name, start, count in zip(names, base.tolist(), counts.tolist(), strict=True):
            if count:
                self._seq[(kind, name)] = start + count
        seq: IntArray = base[codes] + position + 1
        return seq

    def numbered(self, kind: Kind, batch: pa.RecordBatch) -> pa.RecordBatch:
        """``batch`` with its ``seq`` column numbered (rows built elsewhere)."""
        index: dict[str, int] = {}
        symbols = batch.column("symbol").to_pylist()
        codes = np.fromiter((index.setdefault(s, len(index)) for s in symbols), np.int64)
        seq = self.number(kind, codes, list(index))
        at = batch.schema.get_field_index("seq")
        return batch.set_column(at, batch.schema.field(at), pa.array(seq, pa.int64()))


_NULLABLE = {kind: {f.name: f.nullable for f in schema} for kind, schema in SCHEMAS.items()}
_FIELDS = {kind: [(f.name, f.type) for f in schema] for kind, schema in SCHEMAS.items()}


def missing(values: npt.NDArray[np.float64], kind: Kind, field: str) -> pa.Array:
    """NaN as null where the event model allows a missing value, else left as NaN."""
    if _NULLABLE[kind][field]:
        return pa.array(values, pa.float64(), from_pandas=True)
    return pa.array(values, pa.float64())


def _arrow(value: Any, kind: pa.DataType, n: int) -> pa.Array:
    if value is None:
        return pa.nulls(n, kind)
    if isinstance(value, pa.ChunkedArray):
        value = value.combine_chunks()
    if isinstance(value, pa.Array):
        return value if value.type == kind else value.cast(kind)
    return pa.array(value, kind)
