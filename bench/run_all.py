"""Run every benchmark, print one table, write JSON (and optionally the docs' table).

Each benchmark runs as its own process, one after another (they would otherwise measure
each other on a 2-core machine). Ours write their figures as JSON: every figure beside a
baseline measured in the same run, with its ratio, sample count, target and what limits
it. The feed benchmarks (``parse_*.py``, ``scid_import.py``, ``gexbot.py``,
``ws_fanout.py``, ``dashboard_cost.py``) print text; their last lines are kept in the JSON.

    python bench/run_all.py [--quick] [--only api_latency,bars] [--skip-feeds]
                            [--json bench/last_run.json] [--update-docs]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DOC = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- run_all:begin -->", "<!-- run_all:end -->"

OURS: dict[str, tuple[list[str], list[str]]] = {
    # name: (full arguments, --quick arguments)
    "api_latency": ([], ["--duration", "3", "--warmup", "1"]),
    "ingest": ([], ["--window", "3", "--warmup", "1", "--baseline-s", "1", "--events", "1000000"]),
    "bars": ([], ["--runs", "10"]),
    "lake_density": ([], ["--trades", "1000000"]),
    "gex": ([], ["--duration", "3", "--runs", "10"]),
}
FEEDS: dict[str, list[str]] = {
    "parse_dxlink": [],
    "parse_schwab": [],
    "scid_import": [],
    "gexbot": [],
    "ws_fanout": [],
    "dashboard_cost": [],
}
TIMEOUT_S = 1800


def machine() -> dict[str, Any]:
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    versions = {}
    for module in ("numpy", "pyarrow", "duckdb", "polars", "fastapi", "starlette", "uvicorn"):
        try:
            versions[module] = __import__(module).__version__
        except Exception:  # a benchmark reports what it can
            versions[module] = "?"
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg(),
        "wrk": shutil.which("wrk") is not None,
        "packages": versions,
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
    }


def run(name: str, args: list[str], with_json: bool) -> dict[str, Any]:
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    cmd = [sys.executable, str(HERE / f"{name}.py"), *args]
    if with_json:
        cmd += ["--json", str(out)]
    print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=ROOT)
        code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        code, stdout, stderr = -1, str(exc.stdout or ""), f"timed out after {TIMEOUT_S} s"
    seconds = time.perf_counter() - started
    print(stdout, end="", flush=True)
    if code != 0:
        print(stderr[-3000:], file=sys.stderr, flush=True)
    figures: list[dict[str, Any]] = []
    if with_json and code == 0 and out.stat().st_size:
        figures = json.loads(out.read_text())["figures"]
    out.unlink(missing_ok=True)
    return {
        "name": name,
        "exit": code,
        "seconds": round(seconds, 1),
        "figures": figures,
        "output_tail": stdout.strip().splitlines()[-15:],
        "error_tail": stderr.strip().splitlines()[-10:] if code else [],
    }


_NUMBER = re.compile(r"([\d.]+)\s*(M)?")


def verdict(f: dict[str, Any]) -> str:
    """'yes'/'no' where the target is one we can read, else ''."""
    target, value, ratio, base = (
        f.get("target") or "",
        f.get("value"),
        f.get("ratio"),
        f.get("baseline"),
    )
    if not target or value is None:
        return ""
    m = _NUMBER.search(target)
    if m is None:
        return ""
    bound = float(m.group(1)) * (1e6 if m.group(2) else 1)
    if "of floor" in target and ratio is not None:
        ok = ratio >= bound
    elif target.startswith("cost") and value and base:
        ok = base / value <= bound
    elif target.startswith("≤"):
        ok = value <= bound
    elif target.startswith("≥"):
        ok = value >= bound
    else:
        return ""
    return "yes" if ok else "no"


def _num(x: Any, unit: str = "") -> str:
    if x is None:
        return ""
    if isinstance(x, (int, float)):
        if abs(x) >= 1000:
            s = f"{x:,.0f}"
        elif abs(x) >= 10:
            s = f"{x:.1f}"
        else:
            s = f"{x:.3g}" if abs(x) < 0.1 else f"{x:.2f}"
        return f"{s} {unit}".strip()
    return str(x)


def table(results: list[dict[str, Any]]) -> str:
    head = "| figure | value | baseline (same run) | ratio | samples | target | met | limits |"
    rows = [head, "|" + "---|" * 8]
    for r in results:
        for f in r["figures"]:
            ratio = f.get("ratio")
            rows.append(
                "| "
                + " | ".join(
                    [
                        f"{f['figure']} (`{r['name']}.py`)",
                        _num(f.get("value"), f.get("unit", "")),
                        f"{_num(f.get('baseline'), f.get('unit', ''))} {f.get('baseline_name', '')}".strip(),
                        "" if ratio is None else f"{ratio:.3g}",
                        _num(f.get("samples")),
                        f.get("target") or "",
                        verdict(f),
                        str(f.get("limits") or "").replace("|", "/"),
                    ]
                )
                + " |"
            )
        if not r["figures"]:
            state = "ok" if r["exit"] == 0 else f"FAILED (exit {r['exit']})"
            last = r["output_tail"][-1] if r["output_tail"] else ""
            rows.append(
                f"| `{r['name']}.py`: {state}, {r['seconds']:.0f} s | "
                f"{last.replace('|', '/')[:160]} |  |  |  |  |  |  |"
            )
    return "\n".join(rows)


def update_docs(text: str, info: dict[str, Any]) -> None:
    doc = DOC.read_text()
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{DOC} has no {BEGIN} ... {END} markers")
    head = (
        f"Run {info['date']} at commit {info['commit']} on {info['cpu']}, {info['cores']} cores, "
        f"{info['memory_gib']} GiB, Python {info['python']}, load average at start "
        f"{', '.join(f'{x:.2f}' for x in info['load_average_at_start'])}; HTTP throughput by "
        f"{'wrk' if info['wrk'] else 'loadgen.py --closed (wrk missing)'}, latency by "
        "loadgen.py (open loop)."
    )
    before, rest = doc.split(BEGIN, 1)
    _, after = rest.split(END, 1)
    DOC.write_text(f"{before}{BEGIN}\n{head}\n\n{text}\n{END}{after}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="short points (smoke test)")
    parser.add_argument("--only", help="comma-separated benchmark names")
    parser.add_argument("--skip-feeds", action="store_true")
    parser.add_argument("--json", default=str(HERE / "last_run.json"))
    parser.add_argument("--update-docs", action="store_true", help=f"rewrite the table in {DOC}")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None
    info = machine()
    results = []
    for name, (full, quick) in OURS.items():
        if only is None or name in only:
            results.append(run(name, quick if args.quick else full, with_json=True))
    if not args.skip_feeds:
        for name, extra in FEEDS.items():
            if only is None or name in only:
                results.append(run(name, extra, with_json=False))
    info["load_average_at_end"] = os.getloadavg()
    text = table(results)
    print("\n" + text)
    Path(args.json).write_text(json.dumps({"machine": info, "results": results}, indent=1))
    print(f"\nwrote {args.json}")
    if args.update_docs:
        update_docs(text, info)
        print(f"updated {DOC}")
    if any(r["exit"] != 0 for r in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
