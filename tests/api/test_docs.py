"""``/docs`` works with no internet (issue 20): every file the page loads comes from this
server. tests/browser/test_docs_browser.py shows it rendering offline."""

from __future__ import annotations

import re

import httpx

from tickpipe.api.app import create_app
from tickpipe.cli import ingest_routes_only

from .conftest import Api


def loaded_urls(html: str) -> set[str]:
    """Every URL a page asks the browser to load (scripts, styles, icons, the document)."""
    return set(re.findall(r'(?:src|href)="([^"]+)"', html)) | set(
        re.findall(r"url: '([^']+)'", html)
    )


async def test_the_docs_page_loads_only_files_this_server_serves(api: Api) -> None:
    response = await api.client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    urls = loaded_urls(response.text)
    assert "/openapi.json" in urls
    assert not re.search(r"https?://|//[a-z]", response.text), "the page names another host"
    for url in urls:
        assert url.startswith("/"), url
        loaded = await api.client.get(url)
        assert loaded.status_code == 200, url
        assert len(loaded.content) > 0, url


async def test_docs_assets_revalidate_by_etag_and_only_known_files_are_served(api: Api) -> None:
    first = await api.client.get("/docs/assets/swagger-ui.css")
    assert first.headers["content-type"].startswith("text/css")
    again = await api.client.get(
        "/docs/assets/swagger-ui.css", headers={"If-None-Match": first.headers["etag"]}
    )
    assert again.status_code == 304 and again.content == b""
    for name in ("favicon.png", "core.py", "..%2F__init__.py", "nothing.js"):
        missing = await api.client.get(f"/docs/assets/{name}")
        assert missing.status_code == 404, name
        assert missing.json()["error"]["code"] == "not_found"


async def test_the_docs_pages_are_not_operations_of_the_api(api: Api) -> None:
    paths = (await api.client.get("/openapi.json")).json()["paths"]
    assert not [p for p in paths if p.startswith(("/docs", "/redoc"))]


async def test_redoc_leads_to_the_docs(api: Api) -> None:
    """FastAPI's other page: ReDoc loads its logo from its maker's CDN even when served
    from here, so its address leads to /docs instead."""
    response = await api.client.get("/redoc")
    assert response.status_code == 307
    assert response.headers["location"] == "/docs"


async def test_an_ingest_process_keeps_its_docs(api: Api) -> None:
    """``--role ingest`` keeps status, health and the docs, each by its path."""
    app = create_app(api.ctx)
    ingest_routes_only(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        page = await client.get("/docs")
        assert page.status_code == 200
        for url in loaded_urls(page.text):
            assert (await client.get(url)).status_code == 200, url
        assert (await client.get("/api/v1/quality/gaps")).status_code == 404
