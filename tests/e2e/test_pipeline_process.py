"""The pipeline as a new user runs it, and as a crash leaves it."""

from __future__ import annotations

import signal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tickpipe.clock import NS_PER_SECOND, SystemClock
from tickpipe.config import Settings
from tickpipe.events import Kind
from tickpipe.quality.stage import QualityStage
from tickpipe.sources.simulator import Simulator
from tickpipe.store import layout

from ..conftest import free_port
from .helpers import PipelineProcess

pytestmark = pytest.mark.slow


def lake_table(data: Path, dataset: str) -> pa.Table | None:
    files = layout.lake_files(data / "lake", dataset)
    if not files:
        return None
    return pa.concat_tables([pq.read_table(f, partitioning=None) for f in files])


def test_demo_runs_counts_rise_and_ctrl_c_flushes_everything(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {
        "TICKPIPE_DATA_DIR": str(data),
        "TICKPIPE_SIMULATOR_RATE": "2000",
        "TICKPIPE_JOURNAL_SEGMENT_SECONDS": "1",
    }
    proc = PipelineProcess(free_port(), env, tmp_path / "run.log")
    first = proc.wait_for(lambda s: s["accepted_total"] > 0)
    assert {s["name"] for s in first["sources"]} == {"simulator", "gex"}
    later = proc.wait_for(
        lambda s: (
            s["accepted_total"] > first["accepted_total"]
            and s["services"]["lake"]["files_written"] > 0
        )
    )
    sim = next(s for s in later["sources"] if s["name"] == "simulator")
    assert sim["status"] == "running"
    assert later["services"]["hot_store"] == "memory"
    assert proc.stop(signal.SIGINT) == 0
    assert not list((data / "journal").glob("*/*.open")) and not list(
        (data / "journal").glob("*/*.arrows")
    )
    final = sum(t.num_rows for k in Kind if (t := lake_table(data, k.value)) is not None)
    assert final >= later["accepted_total"]
    assert (data / "tick_data.db").exists()


def deterministic_env(data: Path, start_ns: int) -> dict[str, str]:
    return {
        "TICKPIPE_DATA_DIR": str(data),
        "TICKPIPE_SIMULATOR_SEED": "11",
        "TICKPIPE_SIMULATOR_REALTIME": "false",
        "TICKPIPE_SIMULATOR_RATE": "100000",
        "TICKPIPE_SIMULATOR_BATCH_SIZE": "4000",
        "TICKPIPE_SIMULATOR_BAD_SHARE": "0.005",
        "TICKPIPE_SIMULATOR_START_NS": str(start_ns),
        "TICKPIPE_JOURNAL_SEGMENT_SECONDS": "1",
    }


def test_sigkill_mid_ingest_then_restart_keeps_every_accepted_event_exactly_once(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    start_ns = (SystemClock().now_ns() - 2 * 3600 * NS_PER_SECOND) // 1000 * 1000
    env = deterministic_env(data, start_ns)
    proc = PipelineProcess(free_port(), env, tmp_path / "run.log")
    status = proc.wait_for(
        lambda s: s["accepted_total"] >= 150_000 and s["services"]["lake"]["files_written"] > 0
    )
    acknowledged = status["accepted_total"]
    proc.stop(signal.SIGKILL)
    left = [*(data / "journal").glob("*/*.open"), *(data / "journal").glob("*/*.arrows")]
    assert left, "the kill should leave journal segments for the restart to recover"

    restarted = PipelineProcess(
        free_port(), env | {"TICKPIPE_SIMULATOR": "false"}, tmp_path / "run2.log"
    )
    restarted.wait_ready()
    assert restarted.stop(signal.SIGTERM) == 0

    stored = sum(t.num_rows for k in Kind if (t := lake_table(data, k.value)) is not None)
    assert stored >= acknowledged  # gex levels included: the engine's events are accepted too
    lake = {k: lake_table(data, k.value) for k in (Kind.TRADE, Kind.QUOTE, Kind.BOOK, Kind.OPTION)}

    # replay the same deterministic stream through the same quality stage, in process
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path / "unused",
        simulator_seed=11,  # type: ignore[call-arg]
        simulator_realtime=False,
        simulator_rate=100_000,
        simulator_batch_size=4000,
        simulator_bad_share=0.005,
        simulator_start_ns=start_ns,
    )
    clock = SystemClock()
    sim, stage = Simulator(settings, clock), QualityStage(settings, clock)
    expected: dict[Kind, list[pa.RecordBatch]] = {k: [] for k in lake}
    counts = {k: 0 for k in lake}
    while any(counts[k] < (lake[k].num_rows if lake[k] is not None else 0) for k in lake):
        n = settings.simulator_batch_size
        result = stage.process(
            "simulator", sim.step(n, int(n / settings.simulator_rate * NS_PER_SECOND))
        )
        for kind, grouped in result.accepted.items():
            expected[kind].append(grouped.batch)
            counts[kind] += grouped.batch.num_rows
    keys = [("symbol", "ascending"), ("ts_event", "ascending"), ("seq", "ascending")]
    for kind, table in lake.items():
        assert table is not None
        got = table.sort_by(keys)
        prefix: list[pa.RecordBatch] = []
        rows = 0
        for batch in expected[kind]:
            if rows >= got.num_rows:
                break
            prefix.append(batch)
            rows += batch.num_rows
        assert rows == got.num_rows, f"{kind}: the lake holds part of a delivery"
        want = pa.Table.from_batches(prefix).sort_by(keys)
        assert got.equals(want), f"{kind}: lake differs from the accepted stream"


def test_a_busy_port_is_refused_with_a_sentence(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    from .helpers import ROOT

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, str(ROOT / "data-pipeline.py"), "--port", str(port)],
            env={"PATH": "/usr/bin:/bin", "TICKPIPE_DATA_DIR": str(tmp_path / "data")},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert not (tmp_path / "data" / "journal").exists()
