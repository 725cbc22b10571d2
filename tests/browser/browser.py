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
