"""Per-account Kite clients for jobs, with the account's credentials cached briefly.

Reading an account decrypts its secrets (or asks AWS); an order path cannot afford that per call.
Entries live `TTL_SECONDS` and are dropped at once when Kite rejects the token, so a refreshed token
is picked up by the next attempt.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from ticker.infra.kite.limits import Budget, budget_for
from ticker.infra.kite.rest import KiteApi
from ticker.infra.stores.accounts import KiteAccount, settings_account
from ticker.jobs.context import Deps

TTL_SECONDS = 30.0
MAX_ACCOUNTS = 1000


class AccountUnavailable(LookupError):
    """The account is unknown, inactive, or has no access token: orders for it cannot go anywhere."""


class KiteClients:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self._cache: OrderedDict[str, tuple[float, KiteAccount]] = OrderedDict()

    async def account(self, account_id: str) -> KiteAccount:
        hit = self._cache.get(account_id)
        if hit is not None and time.monotonic() - hit[0] < TTL_SECONDS:
            return hit[1]
        account = await self.fresh_account(account_id)
        self._cache[account_id] = (time.monotonic(), account)
        self._cache.move_to_end(account_id)
        while len(self._cache) > MAX_ACCOUNTS:
            self._cache.popitem(last=False)
        return account

    async def fresh_account(self, account_id: str) -> KiteAccount:
        account = await self.deps.accounts.get(account_id) if self.deps.accounts.configured else None
        if account is None:
            single = settings_account(self.deps.settings)
            account = single if single is not None and single.account_id == account_id else None
        if account is None or not account.is_active:
            raise AccountUnavailable(f"unknown or inactive Kite account {account_id!r}")
        if not account.access_token:
            raise AccountUnavailable(f"Kite account {account_id!r} has no access token")
        return account

    async def api(self, account_id: str) -> KiteApi:
        account = await self.account(account_id)
        return KiteApi(self.deps.kite_http, account.api_key, account.secret("access_token"))

    async def budget(self, account_id: str) -> Budget:
        """Whose Kite rate limits this account's calls draw on: its Kite user's, when stored."""
        account = await self.account(account_id)
        return budget_for(account_id, account.secret("user_id"))

    def forget(self, account_id: str) -> None:
        self._cache.pop(account_id, None)


def kite_clients(deps: Deps) -> KiteClients:
    if deps.kite_clients is None:
        deps.kite_clients = KiteClients(deps)
    return deps.kite_clients
