"""Reading Sierra Chart data files from disk: headers, fingerprints, whole-record ranges.

Sierra writes these files while we read them (it opens them shared), so every read asks
for whole records only and leaves a partial last record for the next look.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tickpipe.sources.sierra import scid
from tickpipe.sources.sierra.columns import SIERRA_EPOCH_US


@dataclasses.dataclass(frozen=True, slots=True)
class FileView:
    """One look at a file: its header, size and identity."""

    path: Path
    header: scid.ScidHeader
    size: int
    fingerprint: str
    """the header and first record hashed: a file rewritten from the start gets a new one"""

    @property
    def records(self) -> int:
        """Whole records in the file now."""
        return max(self.size - self.header.header_size, 0) // scid.RECORD_SIZE

    @property
    def torn_bytes(self) -> int:
        """Bytes of a record still being written (or cut off) at the end."""
        return max(self.size - self.header.header_size, 0) % scid.RECORD_SIZE

    def offset_of(self, index: int) -> int:
        return self.header.header_size + index * scid.RECORD_SIZE

    def index_of(self, offset: int) -> int:
        return (offset - self.header.header_size) // scid.RECORD_SIZE


def look(path: Path) -> FileView:
    """Read and check a .scid file's header; ScidError if it is no .scid file."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(scid.HEADER_SIZE)
        header = scid.parse_header(head, where=str(path))
        f.seek(0)
        start = f.read(header.header_size + scid.RECORD_SIZE)
    first = (
        start
        if len(start) == header.header_size + scid.RECORD_SIZE
        else start[: header.header_size]
    )
    return FileView(path, header, size, hashlib.blake2b(first, digest_size=8).hexdigest())


def read_records(view: FileView, start: int, count: int) -> npt.NDArray[np.void]:
    """Records ``start .. start+count`` (fewer if the file is shorter), as a structured array."""
    with open(view.path, "rb") as f:
        f.seek(view.offset_of(start))
        data = f.read(count * scid.RECORD_SIZE)
    return scid.as_records(data)


def read_tail_bytes(view: FileView) -> bytes:
    """The partial record at the end of the file, for a quarantine record."""
    if not view.torn_bytes:
        return b""
    with open(view.path, "rb") as f:
        f.seek(view.offset_of(view.records))
        return f.read(view.torn_bytes)


def first_index_since(view: FileView, since_unix_us: int) -> int:
    """The first record stamped at or after ``since_unix_us``, by bisection (a few reads,
    whatever the file's size). Records are in time order, bar the odd stretch of
    downloaded history; a bad guess only means a few records more or fewer are read."""
    target = since_unix_us + SIERRA_EPOCH_US
    lo, hi = 0, view.records
    with open(view.path, "rb") as f:
        while lo < hi:
            mid = (lo + hi) // 2
            f.seek(view.offset_of(mid))
            raw = f.read(8)
            if len(raw) < 8:
                hi = mid
                continue
            if int.from_bytes(raw, "little", signed=True) < target:
                lo = mid + 1
            else:
                hi = mid
    return lo


def first_index_after_dt(view: FileView, last_dt: int, chunk: int = 1_000_000) -> int:
    """After a rewrite: the first record after the last one delivered (by its raw DateTime,
    unique per file thanks to Sierra's µs counter), scanning from the end backwards."""
    end = view.records
    while end > 0:
        start = max(0, end - chunk)
        stamps = read_records(view, start, end - start)["dt"]
        older = np.flatnonzero(stamps <= last_dt)
        if older.size:
            return start + int(older[-1]) + 1
        end = start
    return 0
