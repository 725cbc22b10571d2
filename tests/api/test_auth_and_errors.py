"""Keys, scopes, revocation, rate limits, and errors as JSON on every route."""

from __future__ import annotations

import pytest

from tickpipe.store.keystore import KeyStore

from .conftest import Api

DATA_ROUTES = [
    "/api/v1/ticks/realtime?symbols=SPY",
    "/api/v1/ticks/historical?symbols=SPY&start_time=2026-11-26&end_time=2026-11-27",
    "/api/v1/quotes/latest?symbols=SPY",
    "/api/v1/quality/gaps",
    "/api/v1/quality/quarantine",
    "/api/v1/replay?symbols=SPY&start_time=2026-11-26&end_time=2026-11-27&speed=0",
    "/api/v1/admin/keys",
]


@pytest.mark.parametrize("path", DATA_ROUTES)
async def test_every_data_route_needs_a_key(api: Api, path: str) -> None:
    response = await api.client.get(path)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"
    bad = await api.client.get(path, headers={"Authorization": "Bearer tp_00000000_nope"})
    assert bad.status_code == 401 and "invalid" in bad.json()["error"]["message"]


async def test_status_and_health_are_public_and_hold_no_market_data(api: Api) -> None:
    status = await api.client.get("/api/v1/status")
    assert status.status_code == 200
    body = status.text
    assert '"price"' not in body and '"bid"' not in body
    health = (await api.client.get("/api/v1/health")).json()
    assert health == {"status": "ok", "ready": True, "reasons": []}


async def test_wrong_scope_is_forbidden(api: Api) -> None:
    response = await api.client.get("/api/v1/admin/keys", headers=api.auth(api.read))
    assert response.status_code == 403
    assert response.json() == {
        "error": {"code": "forbidden", "message": "this key lacks the 'admin' scope"}
    }


async def test_revocation_takes_effect_on_the_next_request(api: Api) -> None:
    created = await api.client.post(
        "/api/v1/admin/keys", json={"name": "tmp", "scopes": ["read"]}, headers=api.auth(api.admin)
    )
    assert created.status_code == 201
    token = created.json()["key"]
    ok = await api.client.get("/api/v1/quotes/latest?symbols=SPY", headers=api.auth(token))
    assert ok.status_code == 200
    listed = (await api.client.get("/api/v1/admin/keys", headers=api.auth(api.admin))).json()[
        "data"
    ]
    assert "tmp" in [k["name"] for k in listed] and all("secret" not in str(k) for k in listed)
    KeyStore(api.ctx.settings.keys_path).revoke("tmp")  # as `tickpipe keys revoke tmp` does
    refused = await api.client.get("/api/v1/quotes/latest?symbols=SPY", headers=api.auth(token))
    assert refused.status_code == 401


async def test_rate_limit_answers_429_with_retry_after(api: Api) -> None:
    token, _ = api.ctx.keys.create("slow", ["read"], 3)
    codes = [
        (
            await api.client.get("/api/v1/quotes/latest?symbols=SPY", headers=api.auth(token))
        ).status_code
        for _ in range(5)
    ]
    assert codes[:3] == [200, 200, 200] and codes[3] == 429
    limited = await api.client.get("/api/v1/quotes/latest?symbols=SPY", headers=api.auth(token))
    assert limited.headers["retry-after"] == "1"
    assert limited.json()["error"]["code"] == "rate_limited"


async def test_admin_refuses_a_duplicate_key_name_in_json(api: Api) -> None:
    body = {"name": "reader", "scopes": ["read"]}
    response = await api.client.post("/api/v1/admin/keys", json=body, headers=api.auth(api.admin))
    assert response.status_code == 400 and response.json()["error"]["code"] == "key_refused"


async def test_admin_revoke_over_http(api: Api) -> None:
    response = await api.client.delete("/api/v1/admin/keys/streamer", headers=api.auth(api.admin))
    assert response.status_code == 200 and response.json()["revoked_ns"] is not None
    again = await api.client.delete("/api/v1/admin/keys/streamer", headers=api.auth(api.admin))
    assert again.status_code == 400


async def test_restart_of_an_unknown_source_is_404(api: Api) -> None:
    response = await api.client.post(
        "/api/v1/admin/sources/nope/restart", headers=api.auth(api.admin)
    )
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


async def test_unknown_route_is_json_404(api: Api) -> None:
    response = await api.client.get("/api/v1/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("symbols=spy;drop", 400, "bad_symbol"),
        ("symbols=SPY&limit=0", 422, "invalid_parameter"),
        ("symbols=SPY&limit=100000", 422, "invalid_parameter"),
        ("symbols=SPY&types=trades", 400, "bad_type"),
        ("", 422, "invalid_parameter"),
        ("symbols=" + ",".join(f"S{i}" for i in range(101)), 400, "too_many_symbols"),
    ],
)
async def test_realtime_parameters_are_checked(
    api: Api, query: str, status: int, code: str
) -> None:
    response = await api.client.get(f"/api/v1/ticks/realtime?{query}", headers=api.auth())
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("start_time=2026-11-27&end_time=2026-11-26", 400, "bad_range"),
        ("start_time=yesterday&end_time=2026-11-26", 400, "bad_time"),
        ("start_time=2026-01-01&end_time=2026-11-26", 400, "range_too_large"),
        ("start_time=2026-11-25&end_time=2026-11-26&interval=2m", 400, "bad_interval"),
        ("start_time=2026-11-25&end_time=2026-11-26&format=xml", 422, "invalid_parameter"),
        ("start_time=2026-11-25&end_time=2026-11-26&cursor=zzz", 400, "bad_cursor"),
        ("start_time=2026-11-25&end_time=2026-11-26&fill=prev", 400, "bad_parameter"),
        ("start_time=2026-11-25&end_time=2026-11-26&asof=quote&types=quote", 400, "bad_parameter"),
        (
            "start_time=2026-11-25&end_time=2026-11-26&format=arrow&types=trade,quote",
            400,
            "bad_parameter",
        ),
    ],
)
async def test_historical_parameters_are_checked(
    api: Api, query: str, status: int, code: str
) -> None:
    response = await api.client.get(
        f"/api/v1/ticks/historical?symbols=SPY&{query}", headers=api.auth()
    )
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


async def test_openapi_documents_every_route_with_its_parameters(api: Api) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    for path in (
        "/api/v1/ticks/realtime",
        "/api/v1/ticks/historical",
        "/api/v1/gex/{symbol}",
        "/api/v1/quality/gaps",
        "/api/v1/replay",
        "/api/v1/admin/keys",
    ):
        assert path in spec["paths"]
    realtime = spec["paths"]["/api/v1/ticks/realtime"]["get"]
    assert [p["name"] for p in realtime["parameters"]] == ["symbols", "limit", "types"]
    assert (await api.client.get("/docs")).status_code == 200
