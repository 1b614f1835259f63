"""Order intake, stage one: validate. The instrument an order names, the account it goes to, and the
order as Kite will receive it (`ticker.core.order_intake`: defaults filled in, every rule checked).

`find_instrument` is the one (exchange, tradingsymbol) lookup: the web (through a short-lived cache)
and the order jobs both call it, and a unique index on live rows (migration 0006) makes its answer
the same row for both. A refusal is an OrderValidationError naming each field at fault.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection
from typing import Any, Generic, TypeVar

import asyncpg

from ticker.core.gtt import GttRequest, validate_gtt
from ticker.core.instruments import Instrument
from ticker.core.order_intake import IntakeRules, prepare_modify, prepare_order
from ticker.core.orders import ModifyRequest, OrderIssue, OrderRequest, OrderValidationError, raise_issues
from ticker.infra.orders.audit_trail import find_by_kite_order
from ticker.infra.runtime.settings import Settings

K = TypeVar("K")
V = TypeVar("V")

INSTRUMENT_COLUMNS = ("instrument_token, exchange_token, tradingsymbol, name, last_price, expiry, strike, "
                      "tick_size, lot_size, instrument_type, segment, exchange")

InstrumentLookup = Callable[[str, str], Awaitable[Instrument | None]]


class UnknownAccount(LookupError):
    """The order names an account this deployment does not have."""


class NoAccount(UnknownAccount):
    """This deployment has no Kite account at all."""


def instrument_from_row(row: asyncpg.Record | dict[str, Any]) -> Instrument:
    return Instrument(**{k: row[k] for k in Instrument.model_fields})


async def find_instrument(db: asyncpg.Pool, exchange: str, tradingsymbol: str) -> Instrument | None:
    """The live instrument with this symbol on this exchange (at most one: instruments_symbol_idx)."""
    row = await db.fetchrow(f"SELECT {INSTRUMENT_COLUMNS} FROM instruments"
                            " WHERE exchange = $1 AND tradingsymbol = $2 AND is_active", exchange, tradingsymbol)
    return instrument_from_row(row) if row else None


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


class CachedInstruments:
    """`find_instrument` behind a bounded, short-lived cache, for a process that validates many orders.

    Instrument rows change once a day, so the hot path stays in memory; misses are kept for less
    time than hits so a newly loaded instrument becomes usable quickly.
    """

    HIT_TTL, MISS_TTL = 60.0, 2.0

    def __init__(self, db: asyncpg.Pool, max_size: int = 20_000) -> None:
        self.db = db
        self._symbols: TtlCache[tuple[str, str], Instrument | None] = TtlCache(max_size)

    async def __call__(self, exchange: str, tradingsymbol: str) -> Instrument | None:
        key = (exchange, tradingsymbol)
        found, value = self._symbols.get(key)
        if found:
            return value
        value = await find_instrument(self.db, exchange, tradingsymbol)
        self._symbols.put(key, value, self.HIT_TTL if value else self.MISS_TTL)
        return value


# --- accounts (the job side; the web resolves through its cached `Refs`) ---------------------------
async def known_account_ids(db: asyncpg.Pool, settings: Settings) -> list[str]:
    """Accounts orders may name: the active ones in Postgres, else the one settings configure."""
    active = [r["account_id"] for r in await db.fetch(
        "SELECT account_id FROM kite_accounts WHERE is_active ORDER BY account_id")]
    return active or ([settings.kite_account_id] if settings.kite_api_key else [])


def choose_account(known: Collection[str], default: str, requested: str | None) -> str:
    """The account a request acts for: the one named, else `default` (KITE_ACCOUNT_ID) when it
    exists, else the first by id. Orders never move to another account than this."""
    if not known:
        raise NoAccount("no Kite account is configured")
    if requested is not None:
        if requested not in known:
            raise UnknownAccount(f"unknown Kite account {requested!r}")
        return requested
    return default if default in known else min(known)


async def resolve_account_id(db: asyncpg.Pool, settings: Settings, requested: str | None) -> str:
    return choose_account(await known_account_ids(db, settings), settings.kite_account_id, requested)


def intake_rules(settings: Settings) -> IntakeRules:
    """What order intake fills in, from the deployment's settings (web and worker alike)."""
    return IntakeRules(market_protection=settings.order_market_protection)


def _prefixed(exc: OrderValidationError, prefix: str) -> OrderValidationError:
    named = [OrderIssue(field=prefix + i.field, message=i.message) for i in exc.issues]
    return OrderValidationError(named[0].field, named[0].message, named)


# --- the orders ------------------------------------------------------------------------------------
class Validator:
    """Takes requests in as Kite would: the filled-in request, or OrderValidationError."""

    def __init__(self, db: asyncpg.Pool, settings: Settings, instruments: InstrumentLookup | None = None) -> None:
        self.db = db
        self.rules = intake_rules(settings)
        self.instrument: InstrumentLookup = instruments or (lambda ex, sym: find_instrument(db, ex, sym))

    async def order(self, order: OrderRequest, prefix: str = "") -> OrderRequest:
        """The order as it will be sent (defaults filled in); issues named with `prefix` (basket legs)."""
        try:
            return prepare_order(order, await self.instrument(order.exchange, order.tradingsymbol), self.rules)
        except OrderValidationError as exc:
            raise _prefixed(exc, prefix) from None

    async def modify(self, req: ModifyRequest) -> ModifyRequest:
        """The modification as it will be sent, checked against the instrument of the order we placed."""
        original = await find_by_kite_order(self.db, req.order_id)
        order = (original.payload.get("order") if original else None) or {}
        instrument = await self.instrument(order["exchange"], order["tradingsymbol"]) if order else None
        return prepare_modify(req, instrument, self.rules)

    async def gtt(self, req: GttRequest) -> GttRequest:
        raise_issues(validate_gtt(req, await self.instrument(req.exchange, req.tradingsymbol)))
        return req

    async def legs(self, legs: list[OrderRequest], account_id: str, prefix: str) -> list[OrderRequest]:
        """Margin preview legs, each as an order would be taken in; all issues at once. A preview is for
        one account, so a leg naming another is refused."""
        issues: list[OrderIssue] = []
        taken = []
        for i, leg in enumerate(legs):
            if leg.account_id not in (None, account_id):
                issues.append(OrderIssue(field=f"{prefix}{i}.account_id",
                                         message="a margin preview is for one account: name it once, at the top"))
                continue
            try:
                taken.append(await self.order(leg, f"{prefix}{i}."))
            except OrderValidationError as exc:
                issues += exc.issues
        raise_issues(issues)
        return taken
