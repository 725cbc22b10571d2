"""Real-time answers of ``--role api`` workers beside ``--role all``, same run, same mix.

Starts a private redis-server, an ingest process (``--role ingest``, simulator) with
``--role api --workers 2`` beside it on that Redis, and a ``--role all`` process (memory
hot store, the same simulator seed and rate, its own data dir). Then, ``--repeats`` times
and alternating which side goes first, the same mix of ``/api/v1/ticks/realtime`` queries
(one to four symbols, one to three types, limits 20 to 1,000) against each side:

  - throughput, closed loop over ``--connections`` keep-alive connections;
  - latency, open loop at ``--rate`` requests/s over the same connections, measured from
    each request's scheduled time (queueing shows);

each point ``--duration`` s after ``--warmup`` s of the same load, by a generator in its own
process (``RawHttp`` connections; its CPU is reported: near 100 % means the figure is the
generator's). Both ingests run through every point, so each side is measured on the same
loaded machine; measuring starts ``--settle`` s after both answer, after one unrecorded
point per side (the first seconds of a process measured its start, not its serving).
``--idle-only`` measures only the idle workers (try ``--sim-rate 50000``: the old relay's
cost grew with the bus's rate). Last, the CPU of each API worker over 10 s with no request and no
WebSocket client.

    python bench/role_api.py [--repeats 3] [--duration 5] [--connections 16] [--json out]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _http import cpu_seconds, free_port
from _util import RawHttp, figure, percentiles, redis_server, write_json

from tickpipe.config import Settings
from tickpipe.store.keystore import KeyStore

ROOT = Path(__file__).resolve().parents[1]
REALTIME = "/api/v1/ticks/realtime?"
MIX = [
    REALTIME + "symbols=SPY&limit=100&types=trade",
    REALTIME + "symbols=SPY,QQQ&limit=50",
    REALTIME + "symbols=%2FES,%2FNQ,%24VIX&limit=20&types=trade,quote,book",
    REALTIME + "symbols=QQQ&limit=1000&types=quote",
    REALTIME + "symbols=SPY,QQQ,%2FES,%2FNQ&limit=10&types=trade",
]
"""the request mix, sent round robin on every connection"""
IDLE_CPU_S = 10.0


# --- the load generator (run in its own process: ``role_api.py generate ...``) ---------


async def _closed(conns: list[RawHttp], paths: list[str], args: argparse.Namespace) -> dict:
    latencies: list[float] = []
    errors: dict[int, int] = {}
    state = {"measuring": False, "stop": False}

    async def run(conn: RawHttp, offset: int) -> None:
        i = offset
        while not state["stop"]:
            started = time.perf_counter()
            status, _ = await conn.get(paths[i % len(paths)])
            i += 1
            if state["measuring"]:
                if status == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors[status] = errors.get(status, 0) + 1

    tasks = [asyncio.create_task(run(c, n)) for n, c in enumerate(conns)]
    await asyncio.sleep(args.warmup)
    state["measuring"] = True
    started = time.perf_counter()
    await asyncio.sleep(args.duration)
    state["measuring"] = False
    elapsed = time.perf_counter() - started
    state["stop"] = True
    await asyncio.gather(*tasks)
    return {"samples": len(latencies), "latencies": latencies, "errors": errors, "s": elapsed}


async def _open(conns: list[RawHttp], paths: list[str], args: argparse.Namespace) -> dict:
    """Request i is due at ``start + i / rate`` whatever happened to the earlier ones; a
    clock thread releases it (loop timers round to milliseconds) to the next idle
    connection, and its latency runs from its due time."""
    loop = asyncio.get_running_loop()
    due: asyncio.Queue[float | None] = asyncio.Queue()
    latencies: list[float] = []
    errors: dict[int, int] = {}
    start = time.perf_counter() + 0.05
    measured_from = start + args.warmup
    total = int((args.warmup + args.duration) * args.rate)
    overloaded = threading.Event()

    def clock() -> None:
        for i in range(total):
            at = start + i / args.rate
            wait = at - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            if due.qsize() > args.rate * 2:  # two seconds of backlog: the server cannot keep up
                overloaded.set()
                break
            loop.call_soon_threadsafe(due.put_nowait, at)
        for _ in conns:
            loop.call_soon_threadsafe(due.put_nowait, None)

    async def run(conn: RawHttp, offset: int) -> None:
        i = offset
        while (at := await due.get()) is not None and not overloaded.is_set():
            status, _ = await conn.get(paths[i % len(paths)])
            i += 1
            if at >= measured_from:
                if status == 200:
                    latencies.append(time.perf_counter() - at)
                else:
                    errors[status] = errors.get(status, 0) + 1

    thread = threading.Thread(target=clock, daemon=True)
    thread.start()
    await asyncio.gather(*(run(c, n) for n, c in enumerate(conns)))
    thread.join()
    return {
        "samples": len(latencies),
        "latencies": latencies,
        "errors": errors,
        "s": args.duration,
        "overloaded": overloaded.is_set(),
    }


async def _generate(args: argparse.Namespace) -> dict:
    headers = {"Authorization": f"Bearer {args.token}"}
    conns = [RawHttp("127.0.0.1", args.port, headers) for _ in range(args.connections)]
    for conn in conns:
        await conn.connect()
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    try:
        result = await (_open if args.rate else _closed)(conns, MIX, args)
    finally:
        for conn in conns:
            await conn.close()
    result["generator_cpu"] = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    return result


def generate_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rate", type=float, default=0.0, help="open loop; 0: closed loop")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args(argv)
    import uvloop

    result = uvloop.run(_generate(args))
    json.dump(result, sys.stdout)


# --- the processes --------------------------------------------------------------------


def _env(data: Path, rate: int, redis_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKPIPE_")}
    env |= {
        "TICKPIPE_DATA_DIR": str(data),
        "TICKPIPE_SIMULATOR_RATE": str(rate),
        "TICKPIPE_SIMULATOR_SEED": "7",
        "TICKPIPE_LOG_LEVEL": "WARNING",
    }
    if redis_url:
        env["TICKPIPE_REDIS_URL"] = redis_url
    return env


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-m", "tickpipe.cli", "run", *args], env=env)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def token_for(data: Path) -> str:
    settings = Settings(_env_file=None, data_dir=data)  # type: ignore[call-arg]
    token, _ = KeyStore(settings.keys_path).create("bench", ["read", "stream"], 1_000_000)
    return token


def wait_for_answers(port: int, token: str, timeout_s: float = 90) -> None:
    """Every query of the mix answers 200 with data (the simulator has written each kind)."""
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + timeout_s
    pending = list(MIX)
    while pending:
        if time.monotonic() > deadline:
            raise RuntimeError(f"port {port}: no data for {pending} within {timeout_s:.0f} s")
        with contextlib.suppress(httpx.HTTPError):
            r = httpx.get(f"http://127.0.0.1:{port}{pending[0]}", headers=headers, timeout=5)
            if r.status_code == 200 and r.json()["data"]:
                pending.pop(0)
                continue
        time.sleep(0.2)


def workers_of(master: int) -> list[int]:
    """The uvicorn worker processes under ``--role api``'s supervisor."""
    found = []
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    for pid in map(int, children):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"spawn_main" in cmdline:
            found.append(pid)
    return found


def run_point(
    port: int, token: str, pids: list[int], args: argparse.Namespace, rate: float
) -> dict[str, Any]:
    command = [sys.executable, __file__, "generate", "--port", str(port), "--token", token]
    command += ["--connections", str(args.connections), "--rate", str(rate)]
    command += ["--duration", str(args.duration), "--warmup", str(args.warmup)]
    cpu0 = sum(cpu_seconds(p) for p in pids)
    started = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - started
    result: dict[str, Any] = json.loads(out)
    result["server_cpu"] = (sum(cpu_seconds(p) for p in pids) - cpu0) / wall
    samples = result.pop("latencies")
    if result.get("overloaded") or not samples:
        # the server fell two seconds behind the schedule: no latency to speak of
        result["percentiles"] = "overloaded (open loop fell 2 s behind)"
        result["p50_ms"] = result["p99_ms"] = float("inf")
    else:
        result["percentiles"] = percentiles(samples)
        result["p50_ms"], result["p99_ms"] = (
            float(v) for v in np.percentile(np.array(samples) * 1000, [50, 99])
        )
    result["req_s"] = result["samples"] / result["s"]
    return result


def spread(values: list[float]) -> str:
    return f"min {min(values):,.3f}  median {float(np.median(values)):,.3f}  max {max(values):,.3f}"


def idle_cpu(pids: list[int], seconds: float) -> list[float]:
    before = [cpu_seconds(p) for p in pids]
    time.sleep(seconds)
    return [(cpu_seconds(p) - b) / seconds for p, b in zip(pids, before, strict=True)]


def measure(args: argparse.Namespace) -> list[dict[str, object]]:
    work = Path(tempfile.mkdtemp(prefix="tickpipe-role-api-"))
    data_api, data_all = work / "api", work / "all"
    tokens = {"api": token_for(data_api), "all": token_for(data_all)}
    ports = {"ingest": free_port(), "api": free_port(), "all": free_port()}
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(redis_server())
        if url is None:
            raise SystemExit("redis-server is not installed")
        env_api = _env(data_api, args.sim_rate, url)
        ingest = stack.enter_context(
            process(["--role", "ingest", "--port", str(ports["ingest"])], env_api)
        )
        api = stack.enter_context(
            process(["--role", "api", "--workers", "2", "--port", str(ports["api"])], env_api)
        )
        full = stack.enter_context(
            process(["--port", str(ports["all"])], _env(data_all, args.sim_rate, None))
        )
        for side in ("api", "all"):
            wait_for_answers(ports[side], tokens[side])
        workers = workers_of(api.pid)
        print(f"ingest pid {ingest.pid}, api workers {workers}, all pid {full.pid}", flush=True)
        pids = {"api": workers, "all": [full.pid]}
        runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
        if not args.idle_only:
            runs = compare(args, ports, tokens, pids)
        idle = idle_cpu(workers, IDLE_CPU_S)
        print(
            f"idle API workers over {IDLE_CPU_S:g} s (no request, no WebSocket client): "
            + ", ".join(f"{c:.1%}" for c in idle)
            + " of a core",
            flush=True,
        )
    return summarize(args, runs, idle)


def compare(
    args: argparse.Namespace,
    ports: dict[str, int],
    tokens: dict[str, str],
    pids: dict[str, list[int]],
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Every point of every repeat, alternating which side goes first."""
    time.sleep(args.settle)  # both ingests past their start (recovery, GEX warm-up)
    for side in ("api", "all"):  # one unrecorded point each: caches and mirrors filled
        run_point(ports[side], tokens[side], pids[side], args, 0.0)
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for repeat in range(args.repeats):
        order = ("api", "all") if repeat % 2 == 0 else ("all", "api")
        for mode, rate in (("throughput", 0.0), ("latency", args.rate)):
            for side in order:
                r = run_point(ports[side], tokens[side], pids[side], args, rate)
                runs.setdefault((mode, side), []).append(r)
                print(point_line(repeat, mode, side, r), flush=True)
    return runs


def point_line(repeat: int, mode: str, side: str, r: dict[str, Any]) -> str:
    errors = f"  ERRORS {r['errors']}" if r["errors"] else ""
    overloaded = "  OVERLOADED" if r.get("overloaded") else ""
    return (
        f"  #{repeat + 1} {mode:<10} role {side:<3} {r['req_s']:>9,.0f} req/s  "
        f"{r['percentiles']}  server {r['server_cpu']:.0%}  "
        f"generator {r['generator_cpu']:.0%}{errors}{overloaded}"
    )


def summarize(
    args: argparse.Namespace, runs: dict[tuple[str, str], list[dict[str, Any]]], idle: list[float]
) -> list[dict[str, object]]:
    figures = []
    conns = f"{args.connections} conn"
    if runs:
        print(f"\nover {args.repeats} repeats (min / median / max):")
    for mode, key, unit in (
        ("throughput", "req_s", "req/s"),
        ("latency", "p50_ms", "ms"),
        ("latency", "p99_ms", "ms"),
    ):
        if not runs:
            break
        api = [r[key] for r in runs[(mode, "api")]]
        full = [r[key] for r in runs[(mode, "all")]]
        ratios = [a / b for a, b in zip(api, full, strict=True)]
        what = f"realtime mix, {conns}, {mode}" + (
            f" @ {args.rate:,.0f}/s, {key[:3]}" if mode == "latency" else ""
        )
        print(f"  {what}")
        print(f"    role api (2 workers) {spread(api)} {unit}")
        print(f"    role all             {spread(full)} {unit}")
        print(f"    ratio api / all      {spread(ratios)}")
        cpu = [r["server_cpu"] for r in runs[(mode, "api")]]
        gen = [r["generator_cpu"] for r in runs[(mode, "api")]]
        figures.append(
            figure(
                f"{what}, role api / role all",
                float(np.median(api)),
                unit,
                baseline=float(np.median(full)),
                baseline_name="--role all (memory hot store), same run",
                ratio=float(np.median(ratios)),
                target="≥ 0.8 of role all" if mode == "throughput" else "",
                samples=sum(r["samples"] for r in runs[(mode, "api")]),
                limits=f"workers' CPU median {np.median(cpu):.0%} (both), generator "
                f"{np.median(gen):.0%}; ratios {spread(ratios)}",
            )
        )
    figures.append(
        figure(
            "idle API worker CPU (no request, no WebSocket client)",
            max(idle) * 100,
            "% of a core",
            samples=len(idle),
            limits=f"over {IDLE_CPU_S:g} s, ingest at {args.sim_rate:,} events/s",
        )
    )
    return figures


def main() -> None:
    if sys.argv[1:2] == ["generate"]:
        generate_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per point")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after start")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rate", type=float, default=1000.0, help="open loop requests/s")
    parser.add_argument("--sim-rate", type=int, default=5000, help="simulator events/s")
    parser.add_argument("--idle-only", action="store_true", help="only the idle worker CPU")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    figures = measure(args)
    write_json(args.json, figures, mix=MIX)


if __name__ == "__main__":
    main()
