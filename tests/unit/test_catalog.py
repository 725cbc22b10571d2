"""The catalog file answers every dataset's name from the first second: no rows until the
dataset's first file is in the lake, never 'table does not exist'."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from tickpipe.datasets import DATASET_SCHEMAS, QUARANTINE
from tickpipe.events import Kind, Trade, to_batch
from tickpipe.store.catalog import refresh_catalog


def test_a_fresh_lake_has_an_empty_view_per_dataset_then_the_real_one(tmp_path: Path) -> None:
    lake, catalog = tmp_path / "lake", tmp_path / "tick_data.db"
    known = refresh_catalog(catalog, lake, set())
    with duckdb.connect(str(catalog), read_only=True) as con:
        for dataset, schema in DATASET_SCHEMAS.items():
            rel = con.sql(f'SELECT * FROM "{dataset}"')
            assert rel.fetchall() == [], dataset
            assert rel.columns[: len(schema)] == schema.names
            assert {"time", "date"} <= set(rel.columns)
        assert con.sql(f"SELECT rule, count(*) FROM {QUARANTINE} GROUP BY rule").fetchall() == []
    part = lake / "trade" / "date=2026-12-06"
    part.mkdir(parents=True)
    trade = Trade(1_796_000_000 * 10**9, 1_796_000_000 * 10**9, "SPY", 600.0, 1, "f", 1)
    pq.write_table(pa.Table.from_batches([to_batch(Kind.TRADE, [trade])]), part / "x.parquet")
    known = refresh_catalog(catalog, lake, known)
    with duckdb.connect(str(catalog), read_only=True) as con:
        assert con.sql("SELECT symbol, price FROM trade").fetchall() == [("SPY", 600.0)]
        assert con.sql("SELECT count(*) FROM quote").fetchall() == [(0,)]
    assert refresh_catalog(catalog, lake, known) == known  # nothing new: the file untouched
