"""Which Kite account serves a data call (history, instruments, quotes).

Market data is the same whichever account asks, so any healthy account will do: active, with an
access token Kite has not refused. Accounts are tried in order of the rate budget they have left
in the call's bucket; a 429 puts an account on a short cool-down (shared through Redis, so every
worker skips it) and a refused token marks it invalid; either way the next account is tried.
Orders never come here: an order belongs to its own account.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.asyncio import Redis

from ticker.core.contracts import Names
from ticker.infra.kite.limits import Budget, KiteLimiter, budget_for
from ticker.infra.kite.rest import KiteApi, KiteException, KiteHttp, TokenException
from ticker.infra.runtime.settings import Settings
from ticker.infra.stores.accounts import AccountStore, KiteAccount, load_accounts

log = logging.getLogger(__name__)
T = TypeVar("T")
COOL_DOWN_MS = 1_000  # Kite's windows are per second


class NoDataAccount(RuntimeError):
    """No account could serve the call; the message lists what was tried and why."""


@dataclass
class DataAccounts:
    store: AccountStore
    settings: Settings
    http: KiteHttp
    redis: Redis
    names: Names

    def __post_init__(self) -> None:
        self.limiter = KiteLimiter(self.redis, self.names, self.settings)

    def _cool_key(self, account_id: str, bucket: str) -> str:
        return self.names.key("cooldown", account_id, bucket)

    async def healthy(self) -> list[KiteAccount]:
        accounts = await load_accounts(self.store if self.store.configured else None, self.settings)
        return [a for a in accounts if a.is_active and a.access_token is not None and a.token_state != "invalid"]

    async def ranked(self, bucket: str) -> list[KiteAccount]:
        """Healthy accounts, those not cooling down first, then by calls left in `bucket`."""
        accounts = await self.healthy()
        if not accounts:
            return []
        cooling = await self.redis.mget([self._cool_key(a.account_id, bucket) for a in accounts])
        # Calls left per window, shortest window first: a tie now goes to whoever used less lately.
        room = [tuple(-r for r in (await self.limiter.remaining(_budget(a), bucket)).values()) for a in accounts]
        order = sorted(range(len(accounts)), key=lambda i: (cooling[i] is not None, room[i], accounts[i].account_id))
        return [accounts[i] for i in order]

    async def call(self, bucket: str, fn: Callable[[KiteApi], Awaitable[T]],
                   max_wait: float | None = None) -> tuple[T, str]:
        """`fn(api)` on the best account, failing over; returns (result, account_id)."""
        tried: list[str] = []
        for account in await self.ranked(bucket):
            await self.limiter.acquire(_budget(account), bucket, max_wait=max_wait)
            api = KiteApi(self.http, account.api_key, account.secret("access_token"))
            try:
                return await fn(api), account.account_id
            except TokenException:
                tried.append(f"{account.account_id}: token refused")
                await self.store_state(account.account_id)
            except KiteException as exc:
                if exc.code != 429:
                    raise
                tried.append(f"{account.account_id}: rate limited")
                await self.redis.set(self._cool_key(account.account_id, bucket), 1, px=COOL_DOWN_MS)
            log.warning("data call failed over", extra={"account": account.account_id, "bucket": bucket})
        detail = "; ".join(tried) if tried else "none is active with a usable access token"
        raise NoDataAccount(f"no Kite account can serve {bucket} calls ({detail})")

    async def store_state(self, account_id: str) -> None:
        if self.store.configured:
            await self.store.set_token_state(account_id, "invalid")


def _budget(account: KiteAccount) -> Budget:
    return budget_for(account.account_id, account.secret("user_id"))


def data_accounts(deps: Any) -> DataAccounts:
    """The process-wide picker kept in a job worker's `Deps.data_accounts`."""
    if deps.data_accounts is None:
        deps.data_accounts = DataAccounts(deps.accounts, deps.settings, deps.kite_http, deps.redis, deps.names)
    return deps.data_accounts
