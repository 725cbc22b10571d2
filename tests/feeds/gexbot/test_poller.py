"""The gexbot source against the local fake, through a real pipeline: what a user relies on."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterator

import orjson
import pytest
from pydantic import SecretStr

from tickpipe.clock import SystemClock
from tickpipe.config import Settings
from tickpipe.errors import ConfigError
from tickpipe.events import Kind
from tickpipe.sources.base import SourceStatus
from tickpipe.sources.registry import build_sources

from ...fakes.gexbot import KEY, Answer, FakeGexbot
from .harness import (
    every_pair,
    expected_row,
    gexbot_settings,
    lake,
    pair,
    running,
    same,
    until,
)

WRONG_KEY = KEY.replace("test", "wrong")


@pytest.fixture
def fake() -> Iterator[FakeGexbot]:
    """On its own thread and event loop: the arrival times it records are not held up by
    the pipeline's work on the test's loop."""
    with FakeGexbot().in_thread() as server:
        yield server


def served_once(fake: FakeGexbot) -> dict[tuple[str, str, int], dict[str, object]]:
    """Each distinct answer the fake served, by (ticker, category, timestamp)."""
    return {(t, label, int(body["timestamp"])): body for t, label, body in fake.served}


async def test_every_ticker_and_category_lands_with_exactly_the_served_values(
    fake: FakeGexbot, settings: Settings
) -> None:
    tickers = ["SPX", "SPY", "ES_SPX"]
    categories = ["full", "zero", "one", "zero/majors", "zero/maxchange"]
    cfg = gexbot_settings(settings, fake, gexbot_tickers=tickers, gexbot_categories=categories)
    symbols = {"SPX": "$SPX", "SPY": "SPY", "ES_SPX": "/ES"}
    first = fake.freeze()
    async with running(cfg) as (pipeline, _):
        # each answer is stored once: later polls see the same timestamp and are skipped
        await until(lambda: every_pair(pipeline, lambda p: p["unchanged"] >= 1))
        fake.freeze(first + 1)
        await until(lambda: every_pair(pipeline, lambda p: p["updates"] == 2))
        await pipeline.hub.drained()
        hot = {
            symbol: (await pipeline.hot.latest(Kind.GEX, symbol, 100)).to_pylist()
            for symbol in symbols.values()
        }
    stored = lake(cfg.data_dir, "gex")
    assert len(stored) == len(tickers) * len(categories) * 2
    answers = served_once(fake)
    spot = {(t, ts): b["spot"] for (t, label, ts), b in answers.items() if label == "zero"}
    for ticker, label in itertools.product(tickers, categories):
        for ts in (first, first + 1):
            want = expected_row(label, answers[(ticker, label, ts)], spot[(ticker, ts)])
            rows = [
                r
                for r in stored
                if r["symbol"] == symbols[ticker]
                and r["category"] == label
                and r["ts_event"] == ts * 1_000_000_000
            ]
            assert len(rows) == 1 and rows[0]["source"] == "gexbot"
            assert same(rows[0], want), (ticker, label, ts)
            in_hot = [r for r in hot[symbols[ticker]] if r["seq"] == rows[0]["seq"]]
            assert in_hot and same(in_hot[0], want)
    # seq counts per symbol across categories, without gaps or repeats
    for symbol in symbols.values():
        seqs = [r["seq"] for r in stored if r["symbol"] == symbol]
        assert seqs == list(range(1, 2 * len(categories) + 1))
    assert lake(cfg.data_dir, "quarantine") == []


async def test_many_tickers_never_exceed_the_rate_limit(
    fake: FakeGexbot, settings: Settings
) -> None:
    tickers = ["SPX", "NDX", "SPY", "QQQ", "ES_SPX", "IWM", "AAPL", "NVDA", "TSLA", "RUT"]
    limit = 20
    cfg = gexbot_settings(settings, fake, gexbot_tickers=tickers, gexbot_requests_per_second=limit)
    async with running(cfg):
        await until(lambda: len(fake.hits) >= 100, timeout=20)
    hits = list(fake.hits)
    times = [h.at for h in hits]
    # no window of one second holds more than the limit...
    assert all(later - earlier >= 1.0 for earlier, later in zip(times, times[limit:], strict=False))
    # ...nor more than one request per ticker and category
    for _, group in itertools.groupby(sorted(hits, key=lambda h: (h.path, h.at)), lambda h: h.path):
        stamps = [h.at for h in group]
        assert all(b - a >= 1.0 for a, b in itertools.pairwise(stamps))
    # so gexbot never had to say 429, and every pair was served
    assert fake.count(status=429) == 0
    assert {(h.ticker, h.label) for h in hits} == set(
        itertools.product(tickers, ["full", "zero", "one"])
    )


async def test_one_ticker_is_polled_at_most_once_a_second_per_category(
    fake: FakeGexbot, settings: Settings
) -> None:
    cfg = gexbot_settings(settings, fake, gexbot_categories=["zero", "one"])
    async with running(cfg):
        await until(lambda: len(fake.hits) >= 6)
    for label in ("zero", "one"):
        stamps = [h.at for h in fake.hits if h.label == label]
        assert all(b - a >= 1.0 for a, b in itertools.pairwise(stamps))
    assert fake.count(status=429) == 0


async def test_a_429_pauses_every_request_for_retry_after(
    fake: FakeGexbot, settings: Settings
) -> None:
    fake.script("SPX", "full", Answer(429, b'{"error": "Too many requests"}', {"Retry-After": "2"}))
    cfg = gexbot_settings(settings, fake)
    async with running(cfg) as (pipeline, _):
        await until(lambda: pair(pipeline, "SPX/full").get("updates", 0) >= 1)
        state = pipeline.supervisor.states["gexbot"]
        assert pair(pipeline, "SPX/full")["http_429"] == 1
        assert state.counters["http_429"] == 1 and state.restarts == 0
    throttled, after = fake.hits[0], fake.hits[1]
    assert throttled.status == 429
    assert after.at - throttled.at >= 2.0  # not only SPX/full: the next request of any pair


async def test_a_bad_key_stops_the_source_with_a_sentence_and_no_retry(
    fake: FakeGexbot, settings: Settings
) -> None:
    cfg = gexbot_settings(
        settings,
        fake,
        gexbot_api_key=SecretStr(WRONG_KEY),
        gexbot_tickers=["SPX", "SPY"],
        gexbot_requests_per_second=1.0,
    )
    async with running(cfg) as (pipeline, _):
        state = pipeline.supervisor.states["gexbot"]
        await until(lambda: state.status is SourceStatus.FAILED)
        assert state.last_error is not None
        assert state.last_error.startswith("gexbot refused GEXBOT_API_KEY (HTTP 401")
        await asyncio.sleep(1.5)  # a retry would have come by now (backoff starts at 0.5 s)
        assert state.status is SourceStatus.FAILED
    assert [h.status for h in fake.hits] == [401]
    assert WRONG_KEY not in orjson.dumps(pipeline.status()).decode()


async def test_bad_bodies_are_quarantined_with_their_raw_text_and_polling_goes_on(
    fake: FakeGexbot, settings: Settings
) -> None:
    html = b"<html><body>502 Bad Gateway</body></html>"
    nan_spot = orjson.dumps(
        {"timestamp": 1777492800, "ticker": "SPX", "spot": "NaN", "strikes": []}
    )
    fake.script("SPX", "full", Answer(200, html), Answer(200, nan_spot))
    cfg = gexbot_settings(settings, fake)
    async with running(cfg) as (pipeline, _):
        await until(lambda: pair(pipeline, "SPX/full").get("updates", 0) >= 1)
        assert pair(pipeline, "SPX/full")["rejected"] == 2
        assert pipeline.supervisor.states["gexbot"].restarts == 0
    quarantined = lake(cfg.data_dir, "quarantine")
    assert [q["payload"] for q in quarantined] == [html.decode(), nan_spot.decode()]
    assert all(q["symbol"] == "$SPX" and q["kind"] == "gex" for q in quarantined)
    assert quarantined[0]["reason"].startswith("SPX/full: not JSON")
    assert "spot is 'NaN'" in quarantined[1]["reason"]
    assert any(r["category"] == "full" for r in lake(cfg.data_dir, "gex"))


async def test_a_server_error_is_retried_with_the_supervisors_backoff(
    fake: FakeGexbot, settings: Settings
) -> None:
    fake.script("SPX", "zero", Answer(503, b'{"error": "maintenance"}'))
    cfg = gexbot_settings(settings, fake)
    async with running(cfg) as (pipeline, _):
        state = pipeline.supervisor.states["gexbot"]
        await until(lambda: state.restarts >= 1)
        assert (
            state.last_error == "TransportError: gexbot answered HTTP 503 for SPX/zero: maintenance"
        )
        await until(lambda: pair(pipeline, "SPX/zero").get("updates", 0) >= 1)
        assert state.status is SourceStatus.RUNNING


async def test_a_restart_does_not_store_unchanged_levels_again(
    fake: FakeGexbot, settings: Settings
) -> None:
    first = fake.freeze()
    cfg = gexbot_settings(settings, fake)
    async with running(cfg) as (pipeline, _):
        await until(lambda: every_pair(pipeline, lambda p: p["updates"] == 1))
    async with running(cfg) as (pipeline, _):
        # the new process polls every pair, sees the stored timestamps and skips them
        await until(lambda: every_pair(pipeline, lambda p: p["unchanged"] >= 1))
        fake.freeze(first + 1)
        await until(lambda: every_pair(pipeline, lambda p: p["updates"] == 1))
    stored = lake(cfg.data_dir, "gex")
    assert [(r["ts_event"] // 1_000_000_000, r["seq"]) for r in stored] == [
        (first, 1),
        (first, 2),
        (first, 3),
        (first + 1, 4),
        (first + 1, 5),
        (first + 1, 6),
    ]
    assert lake(cfg.data_dir, "quarantine") == []


async def test_the_legacy_v1_style_sends_the_key_as_a_parameter_never_logged(
    fake: FakeGexbot, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = gexbot_settings(
        settings, fake, gexbot_api_style="v1", gexbot_api_base_url=fake.base_url_v1
    )
    # the CLI's logging setup (run by other tests in this process) quiets httpx: undo it here
    caplog.set_level(logging.INFO, logger="httpx")
    with caplog.at_level(logging.DEBUG):
        async with running(cfg) as (pipeline, _):
            await until(lambda: every_pair(pipeline, lambda p: p["updates"] >= 1))
    assert {h.style for h in fake.hits} == {"v1"}
    assert {h.status for h in fake.hits} == {200}
    assert "classic/full?key=********" in caplog.text  # httpx logs each request's URL
    assert KEY not in caplog.text


def test_a_missing_or_research_key_refuses_to_start(settings: Settings) -> None:
    on = settings.model_copy(update={"gexbot_enabled": True})
    with pytest.raises(ConfigError, match="GEXBOT_ENABLED=true needs GEXBOT_API_KEY"):
        build_sources(on, SystemClock())
    research = on.model_copy(update={"gexbot_api_key": SecretStr("research_abc")})
    with pytest.raises(ConfigError, match="GEXBOT_API_KEY is a gexbot research key"):
        build_sources(research, SystemClock())
    keyed = on.model_copy(update={"gexbot_api_key": SecretStr(KEY)})
    bad_ticker = keyed.model_copy(update={"gexbot_tickers": ["SPX", "S&P"]})
    with pytest.raises(ConfigError, match="GEXBOT_TICKERS: 'S&P'"):
        build_sources(bad_ticker, SystemClock())
    (source,) = [s for s in build_sources(keyed, SystemClock()) if s.name == "gexbot"]
    # the watchdog outlasts a whole round of every ticker and category
    assert source.policy.idle_timeout_s is not None and source.policy.idle_timeout_s >= 60


async def test_status_shows_each_ticker_and_category_and_never_the_key(
    fake: FakeGexbot, settings: Settings
) -> None:
    fake.script("SPX", "one", Answer(429, b'{"error": "slow down"}', {"Retry-After": "0.2"}))
    cfg = gexbot_settings(settings, fake, gexbot_tickers=["SPX", "QQQ"])
    async with running(cfg) as (pipeline, _):
        await until(lambda: every_pair(pipeline, lambda p: p["updates"] >= 1))
        status = pipeline.status()
    (gexbot,) = [s for s in status["sources"] if s["name"] == "gexbot"]
    details = gexbot["details"]
    assert details["api"] == "v2" and details["base_url"] == fake.base_url
    assert details["rate"]["limit_per_s"] == 20.0
    assert set(details["pairs"]) == {
        f"{t}/{c}" for t in ("SPX", "QQQ") for c in ("full", "zero", "one")
    }
    spx_one = details["pairs"]["SPX/one"]
    assert spx_one["symbol"] == "$SPX" and spx_one["http_429"] == 1
    assert spx_one["requests"] >= 2 and spx_one["errors"] == 0
    assert spx_one["last_update"].endswith("Z") and 0 <= spx_one["budget_remaining"] <= 1
    assert KEY not in orjson.dumps(status).decode()


@pytest.mark.parametrize(
    ("ticker", "scripted", "sentence"),
    [
        (
            "ZZZZ",
            None,
            'gexbot has no ZZZZ/full (HTTP 404 ("Unknown ticker ZZZZ")): fix GEXBOT_TICKERS',
        ),
        (
            "SPX",
            Answer(403, b'{"error": "Subscription required"}'),
            'gexbot refused SPX/full to this GEXBOT_API_KEY (HTTP 403 ("Subscription required"))',
        ),
    ],
)
async def test_a_refused_ticker_stops_the_source_naming_the_setting(
    fake: FakeGexbot, settings: Settings, ticker: str, scripted: Answer | None, sentence: str
) -> None:
    if scripted is not None:
        fake.script(ticker, "full", scripted)
    cfg = gexbot_settings(settings, fake, gexbot_tickers=[ticker], gexbot_categories=["full"])
    async with running(cfg) as (pipeline, _):
        state = pipeline.supervisor.states["gexbot"]
        await until(lambda: state.status is SourceStatus.FAILED)
        assert state.last_error is not None and state.last_error.startswith(sentence)
    assert len(fake.hits) == 1
