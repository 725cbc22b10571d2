"""Which service each configured symbol goes to, the settings the feed refuses, and the
shared REST token bucket."""

from __future__ import annotations

import pytest

from tickpipe.clock import SystemClock
from tickpipe.config import Settings
from tickpipe.errors import ConfigError
from tickpipe.sources.registry import build_sources
from tickpipe.sources.schwab.ratelimit import TokenBucket
from tickpipe.sources.schwab.subscriptions import plan_subscriptions


def test_symbols_go_to_their_services_in_batches() -> None:
    plan = plan_subscriptions(
        ["SPY", "$SPX", "/ES", "/ESZ25", "SPXW251219C06000000", "./OZCZ23C565"],
        ["AAPL", "NYSE:F", "SPY   251219P00600000"],
    )
    assert plan.keys == {
        "LEVELONE_EQUITIES": ("SPY", "$SPX"),
        "CHART_EQUITY": ("SPY",),
        "LEVELONE_FUTURES": ("/ES", "/ESZ25"),
        "CHART_FUTURES": ("/ES", "/ESZ25"),
        "LEVELONE_OPTIONS": ("SPXW  251219C06000000",),  # padded to the OSI form
        "LEVELONE_FUTURES_OPTIONS": ("./OZCZ23C565",),
        "NASDAQ_BOOK": ("AAPL",),
        "NYSE_BOOK": ("F",),
        "OPTIONS_BOOK": ("SPY   251219P00600000",),
    }
    many = plan_subscriptions([f"S{i:03d}" for i in range(250)], [])
    requests = [(s, c, len(k)) for s, c, k in many.requests() if s == "LEVELONE_EQUITIES"]
    assert requests == [
        ("LEVELONE_EQUITIES", "SUBS", 100),
        ("LEVELONE_EQUITIES", "ADD", 100),
        ("LEVELONE_EQUITIES", "ADD", 50),
    ]


@pytest.mark.parametrize(
    ("symbols", "books", "named"),
    [
        (["SPY", "S&P"], [], "SCHWAB_SYMBOLS"),
        (["SP Y"], [], "SCHWAB_SYMBOLS"),
        (["./NOTANOPTION"], [], "SCHWAB_SYMBOLS"),
        ([], ["/ES"], "SCHWAB_BOOK_SYMBOLS"),
        ([], ["LSE:VOD"], "SCHWAB_BOOK_SYMBOLS"),
        ([f"S{i:04d}" for i in range(1001)], [], "at most 1,000"),
    ],
)
def test_symbols_schwab_cannot_stream_are_refused_by_name(
    symbols: list[str], books: list[str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        plan_subscriptions(symbols, books)


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        ({"schwab_app_key": None}, "SCHWAB_APP_KEY"),
        ({"schwab_app_secret": " "}, "SCHWAB_APP_SECRET"),
        ({"schwab_refresh_token": None}, "SCHWAB_REFRESH_TOKEN"),
        ({"schwab_symbols": [], "schwab_chain_symbols": []}, "SCHWAB_SYMBOLS"),
    ],
)
def test_enabled_without_a_credential_or_symbols_refuses_to_start(
    settings: Settings, missing: dict[str, object], named: str
) -> None:
    complete = {
        "schwab_enabled": True,
        "schwab_app_key": "k",
        "schwab_app_secret": "s",
        "schwab_refresh_token": "r",
        "schwab_symbols": ["SPY"],
        "schwab_chain_symbols": ["$SPX"],
    }
    broken = Settings(_env_file=None, data_dir=settings.data_dir, **{**complete, **missing})  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match=named):
        build_sources(broken, SystemClock())


def test_schwab_and_the_simulator_run_side_by_side_under_their_own_names(
    settings: Settings,
) -> None:
    both = Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=settings.data_dir,
        simulator="true",
        schwab_enabled=True,
        schwab_app_key="k",
        schwab_app_secret="s",
        schwab_refresh_token="r",
        schwab_symbols=["SPY"],
        schwab_chain_symbols=["$SPX"],
        schwab_chain_interval_s=120,
    )
    sources = build_sources(both, SystemClock())
    assert [s.name for s in sources] == ["simulator", "schwab", "schwab-chains"]
    poller = sources[2].policy.idle_timeout_s
    assert poller is not None and poller > 120  # the watchdog outlasts a polling interval


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


async def test_the_bucket_allows_a_burst_then_paces_at_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(60, burst=2, monotonic=clock.monotonic, sleep=clock.sleep)
    for _ in range(4):
        await bucket.acquire()
    assert clock.slept == [1.0, 1.0] and clock.now == 102.0


async def test_a_429_holds_everyone_back_for_retry_after_or_a_doubling_delay() -> None:
    clock = Clock()
    bucket = TokenBucket(6000, burst=10, monotonic=clock.monotonic, sleep=clock.sleep)
    assert bucket.throttle(7.0) == 7.0
    await bucket.acquire()
    assert clock.now == pytest.approx(107.0)
    assert [bucket.throttle(None) for _ in range(3)] == [2.0, 4.0, 8.0]  # 7 s was the first
    bucket.succeeded()
    assert bucket.throttle(None) == 1.0 and bucket.throttled == 5
