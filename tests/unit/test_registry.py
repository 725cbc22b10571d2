"""Every feed under sources/ is registered, builds from settings, and has a fake to test on."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from tickpipe.clock import FakeClock
from tickpipe.config import Settings
from tickpipe.errors import ConfigError
from tickpipe.sources import registry
from tickpipe.sources.base import Source

SOURCES = Path(registry.__file__).parent
FAKES = Path(__file__).parents[1] / "fakes"
NOT_FEEDS = {"backlog", "base", "context", "registry", "supervisor"}
FAKE_OF = {
    "schwab": ["schwab.py"],
    "tastytrade": ["dxlink.py"],
    "gexbot": ["gexbot.py"],
    "sierra": ["dtc.py"],  # the .scid tail and import are tested on files the tests write
}


def feed_modules() -> set[str]:
    names = {p.stem for p in SOURCES.glob("*.py")} | {
        p.parent.name for p in SOURCES.glob("*/__init__.py")
    }
    return names - NOT_FEEDS - {"__init__"}


def test_every_feed_module_is_registered_with_a_build_function() -> None:
    registered = {feed.module.rsplit(".", 1)[1] for feed in registry.FEEDS}
    assert feed_modules() == registered
    for feed in registry.FEEDS:
        assert callable(importlib.import_module(feed.module).build)


def test_every_real_feed_has_a_local_fake() -> None:
    real = {feed.name for feed in registry.FEEDS} - {"simulator"}
    assert real == set(FAKE_OF)
    for feed, files in FAKE_OF.items():
        assert all((FAKES / f).is_file() for f in files), feed


def test_the_demo_builds_the_simulator_alone(tmp_path: Path) -> None:
    sources = registry.build_sources(Settings(_env_file=None, data_dir=tmp_path), FakeClock())  # type: ignore[call-arg]
    assert [s.name for s in sources] == ["simulator"]
    assert all(isinstance(s, Source) for s in sources)


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ({"schwab_enabled": True, "schwab_symbols": ["SPY"]}, "SCHWAB_APP_KEY"),
        ({"tastytrade_enabled": True, "tastytrade_symbols": ["SPY"]}, "TASTYTRADE_"),
        ({"gexbot_enabled": True}, "GEXBOT_API_KEY"),
    ],
)
def test_an_enabled_feed_without_credentials_refuses_with_the_setting_to_fix(
    tmp_path: Path, setting: dict[str, object], named: str
) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path, **setting)  # type: ignore[call-arg, arg-type]
    assert not settings.simulator_enabled()  # auto: a real feed replaces the simulator
    with pytest.raises(ConfigError, match=named):
        registry.build_sources(settings, FakeClock())


def test_per_source_policies_come_from_settings(tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path,
        source_policies={"simulator": {"no_idle_timeout": True, "backoff_max_s": 5}},
    )
    (sim,) = registry.build_sources(settings, FakeClock())
    assert sim.policy.idle_timeout_s is None and sim.policy.backoff_max_s == 5
