"""Ingest throughput and delay, three ways (``--mode``, default all of them):

``prebuilt``: live-sized deliveries (1, 10, 100 quotes over 5 symbols) made up front and
emitted through a real source context into the pipeline (intake -> tick -> quality ->
journal fsync -> hot store, bus, GEX): events/s from the first emit until every event is
accepted (fsync'd) and fanned out, ``--repeat`` times (min/median/max), beside the same
source into an intake that does nothing (the baseline). Memory mode, then Redis mode.

``feed``: the DXLink fake in a process of its own sends Quote frames of 10 at a set rate
(``--rates``) to the real tastytrade source: frames received, the send-to-visible delay
per frame (p50/p99/max, visible = offered to the hot store, bus and WebSocket readers),
and the socket backlog. The knee is the first rate whose delay keeps growing.

``simulator``: the built-in simulator's deliveries of the sizes below, each beside the
simulator alone (the baseline), measured in this process right before and right after the
pipeline (the two show the machine's drift):

  - live-feed-sized deliveries of 1, 10 and 100 events (what a websocket frame carries):
    events *accepted* (journaled and fsync'd) per second over a ``--window`` after a
    warm-up, so start-up and the final flush are not in the rate;
  - bulk deliveries of 65,536 events (what an importer hands over): the same steady
    window, and once end to end for ``--events`` (start, ingest, and the final flush until
    the last event is in Parquet), which shows the fixed costs a short run pays.

Memory mode, then Redis mode when redis-server is installed.

    python bench/ingest.py [--mode prebuilt|feed|simulator] [--repeat 3] [--rates 1000,5000]
                           [--window 10] [--events 5000000] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _feed
import _prebuilt
from _util import figure, redis_server, write_json

from tickpipe.clock import NS_PER_SECOND, SystemClock
from tickpipe.config import Settings
from tickpipe.pipeline import Pipeline
from tickpipe.sources.simulator import Simulator

SIZES = (1, 10, 100, 65_536)
MARKET_RATE = 1_000_000
"""events per second of market time: deliveries of n events cover n µs"""


def bench_settings(data: Path, batch: int, max_events: int, redis_url: str | None) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=data,
        redis_url=redis_url,
        simulator_seed=1,
        simulator_realtime=False,
        simulator_rate=MARKET_RATE,
        simulator_batch_size=batch,
        simulator_max_events=max_events,
        simulator_start_ns=SystemClock().now_ns() - 3600 * NS_PER_SECOND,
        journal_segment_seconds=0.5,
    )


def baseline(settings: Settings, seconds: float) -> tuple[float, int]:
    """The simulator alone making deliveries of the same size: events/s and samples."""
    sim = Simulator(settings, SystemClock())
    n = settings.simulator_batch_size
    duration = max(int(n / MARKET_RATE * NS_PER_SECOND), 1000)
    made = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for _ in range(max(1, 1000 // n)):
            made += sum(b.num_rows for b in sim.step(n, duration).values())
    return made / (time.perf_counter() - started), made


async def steady(settings: Settings, warmup: float, window: float) -> dict[str, Any]:
    """Accepted events/s over ``window`` seconds of a running pipeline."""
    pipeline = Pipeline(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(pipeline.run(stop))
    await pipeline.ready.wait()
    await asyncio.sleep(warmup)
    accepted0, emitted0 = sum(pipeline.hub.accepted.values()), _emitted(pipeline)
    started = time.perf_counter()
    await asyncio.sleep(window)
    elapsed = time.perf_counter() - started
    accepted = sum(pipeline.hub.accepted.values()) - accepted0
    emitted = _emitted(pipeline) - emitted0
    stop.set()
    await task
    return {"accepted_per_s": accepted / elapsed, "accepted": accepted, "emitted": emitted}


def _emitted(pipeline: Pipeline) -> int:
    return pipeline.supervisor.states["simulator"].events


async def end_to_end(settings: Settings) -> dict[str, Any]:
    pipeline = Pipeline(settings)
    stop = asyncio.Event()
    started = time.perf_counter()
    task = asyncio.create_task(pipeline.run(stop))
    await pipeline.ready.wait()
    ready_s = time.perf_counter() - started
    await pipeline.sources_done.wait()
    ingested_s = time.perf_counter() - started
    stop.set()
    await task  # the final flush: every accepted event is in Parquet when this returns
    elapsed = time.perf_counter() - started
    accepted = sum(pipeline.hub.accepted.values())
    return {
        "accepted_per_s": accepted / elapsed,
        "accepted": accepted,
        "ready_s": ready_s,
        "final_flush_s": elapsed - ingested_s,
        "elapsed_s": elapsed,
    }


PREBUILT = ((1, 150_000), (10, 600_000), (100, 2_000_000))
"""(events per delivery, events per run)"""


def spread(values: list[float]) -> str:
    ordered = sorted(values)
    return (
        f"min {ordered[0]:,.0f} / median {ordered[len(ordered) // 2]:,.0f} / max {ordered[-1]:,.0f}"
    )


def prebuilt_mode(repeat: int, url: str | None, figures: list[dict[str, object]]) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for mode, redis_url in (("memory", None), ("redis", url)):
        if mode == "redis" and redis_url is None:
            print("prebuilt redis: skipped (redis-server not installed)")
            continue
        for size, total in PREBUILT:
            items = _prebuilt.deliveries(total, size)
            runs, alone = [], []
            for _ in range(repeat):
                alone.append(asyncio.run(_prebuilt.emit_alone(items)))
                data = Path(tempfile.mkdtemp(prefix=f"tickpipe-prebuilt-{mode}-"))
                runs.append(asyncio.run(_prebuilt.through_pipeline(data, items, redis_url)))
            rates = [r["events_per_s"] for r in runs]
            visible = [r["fanned_out_per_s"] for r in runs]
            median = sorted(rates)[len(rates) // 2]
            base = sorted(alone)[len(alone) // 2]
            drops = [r["sink_drops"] for r in runs if r["sink_drops"]]
            per_tick = sorted(r["deliveries_per_tick"] for r in runs)[len(runs) // 2]
            print(
                f"prebuilt {mode}, {size:>3} events/delivery: accepted {spread(rates)} events/s; "
                f"fanned out {spread(visible)}; emitting alone {spread(alone)} "
                f"(ratio {median / base:.3f}); {per_tick:,.0f} deliveries a tick; "
                f"sink drops {drops or 'none'}",
                flush=True,
            )
            raw[f"prebuilt-{mode}-{size}"] = runs
            figures.append(
                figure(
                    f"ingest {mode}, pre-built {size}-event deliveries, accepted/s (median of {repeat})",
                    median,
                    "events/s",
                    baseline=base,
                    baseline_name="the same source into a no-op intake, same process",
                    target={1: "≥ 50 k/s", 10: "≥ 300 k/s", 100: "≥ 300 k/s"}[size]
                    if mode == "memory"
                    else ("≥ 200 k/s" if size > 1 else ""),
                    samples=total * repeat,
                    limits=f"min/median/max {spread(rates)}; fanned out {spread(visible)}",
                )
            )
    return raw


def feed_mode(
    rates: list[float], seconds: float, repeat: int, figures: list[dict[str, object]]
) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for rate in rates:
        runs = [asyncio.run(_feed.run_at(rate, seconds, 10)) for _ in range(repeat)]
        p50 = [r["p50_ms"] for r in runs]
        p99 = [r["p99_ms"] for r in runs]
        seen = min(r["seen"] / r["frames"] for r in runs)
        print(
            f"feed {rate:,.0f} frames/s of 10 quotes: sent {spread([r['sent_per_s'] for r in runs])}"
            f" frames/s; all visible {seen:.1%}; send->visible p50 "
            f"{'/'.join(f'{v:.2f}' for v in sorted(p50))} ms, p99 "
            f"{'/'.join(f'{v:.2f}' for v in sorted(p99))} ms (min/median/max); backlog max "
            f"{max(r['backlog_max_bytes'] for r in runs):,} bytes",
            flush=True,
        )
        raw[f"feed-{rate:g}"] = runs
        figures.append(
            figure(
                f"DXLink fake {rate:,.0f} frames/s x 10 quotes, send->visible p99 (median of {repeat})",
                sorted(p99)[len(p99) // 2],
                "ms",
                target="≤ 5 ms below the knee; ≥ 5,000 frames/s sustained",
                samples=sum(r["frames"] for r in runs),
                limits=f"p50 {sorted(p50)[len(p50) // 2]:.2f} ms; {seen:.1%} of frames visible",
            )
        )
    return raw


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("all", "prebuilt", "feed", "simulator"), default="all")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (prebuilt, feed)")
    parser.add_argument("--rates", default="1000,2000,5000,8000", help="feed frames/s")
    parser.add_argument("--feed-seconds", type=float, default=5.0)
    parser.add_argument("--window", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--baseline-s", type=float, default=2.0)
    parser.add_argument("--events", type=int, default=5_000_000, help="end-to-end run")
    parser.add_argument("--json")
    args = parser.parse_args()
    figures: list[dict[str, object]] = []
    raw: dict[str, Any] = {}
    with redis_server() as url:
        if args.mode in ("all", "prebuilt"):
            raw |= prebuilt_mode(args.repeat, url, figures)
        if args.mode in ("all", "feed"):
            rates = [float(r) for r in args.rates.split(",")]
            raw |= feed_mode(rates, args.feed_seconds, args.repeat, figures)
        if args.mode not in ("all", "simulator"):
            write_json(args.json, figures, raw=raw)
            return
        for mode, redis_url in (("memory", None), ("redis", url)):
            if mode == "redis" and redis_url is None:
                print("redis: skipped (redis-server not installed)")
                continue
            for size in SIZES:
                data = Path(tempfile.mkdtemp(prefix=f"tickpipe-ingest-{mode}-"))
                settings = bench_settings(data, size, 0, redis_url)
                before, n_before = baseline(settings, args.baseline_s)
                result = asyncio.run(steady(settings, args.warmup, args.window))
                after, n_after = baseline(settings, args.baseline_s)
                base = (before + after) / 2
                rate = result["accepted_per_s"]
                print(
                    f"{mode}, {size:>6,} events/delivery: {rate:>11,.0f} accepted/s "
                    f"({result['accepted']:,} in {args.window:g} s; "
                    f"{rate / size:,.0f} deliveries/s); simulator alone {before:,.0f} / "
                    f"{after:,.0f} before/after; ratio {rate / base:.3f}",
                    flush=True,
                )
                raw[f"{mode}-{size}"] = {**result, "baseline": [before, after]}
                figures.append(
                    figure(
                        f"ingest {mode}, {size:,} events/delivery, accepted/s",
                        rate,
                        "events/s",
                        baseline=base,
                        baseline_name="simulator alone, same delivery size, same process",
                        target="≥ 1 M/s" if size > 1000 and mode == "memory" else "",
                        samples=result["accepted"],
                        limits=(
                            f"{rate / size:,.0f} deliveries/s, one journal group commit "
                            f"(fsync) per hub batch; simulator {n_before + n_after:,} events "
                            "for the baseline"
                        ),
                    )
                )
            data = Path(tempfile.mkdtemp(prefix=f"tickpipe-ingest-{mode}-e2e-"))
            settings = bench_settings(data, 65_536, args.events, redis_url)
            base, _ = baseline(settings, args.baseline_s)
            e2e = asyncio.run(end_to_end(settings))
            print(
                f"{mode}, end to end {args.events:,} events in 65,536-event deliveries: "
                f"{e2e['accepted_per_s']:,.0f} accepted/s ({e2e['elapsed_s']:.2f} s, of which "
                f"start {e2e['ready_s']:.2f} s and the final flush {e2e['final_flush_s']:.2f} s)",
                flush=True,
            )
            raw[f"{mode}-e2e"] = e2e
            figures.append(
                figure(
                    f"ingest {mode}, end to end {args.events / 1e6:g} M events",
                    e2e["accepted_per_s"],
                    "events/s",
                    baseline=base,
                    baseline_name="simulator alone, same process",
                    samples=e2e["accepted"],
                    limits=(
                        f"includes start {e2e['ready_s']:.2f} s and final flush "
                        f"{e2e['final_flush_s']:.2f} s"
                    ),
                )
            )
    write_json(args.json, figures, raw=raw)


if __name__ == "__main__":
    main()
