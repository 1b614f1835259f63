"""Lookups that validate references in requests (instruments, accounts), with small TTL caches.

Instruments by symbol come from the order intake's one lookup behind its cache
(`ticker.infra.orders.validate.CachedInstruments`); accounts change rarely and are kept a few seconds.
"""

from __future__ import annotations

import asyncpg

from ticker.http.middleware.errors import ApiError
from ticker.infra.orders.validate import INSTRUMENT_COLUMNS, CachedInstruments, TtlCache
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
        """Accounts orders and subscriptions may name: active rows in Postgres, else the settings one."""
        found, value = self._accounts.get("all")
        if found and value is not None:
            return value
        rows = await self.db.fetch("SELECT account_id FROM kite_accounts WHERE is_active")
        ids = frozenset(r["account_id"] for r in rows)
        if not ids and self.settings.kite_api_key:
            ids = frozenset({self.settings.kite_account_id})
        self._accounts.put("all", ids, self.ACCOUNTS_TTL)
        return ids

    def forget_accounts(self) -> None:
        self._accounts.clear()

    async def require_account(self, account_id: str | None, field: str = "account_id") -> None:
        """422 naming `field` when the account is unknown; 503 when no account exists at all."""
        ids = await self.account_ids()
        if not ids:
            raise ApiError(503, "no_account", "no Kite account is configured: add one with POST /accounts "
                           "or set KITE_API_KEY")
        if account_id is not None and account_id not in ids:
            raise ApiError(422, "validation_error", f"{field}: unknown account {account_id!r}",
                           [{"field": field, "location": "body", "message": "unknown account",
                             "type": "unknown_account"}])

    async def resolve_account(self, account_id: str | None, field: str = "account_id") -> str:
        """The account a request acts for: the one named, else the default (KITE_ACCOUNT_ID when it
        exists, otherwise the first by id)."""
        await self.require_account(account_id, field)
        if account_id is not None:
            return account_id
        ids = await self.account_ids()
        return self.settings.kite_account_id if self.settings.kite_account_id in ids else min(ids)
