"""The API docs render in a browser that can reach nothing but this machine (issue 20:
``/docs`` was blank offline, its Swagger UI coming from a CDN)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page

from ..conftest import IN_CI, free_port
from ..e2e.helpers import PipelineProcess
from .browser import CHROMIUM, chromium, guard

pytestmark = pytest.mark.slow
WAIT_MS = 20_000

if not CHROMIUM.exists():
    if IN_CI:
        raise RuntimeError("CI must install Debian's chromium (apt-get install chromium)")
    pytest.skip("Debian's chromium is not installed", allow_module_level=True)


def operations(base: str) -> list[tuple[str, str]]:
    """(METHOD, path) of every operation the OpenAPI document lists."""
    spec = httpx.get(base + "/openapi.json", timeout=10).json()
    return [(method.upper(), path) for path, ops in spec["paths"].items() for method in ops]


def open_offline(page: Page, url: str, problems: list[str]) -> None:
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.set_default_timeout(WAIT_MS)
    page.goto(url)


def test_docs_render_every_operation_offline(tmp_path: Path) -> None:
    proc = PipelineProcess(
        free_port(), {"TICKPIPE_DATA_DIR": str(tmp_path / "data")}, tmp_path / "pipeline.log"
    )
    proc.wait_ready()
    expected = operations(proc.base)
    assert len(expected) > 10
    outside: list[str] = []
    problems: list[str] = []
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        guard(context, outside)

        page = context.new_page()
        open_offline(page, proc.base + "/status.html", problems)
        page.click("footer a[href='/docs']")  # the dashboard's link
        assert page.url == proc.base + "/docs"
        page.wait_for_selector(".opblock")
        shown = page.eval_on_selector_all(
            ".opblock-summary",
            """blocks => blocks.map(b => [
                b.querySelector(".opblock-summary-method").textContent.trim(),
                b.querySelector(".opblock-summary-path").dataset.path,
            ])""",
        )
        assert sorted(map(tuple, shown)) == sorted(expected)
        assert page.locator("button.authorize").is_visible()  # the bearer scheme
        page.screenshot(path=tmp_path / "docs.png")

        context.close()

    assert outside == [], outside
    assert problems == [], problems
