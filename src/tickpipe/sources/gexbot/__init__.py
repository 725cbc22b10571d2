"""gexbot source: gamma-exposure levels polled from gexbot's REST API (gexbot.com, NFA).

Protocol (the README, gexbot; fact sheet ``shared/protocols/gexbot.md``): ``GET
{GEXBOT_API_BASE_URL}/{ticker}/classic/{full|zero|one}[/majors|/maxchange]`` with
``Authorization: Bearer gexbot_custom_...``, ``User-Agent`` and ``Accept`` (v2), or the
key as ``?key=`` (legacy v1, ``GEXBOT_API_STYLE=v1``). A sample answer is in ``parse.py``.

Decisions:

- Symbols are tickpipe's canonical ones (``SPX`` -> ``$SPX``, ``ES_SPX`` -> ``/ES``), one
  per ticker, with the category in the ``category`` column (``full``, ``zero``,
  ``full/majors``...): gexbot's and tickpipe's own SPX levels then share a symbol, in the
  hot store, the lake and ``/api/v1/gex/$SPX/compare``. A per-category symbol would
  have broken that and the canonical-symbol rule. The price: the quality rules key on
  (source, kind, symbol), so ``seq`` is numbered per symbol across categories and each
  ticker's changed categories go out as one delivery sorted by gexbot's timestamp; an
  answer older than one already stored for its symbol would be quarantined as
  ``out_of_order`` (kept, with its row), which only a category lagging a whole round
  behind the others can cause.
- An answer whose timestamp did not change is not emitted. The last timestamp per
  (ticker, category) rides in the source's checkpoint, so a restart after the close does
  not store the last levels twice.
- 5xx and transport failures raise: the supervisor's backoff retries the whole poller.
"""

from __future__ import annotations

from tickpipe.clock import Clock
from tickpipe.config import Settings
from tickpipe.errors import ConfigError
from tickpipe.sources.base import Source
from tickpipe.sources.gexbot.poller import GexbotSource

__all__ = ["GexbotSource", "build"]


def build(settings: Settings, clock: Clock) -> list[Source]:
    """The poller, or a ConfigError that names the setting to fix."""
    key = settings.gexbot_api_key
    secret = key.get_secret_value().strip() if key is not None else ""
    if not secret:
        raise ConfigError(
            "GEXBOT_ENABLED=true needs GEXBOT_API_KEY: your gexbot API key "
            "(gexbot_custom_..., from your gexbot.com account)"
        )
    if secret.startswith("research_"):
        raise ConfigError(
            "GEXBOT_API_KEY is a gexbot research key: the data API needs your gexbot_custom_ key"
        )
    return [GexbotSource(settings, clock)]
