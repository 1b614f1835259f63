"""Lookups that validate references in requests (instruments, accounts), with small TTL caches.

Validating every order against the instruments table would cost a Postgres round trip per request;
instrument rows change once a day, so a bounded, short-lived cache keeps the hot path in memory.
Misses are cached for less time than hits so a newly loaded instrument becomes usable quickly.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Generic, TypeVar

import asyncpg

from ticker.core.instruments import Instrument
from ticker.http.middleware.errors import ApiError
from ticker.infra.runtime.settings import Settings

K = TypeVar("K")
V = TypeVar("V")

INSTRUMENT_COLUMNS = ("instrument_token, exchange_token, tradingsymbol, name, last_price, expiry, strike, "
                      "tick_size, lot_size, instrument_type, segment, exchange")


class TtlCache(Generic[K, V]):
    """An LRU with per-entry expiry and a hard size bound."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> tuple[bool, V | None]:
        hit = self._data.get(key)
        if hit is None:
            return False, None
        expires, value = hit
        if expires < time.monotonic():
            del self._data[key]
            return False, None
        self._data.move_to_end(key)
        return True, value

    def put(self, key: K, value: V, ttl: float) -> None:
        self._data[key] = (time.monotonic() + ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_size:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()


def instrument_from_row(row: asyncpg.Record | dict[str, Any]) -> Instrument:
    return Instrument(**{k: row[k] for k in Instrument.model_fields})


class Refs:
    HIT_TTL, MISS_TTL, ACCOUNTS_TTL = 60.0, 2.0, 5.0

    def __init__(self, db: asyncpg.Pool, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self._symbols: TtlCache[tuple[str, str], Instrument | None] = TtlCache(20_000)
        self._accounts: TtlCache[str, frozenset[str]] = TtlCache(1)

    async def instrument(self, exchange: str, tradingsymbol: str) -> Instrument | None:
        """The active instrument for exchange:tradingsymbol, or None."""
        key = (exchange, tradingsymbol)
        found, value = self._symbols.get(key)
        if found:
            return value
        row = await self.db.fetchrow(
            f"SELECT {INSTRUMENT_COLUMNS} FROM instruments WHERE exchange = $1 AND tradingsymbol = $2 "
            "AND is_active ORDER BY instrument_token LIMIT 1", exchange, tradingsymbol)
        value = instrument_from_row(row) if row else None
        self._symbols.put(key, value, self.HIT_TTL if value else self.MISS_TTL)
        return value

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
