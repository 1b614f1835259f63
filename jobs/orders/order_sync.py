"""Kite's view of our orders brought into the audit: a periodic `sync_orders` job reading each
account's order book, and the consumer of order postbacks the streamer publishes on `Names.orders`.

Both are idempotent and order-insensitive: a final status (COMPLETE, REJECTED, CANCELLED) is never
replaced by a live one that arrives late.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import Any

import orjson
from arq import Retry
from arq.worker import func
from pydantic import BaseModel, Field, ValidationError

from ticker.core.contracts import JOB_SYNC_ORDERS
from ticker.core.tick_envelope import unwrap
from ticker.infra.kite.limits import RateLimited
from ticker.infra.kite.rest import is_transient
from ticker.infra.kite.schemas import Order
from ticker.infra.orders import audit_trail as audit
from ticker.infra.runtime.outage import POSTGRES_ERRORS, Outage
from ticker.infra.stores.tick_bus import BusListener
from ticker.jobs.context import Deps, deps
from ticker.jobs.data.portfolio_refresh import refresh_quietly
from ticker.jobs.kite_clients import AccountUnavailable, kite_clients
from ticker.jobs.orders.runner import backoff, error_text, limiter

log = logging.getLogger(__name__)

RECENT = timedelta(days=2)  # orders older than this are not followed any more


class SyncPayload(BaseModel, extra="forbid"):
    account_id: str | None = Field(None, min_length=1, max_length=64)


class SyncResult(BaseModel):
    accounts: int
    updated: int
    errors: dict[str, str] = Field(default_factory=dict)


async def record_kite_state(d: Deps, order: Order) -> int:
    """Apply one Kite order (from the order book or a postback) to the audit; an order whose status
    or fills changed makes its account's portfolio snapshot due for a refresh."""
    if not order.order_id or not order.status:
        return 0
    rows = await audit.apply_kite_state(
        d.db, kite_order_id=order.order_id, tag=order.tag, status=order.status, message=order.status_message,
        filled_quantity=order.filled_quantity, average_price=order.average_price,
    )
    await refresh_quietly(d, {account_id for account_id, changed in rows if changed})
    return len(rows)


async def accounts_to_sync(d: Deps) -> list[str]:
    """Accounts with audited orders whose Kite status is not final yet."""
    return await audit.accounts_with_open_orders(d.db, RECENT)


async def sync_account(d: Deps, account_id: str) -> int:
    """Apply the account's order book to the audit; returns audit rows changed."""
    open_ids = set(await audit.open_orders(d.db, account_id))
    if not open_ids:
        return 0
    clients = kite_clients(d)
    await limiter(d).acquire(await clients.budget(account_id), "api", max_wait=d.settings.rate_wait_max_seconds)
    book = await (await clients.api(account_id)).orders(timeout=d.settings.kite_request_timeout)
    updated = 0
    for order in book:
        if order.order_id in open_ids:
            updated += await record_kite_state(d, order)
    return updated


async def sync_orders(ctx: dict[str, Any], payload: dict[str, Any] | None = None) -> dict[str, Any]:
    d = deps(ctx)
    p = SyncPayload.model_validate(payload or {})
    accounts = [p.account_id] if p.account_id else await accounts_to_sync(d)
    result = SyncResult(accounts=len(accounts), updated=0)
    transient = False
    for account_id in accounts:
        try:
            result.updated += await sync_account(d, account_id)
        except (RateLimited, AccountUnavailable) as exc:
            result.errors[account_id] = str(exc)
        except Exception as exc:  # one account failing must not stop the others
            if not is_transient(exc):
                raise
            transient = True
            result.errors[account_id] = error_text(exc)
    if transient and ctx.get("job_try", 1) < d.settings.order_max_tries and not result.updated:
        raise Retry(defer=backoff(d.settings, ctx.get("job_try", 1)))
    return result.model_dump(mode="json")


# --- postbacks -------------------------------------------------------------------------------------
def postback_orders(raw: bytes | str) -> list[Order]:
    """The orders in one published message: an envelope's `updates` (core/tick_envelope.py), a list,
    or one item, each a Kite postback `{"type": "order", "data": {...}}` or the bare order. Anything
    else (or an order Kite's types do not fit) yields nothing."""
    try:
        items, _ = unwrap(orjson.loads(raw))
    except (orjson.JSONDecodeError, ValueError):
        return []
    out = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("data"), dict):
            item = item["data"]
        if isinstance(item, dict) and item.get("order_id") and item.get("status"):
            try:
                out.append(Order.model_validate(item))
            except ValidationError:
                log.warning("postback for order %s does not read as an order", str(item["order_id"])[:40])
    return out


async def consume_postbacks(d: Deps, stop: asyncio.Event) -> None:
    """Apply order postbacks to the audit until `stop` is set (owned and awaited by the worker)."""
    listener = BusListener(d.settings, d.names, "orders", name="ticker-worker-postbacks")
    postgres = Outage("postgres")
    try:
        await listener.start()
        while not stop.is_set():
            data = await listener.get(timeout=0.25)  # bounds how long a stop waits
            if data is None:
                continue
            for order in postback_orders(data):
                try:
                    await record_kite_state(d, order)
                    postgres.ok()
                except POSTGRES_ERRORS as exc:  # the order sync brings the audit up to date later
                    postgres.failed(exc, "applying order postbacks")
                except Exception:  # a bad row costs this update only
                    log.warning("postback for order %s not applied", order.order_id, exc_info=True)
    finally:
        with contextlib.suppress(Exception):
            await listener.close()


FUNCTIONS = [func(sync_orders, name=JOB_SYNC_ORDERS, timeout=120)]
