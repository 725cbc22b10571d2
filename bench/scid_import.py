"""Sierra Chart .scid import: decode speed, end-to-end import speed, lake bytes per trade.

Writes a synthetic ES tick file (default 10 M records, 400 MB: a random walk on the 0.25
tick, sides and sizes at random, 1 % sub-trade markers, exponential gaps of 46 ms on
average between µs timestamps: about 5 days), then:

- baseline: the same chunks only viewed as records and their Close field summed (what
  merely touching the file's bytes costs, in this process);
- decode: ``scid.decode`` of 1 M-record chunks to Arrow trades and quotes, per-chunk
  percentiles and records/s, and its ratio to the baseline;
- end to end: the command itself, ``tickpipe import scid FILE --tick-size 0.25``, as a
  process into a fresh data dir, timed from its start to its exit (the last record is in
  Parquet by then: the lake's row count is checked), ``--repeat`` times: min / median /
  max records/s, and the median's share of the decode rate measured above;
- then the same file imported again (its checkpoint says nothing is new) and once more
  without checkpoints (every row is already in the lake: the duplicate check at full size);
- DIAGNOSTIC, labelled as such: the command with the quality stage replaced by a
  pass-through (``_scid_passthrough.py``), the ceiling once quality costs next to nothing;
- first, DTC trade updates parsed to Arrow (JSON and binary, 200 per read) beside the same
  frames only split and loaded.

    python bench/scid_import.py [--records 10000000] [--chunk 1000000] [--repeat 3]
                                [--skip-import] [--skip-dtc] [--skip-diagnostic]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import percentiles

from tickpipe.sources.sierra import files, scid
from tickpipe.store import layout

SIERRA_EPOCH_US = 25_569 * 86_400_000_000


def write_file(path: Path, n: int, seed: int = 1) -> None:
    """n tick records as Sierra writes them, in 1 M-record pieces."""
    rng = np.random.default_rng(seed)
    start_us = 1_735_828_200_000_000 + SIERRA_EPOCH_US  # 2025-01-02 14:30 UTC
    header = b"SCID" + (56).to_bytes(4, "little") + (40).to_bytes(4, "little")
    header += (1).to_bytes(2, "little") + bytes(56 - 14)
    price = 6000.0
    with open(path, "wb") as f:
        f.write(header)
        for first in range(0, n, 1_000_000):
            m = min(1_000_000, n - first)
            rec = np.zeros(m, scid.RECORD_DTYPE)
            gaps = np.maximum(rng.exponential(46_000, m).astype(np.int64), 1)  # µs, bursty
            stamps = start_us + np.cumsum(gaps)
            start_us = int(stamps[-1])
            rec["dt"] = stamps
            steps = rng.integers(-1, 2, m) * 0.25
            walk = price + np.cumsum(steps)
            price = float(walk[-1])
            sell = rng.random(m) < 0.5
            rec["close"] = walk
            rec["low"] = np.where(sell, walk, walk - 0.25)
            rec["high"] = rec["low"] + np.float32(0.25)
            markers = rng.random(m) < 0.01
            rec["open"] = np.where(markers, scid.FIRST_SUB_TRADE, 0)
            size = rng.integers(1, 6, m).astype(np.uint32)
            rec["num_trades"] = 1
            rec["total_volume"] = size
            rec["bid_volume"] = np.where(sell, size, 0)
            rec["ask_volume"] = np.where(sell, 0, size)
            f.write(rec.tobytes())


def bench_decode(path: Path, chunk: int, repeat: int) -> tuple[list[float], list[float], int]:
    view = files.look(path)
    with open(path, "rb") as f:
        f.seek(view.header.header_size)
        data = f.read()
    base_times: list[float] = []
    decode_times: list[float] = []
    for _ in range(repeat):
        for first in range(0, view.records, chunk):
            piece = memoryview(data)[first * 40 : (first + chunk) * 40]
            t0 = time.perf_counter()
            records = scid.as_records(piece)
            float(records["close"].sum())
            base_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            scid.decode(
                scid.as_records(piece),
                symbol="/ESH25",
                first_index=first,
                recv_ns=0,
                tick_size=0.25,
            )
            decode_times.append(time.perf_counter() - t0)
    return base_times, decode_times, view.records * repeat


@dataclasses.dataclass
class Run:
    seconds: float
    cpu_seconds: float
    """user + system time of the command's process: what the machine's other load does
    not inflate as much as the wall time"""
    summary: str


def import_command(path: Path, data: Path, *, script: list[str] | None = None) -> Run:
    """``tickpipe import scid`` as its own process (start-up included), timed to its exit."""
    argv = script or ["-m", "tickpipe.cli"]
    env = {**os.environ, "TICKPIPE_DATA_DIR": str(data)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *argv, "import", "scid", str(path), "--tick-size", "0.25"],
        env=env,
        cwd=data.parent,  # no stray .env file
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if done.returncode != 0:
        raise SystemExit(f"import failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return Run(seconds, cpu, done.stdout.strip().splitlines()[-1])


def lake_rows(data: Path, dataset: str) -> int:
    files = layout.lake_files(data / "lake", dataset)
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def lake_bytes(data: Path, dataset: str) -> int:
    return sum(f.stat().st_size for f in layout.lake_files(data / "lake", dataset))


def fresh(tmp: Path, name: str) -> Path:
    data = tmp / name
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir()
    return data / "data"


def spread(records: int, runs: list[Run]) -> str:
    rates = sorted(records / r.seconds / 1e6 for r in runs)
    seconds = statistics.median(r.seconds for r in runs)
    cpu = statistics.median(r.cpu_seconds for r in runs)
    return (
        f"min {rates[0]:.2f} / median {statistics.median(rates):.2f} / max {rates[-1]:.2f} "
        f"M records/s  ({seconds:.2f} s median, {cpu:.2f} CPU s median, n={len(runs)})"
    )


def bench_import(path: Path, tmp: Path, records: int, repeat: int, decode_rate: float) -> None:
    runs: list[Run] = []
    data = fresh(tmp, "import")
    for i in range(repeat):
        if i:  # the last run's lake is looked at below
            data = fresh(tmp, "import")
        runs.append(import_command(path, data))
    trades, quotes = lake_rows(data, "trade"), lake_rows(data, "quote")
    median_rate = statistics.median(records / r.seconds for r in runs)
    print(f"import end to end            {spread(records, runs)}")
    print(
        f"  = {median_rate / decode_rate:.3f} of the decode rate; lake holds {trades:,} "
        f"trades, {quotes:,} quotes; {runs[-1].summary}"
    )
    print(
        f"lake bytes per trade         {lake_bytes(data, 'trade') / max(trades, 1):8.2f}   "
        f"per quote {lake_bytes(data, 'quote') / max(quotes, 1):.2f}"
    )
    again = import_command(path, data)
    print(f"import again (checkpoint: nothing new)   {again.seconds:.2f} s  {again.summary}")
    shutil.rmtree(data / "lake" / "checkpoints")
    forgot = import_command(path, data)
    print(
        f"import again without checkpoints         {forgot.seconds:.2f} s "
        f"({records / forgot.seconds / 1e6:.2f} M records/s; every row already in the lake)  "
        f"{forgot.summary}"
    )
    if lake_rows(data, "trade") != trades:
        raise SystemExit("a repeated import changed the lake")
    shutil.rmtree(data.parent)


def bench_pass_through(path: Path, tmp: Path, records: int, repeat: int) -> None:
    runs = []
    script = [str(Path(__file__).resolve().parent / "_scid_passthrough.py")]
    for i in range(repeat):
        data = fresh(tmp, f"diag-{i}")
        runs.append(import_command(path, data, script=script))
        shutil.rmtree(data.parent)
    print(f"DIAGNOSTIC quality pass-through  {spread(records, runs)}  (not the real command)")


def bench_dtc(messages: int = 200_000, per_read: int = 200) -> None:
    """DTC trade updates as the client parses them, JSON and binary, each beside a baseline
    of the same frames only split and loaded (orjson.loads / struct.unpack)."""
    import struct

    import orjson

    from tickpipe.sources.sierra import dtc_codec
    from tickpipe.sources.sierra.dtc_messages import T

    fields = [
        dict(
            SymbolID=1,
            AtBidOrAsk=1 + i % 2,
            Price=6000 + (i % 40) * 0.25,
            Volume=1 + i % 5,
            DateTime=1.7e9 + i / 1000,
        )
        for i in range(per_read)
    ]
    for name, encode, load in (
        ("json", dtc_codec.encode_json, orjson.loads),
        ("binary", dtc_codec.encode_binary, struct.Struct("<HHIH6xddd").unpack),
    ):
        chunk = b"".join(encode(T.TRADE, **f) for f in fields)
        framer = dtc_codec.JsonFramer() if name == "json" else dtc_codec.BinaryFramer()
        decode = dtc_codec.decode_json if name == "json" else dtc_codec.decode_binary
        base: list[float] = []
        full: list[float] = []
        decoder = dtc_codec.DtcDecoder({1: "/ESZ25"}, {})
        for _ in range(messages // per_read):
            t0 = time.perf_counter()
            for frame in framer.feed(chunk):
                load(frame)
            base.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            parsed = [decode(frame) for frame in framer.feed(chunk)]
            decoder.decode(parsed, 0, dtc_codec.Facts())
            full.append(time.perf_counter() - t0)
        rate, base_rate = messages / sum(full), messages / sum(base)
        print(
            f"dtc {name:6s} baseline (split + load)  {base_rate / 1e3:8.0f} k msg/s  per read {percentiles(base)}"
        )
        print(
            f"dtc {name:6s} to Arrow trades          {rate / 1e3:8.0f} k msg/s  per read {percentiles(full)}  ({base_rate / rate:.1f} x the baseline's time)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--chunk", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-import", action="store_true", help="decode figures only")
    parser.add_argument("--skip-dtc", action="store_true")
    parser.add_argument("--skip-diagnostic", action="store_true", help="no pass-through row")
    args = parser.parse_args()
    print(f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if not args.skip_dtc:
        bench_dtc()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        path = tmp / "ESH25-CME.scid"
        write_file(path, args.records)
        print(f"file: {args.records:,} records, {path.stat().st_size / 1e6:.0f} MB")
        base, decode, total = bench_decode(path, args.chunk, args.repeat)
        base_rate = total / sum(base)
        decode_rate = total / sum(decode)
        print(
            f"baseline (view + sum Close)  {base_rate / 1e6:8.1f} M records/s  per chunk {percentiles(base)}"
        )
        print(
            f"decode to Arrow              {decode_rate / 1e6:8.1f} M records/s  per chunk {percentiles(decode)}"
        )
        print(f"decode / baseline time       {base_rate / decode_rate:8.1f} x")
        if args.skip_import:
            return
        bench_import(path, tmp, args.records, args.repeat, decode_rate)
        if not args.skip_diagnostic:
            bench_pass_through(path, tmp, args.records, args.repeat)
    print(f"load average at end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
