"""Integer query parameters (issue 20, finding 3): one parser, ``params.parse_int``, that
takes ASCII digits only (``limit=٣`` was accepted: Python's ``int`` reads any script's
digits) and refuses everything else in one wording, 422 ``invalid_parameter``."""

from __future__ import annotations

import pytest

from tickpipe.api.params import parse_int
from tickpipe.errors import QueryError

from .conftest import Api

NOT_ASCII_DIGITS = ["٣", "３", "+3", "-3", " 3", "3 ", "3_0", "3.0", "1e3", "", "abc", "9" * 30]


@pytest.mark.parametrize("value", ["1", "3", "007", "10000"])
def test_ascii_digits_in_range_are_read(value: str) -> None:
    assert parse_int(value, "limit", 1, 10_000) == int(value)


@pytest.mark.parametrize("value", [*NOT_ASCII_DIGITS, "0", "10001"])
def test_anything_else_is_one_422_in_one_wording(value: str) -> None:
    with pytest.raises(QueryError) as refused:
        parse_int(value, "limit", 1, 10_000)
    assert (refused.value.status, refused.value.code) == (422, "invalid_parameter")
    assert str(refused.value).endswith(
        "is not allowed: limit is a whole number from 1 to 10,000, in ASCII digits"
    )


ROUTES = {
    "quality/quarantine": "/api/v1/quality/quarantine?limit={}",
    "quality/gaps": "/api/v1/quality/gaps?limit={}",
    "ticks/historical": (
        "/api/v1/ticks/historical?symbols=SPY&start_time=now-1h&end_time=now&limit={}"
    ),
    "ticks/realtime": "/api/v1/ticks/realtime?symbols=SPY&limit={}",
}


@pytest.mark.parametrize("route", ROUTES.values(), ids=ROUTES.keys())
async def test_every_integer_parameter_is_read_by_parse_int(api: Api, route: str) -> None:
    for value in ("٣", "+3", " 3", "3_0", "0"):
        response = await api.client.get(route.format(value), headers=api.auth())
        assert response.status_code == 422, (value, response.text)
        error = response.json()["error"]
        assert error["code"] == "invalid_parameter"
        assert "is a whole number from 1 to " in error["message"], error
    assert (await api.client.get(route.format("3"), headers=api.auth())).status_code == 200
