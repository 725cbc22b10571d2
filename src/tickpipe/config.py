"""Settings from the environment and ``.env``, loaded once at start and passed down.

Every name is ``TICKPIPE_<FIELD>`` except the seed's own names, which are kept
(``SCHWAB_ENABLED``, ``SCHWAB_SYMBOLS``, ``SCHWAB_TICK_CHANNEL``, ``SCHWAB_LEVEL2_CHANNEL``).
Lists are comma-separated. Every external base URL is a setting so tests can point
adapters at local fakes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tickpipe.errors import ConfigError

CommaList = Annotated[list[str], NoDecode]


def _alias(seed: str, field: str) -> AliasChoices:
    return AliasChoices(seed, f"TICKPIPE_{field.upper()}")


class QualityThresholds(BaseModel, frozen=True):
    """Per-symbol quality limits; defaults suit liquid US equities and futures."""

    future_tolerance_s: float = 5.0
    max_age_s: float = 3 * 86_400.0
    outlier_pct: float = 0.03
    outlier_k: float = 25.0
    outlier_window: int = 5
    gap_seconds: float = 30.0


class SourcePolicySettings(BaseModel, frozen=True):
    """Per-source overrides of the supervisor's defaults (``TICKPIPE_SOURCE_POLICIES``)."""

    idle_timeout_s: float | None = Field(None, gt=0)
    no_idle_timeout: bool = False
    backoff_initial_s: float | None = Field(None, gt=0)
    backoff_max_s: float | None = Field(None, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TICKPIPE_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
    )

    data_dir: Path = Path("data")
    host: str = "127.0.0.1"
    port: int = Field(8877, ge=1, le=65535)
    log_level: str = "INFO"

    api_default_rate_limit: float = Field(1000.0, gt=0, description="requests/s per key")

    redis_url: str | None = None
    hot_capacity: int = Field(10_000, ge=1, description="events kept per (kind, symbol)")
    hot_option_capacity: int = Field(
        100, ge=1, description="events kept per option contract (chains have thousands)"
    )

    tick_channel: str = Field(
        "ticks", validation_alias=_alias("SCHWAB_TICK_CHANNEL", "tick_channel")
    )
    level2_channel: str = Field(
        "level2", validation_alias=_alias("SCHWAB_LEVEL2_CHANNEL", "level2_channel")
    )
    option_channel: str = "options"
    gex_channel: str = "gex"
    bus_chunk_events: int = Field(500, ge=1, description="events per pub/sub message")

    simulator: Literal["auto", "true", "false"] = "auto"
    simulator_symbols: CommaList = ["SPY", "QQQ", "/ES", "/NQ", "$VIX"]
    simulator_option_underlying: str = "SPY"
    simulator_option_strikes: int = Field(41, ge=1, description="strikes per expiry around spot")
    simulator_option_expiries: int = Field(3, ge=1, le=200)
    simulator_rate: float = Field(300.0, ge=0, description="events per second of market time")
    simulator_realtime: bool = True
    simulator_batch_ms: float = Field(100.0, gt=0)
    simulator_batch_size: int = Field(0, ge=0, description="fixed events per batch (0: by time)")
    simulator_seed: int | None = None
    simulator_start_ns: int | None = None
    simulator_bad_share: float = Field(0.002, ge=0, le=0.5)
    simulator_silence_share: float = Field(0.0005, ge=0, le=0.5)
    simulator_max_events: int = Field(0, ge=0, description="stop after this many (0: never)")

    # --- Schwab (issue: Schwab feed) -------------------------------------------------
    schwab_enabled: bool = Field(False, validation_alias=_alias("SCHWAB_ENABLED", "schwab_enabled"))
    schwab_symbols: CommaList = Field(
        default_factory=list, validation_alias=_alias("SCHWAB_SYMBOLS", "schwab_symbols")
    )
    schwab_book_symbols: CommaList = Field(
        default_factory=list, validation_alias="SCHWAB_BOOK_SYMBOLS"
    )
    schwab_chain_symbols: CommaList = Field(
        default_factory=list, validation_alias="SCHWAB_CHAIN_SYMBOLS"
    )
    schwab_chain_interval_s: float = Field(15.0, gt=0, validation_alias="SCHWAB_CHAIN_INTERVAL_S")
    schwab_app_key: SecretStr | None = Field(None, validation_alias="SCHWAB_APP_KEY")
    schwab_app_secret: SecretStr | None = Field(None, validation_alias="SCHWAB_APP_SECRET")
    schwab_refresh_token: SecretStr | None = Field(None, validation_alias="SCHWAB_REFRESH_TOKEN")
    schwab_callback_url: str = Field(
        "https://127.0.0.1:8182", validation_alias="SCHWAB_CALLBACK_URL"
    )
    schwab_api_base_url: str = Field(
        "https://api.schwabapi.com", validation_alias="SCHWAB_API_BASE_URL"
    )
    schwab_requests_per_minute: float = Field(
        110.0, gt=0, validation_alias="SCHWAB_REQUESTS_PER_MINUTE"
    )
    stale_after_s: float = Field(15.0, gt=0, description="a symbol older than this is stale")
    schwab_env_file: Path = Field(
        Path(".env"),
        validation_alias="SCHWAB_ENV_FILE",
        description="the .env whose SCHWAB_REFRESH_TOKEN line the token store keeps current",
    )
    schwab_equity_size_multiplier: float = Field(
        1.0,
        gt=0,
        validation_alias="SCHWAB_EQUITY_SIZE_MULTIPLIER",
        description="LEVELONE_EQUITIES bid/ask sizes x this (100 if your stream sends lots)",
    )

    # --- TastyTrade (issue: TastyTrade feed) ------------------------------------------
    tastytrade_enabled: bool = Field(False, validation_alias="TASTYTRADE_ENABLED")
    tastytrade_client_secret: SecretStr | None = Field(
        None, validation_alias="TASTYTRADE_CLIENT_SECRET"
    )
    tastytrade_refresh_token: SecretStr | None = Field(
        None, validation_alias="TASTYTRADE_REFRESH_TOKEN"
    )
    tastytrade_symbols: CommaList = Field(
        default_factory=list, validation_alias="TASTYTRADE_SYMBOLS"
    )
    tastytrade_chain_symbols: CommaList = Field(
        default_factory=list, validation_alias="TASTYTRADE_CHAIN_SYMBOLS"
    )
    tastytrade_api_base_url: str = Field(
        "https://api.tastyworks.com", validation_alias="TASTYTRADE_API_BASE_URL"
    )
    tastytrade_chain_max_days: int = Field(
        60, ge=0, validation_alias="TASTYTRADE_CHAIN_MAX_DAYS", description="chain expiries kept"
    )
    tastytrade_keepalive_timeout_s: float = Field(
        60.0, gt=0, validation_alias="TASTYTRADE_KEEPALIVE_TIMEOUT_S", description="DXLink silence"
    )
    tastytrade_subscription_batch: int = Field(
        500, ge=1, validation_alias="TASTYTRADE_SUBSCRIPTION_BATCH", description="items a message"
    )

    # --- gexbot (issue: gexbot source) ------------------------------------------------
    gexbot_enabled: bool = Field(False, validation_alias="GEXBOT_ENABLED")
    gexbot_api_key: SecretStr | None = Field(None, validation_alias="GEXBOT_API_KEY")
    gexbot_api_base_url: str = Field(
        "https://api.gex.bot/v2", validation_alias="GEXBOT_API_BASE_URL"
    )
    gexbot_api_style: Literal["v2", "v1"] = Field("v2", validation_alias="GEXBOT_API_STYLE")
    gexbot_tickers: CommaList = Field(
        default_factory=lambda: ["SPX", "SPY", "QQQ"], validation_alias="GEXBOT_TICKERS"
    )
    gexbot_categories: CommaList = Field(
        default_factory=lambda: ["full", "zero", "one"], validation_alias="GEXBOT_CATEGORIES"
    )
    gexbot_requests_per_second: float = Field(
        1.0, gt=0, validation_alias="GEXBOT_REQUESTS_PER_SECOND"
    )
    gexbot_gex_unit_usd: float = Field(
        1e6,
        gt=0,
        validation_alias="GEXBOT_GEX_UNIT_USD",
        description="USD per 1 % move one unit of gexbot's GEX values stands for (undocumented)",
    )
    gexbot_timeout_s: float = Field(2.0, gt=0, validation_alias="GEXBOT_TIMEOUT_S")

    # --- Sierra Chart (issue: Sierra Chart source) ------------------------------------
    sierra_scid_dir: Path | None = Field(None, validation_alias="SIERRA_SCID_DIR")
    sierra_symbols: CommaList = Field(default_factory=list, validation_alias="SIERRA_SYMBOLS")
    sierra_tick_sizes: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=dict, validation_alias="SIERRA_TICK_SIZES"
    )
    sierra_poll_interval_s: float = Field(
        0.2, gt=0, le=5, validation_alias="SIERRA_POLL_INTERVAL_S"
    )
    sierra_dtc_host: str | None = Field(None, validation_alias="SIERRA_DTC_HOST")
    sierra_dtc_port: int = Field(11099, ge=1, le=65535, validation_alias="SIERRA_DTC_PORT")
    sierra_dtc_encoding: Literal["json", "binary"] = Field(
        "binary", validation_alias="SIERRA_DTC_ENCODING"
    )
    sierra_dtc_symbols: CommaList = Field(
        default_factory=list, validation_alias="SIERRA_DTC_SYMBOLS"
    )
    sierra_dtc_username: str = Field("", validation_alias="SIERRA_DTC_USERNAME")
    sierra_dtc_password: SecretStr | None = Field(None, validation_alias="SIERRA_DTC_PASSWORD")
    sierra_dtc_heartbeat_s: float = Field(
        10.0, gt=0, le=300, validation_alias="SIERRA_DTC_HEARTBEAT_S"
    )

    @field_validator("sierra_tick_sizes", mode="before")
    @classmethod
    def _tick_sizes(cls, value: Any) -> Any:
        """``ESZ25=0.25,NQZ25=0.25`` as well as a JSON object."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("{"):
            import json

            return json.loads(text)
        pairs = [part.partition("=") for part in text.split(",") if part.strip()]
        bad = [k for k, sep, _ in pairs if not sep]
        if bad:
            raise ValueError(
                f"SIERRA_TICK_SIZES: write SYMBOL=TICK, e.g. ESZ25=0.25; got {bad[0]!r}"
            )
        return {k.strip(): v.strip() for k, _, v in pairs}

    # ----------------------------------------------------------------------------------

    intake_tick_ms: float = Field(
        0.0,
        ge=0,
        le=100,
        description="a tick waits this long for more frames (0: it takes what is there)",
    )
    intake_tick_events: int = Field(
        65_536, ge=1, description="a tick stops waiting once this many are pending"
    )
    visible_before_fsync: bool = Field(
        True,
        description="hot store, bus and WebSocket see events before their fsync (see README)",
    )

    journal_segment_seconds: float = Field(10.0, gt=0)
    journal_segment_bytes: int = Field(64 * 1024 * 1024, gt=0)
    journal_fsync: bool = True
    lake_zstd_level: int = Field(3, ge=1, le=22)
    lake_compact_min_files: int = Field(24, ge=2, description="merge a partition's files past this")
    lake_compact_max_rows: int = Field(20_000_000, ge=1, description="rows per compacted file")
    lake_compact_interval_s: float = Field(60.0, gt=0)

    quality: QualityThresholds = QualityThresholds()
    quality_overrides: dict[str, QualityThresholds] = Field(default_factory=dict)

    gex_interval_ms: float = Field(250.0, gt=0, description="recompute at most this often")
    gex_history_seconds: float = Field(60.0, gt=0, description="GexLevels to the lake this often")
    gex_max_chain_age_s: float = Field(300.0, gt=0, description="older chains answer 503")
    gex_min_minutes: float = Field(30.0, gt=0, description="0DTE floor on time to expiry")
    gex_full_max_days: float = 90.0
    gex_grid_pct: float = Field(0.15, gt=0, lt=1)
    gex_grid_points: int = Field(61, ge=5, le=1001)
    gex_convention: Literal[
        "long_calls_short_puts", "short_calls_short_puts", "short_calls_long_puts"
    ] = "long_calls_short_puts"
    gex_multiplier: float = 100.0
    gex_rate: float = 0.0
    gex_dividend_yield: float = 0.0

    supervisor_backoff_initial_s: float = Field(0.5, gt=0)
    supervisor_backoff_max_s: float = Field(30.0, gt=0)
    supervisor_idle_timeout_s: float = Field(60.0, gt=0)
    source_policies: dict[str, SourcePolicySettings] = Field(
        default_factory=dict, description="per-source idle timeout and backoff, by source name"
    )

    access_log: Literal["file", "stdout", "off"] = Field(
        "file", description="API access log: data/logs/access.log (rotated), stdout, or off"
    )
    access_log_max_bytes: int = Field(50 * 1024 * 1024, ge=4096, description="rotate past this")
    access_log_backups: int = Field(5, ge=0, description="rotated access log files kept")

    streams_max: int = Field(
        8, ge=1, description="history answers (downloads, replays, pages) open per API process"
    )
    streams_per_key: int = Field(
        4, ge=1, description="history answers one key may have open at once (then 429)"
    )
    json_builds_max: int = Field(
        2, ge=1, description="JSON history answers built at once per API process"
    )

    @field_validator(
        "simulator_symbols",
        "schwab_symbols",
        "schwab_book_symbols",
        "schwab_chain_symbols",
        "tastytrade_symbols",
        "tastytrade_chain_symbols",
        "gexbot_tickers",
        "gexbot_categories",
        "sierra_symbols",
        "sierra_dtc_symbols",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def lake_dir(self) -> Path:
        return self.data_dir / "lake"

    @property
    def journal_dir(self) -> Path:
        return self.data_dir / "journal"

    @property
    def keys_path(self) -> Path:
        return self.data_dir / "keys.sqlite"

    @property
    def catalog_path(self) -> Path:
        return self.data_dir / "tick_data.db"

    def hot_capacities(self) -> dict[str, int]:
        """Recent events kept per (kind, symbol), by kind value."""
        return {
            "trade": self.hot_capacity,
            "quote": self.hot_capacity,
            "book": self.hot_capacity,
            "option": self.hot_option_capacity,
            "gex": 1_000,
            "bars": self.hot_capacity,
        }

    def thresholds(self, symbol: str) -> QualityThresholds:
        return self.quality_overrides.get(symbol, self.quality)

    def feeds_enabled(self) -> list[str]:
        """The real feeds these settings turn on."""
        on = {
            "schwab": self.schwab_enabled,
            "tastytrade": self.tastytrade_enabled,
            "gexbot": self.gexbot_enabled,
            "sierra": self.sierra_scid_dir is not None or self.sierra_dtc_host is not None,
        }
        return [name for name, enabled in on.items() if enabled]

    def simulator_enabled(self) -> bool:
        if self.simulator == "auto":
            return not self.feeds_enabled()
        return self.simulator == "true"


def load_settings(**overrides: Any) -> Settings:
    """Read settings once; a validation failure becomes a ConfigError that names the field."""
    try:
        return Settings(**overrides)
    except ValueError as exc:
        raise ConfigError(f"invalid settings: {exc}") from exc
