"""Hostile parameters at the edge (issue 12, findings 4 and 7): numbers too large for a
date, rate limits that are not rates, inputs echoed whole, empty lists, over-long URLs.
Every refusal is a JSON 4xx naming what to fix; none is a 500, none closes the
connection."""

from __future__ import annotations

import asyncio
import math
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest

from tickpipe.api.auth import RateLimiter
from tickpipe.errors import KeyStoreError
from tickpipe.store.keystore import ApiKey, KeyStore

from .conftest import Api

HUGE = "99999999999999999999999"


@pytest.mark.parametrize(
    "path",
    [
        f"/api/v1/quality/gaps?end_time={HUGE}",
        f"/api/v1/quality/quarantine?end_time={HUGE}",
        f"/api/v1/quality/gaps?start_time=-{HUGE}",
        f"/api/v1/replay?symbols=SPY&start_time=0&end_time={HUGE}&speed=0",
        f"/api/v1/ticks/historical?symbols=SPY&start_time=0&end_time={HUGE}&format=arrow",
        "/api/v1/ticks/historical?symbols=SPY&start_time=2026-01-01&end_time=9999-12-31",
        "/api/v1/ticks/historical?symbols=SPY&start_time=-5&end_time=10",
        "/api/v1/ticks/historical?symbols=SPY&start_time=0&end_time=9223372036854775808",
    ],
)
async def test_times_beyond_int64_nanoseconds_are_400_bad_time(api: Api, path: str) -> None:
    response = await api.client.get(path, headers=api.auth())
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "bad_time"
    assert "1970-01-01 to 2262-04-11" in error["message"]


async def test_the_last_representable_nanosecond_is_accepted(api: Api) -> None:
    path = "/api/v1/quality/gaps?start_time=0&end_time=9223372036854775807"
    response = await api.client.get(path, headers=api.auth())
    assert response.status_code == 200 and response.json() == {"data": []}


async def test_a_500_keeps_the_connection_alive(
    served: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected error answers JSON 500 and the keep-alive connection serves the next
    request (Starlette's own handler re-raised, and uvicorn closed the connection)."""

    def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("boom")

    monkeypatch.setattr(served.ctx.query, "events", broken)
    url = urlsplit(served.base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        codes = []
        for path in ("/api/v1/quality/gaps", "/api/v1/health"):
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {served.read}\r\n\r\n".encode()
            )
            status, body = await read_response(reader)
            codes.append((status, orjson.loads(body).get("error", {}).get("code")))
        assert codes == [(500, "internal_error"), (200, None)]
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return int(head[9:12]), await reader.readexactly(length)


@pytest.mark.parametrize("rate", [5e-324, 0.0, -1.0, math.inf, math.nan, 1e9])
def test_key_rate_limits_must_be_finite_positive_and_in_range(
    api_free_keys: KeyStore, rate: float
) -> None:
    with pytest.raises(KeyStoreError, match="rate limit must be a number of requests per second"):
        api_free_keys.create(f"k{rate}", ["read"], rate)


@pytest.fixture
def api_free_keys(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "data" / "keys.sqlite")


async def test_a_key_stored_with_a_denormal_rate_limit_answers_429_not_500(api: Api) -> None:
    """A row written before rates were checked (the reported 5e-324) must not break the
    limiter: first request allowed, then 429 with a finite Retry-After."""
    token, key = api.ctx.keys.create("old", ["read"], 1)
    with sqlite3.connect(api.ctx.settings.keys_path) as con:
        con.execute("UPDATE api_keys SET rate_limit = 5e-324 WHERE id = ?", (key.id,))
    path = "/api/v1/quotes/latest?symbols=SPY"
    first = await api.client.get(path, headers=api.auth(token))
    second = await api.client.get(path, headers=api.auth(token))
    assert first.status_code == 200
    assert second.status_code == 429 and second.json()["error"]["code"] == "rate_limited"
    assert second.headers["retry-after"].isdigit()


def test_a_slow_rate_still_admits_one_request() -> None:
    """A bucket smaller than one token never admitted anything (rate 0.5 -> always 429)."""
    limiter = RateLimiter()
    key = ApiKey("abcd1234", "slow", "x", frozenset({"read"}), 0.5, 0, None)
    assert limiter.take(key, now=100.0) == 0.0
    assert limiter.take(key, now=100.1) == pytest.approx(1.9)
    assert limiter.take(key, now=102.1) == 0.0


@pytest.mark.parametrize("value", ["inf", "nan", "0", "1e9"])
def test_cli_refuses_a_rate_limit_that_is_not_a_rate(
    value: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tickpipe.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TICKPIPE_DATA_DIR", raising=False)
    assert main(["keys", "create", "--name", "m", "--rate-limit", value]) == 2
    err = capsys.readouterr().err
    assert "rate limit must be a number of requests per second" in err
    assert "already exists" not in err


async def test_admin_api_refuses_rates_out_of_range(api: Api) -> None:
    for rate in (1e9, 0, -3):
        response = await api.client.post(
            "/api/v1/admin/keys",
            json={"name": f"r{rate}", "rate_limit": rate},
            headers=api.auth(api.admin),
        )
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "invalid_parameter"


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/ticks/realtime?symbols={big}",
        "/api/v1/quotes/latest?symbols={big}",
        "/api/v1/ticks/historical?symbols=SPY&start_time={big}&end_time=2026-01-02",
        "/api/v1/ticks/historical?symbols=SPY&start_time=2026-01-01&end_time=2026-01-02&types={big}",
        "/api/v1/quality/gaps?symbols={big}",
    ],
)
async def test_errors_quote_at_most_100_characters_of_the_input(api: Api, path: str) -> None:
    big = "A" * 12_000
    response = await api.client.get(path.format(big=big), headers=api.auth())
    assert response.status_code == 400
    message = response.json()["error"]["message"].upper()  # types are read lower-case
    assert "A" * 100 in message and "A" * 101 not in message
    assert len(response.content) < 500


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/quality/gaps?symbols=",
        "/api/v1/quality/quarantine?symbols=",
        "/api/v1/quality/gaps?symbols=%20",
        "/api/v1/ticks/realtime?symbols=",
        "/api/v1/ticks/realtime?symbols=%20,",
        "/api/v1/ticks/realtime?symbols=SPY&types=",
        "/api/v1/quotes/latest?symbols=",
        "/api/v1/ticks/historical?symbols=SPY&start_time=0&end_time=1&types=",
        "/api/v1/ticks/historical?symbols=SPY&start_time=0&end_time=1&types=%20,%20",
        "/api/v1/replay?symbols=SPY&start_time=0&end_time=1&types=",
    ],
)
async def test_empty_lists_are_400_everywhere(api: Api, path: str) -> None:
    response = await api.client.get(path, headers=api.auth())
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] in ("bad_symbol", "bad_type")
    assert "empty" in response.json()["error"]["message"]


async def test_leaving_symbols_out_of_a_quality_route_still_means_all(api: Api) -> None:
    response = await api.client.get("/api/v1/quality/gaps", headers=api.auth())
    assert response.status_code == 200


async def test_an_over_long_url_is_a_json_414(api: Api) -> None:
    path = "/api/v1/ticks/realtime?symbols=" + ",".join(["SPY"] * 6000)
    response = await api.client.get(path, headers=api.auth())
    assert response.status_code == 414
    assert response.json()["error"]["code"] == "uri_too_long"


async def test_a_url_over_the_head_limit_is_a_json_414_before_the_parser(served: Api) -> None:
    url = urlsplit(served.base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(f"GET /api/v1/health?q={'a' * 70_000} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status, body = await read_response(reader)
    finally:
        writer.close()
    assert status == 414  # tests/hardening/test_request_heads.py: the other head refusals
    assert orjson.loads(body)["error"]["code"] == "uri_too_long"


def test_the_key_database_is_private(tmp_path: Path) -> None:
    data = tmp_path / "fresh" / "data"
    store = KeyStore(data / "keys.sqlite")
    store.create("one", ["read"], 10)  # a write: the WAL and shared-memory files exist now
    modes = {p.name: p.stat().st_mode & 0o777 for p in data.iterdir()}
    assert modes == {"keys.sqlite": 0o600, "keys.sqlite-wal": 0o600, "keys.sqlite-shm": 0o600}
    assert data.stat().st_mode & 0o777 == 0o700
    store.close()


def test_an_older_world_readable_key_database_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "keys.sqlite"
    sqlite3.connect(path).close()
    path.chmod(0o644)
    KeyStore(path).close()
    assert path.stat().st_mode & 0o777 == 0o600


def test_keys_outside_a_project_does_not_create_a_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tickpipe.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TICKPIPE_DATA_DIR", raising=False)
    assert main(["keys", "list"]) == 2
    err = capsys.readouterr().err
    assert f"no key database at {tmp_path / 'data' / 'keys.sqlite'}" in err
    assert "the default ./data" in err
    assert not (tmp_path / "data").exists()


def test_keys_names_the_data_dir_it_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tickpipe.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TICKPIPE_DATA_DIR", str(tmp_path / "elsewhere"))
    assert main(["keys", "create", "--name", "m", "--scopes", "read"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("tp_")
    assert f"{tmp_path / 'elsewhere' / 'keys.sqlite'} (data dir from TICKPIPE_DATA_DIR)" in out.err
    assert main(["keys", "list"]) == 0
    assert "using the key database" in capsys.readouterr().err
