"""What the dashboard and the access log cost the API, measured against real servers.

1. The page's own load: a pipeline process ingests the simulator at 50 k events/s while
   ``--clients`` keep-alive connections drive the real-time route flat out. Phases with
   and without one open page alternate; the page is emulated in its own process with the
   page's exact schedule (status 1.5 s, services 2 s, quality 10 s, GEX 3 s, symbols 30 s,
   bars 30 s, and the WebSocket for one symbol's trades and quotes, conflated to 250 ms).
2. The access log: API-only servers (no feed) under the same load, in three variants
   run in alternation: observation removed, metrics with the log off, metrics + the file
   log (the default). The route is cheap, so the relative cost is the worst case.
3. ``--browser``: the real page in Debian's Chromium at 50 k events/s: frame intervals
   and long tasks on the page's main thread.

    python bench/dashboard_cost.py [--seconds 6] [--rounds 3] [--clients 32] [--browser]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import RawHttp

from tickpipe.store.keystore import KeyStore

ROOT = Path(__file__).resolve().parents[1]
REALTIME = "/api/v1/ticks/realtime?symbols=SPY&limit=10"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    data: Path, env: dict[str, str], variant: str = "default"
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith("TICKPIPE_")}
    full.update({"TICKPIPE_DATA_DIR": str(data), **env})
    cmd = [sys.executable, __file__, "--serve", variant, "--port", str(port)]
    proc = subprocess.Popen(
        cmd, env=full, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1).json().get("ready"):
                return proc, port
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def throughput(port: int, token: str, clients: int, seconds: float, path: str) -> float:
    """Requests per second that ``clients`` keep-alive connections complete."""
    conns = [
        RawHttp("127.0.0.1", port, {"Authorization": f"Bearer {token}"}) for _ in range(clients)
    ]
    await asyncio.gather(*(c.connect() for c in conns))
    done = 0
    end = time.monotonic() + seconds

    async def worker(conn: RawHttp) -> None:
        nonlocal done
        while time.monotonic() < end:
            status, _ = await conn.get(path)
            assert status == 200, status
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.monotonic() - started
    await asyncio.gather(*(c.close() for c in conns))
    return done / elapsed


async def emulate_page(base: str, token: str, seconds: float) -> dict[str, float]:
    """The page's requests for ``seconds``, on the page's schedule."""
    auth = {"Authorization": f"Bearer {token}"}
    now = time.time()
    bars = (
        f"/api/v1/ticks/historical?symbols=SPY&interval=1m&start_time={int(now - 3600)}"
        f"000000000&end_time={int(now + 60)}000000000"
    )
    schedule = [
        (1.5, ["/api/v1/status"], False),
        (2.0, ["/api/v1/dashboard/services"], False),
        (10.0, ["/api/v1/quality/gaps?limit=10", "/api/v1/quality/quarantine?limit=10"], True),
        (3.0, ["/api/v1/gex/SPY"], True),
        (30.0, ["/api/v1/dashboard/symbols"], True),
        (30.0, [bars], True),
    ]
    counts = {"requests": 0.0, "request_s": 0.0, "ws_events": 0.0, "ws_bytes": 0.0}
    end = time.monotonic() + seconds
    subscribed = asyncio.Event()
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:

        async def poll(every: float, paths: list[str], needs_key: bool) -> None:
            await subscribed.wait()
            while time.monotonic() < end:
                for path in paths:
                    started = time.perf_counter()
                    await client.get(path, headers=auth if needs_key else None)
                    counts["request_s"] += time.perf_counter() - started
                    counts["requests"] += 1
                await asyncio.sleep(max(0.0, min(every, end - time.monotonic())))

        async def stream() -> None:
            url = base.replace("http", "ws") + "/api/v1/stream?symbols=SPY&types=trade,quote"
            url += "&conflate=250"  # as the page asks
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    async with websockets.connect(f"{url}&token={token}", max_size=None) as ws:
                        await ws.recv()  # subscribed: from here on the page is open
                        print("ready", flush=True)
                        subscribed.set()
                        async for message in ws:
                            counts["ws_bytes"] += len(message)
                            data = json.loads(message)
                            if isinstance(data, list):
                                counts["ws_events"] += len(data)

        await asyncio.gather(stream(), *(poll(*item) for item in schedule))
    return {k: v / seconds for k, v in counts.items()}


def page_process(base: str, token: str, seconds: float) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, __file__, "--page", base, token, str(seconds)]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE)


def page_cost(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        token, _ = KeyStore(data / "keys.sqlite").create(
            "bench", ["read", "stream", "admin"], 100_000
        )
        env = {"TICKPIPE_SIMULATOR_RATE": "50000"}
        proc, port = start_server(data, env)
        base = f"http://127.0.0.1:{port}"
        try:
            time.sleep(3)  # chain, bars and GEX exist before measuring
            without: list[float] = []
            with_page: list[float] = []
            page_rates: list[dict[str, float]] = []
            for _ in range(args.rounds):
                without.append(
                    asyncio.run(throughput(port, token, args.clients, args.seconds, REALTIME))
                )
                page = page_process(base, token, args.seconds + 3)
                assert page.stdout is not None and page.stdout.readline() == b"ready\n"
                with_page.append(
                    asyncio.run(throughput(port, token, args.clients, args.seconds, REALTIME))
                )
                out, _ = page.communicate(timeout=120)
                page_rates.append(json.loads(out))
            a, b = statistics.median(without), statistics.median(with_page)
            paired = statistics.median(y / x for x, y in zip(without, with_page, strict=True))
            print(f"1. page cost, simulator at 50 k events/s, {args.clients} clients on {REALTIME}")
            print(
                f"   without a page: {a:,.0f} req/s  (rounds: {', '.join(f'{x:,.0f}' for x in without)})"
            )
            print(
                f"   with one page:  {b:,.0f} req/s  (rounds: {', '.join(f'{x:,.0f}' for x in with_page)})"
            )
            print(
                f"   ratio of medians {b / a:.3f}, median of paired ratios {paired:.3f}: the page "
                f"costs {100 * (1 - paired):+.1f} % of throughput"
            )
            r = {k: statistics.median(p[k] for p in page_rates) for k in page_rates[0]}
            print(
                f"   the page: {r['requests']:.2f} HTTP req/s (each {1000 * r['request_s'] / r['requests']:.1f} "
                f"ms under this load), WebSocket {r['ws_events']:,.1f} events/s "
                f"({r['ws_bytes'] / 1e3:,.1f} kB/s) for SPY"
            )
            if args.browser:
                browser_smoothness(base, token)
        finally:
            stop_server(proc)


def browser_smoothness(base: str, token: str) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.browser.browser import chromium

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(base + "/status.html")
        page.fill("#key-input", token)
        page.click("#key-save")
        page.wait_for_function(
            "() => Number(document.querySelector('#price-chart').dataset.candles) > 0"
        )
        page.wait_for_function("() => document.querySelector('#stream-rate').textContent !== ''")
        result = page.evaluate(
            """() => new Promise((resolve) => {
                const frames = []; const longTasks = [];
                new PerformanceObserver((l) => l.getEntries().forEach((e) => longTasks.push(e.duration)))
                    .observe({ type: "longtask", buffered: false });
                let last = performance.now(); const end = last + 10000;
                const tick = (now) => { frames.push(now - last); last = now;
                    if (now < end) requestAnimationFrame(tick); else resolve({ frames, longTasks }); };
                requestAnimationFrame(tick);
            })"""
        )
        rate = page.locator("#stream-rate").inner_text()
    frames = sorted(result["frames"])
    pct = lambda q: frames[min(len(frames) - 1, int(q * len(frames)))]  # noqa: E731
    print(
        f"3. real page in Chromium at 50 k events/s, 10 s: {len(frames)} frames, interval p50 "
        f"{pct(0.5):.1f} ms p99 {pct(0.99):.1f} ms max {frames[-1]:.1f} ms; long tasks (>50 ms): "
        f"{len(result['longTasks'])}; stream shown: {rate}"
    )


def log_cost(args: argparse.Namespace) -> float:
    variants = ["none", "log_off", "file"]
    results: dict[str, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        token, _ = KeyStore(data / "keys.sqlite").create("bench", ["read"], 100_000)
        for _ in range(args.rounds):
            for variant in variants:
                env = {"TICKPIPE_SIMULATOR": "false"}
                env["TICKPIPE_ACCESS_LOG"] = "file" if variant == "file" else "off"
                proc, port = start_server(data, env, variant)
                try:
                    asyncio.run(throughput(port, token, args.clients, 1.0, REALTIME))  # warm up
                    results[variant].append(
                        asyncio.run(throughput(port, token, args.clients, args.seconds, REALTIME))
                    )
                finally:
                    stop_server(proc)
        lines = (
            sum(1 for _ in (data / "logs" / "access.log").open())
            if (data / "logs" / "access.log").exists()
            else 0
        )
    base = statistics.median(results["none"])
    print(f"2. access log cost, API only, {args.clients} clients on {REALTIME} (empty hot store)")
    for variant in variants:
        med = statistics.median(results[variant])
        runs = ", ".join(f"{x:,.0f}" for x in results[variant])
        print(f"   {variant:8s} {med:8,.0f} req/s  ratio {med / base:.3f}  (rounds: {runs})")
    print(f"   access log lines written: {lines:,}")
    return base


def direct_cost(served_rps: float | None = None, requests: int = 20_000, repeats: int = 7) -> None:
    """Observation's own CPU, free of the network's and the shared machine's noise: the
    middleware around a minimal ASGI app (best of ``repeats``), and the log thread's work
    per line (its CPU time), set against what one served request costs the server."""
    from tickpipe.api.observe import AccessLog, ObserveMiddleware, Observer, _writer
    from tickpipe.metrics import ApiMetrics

    class Route:
        path = "/api/v1/ticks/realtime"

    async def inner(scope: dict[str, object], receive: object, send: object) -> None:
        scope["route"] = Route
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b'{"data":[{"a":1},{"a":2}]}'})  # type: ignore[operator]

    async def sink(message: object) -> None:
        return None

    async def receive() -> dict[str, object]:
        return {"type": "http.request"}

    scope = {
        "type": "http", "method": "GET", "path": Route.path, "query_string": b"symbols=SPY",
        "headers": [(b"host", b"x"), (b"authorization", b"Bearer tp_0123abcd_secret")],
    }  # fmt: skip

    async def per_request(app: object) -> float:
        started = time.perf_counter()
        for _ in range(requests):
            await app(dict(scope), receive, sink)  # type: ignore[operator]
        return (time.perf_counter() - started) / requests * 1e6

    async def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            result: dict[str, float] = {}
            lines: list[float] = []
            for mode in ("off", "file"):
                access_log = AccessLog(mode, Path(tmp) / "access.log")
                _writer.discard(access_log)  # drained below, timed on its own
                app = ObserveMiddleware(inner, Observer(ApiMetrics(), access_log))  # type: ignore[arg-type]
                bare, observed = [], []
                for _ in range(repeats):
                    bare.append(await per_request(inner))
                    observed.append(await per_request(app))
                    started = time.thread_time()
                    written = access_log.flush()
                    if written:
                        lines.append((time.thread_time() - started) / written * 1e6)
                result[mode] = min(observed) - min(bare)
            line = statistics.median(lines)
            total = result["file"] + line
            print(f"2b. observation's own CPU ({repeats} x {requests:,} requests, best of):")
            print(
                f"    request path: metrics {result['off']:.2f} us, + access log queue "
                f"{result['file']:.2f} us; log thread {line:.2f} us per line; total {total:.2f} us"
            )
            if served_rps:
                served_us = 1e6 / served_rps
                print(
                    f"    a served request costs {served_us:.0f} us of the server's core (part 2 "
                    f"without observation): observation + log = {100 * total / served_us:.1f} %"
                )

    asyncio.run(run())


def serve(variant: str, port: int) -> None:
    """A server process for one variant ('none' removes request observation)."""
    from tickpipe import cli
    from tickpipe.api import observe

    if variant == "none":
        observe.install = lambda app, ctx: None  # type: ignore[assignment]
    sys.exit(cli.main(["run", "--port", str(port)]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--browser", action="store_true")
    parser.add_argument("--serve")
    parser.add_argument("--port", type=int)
    parser.add_argument("--page", nargs=3)
    parser.add_argument("--only", choices=["page", "log", "direct"])
    parser.add_argument("--served-rps", type=float, help="for --only direct: part 2's figure")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
    elif args.page:
        base, token, seconds = args.page
        print(json.dumps(asyncio.run(emulate_page(base, token, float(seconds)))))
    else:
        if args.only in (None, "page"):
            page_cost(args)
        served = log_cost(args) if args.only in (None, "log") else args.served_rps
        if args.only in (None, "direct"):
            direct_cost(served)


if __name__ == "__main__":
    main()
