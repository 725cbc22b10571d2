"""The quality stage's vector helpers against plain loops: grouping a batch by symbol, and
the running maximum per group that the duplicate, out-of-order and gap rules read."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tickpipe import columnar
from tickpipe.columnar import group_by_symbol, segmented_prev_max

NO_TS = np.iinfo(np.int64).min
QUICK = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@QUICK
@given(
    counts=st.lists(st.integers(0, 12), min_size=1, max_size=8),
    data=st.data(),
    by_matrix=st.booleans(),
)
def test_segmented_prev_max_equals_a_loop(
    counts: list[int], data: st.DataObject, by_matrix: bool
) -> None:
    stamps = st.one_of(st.just(int(NO_TS)), st.integers(-(2**40), 2**40))
    values = data.draw(st.lists(stamps, min_size=sum(counts), max_size=sum(counts)))
    initial = data.draw(st.lists(stamps, min_size=len(counts), max_size=len(counts)))
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    expected: list[int] = []
    for g, (start, count) in enumerate(zip(starts.tolist(), counts, strict=True)):
        best = initial[g]
        for v in values[start : start + count]:
            expected.append(best)
            best = max(best, v)
    with mock.patch.object(columnar, "MATRIX_FACTOR", 10**6 if by_matrix else 0):
        got = segmented_prev_max(
            np.array(values, dtype=np.int64), starts, np.array(initial, dtype=np.int64)
        )
    assert got.tolist() == expected


@QUICK
@given(symbols=st.lists(st.sampled_from(["SPY", "QQQ", "/ES", "Ä", "a"]), min_size=1, max_size=40))
def test_group_by_symbol_sorts_stably_by_symbol(symbols: list[str]) -> None:
    batch = pa.record_batch({"symbol": symbols, "row": list(range(len(symbols)))})
    grouped = group_by_symbol(batch)
    expected = sorted(range(len(symbols)), key=lambda i: symbols[i])  # sorted() is stable
    assert grouped.batch.column("row").to_pylist() == expected
    assert grouped.symbols == sorted(set(symbols))
    assert grouped.counts.tolist() == [symbols.count(s) for s in grouped.symbols]
    assert grouped.starts.tolist() == np.concatenate(([0], np.cumsum(grouped.counts)[:-1])).tolist()
    ordered = [symbols[i] for i in expected]
    assert [grouped.symbols[c] for c in grouped.codes.tolist()] == ordered
