"""Lake and journal paths and file names, defined once.

Lake: ``<data>/lake/<dataset>/date=YYYY-MM-DD/<segment>.parquet`` (hive partitions).
Journal: ``<data>/journal/<dataset>/<segment>.arrows`` once closed, ``.open`` while written.
The compactor merges many of a partition's files into ``compact-<first>--<last>.parquet``,
which covers every segment name from first to last. A segment name is
``<open time ns, 20 digits>-<writer id>-<counter>``: unique across
restarts and processes (and under a coarse clock), and sortable by time, so the lake file made from a segment has a
deterministic name and re-flushing it after a crash overwrites instead of duplicating.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from tickpipe.clock import NS_PER_SECOND

NS_PER_DAY = 86_400 * NS_PER_SECOND
OPEN_SUFFIX = ".open"
CLOSED_SUFFIX = ".arrows"
LAKE_SUFFIX = ".parquet"
COMPACT_PREFIX = "compact-"


def segment_name(open_ns: int, writer: str, counter: int) -> str:
    return f"{open_ns:020d}-{writer}-{counter:06d}"


def journal_path(journal_dir: Path, dataset: str, segment: str, *, closed: bool) -> Path:
    return journal_dir / dataset / f"{segment}{CLOSED_SUFFIX if closed else OPEN_SUFFIX}"


def segment_of(path: Path) -> str:
    return path.name.split(".", 1)[0]


_FIRST_DAY = (dt.date.min - dt.date(1970, 1, 1)).days
_LAST_DAY = (dt.date.max - dt.date(1970, 1, 1)).days


def day_of_ns(ts_ns: int) -> dt.date:
    """The UTC day of a nanosecond time, clamped to what ``datetime.date`` can hold (a time
    past year 9999 is a caller's mistake, not a reason to raise OverflowError here)."""
    days = min(max(int(ts_ns) // NS_PER_DAY, _FIRST_DAY), _LAST_DAY)
    return dt.date(1970, 1, 1) + dt.timedelta(days=days)


def partition_dir(lake_dir: Path, dataset: str, day: dt.date) -> Path:
    return lake_dir / dataset / f"date={day.isoformat()}"


def lake_file(lake_dir: Path, dataset: str, day: dt.date, segment: str) -> Path:
    return partition_dir(lake_dir, dataset, day) / f"{segment}{LAKE_SUFFIX}"


def compact_name(first: str, last: str) -> str:
    return f"{COMPACT_PREFIX}{first}--{last}"


def compact_range(path: Path) -> tuple[str, str] | None:
    """(first, last) segment names a compacted file covers, or None for a segment file."""
    stem = segment_of(path)
    if not stem.startswith(COMPACT_PREFIX):
        return None
    first, _, last = stem[len(COMPACT_PREFIX) :].partition("--")
    return first, last


def last_segment_in(path: Path) -> str:
    """The newest segment name whose rows a lake file holds."""
    covered = compact_range(path)
    return covered[1] if covered else segment_of(path)


def visible_files(part: Path) -> tuple[list[Path], list[Path]]:
    """A partition's files to read, and those hidden because a compacted file covers them
    (left over until the compactor deletes them; never read twice)."""
    files = sorted(part.glob(f"*{LAKE_SUFFIX}"))
    spans = {f: compact_range(f) or (segment_of(f), segment_of(f)) for f in files}
    compacted = [spans[f] for f in files if compact_range(f) is not None]
    visible: list[Path] = []
    hidden: list[Path] = []
    for f in files:
        first, last = spans[f]
        covered = any(c <= first and last <= d and (c, d) != (first, last) for c, d in compacted)
        (hidden if covered else visible).append(f)
    return visible, hidden


def partitions(
    lake_dir: Path, dataset: str, first: dt.date | None = None, last: dt.date | None = None
) -> list[Path]:
    root = lake_dir / dataset
    if not root.is_dir():
        return []
    out = []
    for part in sorted(root.iterdir()):
        if not part.name.startswith("date="):
            continue
        day = dt.date.fromisoformat(part.name[5:])
        if (first and day < first) or (last and day > last):
            continue
        out.append(part)
    return out


def lake_files(
    lake_dir: Path, dataset: str, first: dt.date | None = None, last: dt.date | None = None
) -> list[Path]:
    """Parquet files of a dataset to read, pruned to the partitions between ``first`` and
    ``last``; files covered by a compacted file are left out."""
    files: list[Path] = []
    for part in partitions(lake_dir, dataset, first, last):
        files.extend(visible_files(part)[0])
    return files
