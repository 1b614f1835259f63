"""Lookups that validate references in requests (instruments, accounts), with small TTL caches.

Instruments by symbol come from the order intake's one lookup behind its cache
(`ticker.infra.orders.validate.CachedInstruments`); accounts change rarely and are kept a few seconds.
"""

from __future__ import annotations

import asyncpg

from ticker.http.middleware.errors import ApiError
from ticker.infra.orders.validate import (
    INSTRUMENT_COLUMNS,
    CachedInstruments,
    NoAccount,
    TtlCache,
    UnknownAccount,
    choose_account,
    known_account_ids,
)
from ticker.infra.runtime.settings import Settings


class Refs:
    ACCOUNTS_TTL = 5.0

    def __init__(self, db: asyncpg.Pool, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.instruments = CachedInstruments(db)  # the order intake's validation reads through it
        self._accounts: TtlCache[str, frozenset[str]] = TtlCache(1)

    async def instrument_by_token(self, token: int) -> asyncpg.Record | None:
        return await self.db.fetchrow(f"SELECT {INSTRUMENT_COLUMNS}, is_active FROM instruments "
                                      "WHERE instrument_token = $1", token)

    async def account_ids(self) -> frozenset[str]:
        """Accounts orders and subscriptions may name (the workers' rule, kept a few seconds)."""
        found, value = self._accounts.get("all")
        if found and value is not None:
            return value
        ids = frozenset(await known_account_ids(self.db, self.settings))
        self._accounts.put("all", ids, self.ACCOUNTS_TTL)
        return ids

    def forget_accounts(self) -> None:
        self._accounts.clear()

    async def require_account(self, account_id: str | None, field: str = "account_id") -> None:
        """422 naming `field` when the account is unknown; 503 when no account exists at all."""
        await self.resolve_account(account_id, field)

    async def resolve_account(self, account_id: str | None, field: str = "account_id") -> str:
        """The account a request acts for, by the same rule the workers apply (`choose_account`)."""
        try:
            return choose_account(await self.account_ids(), self.settings.kite_account_id, account_id)
        except NoAccount:
            raise ApiError(503, "no_account", "no Kite account is configured: add one with POST /accounts "
                           "or set KITE_API_KEY") from None
        except UnknownAccount:
            raise ApiError(422, "validation_error", f"{field}: unknown account {account_id!r}",
                           [{"field": field, "location": "body", "message": "unknown account",
                             "type": "unknown_account"}]) from None
