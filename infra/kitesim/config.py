"""Settings of one stand-in instance and its accounts.

Account credentials are derived from the seed, so two processes started with the same seed (e.g.
`ticker dev` and the sim it launches) agree on every api_key, secret and pre-issued access token.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ticker.infra.kitesim.api_limits import LimitSettings
from ticker.infra.kitesim.ipallow import parse_ips

DEFAULT_API_KEY = "sim_api_key"
DEFAULT_API_SECRET = "sim_api_secret"
# staggered: each ticker connection's frames at its own phase of the interval; aligned: all at once
TickPhases = Literal["staggered", "aligned"]


class SimAccount(BaseModel):
    """One Kite Connect app + user. Blank secrets are filled deterministically from the seed."""

    model_config = ConfigDict(extra="forbid")

    api_key: str = Field(min_length=1, max_length=64)
    api_secret: str = ""
    user_id: str = ""
    password: str = ""
    totp_secret: str = ""
    access_token: str = ""
    user_name: str = ""
    redirect_url: str | None = None
    postback_url: str | None = None  # the app's registered postback URL (Kite's developer console)
    app_id: int = Field(0, ge=0)      # the app's numeric id, as postbacks carry it

    def completed(self, seed: int, index: int) -> SimAccount:
        """This account with every blank field derived from (seed, api_key)."""
        digest = hashlib.sha256(f"{seed}:{self.api_key}".encode()).digest()
        fill = {
            "api_secret": DEFAULT_API_SECRET if index == 0 else f"{DEFAULT_API_SECRET}_{index + 1}",
            "user_id": f"SIM{index + 1:03d}",
            "password": f"sim-password-{index + 1}",
            "totp_secret": base64.b32encode(digest[:20]).decode(),
            "access_token": hashlib.sha256(b"access:" + digest).hexdigest()[:32],
            "user_name": f"Sim User {index + 1}",
            "app_id": 100_000 + int.from_bytes(digest[20:24], "big") % 900_000,
        }
        return self.model_copy(update={k: v for k, v in fill.items() if not getattr(self, k)})


class SimConfig(BaseModel):
    """Everything `ticker sim` takes on its command line (and tests pass directly)."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8780, ge=0, lt=65536)
    seed: int = 1
    profile: Literal["small", "full"] = "small"
    market_hours: Literal["always", "nse"] = "always"
    accounts: int | list[SimAccount] = 1
    accounts_file: Path | None = None
    redirect_url: str | None = None
    postback_url: str | None = None  # where order postbacks go for accounts that name none
    order_ip_allowlist: list[str] = Field(default_factory=list)  # static IPs orders may come from; [] = any
    rate: float = Field(0.10, ge=-0.5, le=1.0)

    # ticker
    tick_interval_ms: int = Field(500, ge=1, le=60_000)
    tick_phases: TickPhases = "staggered"
    tick_rate: float | None = Field(None, gt=0)  # ticks/s per instrument; None: every interval
    ticks_per_second: float | None = Field(None, gt=0)  # total target across all connections
    heartbeat_seconds: float = Field(1.0, gt=0)
    max_connections_per_key: int = Field(3, ge=1)
    max_tokens_per_connection: int = Field(3000, ge=1)

    # Kite's per-user REST limits (limits.py) and faults at start-up (all changeable over /_sim/).
    rate_limits: bool = True                          # False: no rate limit at all
    order_rate_limit: int = Field(10, ge=0)           # order placements per second per user, 0 disables
    order_minute_limit: int = Field(400, ge=0)
    order_day_limit: int = Field(5000, ge=0)
    quote_rate_limit: int = Field(1, ge=0)            # /quote, /quote/ltp, /quote/ohlc per second
    historical_rate_limit: int = Field(3, ge=0)
    api_rate_limit: int = Field(10, ge=0)             # every other endpoint, per second
    latency_ms: float = Field(0.0, ge=0)
    error_rate: float = Field(0.0, ge=0, le=1)  # random 500/502/503 on every REST route
    drop_every_seconds: float | None = Field(None, gt=0)
    timeout_seconds: float = Field(10.0, gt=0)  # how long a "timeout" fault withholds a response

    @field_validator("accounts")
    @classmethod
    def _accounts(cls, v: int | list[SimAccount]) -> int | list[SimAccount]:
        if isinstance(v, int) and not 1 <= v <= 1000:
            raise ValueError("accounts must be between 1 and 1000")
        if isinstance(v, list):
            if not v:
                raise ValueError("accounts list is empty")
            keys = [a.api_key for a in v]
            if len(set(keys)) != len(keys):
                raise ValueError("api_key values must be unique")
        return v

    @field_validator("order_ip_allowlist")
    @classmethod
    def _ips(cls, v: list[str]) -> list[str]:
        return sorted(parse_ips(v))

    @model_validator(mode="after")
    def _file(self) -> SimConfig:
        if self.accounts_file is not None and not self.accounts_file.is_file():
            raise ValueError(f"accounts file {self.accounts_file} does not exist")
        return self

    def resolve_accounts(self) -> list[SimAccount]:
        """The accounts this instance serves, every field filled."""
        if self.accounts_file is not None:
            given = load_accounts_file(self.accounts_file)
        elif isinstance(self.accounts, list):
            given = self.accounts
        else:
            given = [SimAccount(api_key=default_api_key(i)) for i in range(self.accounts)]
        done = [a.completed(self.seed, i) for i, a in enumerate(given)]
        if self.postback_url:
            done = [a if a.postback_url else a.model_copy(update={"postback_url": self.postback_url}) for a in done]
        return done

    def limit_settings(self) -> LimitSettings:
        return LimitSettings(self.rate_limits, self.order_rate_limit, self.order_minute_limit,
                             self.order_day_limit, self.quote_rate_limit, self.historical_rate_limit,
                             self.api_rate_limit)


def default_api_key(index: int) -> str:
    """sim_api_key, sim_api_key_2, sim_api_key_3, ..."""
    return DEFAULT_API_KEY if index == 0 else f"{DEFAULT_API_KEY}_{index + 1}"


def load_accounts_file(path: Path) -> list[SimAccount]:
    """A YAML or JSON list of account mappings (only api_key is required)."""
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ValueError(f"accounts file {path}: not valid YAML/JSON ({exc})") from None
    if isinstance(data, dict) and "accounts" in data:
        data = data["accounts"]
    if not isinstance(data, list) or not data:
        raise ValueError(f"accounts file {path}: expected a non-empty list of accounts")
    return [SimAccount.model_validate(item) for item in data]
