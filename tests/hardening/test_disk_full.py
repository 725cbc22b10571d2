"""A full disk is a state, not a crash (issue 12, finding 2), on a real small filesystem
with the real process: ingest pauses (nothing acknowledged that is not durable), /health
says why, the log says it once, and once space comes back ingest resumes by itself;
afterwards every acknowledged event is in the lake, once."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import duckdb
import httpx
import pytest

from tickpipe.store import layout

from ..conftest import free_port
from ..e2e.helpers import PipelineProcess
from .conftest import fill

pytestmark = pytest.mark.slow


def lake_counts(data: Path) -> dict[str, tuple[int, int]]:
    """(rows, distinct (source, symbol, seq)) per event dataset in the lake."""
    out = {}
    for dataset in ("trade", "quote", "book", "option", "gex"):
        files = [f.as_posix() for f in layout.lake_files(data / "lake", dataset)]
        if files:
            rows, distinct = (
                duckdb.connect()
                .execute(
                    "SELECT count(*), count(DISTINCT (source, symbol, seq)) FROM read_parquet($f)",
                    {"f": files},
                )
                .fetchone()
            )  # type: ignore[misc]
            out[dataset] = (rows, distinct)
    return out


def test_a_full_disk_pauses_ingest_and_loses_nothing(tmpfs: Path, tmp_path: Path) -> None:
    data = tmpfs / "data"
    log = tmp_path / "pipeline.log"
    env = {
        "TICKPIPE_DATA_DIR": str(data),
        "TICKPIPE_SIMULATOR": "true",
        "TICKPIPE_SIMULATOR_SEED": "11",
        "TICKPIPE_SIMULATOR_RATE": "20000",
        "TICKPIPE_SIMULATOR_MAX_EVENTS": "150000",
        "TICKPIPE_SIMULATOR_BAD_SHARE": "0",
        "TICKPIPE_SIMULATOR_SILENCE_SHARE": "0",
        "TICKPIPE_JOURNAL_SEGMENT_SECONDS": "1",
    }
    proc = PipelineProcess(free_port(), env, log)
    proc.wait_ready()
    proc.wait_for(lambda s: s["accepted_total"] > 10_000)

    ballast = tmpfs / "ballast"
    fill(ballast)
    blocked = proc.wait_for(lambda s: s["services"]["journal"]["blocked_since"] is not None)
    health = httpx.get(proc.base + "/api/v1/health", timeout=5).json()
    assert health["status"] == "degraded"
    assert any("journal refuses writes" in r for r in health["reasons"]), health
    time.sleep(1.5)  # sources wait: nothing is acknowledged while the journal cannot write
    paused = proc.get("/api/v1/status")
    assert paused["services"]["journal"]["blocked_since"] is not None
    assert paused["accepted_total"] == blocked["accepted_total"]

    ballast.unlink()  # space comes back: no restart, no operator
    proc.wait_for(
        lambda s: (
            s["services"]["journal"]["blocked_since"] is None
            and s["accepted_total"] > paused["accepted_total"]
        )
    )
    final = proc.wait_for(
        lambda s: (
            any(x["name"] == "simulator" and x["status"] == "finished" for x in s["sources"])
            and s["services"]["hub_queue"] == 0
        ),
        timeout=90,
    )
    time.sleep(0.5)
    final = proc.get("/api/v1/status")
    assert httpx.get(proc.base + "/api/v1/health", timeout=5).json()["status"] == "ok"
    assert proc.stop(signal.SIGTERM) == 0  # no SIGSEGV, no unhandled OSError

    text = log.read_text()
    assert text.count("journal refuses writes") == 1, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    counts = lake_counts(data)
    print(f"acknowledged {final['accepted']}; in the lake (rows, distinct) {counts}")
    for dataset, accepted in final["accepted"].items():
        assert counts[dataset] == (accepted, accepted), dataset  # all of it, once
    assert not (data / "journal" / "corrupt").exists()

    again = PipelineProcess(free_port(), env | {"TICKPIPE_SIMULATOR": "false"}, log)
    again.wait_ready()  # a restart on the same files starts
    assert again.stop(signal.SIGTERM) == 0
