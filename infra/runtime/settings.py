"""One validated Settings object, read from the environment and `.env`.

Every process builds it once at startup (`get_settings`); libraries take it as an argument so
tests can construct their own.
"""

from __future__ import annotations

import functools
from datetime import date, time
from typing import Literal
from urllib.parse import urlparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cryptography.fernet import Fernet
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ticker.core.holidays import nse_holidays
from ticker.core.orders import market_protection_value

PositiveInt = Field(gt=0)
# Production API keys: long, and not a repeated pattern of a few characters (32 spaces are 32 long).
MIN_KEY_LENGTH = 32
MIN_KEY_DISTINCT = 10
# The keys infra/docker-compose.yml starts with so the stack runs out of the box. They are public (in
# this repository), so production refuses them.
DEV_ONLY_API_KEY = "dev-only-api-key-public-never-in-production"
DEV_ONLY_ENCRYPTION_KEY = "dGlja2VyIGNvbXBvc2UgZGV2LW9ubHksIHB1YmxpYyE="  # b64 of "ticker compose dev-only, public!"


class SettingsError(RuntimeError):
    """Configuration that cannot run; the message says what to set."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    # --- environment and connections -----------------------------------------------------------
    environment: Literal["development", "test", "production"] = "development"
    redis_url: str | None = None
    tick_redis_url: str | None = None  # the tick bus's own Redis (infra/stores/tick_bus.py); unset: REDIS_URL
    database_url: str | None = None
    db_pool_min: int = Field(1, ge=0)
    db_pool_max: int = Field(10, gt=0)
    redis_namespace: str = "ticker"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"

    # --- security -------------------------------------------------------------------------------
    api_key: SecretStr | None = None  # trading key: every route except the admin ones
    admin_api_key: SecretStr | None = None  # account and admin routes (and every other route)
    account_encryption_key: SecretStr | None = None  # comma-separated Fernet keys, newest first
    secrets_backend: Literal["fernet", "aws"] = "fernet"
    aws_region: str = "ap-south-1"
    aws_secrets_prefix: str = "ticker/"
    jwt_secret: SecretStr | None = None
    jwt_jwks_url: str | None = None
    jwt_audience: str | None = None
    http_rate_limit_per_minute: int = Field(100, gt=0)

    # --- web ------------------------------------------------------------------------------------
    http_shutdown_seconds: float = Field(20.0, gt=0)  # SIGTERM: how long in-flight requests may finish
    ws_client_queue_max: int = Field(1000, gt=0)  # ticks buffered per WebSocket client before drops
    ws_max_clients: int = Field(2000, gt=0)
    ws_max_tokens_per_client: int = Field(3000, gt=0)

    # --- Kite -----------------------------------------------------------------------------------
    kite_api_key: str | None = None
    kite_api_secret: SecretStr | None = None
    kite_access_token: SecretStr | None = None
    kite_account_id: str = "primary"
    kite_root: str = "https://api.kite.trade"
    kite_ws_root: str = "wss://ws.kite.trade"
    kite_login_root: str = "https://kite.zerodha.com"
    kite_redirect_url: str | None = None
    kite_request_timeout: float = Field(7.0, gt=0)
    # An HTTP proxy (CONNECT for https) whose address is registered with Kite: orders must come from a
    # registered static IP. http://user:pass@host:port; used for order and GTT writes, or for every
    # REST call with KITE_PROXY_ALL.
    kite_proxy_url: SecretStr | None = None
    kite_proxy_all: bool = False  # send every Kite REST call through KITE_PROXY_URL, not only orders

    # --- streamer -------------------------------------------------------------------------------
    publish_channel_prefix: str = "ticker:nifty"
    ticker_mode: Literal["full", "quote", "ltp"] = "full"
    tick_batch_window_ms: int = Field(100, gt=0)
    tick_batch_max_size: int = Field(1000, gt=0)
    tick_batch_adaptive: bool = True  # send a batch once the socket readers go idle; the window is the ceiling
    tick_buffer_max: int = Field(100_000, gt=0)
    # each published message an envelope with seq/epoch/offset (core/tick_envelope.py), or the bare
    # JSON array older subscribers read (no sequencing, no history, no resume)
    tick_message_format: Literal["envelope", "array"] = "envelope"
    tick_history_seconds: int = Field(300, gt=0, le=86_400)  # ticks and chains kept in their history streams
    # the tick bus is a Redis Cluster: channels, streams and sequences sharded by underlying with hash
    # tags, sharded pub/sub (SPUBLISH/SSUBSCRIBE, Redis >= 7); see core/contracts.Names.shard
    tick_redis_cluster: bool = False
    latest_snapshot_ms: int = Field(500, ge=0, le=60_000)  # latest-tick hash rewritten at most this often
    chain_interval_ms: int = Field(1000, gt=0, le=60_000)  # each option chain published at most this often
    max_ws_connections: int = Field(3, gt=0, le=3)
    max_instruments_per_ws: int = Field(3000, gt=0, le=3000)
    stall_seconds: float = Field(5.0, gt=0)
    reconnect_max_seconds: float = Field(30.0, gt=0)
    streamer_port: int = 8081
    worker_port: int = Field(0, ge=0, le=65535)  # the worker's /health and /metrics; 0 serves none
    worker_host: str = "0.0.0.0"
    streamer_lease_ms: int = Field(10_000, gt=0)
    bar_interval_seconds: int = Field(60, gt=0)
    redis_breaker_reset_seconds: float = Field(1.0, gt=0)  # longest pause between the streamer's Redis retries
    reconnect_base_seconds: float = Field(0.25, gt=0)  # first reconnect delay, doubled per failure
    ws_subscribe_batch: int = Field(500, gt=0, le=3000)  # tokens per subscribe/mode message
    streamer_underlyings: bool = True  # also stream the index/stock under every subscribed derivative
    streamer_reconcile_seconds: float = Field(30.0, gt=0)  # full reload even without a control message
    streamer_publish_timeout: float = Field(2.0, gt=0)  # a Redis flush slower than this counts as failed

    # --- Greeks ---------------------------------------------------------------------------------
    greeks_model: Literal["black76", "bsm"] = "black76"
    option_greeks_interest_rate: float = Field(0.10, ge=-0.5, le=1.0)
    option_greeks_dividend_yield: float = Field(0.0, ge=-0.5, le=1.0)

    # --- market ---------------------------------------------------------------------------------
    market_timezone: str = "Asia/Kolkata"
    market_open: time = time(9, 15)
    market_close: time = time(15, 30)

    # --- jobs -----------------------------------------------------------------------------------
    order_max_tries: int = Field(5, gt=0)
    order_retry_base_seconds: float = Field(0.2, gt=0)
    orders_poll_delay: float = Field(0.005, gt=0)
    default_poll_delay: float = Field(0.1, gt=0)
    # An idle worker sleeps until an enqueue wakes it (a Redis PUBLISH); off, it polls every poll delay.
    worker_wake_on_enqueue: bool = True
    worker_concurrency: int = Field(50, gt=0)
    order_rate_per_second: int = Field(10, gt=0)
    order_rate_per_minute: int = Field(400, gt=0)
    order_rate_per_day: int = Field(5000, gt=0)
    historical_rate_per_second: int = Field(3, gt=0)
    quote_rate_per_second: int = Field(1, gt=0)
    api_rate_per_second: int = Field(10, gt=0)
    breaker_failure_threshold: int = Field(5, gt=0)
    breaker_open_seconds: float = Field(10.0, gt=0)
    job_result_ttl_seconds: int = Field(86_400, gt=0)
    order_retry_max_seconds: float = Field(30.0, gt=0)  # cap of the exponential backoff
    order_request_timeout: float = Field(5.0, gt=0)  # one place/modify/cancel call to Kite
    order_job_timeout_seconds: float = Field(30.0, gt=0)
    order_rate_guard_ms: float = Field(0.0, ge=0, le=1000)  # extra per-second window slack (clock skew)
    # MARKET/SL-M orders that name no market_protection get this: -1 (Kite's automatic protection) or 1..100 (%)
    order_market_protection: int = -1
    rate_wait_max_seconds: float = Field(2.0, ge=0)  # longer waits hand the job back instead of holding a slot
    default_job_timeout_seconds: float = Field(900.0, gt=0)
    worker_health_check_seconds: float = Field(5.0, gt=0)
    worker_shutdown_grace_seconds: float = Field(10.0, ge=0)
    order_token_refresh_wait_seconds: float = Field(10.0, ge=0)  # after a 403, before retrying the order
    portfolio_cache_seconds: float = Field(2.0, ge=0)
    # While an account's token is bad the streamer asks for a refresh again, and a refresh job retries
    # a login that failed on the way (5xx, timeout), after these waits: doubled each time, jittered.
    token_refresh_retry_seconds: float = Field(30.0, gt=0)  # first wait before a token refresh is tried again
    token_refresh_retry_max_seconds: float = Field(600.0, gt=0)  # cap of that back-off
    # A login Kite refused for good (wrong password, TOTP secret or api_secret) waits this long before
    # it is tried again; storing the account's credentials again retries at once.
    token_login_refused_retry_seconds: float = Field(21_600.0, gt=0)  # wrong credentials: login tried again after

    # --- scheduler ------------------------------------------------------------------------------
    token_refresh_time: time = time(7, 35)
    instrument_refresh_time: time = time(8, 15)
    order_sync_seconds: int = Field(30, gt=0)
    portfolio_refresh_seconds: int = Field(60, gt=0)  # positions/holdings/margins snapshots, market hours
    cleanup_days: int = Field(30, gt=0)
    cleanup_time: time = time(2, 0)
    schedule_token_refresh: bool = True
    schedule_instrument_refresh: bool = True
    schedule_order_sync: bool = True
    schedule_portfolio_refresh: bool = True
    schedule_cleanup: bool = True
    rebalance_enabled: bool = True
    rebalance_underlyings: str = "NIFTY,BANKNIFTY"
    market_holidays: str = ""  # holidays besides NSE's calendar (comma-separated YYYY-MM-DD): no market jobs
    otm_levels: int = Field(10, ge=0)
    option_expiry_window: int = Field(2, gt=0)

    # --- processes ------------------------------------------------------------------------------
    port: int = 8080
    host: str = "0.0.0.0"
    sim_port: int = 8780

    @field_validator("port", "streamer_port", "sim_port")
    @classmethod
    def _port(cls, v: int) -> int:
        if not 0 < v < 65536:
            raise ValueError("must be a TCP port between 1 and 65535")
        return v

    @field_validator("order_market_protection", mode="before")
    @classmethod
    def _protection(cls, v: object) -> int | None:
        return market_protection_value(v)

    @field_validator("redis_url", "tick_redis_url")
    @classmethod
    def _redis_url(cls, v: str | None) -> str | None:
        return _url(v, ("redis", "rediss", "unix"))

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, v: str | None) -> str | None:
        return _url(v, ("postgres", "postgresql"))

    @field_validator("kite_root", "kite_ws_root", "kite_login_root")
    @classmethod
    def _kite_url(cls, v: str) -> str:
        return (_url(v, ("http", "https", "ws", "wss")) or "").rstrip("/")

    @field_validator("kite_proxy_url")
    @classmethod
    def _proxy_url(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None or not v.get_secret_value().strip():
            return None
        parts = urlparse(v.get_secret_value().strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("KITE_PROXY_URL must look like http://[user:pass@]host:port")
        try:
            parts.port  # noqa: B018 - a port that is not a number raises here
        except ValueError as exc:
            raise ValueError("KITE_PROXY_URL has a port that is not a number") from exc
        return SecretStr(v.get_secret_value().strip())

    @field_validator("market_timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {v!r}") from exc
        return v

    @field_validator("market_holidays")
    @classmethod
    def _holidays(cls, v: str) -> str:
        for part in filter(None, (p.strip() for p in v.split(","))):
            try:
                date.fromisoformat(part)
            except ValueError as exc:
                raise ValueError(f"MARKET_HOLIDAYS must be comma-separated dates like 2026-01-26, not {part!r}") from exc
        return v

    @field_validator("api_key", "admin_api_key")
    @classmethod
    def _unset_when_empty(cls, v: SecretStr | None) -> SecretStr | None:
        # `API_KEY=` in a .env means no key, not a key that is the empty string
        return None if v is None or v.get_secret_value() == "" else v

    @field_validator("account_encryption_key")
    @classmethod
    def _fernet(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None or not v.get_secret_value().strip():
            return None
        for key in v.get_secret_value().split(","):
            try:
                Fernet(key.strip())
            except Exception as exc:
                raise ValueError("ACCOUNT_ENCRYPTION_KEY must be comma-separated Fernet keys") from exc
        return v

    @model_validator(mode="after")
    def _tick_cluster(self) -> Settings:
        if self.tick_redis_cluster and not self.tick_redis_url:
            raise ValueError("TICK_REDIS_CLUSTER needs TICK_REDIS_URL (a node of the cluster): "
                             "queues and leases stay on REDIS_URL, which cannot be a cluster")
        return self

    @model_validator(mode="after")
    def _production(self) -> Settings:
        if self.environment != "production":
            return self
        problems = [*_key_problems("API_KEY", self.api_key), *_key_problems("ADMIN_API_KEY", self.admin_api_key)]
        if self.api_key is not None and self.api_key == self.admin_api_key:
            problems.append("ADMIN_API_KEY must differ from API_KEY")
        if self.account_encryption_key is None:
            problems.append("ACCOUNT_ENCRYPTION_KEY (a Fernet key) is required in production")
        problems += self._dev_only_values()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _dev_only_values(self) -> list[str]:
        """The public development keys (docker-compose's defaults), which production must replace."""
        problems = [f"{name} is the public development key; set your own in production"
                    for name, key in (("API_KEY", self.api_key), ("ADMIN_API_KEY", self.admin_api_key))
                    if key is not None and key.get_secret_value() == DEV_ONLY_API_KEY]
        keys = self.account_encryption_key.get_secret_value().split(",") if self.account_encryption_key else []
        if DEV_ONLY_ENCRYPTION_KEY in (k.strip() for k in keys):
            problems.append("ACCOUNT_ENCRYPTION_KEY holds the public development key; generate your own "
                            "(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')")
        return problems

    # --- derived --------------------------------------------------------------------------------
    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.market_timezone)

    @property
    def holidays(self) -> frozenset[date]:
        """NSE's trading-holiday calendar (core.holidays) plus the MARKET_HOLIDAYS dates."""
        extra = frozenset(date.fromisoformat(p.strip()) for p in self.market_holidays.split(",") if p.strip())
        return nse_holidays(extra)

    @property
    def api_key_value(self) -> str | None:
        return self.api_key.get_secret_value() if self.api_key else None

    @property
    def admin_api_key_value(self) -> str | None:
        return self.admin_api_key.get_secret_value() if self.admin_api_key else None

    @property
    def kite_configured(self) -> bool:
        return bool(self.kite_api_key and self.kite_api_secret)

    def url(self, name: Literal["redis_url", "database_url"]) -> str:
        """A URL the calling process cannot run without: its value, or a clear error naming it."""
        self.require(name)
        value: str = getattr(self, name)
        return value

    def require(self, *names: str) -> None:
        """Fail with a clear message when a process needs a setting that is unset."""
        missing = [n.upper() for n in names if getattr(self, n) in (None, "")]
        if missing:
            raise SettingsError(f"set {', '.join(missing)} (environment or .env)")


def _key_problems(name: str, key: SecretStr | None) -> list[str]:
    """Why `key` is not good enough to guard a production deployment (nothing when it is)."""
    if key is None:
        return [f"{name} is required in production"]
    value = key.get_secret_value()
    if len(value) < MIN_KEY_LENGTH:
        return [f"{name} must be at least {MIN_KEY_LENGTH} characters long in production"]
    if len(set(value)) < MIN_KEY_DISTINCT:
        return [f"{name} must contain at least {MIN_KEY_DISTINCT} distinct characters in production "
                "(a random key, not a repeated character)"]
    return []


def _url(v: str | None, schemes: tuple[str, ...]) -> str | None:
    if v is None or v == "":
        return None
    scheme = urlparse(v).scheme
    if scheme not in schemes:
        raise ValueError(f"URL scheme must be one of {', '.join(schemes)}, got {scheme or 'none'!r}")
    return v


def load_settings(**overrides: object) -> Settings:
    """Build Settings, turning validation errors into one readable SettingsError."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]).upper() or "settings"
            lines.append(f"{field}: {err['msg'].removeprefix('Value error, ')}")
        raise SettingsError("invalid configuration: " + "; ".join(lines)) from None


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
