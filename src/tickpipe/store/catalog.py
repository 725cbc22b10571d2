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
import pyarrow as pa

from tickpipe.datasets import DATASET_SCHEMAS
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


EMPTY_VIEWS = "(every dataset has a view)"
"""the marker ``refresh_catalog`` puts in ``known`` once it made the empty views"""


def empty_view_sql(con: duckdb.DuckDBPyConnection, dataset: str, schema: pa.Schema) -> str:
    """A view with the dataset's columns and no rows, until its first file is in the lake:
    a query a user copies from the README works on a fresh data dir (it answers nothing,
    rather than 'table does not exist')."""
    types = con.from_arrow(schema.empty_table()).types
    columns = ", ".join(
        f'CAST(NULL AS {t}) AS "{f.name}"' for f, t in zip(schema, types, strict=True)
    )
    return (
        f'CREATE OR REPLACE VIEW "{dataset}" AS SELECT *, make_timestamp(ts_event // 1000) AS '
        f"time, CAST(NULL AS DATE) AS date FROM (SELECT {columns}) WHERE false"
    )


def refresh_catalog(catalog_path: Path, lake_dir: Path, known: set[str]) -> set[str]:
    """Create views for datasets with files not yet in ``known`` (and, the first time, an
    empty view for each dataset without files); returns what ``known`` is now."""
    present = set(datasets_in_lake(lake_dir))
    if EMPTY_VIEWS in known and present <= known:
        return known
    try:
        con = duckdb.connect(str(catalog_path))
    except duckdb.Error as exc:
        log.info("catalog %s busy (%s); will retry", catalog_path, exc)
        return known
    try:
        for dataset in sorted(present - known):
            con.execute(view_sql(lake_dir, dataset))
        if EMPTY_VIEWS not in known:
            for dataset, schema in sorted(DATASET_SCHEMAS.items()):
                if dataset not in present:
                    con.execute(empty_view_sql(con, dataset, schema))
    finally:
        con.close()
    return present | {EMPTY_VIEWS}
