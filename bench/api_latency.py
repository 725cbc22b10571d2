"""The API under load, beside a bare Starlette + uvicorn floor measured in the same run.

Starts ``data-pipeline.py`` (simulator at 50 k events/s, a 2 M-trade SPY session in the
lake) and ``floor_app.py`` (bare Starlette, constant JSON; the floor server also answers
the real-time and GEX paths with the very bytes ours sent, so payload size is not counted
against our code). Then, for each point, the floor first, our routes, the same-bytes
floors, and the floor again (the two floor runs show how much the machine drifted):

  - throughput, closed loop, 1 and 100 keep-alive connections (``wrk``);
  - latency, open loop at a fixed rate over 1 and 100 connections (``loadgen.py``:
    measured from each request's scheduled time, so queueing shows);

each point ``--duration`` seconds after ``--warmup`` seconds of the same load. Then a
1-day 1-minute-bars request and a ~1 M-row Arrow download, each beside the same query
run in this process. The tickpipe server keeps ingesting while the floor is measured, so
both see the same machine.

    python bench/api_latency.py [--duration 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _http import Load, cpu_seconds, floor_server, free_port, generator, wait_http
from _session import session_trades
from _util import figure, write_json

from tickpipe.clock import NS_PER_SECOND, SystemClock
from tickpipe.config import Settings
from tickpipe.store.hot_memory import MemoryHotStore
from tickpipe.store.journal import Journal
from tickpipe.store.keystore import KeyStore
from tickpipe.store.lake import LakeWriter
from tickpipe.store.query import Query

ROOT = Path(__file__).resolve().parents[1]
DAY = 86_400 * NS_PER_SECOND
HEALTH = "/api/v1/health"
REALTIME = "/api/v1/ticks/realtime?symbols=SPY&limit=100&types=trade"
GEX = "/api/v1/gex/SPY"
ROUTES = {"health": HEALTH, "realtime": REALTIME, "gex cached": GEX}
TARGETS = {
    ("throughput", 1, "health"): "≥ 0.8 of floor",
    ("throughput", 100, "health"): "≥ 0.8 of floor",
    ("throughput", 1, "realtime"): "cost ≤ 1.5× floor",
    ("throughput", 100, "realtime"): "cost ≤ 1.5× floor",
    ("throughput", 1, "gex cached"): "cost ≤ 1.5× floor",
    ("throughput", 100, "gex cached"): "cost ≤ 1.5× floor",
}


def prepare(data: Path) -> tuple[str, int]:
    clock = SystemClock()
    day = (clock.now_ns() - DAY) // DAY * DAY  # yesterday: away from the live simulator
    journal = Journal(data / "journal", clock, segment_seconds=3600, segment_bytes=1 << 40)
    batch = session_trades(2_000_000, day + int(14.5 * 3600) * NS_PER_SECOND, seed=2)
    for start in range(0, batch.num_rows, 65_536):
        journal.append([("trade", batch.slice(start, 65_536))])
    journal.roll()
    LakeWriter(data / "lake", data / "journal", 3).flush_closed()
    settings = Settings(_env_file=None, data_dir=data)  # type: ignore[call-arg]
    token, _ = KeyStore(settings.keys_path).create("bench", ["read", "stream"], 1_000_000)
    return token, day


@contextlib.contextmanager
def tickpipe_server(data: Path, rate: int) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKPIPE_")}
    env |= {
        "TICKPIPE_DATA_DIR": str(data),
        "TICKPIPE_SIMULATOR_RATE": str(rate),
        "TICKPIPE_LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "data-pipeline.py"), "--port", str(port)], env=env
    )
    try:
        wait_http(f"http://127.0.0.1:{port}{HEALTH}")
        deadline = time.monotonic() + 60
        while not httpx.get(f"http://127.0.0.1:{port}{HEALTH}").json().get("ready"):
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not become ready")
            time.sleep(0.1)
        yield port, server
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)


def line(name: str, r: dict[str, Any], extra: str = "") -> str:
    lat = r.get("latency_ms") or {}
    rps = f"{r['requests_per_s']:>9,.0f} req/s " if "requests_per_s" in r else ""
    errors = f" ERRORS {r['errors']}" if r.get("errors") else ""
    overloaded = " OVERLOADED" if r.get("overloaded") else ""
    cpu = f"server {r['server_cpu']:.0%} " if "server_cpu" in r else ""
    return (
        f"  {name:<34}{rps}p50 {lat.get('p50', 0):7.3f}  p95 {lat.get('p95', 0):7.3f}  "
        f"p99 {lat.get('p99', 0):7.3f}  p99.9 {lat.get('p99.9', 0):7.3f} ms  "
        f"n={r['samples']:,}  {cpu}gen {r['generator_cpu']:.0%}{errors}{overloaded}{extra}"
    )


def measure_http(
    args: argparse.Namespace, port: int, pid: int, token: str
) -> tuple[list[dict[str, object]], dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"}
    bodies = {}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as client:
        for name, path in ROUTES.items():
            response = client.get(path)
            if response.status_code != 200:
                print(f"{name}: {response.status_code} {response.text[:200]}; skipped")
                continue
            bodies[name] = response.content
    same_bytes = {ROUTES[n].split("?")[0]: b for n, b in bodies.items() if n != "health"}
    figures: list[dict[str, object]] = []
    raw: dict[str, Any] = {}
    load = Load(args.duration, args.warmup, headers)
    load.server_pid[port] = pid
    points = [
        ("throughput", 1, None),
        ("throughput", args.clients, None),
        ("latency", 1, args.rate_one),
        ("latency", args.clients, args.rate_many),
    ]
    with floor_server(same_bytes) as (floor_port, floor_pid):
        load.server_pid[floor_port] = floor_pid
        for mode, conns, rate in points:

            def run(
                target_port: int,
                path: str,
                mode: str = mode,
                conns: int = conns,
                rate: float | None = rate,
            ) -> Any:
                if mode == "throughput":
                    return load.throughput(target_port, path, conns)
                return load.latency(target_port, path, conns, rate or 0.0)

            title = (
                f"{mode}, {conns} connection{'s' if conns > 1 else ''}"
                + (f", open loop at {rate:,.0f} req/s" if rate else f", {generator()}")
                + f", {args.duration:g} s after {args.warmup:g} s warm-up"
            )
            print(title, flush=True)
            floor_a = run(floor_port, HEALTH)
            print(line("floor (bare Starlette, 42 B)", floor_a), flush=True)
            ours = {}
            for name in bodies:
                ours[name] = run(port, ROUTES[name])
            sized = {n: run(floor_port, ROUTES[n].split("?")[0]) for n in bodies if n != "health"}
            floor_b = run(floor_port, HEALTH)
            print(line("floor again", floor_b), flush=True)
            key = f"{mode}-c{conns}"
            raw[key] = {"floor": [floor_a, floor_b], "ours": ours, "same_bytes_floor": sized}
            figures += point_figures(mode, conns, rate, floor_a, floor_b, ours, sized, bodies)
    return figures, raw


def point_figures(
    mode: str,
    conns: int,
    rate: float | None,
    floor_a: dict[str, Any],
    floor_b: dict[str, Any],
    ours: dict[str, dict[str, Any]],
    sized: dict[str, dict[str, Any]],
    bodies: dict[str, bytes],
) -> list[dict[str, object]]:
    figures = []
    drift = ""
    if mode == "throughput":
        base = (floor_a["requests_per_s"] + floor_b["requests_per_s"]) / 2
        drift = (
            f"floor {floor_a['requests_per_s']:,.0f} before, {floor_b['requests_per_s']:,.0f} after"
        )
        for name, r in ours.items():
            rps = r["requests_per_s"]
            extra = f"  {rps / base:.2f} of floor; cost {base / rps:.2f}× floor"
            same = sized.get(name)
            if same is not None:
                extra += (
                    f", {same['requests_per_s'] / rps:.2f}× the same-bytes floor "
                    f"({same['requests_per_s']:,.0f} req/s, {len(bodies[name]):,} B)"
                )
            print(line(f"{name}", r, extra), flush=True)
            limits = f"server CPU {r.get('server_cpu', 0):.0%}, generator {r['generator_cpu']:.0%}; {drift}"
            if same is not None:
                limits += (
                    f"; same-bytes floor {same['requests_per_s']:,.0f} req/s "
                    f"(cost {same['requests_per_s'] / rps:.2f}×)"
                )
            figures.append(
                figure(
                    f"{name}, {conns} conn, throughput",
                    rps,
                    "req/s",
                    baseline=base,
                    baseline_name="bare Starlette route, same run",
                    target=TARGETS.get((mode, conns, name), ""),
                    samples=r["samples"],
                    limits=limits,
                )
            )
    else:
        base_p50 = (floor_a["latency_ms"]["p50"] + floor_b["latency_ms"]["p50"]) / 2
        base_p99 = (floor_a["latency_ms"]["p99"] + floor_b["latency_ms"]["p99"]) / 2
        for name, r in ours.items():
            lat = r["latency_ms"]
            print(
                line(
                    name,
                    r,
                    f"  p50 {lat['p50'] / base_p50:.2f}×, p99 {lat['p99'] / base_p99:.2f}× floor",
                ),
                flush=True,
            )
            limits = (
                f"open loop {rate:,.0f} req/s; server CPU {r.get('server_cpu', 0):.0%}; "
                f"floor p99 {floor_a['latency_ms']['p99']:.2f} / "
                f"{floor_b['latency_ms']['p99']:.2f} ms before/after"
            )
            for pct, base in (("p50", base_p50), ("p99", base_p99)):
                figures.append(
                    figure(
                        f"{name}, {conns} conn @ {rate:,.0f}/s, {pct}",
                        lat[pct],
                        "ms",
                        baseline=base,
                        baseline_name="bare Starlette route, same run",
                        samples=r["samples"],
                        limits=limits + f"; p99.9 {lat['p99.9']:.2f} ms",
                    )
                )
    return figures


def measure_history(port: int, token: str, data: Path, day: int) -> list[dict[str, object]]:
    """A 1-day 1-minute-bars request and a ~1 M-row Arrow download over HTTP, each beside the
    same query run here (in this process, on the same files): the ratio is the API's
    share (routing, JSON or IPC encoding, the socket)."""
    figures = []
    headers = {"Authorization": f"Bearer {token}"}
    query = Query(data / "lake", data / "journal", MemoryHotStore(1))
    bars_path = (
        f"/api/v1/ticks/historical?symbols=SPY&start_time={day}&end_time={day + DAY}&interval=1m"
    )
    half = day + int(17.75 * 3600) * NS_PER_SECOND  # the second half of the session
    arrow_path = (
        f"/api/v1/ticks/historical?symbols=SPY&start_time={half}&end_time={day + DAY}&format=arrow"
    )

    def timed(fn: Any, runs: int) -> list[float]:
        fn()
        samples = []
        for _ in range(runs):
            t = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t)
        return samples

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as c:
        http_bars = timed(lambda: c.get(bars_path).raise_for_status(), 20)
        local_bars = timed(lambda: query.bars(["SPY"], day, day + DAY, "1m"), 20)
        rows = pa.ipc.open_stream(c.get(arrow_path).content).read_all().num_rows
        http_arrow = timed(lambda: c.get(arrow_path).raise_for_status(), 5)

    def local_arrow() -> None:
        rel = query.events_relation("trade", ["SPY"], half, day + DAY)
        assert rel is not None
        rel.to_arrow_reader(65_536).read_all()

    local = timed(local_arrow, 5)
    a, b = float(np.median(http_bars)) * 1000, float(np.median(local_bars)) * 1000
    print(f"1-day 1m bars over HTTP: p50 {a:.1f} ms; the same query in process {b:.1f} ms")
    figures.append(
        figure(
            "1-day 1m bars over HTTP, p50",
            a,
            "ms",
            baseline=b,
            baseline_name="Query.bars in the bench process",
            target="≤ 50 ms",
            samples=len(http_bars),
            limits="2 M-trade symbol-day; DuckDB threads shared with ingest",
        )
    )
    a, b = float(np.median(http_arrow)) * 1000, float(np.median(local)) * 1000
    print(f"Arrow download of {rows:,} rows: p50 {a:.0f} ms; the same read in process {b:.0f} ms")
    figures.append(
        figure(
            f"Arrow download, {rows / 1e6:.2f} M rows, p50",
            a,
            "ms",
            baseline=b,
            baseline_name="the same DuckDB read in the bench process",
            target="≤ 1000 ms",
            samples=len(http_arrow),
            limits="client decode included; loopback",
        )
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per point")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rate-one", type=float, default=500.0, help="open loop, 1 conn")
    parser.add_argument("--rate-many", type=float, default=2000.0, help="open loop, N conns")
    parser.add_argument("--rate", type=int, default=50_000, help="simulator events/s")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="tickpipe-api-bench-"))
    token, day = prepare(data)
    with tickpipe_server(data, args.rate) as (port, server):
        time.sleep(3)  # let ingest reach its steady rate
        status = httpx.get(f"http://127.0.0.1:{port}/api/v1/status").json()
        cpu0 = cpu_seconds(server.pid)
        time.sleep(3)
        idle_cpu = (cpu_seconds(server.pid) - cpu0) / 3
        print(f"the server without HTTP load (ingest at {args.rate:,}/s): {idle_cpu:.0%} of a core")
        figures, raw = measure_http(args, port, server.pid, token)
        figures += measure_history(port, token, data, day)
        status2 = httpx.get(f"http://127.0.0.1:{port}/api/v1/status").json()
        ingest = (status2["accepted_total"] - status["accepted_total"]) / (
            status2["uptime_s"] - status["uptime_s"]
        )
    print(f"ingest rate during the run: {ingest:,.0f} events/s (simulator set to {args.rate:,})")
    figures.append(
        figure(
            "ingest while serving",
            ingest,
            "events/s",
            baseline=args.rate,
            baseline_name="simulator rate asked",
            samples=None,
        )
    )
    figures.append(
        figure(
            "server CPU without HTTP load (ingest alone)",
            idle_cpu * 100,
            "% of a core",
            samples=None,
            limits="what the in-process pipeline takes from the API's core before any request",
        )
    )
    write_json(args.json, figures, raw=raw, generator=generator())


if __name__ == "__main__":
    main()
