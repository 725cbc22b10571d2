"""The DuckDB catalog file ``data/tick_data.db``: views over the lake for people and tools.

DuckDB lets one read-write process own a database file, so the pipeline opens it only
for a moment to (re)create views, and never queries through it: its own queries read
Parquet through in-memory connections (see ``query.py``). If someone holds the file
open, the refresh is skipped and retried later.
"""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb

from tickpipe.store import layout

log = logging.getLogger(__name__)


def datasets_in_lake(lake_dir: Path) -> list[str]:
    if not lake_dir.is_dir():
        return []
    return sorted(
        d.name
        for d in lake_dir.iterdir()
        if d.is_dir() and any(d.glob(f"date=*/*{layout.LAKE_SUFFIX}"))
    )


def view_sql(lake_dir: Path, dataset: str) -> str:
    pattern = (lake_dir.resolve() / dataset / "date=*" / f"*{layout.LAKE_SUFFIX}").as_posix()
    return (
        f'CREATE OR REPLACE VIEW "{dataset}" AS SELECT *, make_timestamp(ts_event // 1000) AS time '
        f"FROM read_parquet('{pattern}', hive_partitioning = true, union_by_name = true)"
    )


def refresh_catalog(catalog_path: Path, lake_dir: Path, known: set[str]) -> set[str]:
    """Create views for datasets not yet in ``known``; returns the datasets now viewed."""
    present = set(datasets_in_lake(lake_dir))
    if present <= known:
        return known
    try:
        con = duckdb.connect(str(catalog_path))
    except duckdb.Error as exc:
        log.info("catalog %s busy (%s); will retry", catalog_path, exc)
        return known
    try:
        for dataset in sorted(present):
            con.execute(view_sql(lake_dir, dataset))
    finally:
        con.close()
    return present
