"""Compaction: many small per-segment Parquet files of a partition become one.

Flushing every closed journal segment gives one file per segment, day and dataset (8,640 a
day per dataset at 10 s segments); DuckDB then spends its time opening files. The
compactor merges a partition's files into ``compact-<first>--<last>.parquet``, sorted by
(symbol, ts_event, seq), which covers every segment name from first to last.

Safety: only files whose segments are all older than every segment still in the journal
are merged, so no file can later appear inside a covered range. The merged files are
deleted right after the compacted one is renamed into place, so readers outside tickpipe
(the DuckDB views, Polars, Spark) never see a row twice; a crash in between leaves covered
files that tickpipe's readers skip (``layout.visible_files``) and the next pass deletes. A
tickpipe query that listed a file a moment before it was merged retries once.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tickpipe.store import layout
from tickpipe.store.journal import fsync_dir
from tickpipe.store.lake import sort_for_lake, write_parquet

log = logging.getLogger(__name__)


def oldest_journal_segment(journal_dir: Path) -> str | None:
    names = [
        layout.segment_of(p)
        for p in journal_dir.glob("*/*")
        if p.suffix in (layout.OPEN_SUFFIX, layout.CLOSED_SUFFIX)
    ]
    return min(names) if names else None


class Compactor:
    def __init__(
        self, lake_dir: Path, journal_dir: Path, *, min_files: int, max_rows: int, zstd_level: int
    ) -> None:
        self._lake = lake_dir
        self._journal = journal_dir
        self._min_files = min_files
        self._max_rows = max_rows
        self._zstd = zstd_level
        self.merged_files = 0
        self.deleted_files = 0

    def run_once(self) -> int:
        """Delete what earlier passes covered, then compact every partition that has
        enough eligible files. Returns the number of files merged."""
        if not self._lake.is_dir():
            return 0
        bound = oldest_journal_segment(self._journal)
        merged = 0
        for dataset in sorted(d.name for d in self._lake.iterdir() if d.is_dir()):
            for part in layout.partitions(self._lake, dataset):
                visible, hidden = layout.visible_files(part)
                for path in hidden:
                    path.unlink(missing_ok=True)
                    self.deleted_files += 1
                merged += self._compact(part, visible, bound)
        return merged

    def _compact(self, part: Path, visible: list[Path], bound: str | None) -> int:
        eligible = sorted(
            (f for f in visible if bound is None or layout.last_segment_in(f) < bound),
            key=lambda f: (layout.compact_range(f) or (layout.segment_of(f),))[0],
        )
        run: list[Path] = []
        rows = 0
        for f in eligible:
            n = pq.ParquetFile(f).metadata.num_rows
            if run and rows + n > self._max_rows:
                break
            run.append(f)
            rows += n
        if len(run) < self._min_files:
            return 0
        first = (layout.compact_range(run[0]) or (layout.segment_of(run[0]),))[0]
        last = max(layout.last_segment_in(f) for f in run)
        table = pa.concat_tables(
            (pq.read_table(f, partitioning=None) for f in run), promote_options="default"
        )
        target = part / f"{layout.compact_name(first, last)}{layout.LAKE_SUFFIX}"
        write_parquet(sort_for_lake(table), target, self._zstd)
        for path in run:  # at once: readers outside tickpipe do not know about covering
            path.unlink(missing_ok=True)
        fsync_dir(part)
        self.deleted_files += len(run)
        self.merged_files += len(run)
        log.info("compacted %d files (%d rows) into %s/%s", len(run), rows, part.name, target.name)
        return len(run)
