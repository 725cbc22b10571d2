"""The dashboard in a real browser (Debian's Chromium, headless) against the pipeline
running as a real process on the simulator: what a trader sees on the second screen."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tickpipe.store.keystore import KeyStore

from ..conftest import IN_CI, free_port
from ..e2e.helpers import PipelineProcess
from .browser import CHROMIUM, LABEL_RECORDER, chromium, guard, label_problems, watch_websockets

pytestmark = pytest.mark.slow
WAIT_MS = 20_000

if not CHROMIUM.exists():
    if IN_CI:
        raise RuntimeError("CI must install Debian's chromium (apt-get install chromium)")
    pytest.skip("Debian's chromium is not installed", allow_module_level=True)


def start_pipeline(tmp_path: Path) -> tuple[PipelineProcess, str]:
    data = tmp_path / "data"
    token, _ = KeyStore(data / "keys.sqlite").create("browser", ["read", "stream", "admin"], 1000)
    env = {
        "TICKPIPE_DATA_DIR": str(data),
        "TICKPIPE_SIMULATOR_RATE": "2000",
        "TICKPIPE_GEX_HISTORY_SECONDS": "1",  # the gex source's count rises every second
    }
    proc = PipelineProcess(free_port(), env, tmp_path / "pipeline.log")
    proc.wait_ready()
    return proc, token


def count(page: Page, source: str, column: str) -> int:
    text = page.locator(f'tr[data-source="{source}"] .{column}').inner_text()
    return int(text.replace(",", ""))


def wait_rising(page: Page, source: str, column: str, above: int) -> None:
    page.wait_for_function(
        """([source, column, above]) => {
            const cell = document.querySelector(`tr[data-source="${source}"] .${column}`);
            return cell && Number(cell.textContent.replaceAll(",", "")) > above;
        }""",
        arg=[source, column, above],
        timeout=WAIT_MS,
    )


def inked_pixels(page: Page, selector: str) -> int:
    """Pixels a chart painted (the canvas starts transparent)."""
    return int(
        page.eval_on_selector(
            selector,
            """c => {
                const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
                let n = 0;
                for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
                return n;
            }""",
        )
    )


def assert_gex_labels_whole_and_apart(page: Page) -> None:
    """The GEX charts as drawn from the simulator's chain: every label inside its canvas,
    none over another (tests/browser/test_gex_chart_browser.py has the harder cases)."""
    for canvas in ("gex-chart", "gex-profile"):
        texts, problems = label_problems(page, canvas)
        assert any(t.startswith("spot") for t in texts), (canvas, texts)
        assert problems == [], (canvas, problems)


def test_dashboard_live_in_chromium(tmp_path: Path) -> None:
    proc, token = start_pipeline(tmp_path)
    outside: list[str] = []
    problems: list[str] = []
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        guard(context, outside)
        context.add_init_script(LABEL_RECORDER)
        page = context.new_page()
        watch_websockets(page, outside)
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.set_default_timeout(WAIT_MS)
        expect.set_options(timeout=WAIT_MS)

        page.goto(proc.base + "/")
        assert page.url == proc.base + "/status.html"
        # without a key: the public status only
        for source in ("simulator", "gex"):
            expect(page.locator(f'tr[data-source="{source}"] .state')).to_have_text("running")
        expect(page.locator("#locked")).to_be_visible()
        expect(page.locator("#sampling")).to_be_hidden()
        expect(page.locator("button.restart").first).to_be_hidden()

        page.fill("#key-input", token)
        page.click("#key-save")
        expect(page.locator("#key-state")).to_be_visible()
        expect(page.locator("#sampling")).to_be_visible()
        assert token not in page.url

        for source in ("simulator", "gex"):
            expect(page.locator(f'tr[data-source="{source}"] .state')).to_have_text("running")
            wait_rising(page, source, "events", count(page, source, "events"))

        expect(page.locator("#stream-state")).to_have_text("live")
        expect(page.locator("#q-bid")).not_to_have_text("–")
        expect(page.locator("#trades tbody tr").first).to_be_visible()
        page.wait_for_function(
            "() => Number(document.querySelector('#price-chart').dataset.candles) > 0"
        )
        page.wait_for_function(
            "() => Number(document.querySelector('#gex-chart').dataset.bars) > 0"
        )
        page.wait_for_function(
            "() => Number(document.querySelector('#gex-profile').dataset.points) > 0"
        )
        for chart in ("#price-chart", "#gex-chart", "#gex-profile"):
            assert inked_pixels(page, chart) > 500, chart
        assert_gex_labels_whole_and_apart(page)
        expect(page.locator('.card[data-card="api"] .value')).to_contain_text("req/s")
        expect(page.locator("#quarantine-table tbody tr").first).to_be_visible()
        page.screenshot(path=tmp_path / "dashboard-desktop.png", full_page=True)

        restarts = count(page, "simulator", "restarts")
        page.click('tr[data-source="simulator"] button.restart')
        wait_rising(page, "simulator", "restarts", restarts)
        expect(page.locator('tr[data-source="simulator"] .state')).to_have_text("running")
        wait_rising(page, "simulator", "events", count(page, "simulator", "events"))

        page.set_viewport_size({"width": 390, "height": 844})
        expect(page.locator('tr[data-source="simulator"] .state')).to_be_visible()
        page.wait_for_function("() => document.querySelector('#gex-chart').width < 800")
        assert_gex_labels_whole_and_apart(page)
        page.screenshot(path=tmp_path / "dashboard-phone.png", full_page=True)

        page.click("#key-forget")
        expect(page.locator("#locked")).to_be_visible()
        assert page.evaluate("localStorage.getItem('tickpipe.apiKey')") is None
        context.close()

    assert problems == [], problems
    assert outside == [], outside
    assert (tmp_path / "dashboard-desktop.png").stat().st_size > 10_000
