"""The dashboard's GEX charts keep every label whole and apart (issue 20: "−$362.7m" was
cut to "−$362.7n" at the canvas edge, and the spot / zero-γ / put-wall labels were drawn
over each other). The charts are drawn in Chromium from the package's own files, at
desktop, tablet and phone widths, for profiles with negative values in the millions and
billions and levels a few cents apart, at the middle and at both ends of the strikes."""

from __future__ import annotations

import functools
import http.server
import math
import threading
from collections.abc import Iterator
from importlib import resources
from typing import Any

import pytest

from ..conftest import IN_CI
from .browser import CHROMIUM, LABEL_RECORDER, chromium, guard, label_problems

pytestmark = pytest.mark.slow

if not CHROMIUM.exists():
    if IN_CI:
        raise RuntimeError("CI must install Debian's chromium (apt-get install chromium)")
    pytest.skip("Debian's chromium is not installed", allow_module_level=True)

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><link rel="stylesheet" href="/web/style.css"></head>
<body><main><section><div class="two-col">
  <div class="panel chart-panel"><canvas id="gex-chart" class="chart"></canvas></div>
  <div class="panel chart-panel"><canvas id="gex-profile" class="chart"></canvas></div>
</div></section></main></body></html>
"""
DRAW = """async (gex) => {
    const charts = await import("/web/charts.js");
    charts.drawGexBars(document.getElementById("gex-chart"), gex);
    charts.drawGexProfile(document.getElementById("gex-profile"), gex);
}"""
WIDTHS = [1440, 900, 390]


class _Files(http.server.SimpleHTTPRequestHandler):
    """The package's web folder under /web/, and the page above."""

    def do_GET(self) -> None:
        if self.path == "/":
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(PAGE)
            return
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with resources.as_file(resources.files("tickpipe")) as package:
        handler = functools.partial(_Files, directory=str(package))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()


def chain(
    spot: float, zero: float, call_wall: float, put_wall: float, scale: float
) -> dict[str, Any]:
    """A GEX answer with puts outweighing calls: the profile falls to ``-scale`` below
    ``zero`` and rises to a third of that above it."""
    strikes = [580.0 + k for k in range(41)]
    calls = [scale * 0.3 * (1.0 if s == call_wall else 0.2) for s in strikes]
    puts = [-scale * (1.0 if s == put_wall else 0.15 + 0.01 * (s % 7)) for s in strikes]
    spots = [510.0 + 3 * i for i in range(61)]
    profile = [scale * math.tanh((s - zero) / 30) * (0.3 if s > zero else 1.0) for s in spots]
    return {
        "spot": spot,
        "zero_gamma": zero,
        "call_wall": call_wall,
        "put_wall": put_wall,
        "strikes": {
            "strike": strikes,
            "call_gex_usd_per_1pct": calls,
            "put_gex_usd_per_1pct": puts,
        },
        "profile": {"spot": spots, "gex_usd_per_1pct": profile},
    }


CASES = {
    "levels together mid-chain, millions": chain(600.12, 600.4, 600.0, 600.0, 362.7e6),
    "levels at the top strike": chain(619.9, 619.5, 620.0, 618.0, 362.7e6),
    "levels at the bottom strike": chain(580.1, 580.5, 581.0, 580.0, 362.7e6),
    "billions": chain(600.0, 600.01, 600.0, 599.0, 12.35e9),
}


@pytest.mark.parametrize("case", list(CASES))
def test_gex_labels_are_whole_and_apart(base: str, case: str) -> None:
    outside: list[str] = []
    with chromium() as browser:
        for width in WIDTHS:
            context = browser.new_context(
                viewport={"width": width, "height": 900}, device_scale_factor=2
            )
            guard(context, outside)
            context.add_init_script(LABEL_RECORDER)
            page = context.new_page()
            page.goto(base + "/")
            page.evaluate(DRAW, CASES[case])
            for canvas in ("gex-chart", "gex-profile"):
                texts, problems = label_problems(page, canvas)
                assert problems == [], (width, canvas, problems)
                assert any(t.startswith("−$") for t in texts), (width, canvas, texts)
                assert any(t.startswith("spot") for t in texts), (width, canvas, texts)
                assert any(t.startswith("zero γ") for t in texts), (width, canvas, texts)
            bars, _ = label_problems(page, "gex-chart")
            assert any(t.startswith("call wall") for t in bars), (width, bars)
            assert any(t.startswith("put wall") for t in bars), (width, bars)
            context.close()
    assert outside == [], outside
