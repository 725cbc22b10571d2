"""The tail in a real ``data-pipeline.py`` process: latency to the realtime API, and SIGKILL."""

from __future__ import annotations

import datetime as dt
import signal
import statistics
import threading
import time
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tickpipe.config import Settings
from tickpipe.store import layout
from tickpipe.store.checkpoints import latest_checkpoints
from tickpipe.store.keystore import KeyStore

from ...conftest import free_port
from ...e2e.helpers import PipelineProcess
from .scidfile import Rec, append, sc_time, tick, write

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _reap() -> object:
    yield
    PipelineProcess.reap_all()


def env_for(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "Data").mkdir(exist_ok=True)
    return {
        "TICKPIPE_DATA_DIR": str(tmp_path / "data"),
        "TICKPIPE_JOURNAL_SEGMENT_SECONDS": "1",
        "SIERRA_SCID_DIR": str(tmp_path / "Data"),
        "SIERRA_TICK_SIZES": "ES=0.25",
        "SIERRA_POLL_INTERVAL_S": "0.1",
    }


def record(i: int, base: int) -> Rec:
    """Record i: a trade 1 ms after the previous one, its price telling its number."""
    return tick(base + i * 1000, 5000 + i * 0.25, 4999.0, 9999.0, side="B")


def sierra(status: dict[str, object]) -> dict[str, object]:
    return next(s for s in status["sources"] if s["name"] == "sierra")  # type: ignore[attr-defined,index]


def test_appended_records_reach_the_realtime_api_within_a_second(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    base = sc_time(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30))
    path = write(tmp_path / "Data" / "ESZ25-CME.scid", [record(0, base)])
    proc = PipelineProcess(free_port(), env, tmp_path / "run.log")
    proc.wait_for(lambda s: sierra(s)["by_kind"].get("trade", 0) >= 1)  # type: ignore[union-attr]
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")  # type: ignore[call-arg]
    token, _ = KeyStore(settings.keys_path).create("t", ["read"], 1000)
    url = f"{proc.base}/api/v1/ticks/realtime?symbols=/ESZ25&types=trade&limit=1"
    headers = {"Authorization": f"Bearer {token}"}
    delays = []
    with httpx.Client(headers=headers, timeout=5) as client:
        for i in range(1, 4):
            append(path, [record(i, base)])
            appended = time.monotonic()
            while True:
                data = client.get(url).json()["data"]
                if data and data[-1]["price"] == 5000 + i * 0.25:
                    delays.append(time.monotonic() - appended)
                    break
                assert time.monotonic() - appended < 10, f"record {i} never arrived"
                time.sleep(0.01)
    assert statistics.median(delays) < 1.0, delays
    assert proc.stop(signal.SIGTERM) == 0


def lake_trades(data: Path) -> pa.Table:
    files = layout.lake_files(data / "lake", "trade")
    return pa.concat_tables([pq.read_table(f, partitioning=None) for f in files])


def lake_rules(data: Path) -> list[str]:
    files = layout.lake_files(data / "lake", "quarantine")
    if not files:
        return []
    return pa.concat_tables([pq.read_table(f, partitioning=None) for f in files])[
        "rule"
    ].to_pylist()


def test_sigkill_mid_tail_then_restart_yields_every_record_exactly_once(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    base = sc_time(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=60))
    path = write(tmp_path / "Data" / "ESZ25-CME.scid", [record(i, base) for i in range(200)])
    written = [200]
    stop = threading.Event()

    def sierra_writes() -> None:
        while not stop.is_set() and written[0] < 20_000:
            n = written[0]
            append(path, [record(i, base) for i in range(n, n + 50)])
            written[0] = n + 50
            time.sleep(0.005)

    proc = PipelineProcess(free_port(), env, tmp_path / "run1.log")
    writer = threading.Thread(target=sierra_writes)
    writer.start()
    try:
        proc.wait_for(lambda s: sierra(s)["by_kind"].get("trade", 0) >= 2_000)  # type: ignore[union-attr]
        proc.stop(signal.SIGKILL)  # mid-tail: Sierra is still appending
    finally:
        time.sleep(0.2)
        stop.set()
        writer.join()
    append(path, [record(i, base) for i in range(written[0], written[0] + 100)])  # while down
    total = written[0] + 100

    again = PipelineProcess(free_port(), env, tmp_path / "run2.log")
    again.wait_for(lambda s: _seq_reached(s) == total)
    assert again.stop(signal.SIGTERM) == 0

    trades = lake_trades(tmp_path / "data").sort_by("seq")
    assert trades["seq"].to_pylist() == list(range(1, total + 1))
    assert trades["price"].to_pylist() == [5000 + i * 0.25 for i in range(total)]
    # a kill between a delivery's events and its checkpoint makes the tail read that last
    # delivery again, and the duplicate rule drops it; the restart never starts over
    rules = lake_rules(tmp_path / "data")
    assert set(rules) <= {"duplicate"} and rules.count("duplicate") < total // 2, (
        len(rules),
        latest_checkpoints(tmp_path / "data" / "lake", ["sierra"]),
        (tmp_path / "run1.log").read_text()[-3000:],
        (tmp_path / "run2.log").read_text()[-3000:],
    )


def _seq_reached(status: dict[str, object]) -> int:
    """How far the tail has read the file, as /status shows it."""
    shown = sierra(status)["details"].get("files", {})  # type: ignore[union-attr]
    return int(shown.get("ESZ25-CME.scid", {}).get("seq", 0))
