"""Which sources run: built from settings, one line per feed.

Each feed module exposes ``build(settings, clock) -> list[Source]`` and is imported only
when its feed is enabled, so a build without a feed's dependencies still runs the others.
A test checks that every module under ``sources/`` that is a feed is listed here and has
a fake server in ``tests/fakes/``.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable

from tickpipe.clock import Clock
from tickpipe.config import Settings
from tickpipe.sources.base import Source, SourcePolicy


@dataclasses.dataclass(frozen=True)
class Feed:
    name: str
    module: str
    """the module (or package) whose ``build(settings, clock)`` makes the feed's sources"""
    enabled: Callable[[Settings], bool]


FEEDS: tuple[Feed, ...] = (
    Feed("simulator", "tickpipe.sources.simulator", Settings.simulator_enabled),
    Feed("schwab", "tickpipe.sources.schwab", lambda s: "schwab" in s.feeds_enabled()),
    Feed("tastytrade", "tickpipe.sources.tastytrade", lambda s: "tastytrade" in s.feeds_enabled()),
    Feed("gexbot", "tickpipe.sources.gexbot", lambda s: "gexbot" in s.feeds_enabled()),
    Feed("sierra", "tickpipe.sources.sierra", lambda s: "sierra" in s.feeds_enabled()),
)


def default_policy(settings: Settings) -> SourcePolicy:
    """The supervisor's defaults; a source may start from these and change what it must."""
    return SourcePolicy(
        idle_timeout_s=settings.supervisor_idle_timeout_s,
        backoff_initial_s=settings.supervisor_backoff_initial_s,
        backoff_max_s=settings.supervisor_backoff_max_s,
    )


def with_overrides(source: Source, settings: Settings) -> Source:
    """Apply ``TICKPIPE_SOURCE_POLICIES[source.name]`` to a built source."""
    custom = settings.source_policies.get(source.name)
    if custom is None:
        return source
    policy = source.policy
    if custom.no_idle_timeout:
        policy = dataclasses.replace(policy, idle_timeout_s=None)
    elif custom.idle_timeout_s is not None:
        policy = dataclasses.replace(policy, idle_timeout_s=custom.idle_timeout_s)
    if custom.backoff_initial_s is not None:
        policy = dataclasses.replace(policy, backoff_initial_s=custom.backoff_initial_s)
    if custom.backoff_max_s is not None:
        policy = dataclasses.replace(policy, backoff_max_s=custom.backoff_max_s)
    source.policy = policy
    return source


def build_sources(settings: Settings, clock: Clock) -> list[Source]:
    """Every enabled feed's sources, in the order above. A feed whose settings are
    incomplete raises ConfigError here, before anything starts."""
    sources: list[Source] = []
    for feed in FEEDS:
        if not feed.enabled(settings):
            continue
        module = importlib.import_module(feed.module)
        sources += module.build(settings, clock)
    return [with_overrides(s, settings) for s in sources]
