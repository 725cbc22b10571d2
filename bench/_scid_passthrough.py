"""DIAGNOSTIC ONLY: ``tickpipe import`` with the quality stage replaced by a pass-through.

Run by ``scid_import.py`` as ``python bench/_scid_passthrough.py import scid FILE ...``:
every event is accepted after the grouping by symbol the stage hands on (no rule runs), so
the figure is the import path's ceiling once the quality checks cost next to nothing. Never
a figure for the real command.
"""

from __future__ import annotations

import sys

import pyarrow as pa

from tickpipe.cli import main
from tickpipe.columnar import Grouped, group_by_symbol
from tickpipe.events import Kind
from tickpipe.quality.stage import QualityStage, StageResult


def _pass_through(
    self: QualityStage, source: str, batches: dict[Kind, pa.RecordBatch]
) -> StageResult:
    accepted: dict[Kind, Grouped] = {
        kind: group_by_symbol(batch) for kind, batch in batches.items() if batch.num_rows
    }
    return StageResult(accepted=accepted, quarantine=None, gaps=None)


if __name__ == "__main__":
    QualityStage.process = _pass_through  # type: ignore[method-assign]
    raise SystemExit(main(sys.argv[1:]))
