"""Screenshots of the dashboard for the docs, at desktop and phone width.

An hour of simulated history is ingested first (as fast as it goes), then the pipeline
runs live on the simulator and the page is photographed with a key entered:

    python -m tests.browser.shoot docs/screenshots
"""

from __future__ import annotations

import signal
import sys
import tempfile
import time
from pathlib import Path

from tickpipe.clock import NS_PER_SECOND
from tickpipe.store.keystore import KeyStore

from ..conftest import free_port
from ..e2e.helpers import PipelineProcess
from .browser import chromium, guard

RATE = 300
SIZES = {"desktop": (1440, 900, "light"), "phone": (390, 844, "dark")}


def backfill(data: Path, log: Path) -> None:
    start = time.time_ns() - 3600 * NS_PER_SECOND
    env = {
        "TICKPIPE_DATA_DIR": str(data),
        "TICKPIPE_SIMULATOR_START_NS": str(start),
        "TICKPIPE_SIMULATOR_REALTIME": "false",
        "TICKPIPE_SIMULATOR_RATE": str(RATE),
        "TICKPIPE_SIMULATOR_MAX_EVENTS": str(RATE * 3550),
        "TICKPIPE_SIMULATOR_BATCH_MS": "10000",  # big deliveries: the hour ingests in seconds
        "TICKPIPE_ACCESS_LOG": "off",
    }
    proc = PipelineProcess(free_port(), env, log)
    proc.wait_for(lambda s: s["sources"][0]["status"] == "finished", timeout=120)
    proc.stop(signal.SIGINT)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        backfill(data, Path(tmp) / "backfill.log")
        token, _ = KeyStore(data / "keys.sqlite").create("docs", ["read", "stream", "admin"], 1000)
        env = {"TICKPIPE_DATA_DIR": str(data), "TICKPIPE_SIMULATOR_RATE": str(RATE)}
        proc = PipelineProcess(free_port(), env, Path(tmp) / "live.log")
        try:
            proc.wait_ready()
            outside: list[str] = []
            with chromium() as browser:
                for name, (width, height, scheme) in SIZES.items():
                    context = browser.new_context(
                        viewport={"width": width, "height": height},
                        color_scheme=scheme,  # type: ignore[arg-type]
                        device_scale_factor=2 if name == "phone" else 1,
                    )
                    guard(context, outside)
                    page = context.new_page()
                    page.goto(proc.base + "/status.html")
                    page.fill("#key-input", token)
                    page.click("#key-save")
                    page.wait_for_function(
                        "() => Number(document.querySelector('#gex-chart').dataset.bars) > 0"
                    )
                    page.wait_for_timeout(8000)  # sparklines and live candles fill in
                    page.screenshot(path=out / f"dashboard-{name}.png", full_page=name == "desktop")
                    context.close()
            assert not outside, outside
        finally:
            proc.stop(signal.SIGINT)
            PipelineProcess.reap_all()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots"))
