"""Debian's Chromium under Playwright, kept on this machine: no browser download, and
every request that would leave 127.0.0.1 is blocked and recorded."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import Browser, BrowserContext, Route, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LOCAL = {"127.0.0.1"}


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


def guard(context: BrowserContext, outside: list[str]) -> None:
    """Abort and record any request (page, worker or WebSocket) to another host."""

    def check(route: Route) -> None:
        if urlsplit(route.request.url).hostname in LOCAL:
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", check)
    context.on(
        "request",
        lambda r: None if urlsplit(r.url).hostname in LOCAL | {None} else outside.append(r.url),
    )


def watch_websockets(page: object, outside: list[str]) -> None:
    page.on(  # type: ignore[attr-defined]
        "websocket",
        lambda ws: None if urlsplit(ws.url).hostname in LOCAL else outside.append(ws.url),
    )


LABEL_RECORDER = """
(() => {
  // Every text a canvas draws, with its box in the canvas's own pixels (after the
  // device-pixel-ratio transform), as the browser measured it; a canvas's record starts
  // over when it is cleared whole, so it holds that canvas's latest drawing.
  const labels = (window.__labels = {});
  const proto = CanvasRenderingContext2D.prototype;
  const fillText = proto.fillText;
  const clearRect = proto.clearRect;
  proto.fillText = function (text, x, y, ...rest) {
    const m = this.measureText(text);
    const t = this.getTransform();
    const a = t.transformPoint({ x: x - m.actualBoundingBoxLeft, y: y - m.actualBoundingBoxAscent });
    const b = t.transformPoint({ x: x + m.actualBoundingBoxRight, y: y + m.actualBoundingBoxDescent });
    (labels[this.canvas.id] ||= []).push({
      text: String(text), left: a.x, top: a.y, right: b.x, bottom: b.y,
      width: this.canvas.width, height: this.canvas.height,
    });
    return fillText.call(this, text, x, y, ...rest);
  };
  proto.clearRect = function (x, y, w, h) {
    if (x <= 0 && y <= 0) labels[this.canvas.id] = [];
    return clearRect.call(this, x, y, w, h);
  };
})();
"""
"""a script for ``add_init_script``: records what ``label_problems`` checks"""


def label_problems(page: object, canvas_id: str) -> tuple[list[str], list[str]]:
    """(labels, problems) of the latest drawing on ``#canvas_id``: a label whose box leaves
    the canvas is cut; two labels whose boxes intersect overlap."""
    labels = page.evaluate(  # type: ignore[attr-defined]
        "id => (window.__labels || {})[id] || []", canvas_id
    )
    problems = []
    for label in labels:
        if (
            label["left"] < 0
            or label["top"] < 0
            or label["right"] > label["width"]
            or label["bottom"] > label["height"]
        ):
            problems.append(f"cut: {label}")
    for i, one in enumerate(labels):
        for other in labels[i + 1 :]:
            if (
                one["left"] < other["right"]
                and other["left"] < one["right"]
                and one["top"] < other["bottom"]
                and other["top"] < one["bottom"]
            ):
                problems.append(f"overlap: {one['text']!r} and {other['text']!r}")
    return [label["text"] for label in labels], problems
