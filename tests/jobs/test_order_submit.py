"""Order submission through the web's order intake: account resolution, Kite-style validation naming
the field, nothing enqueued on error; the one instrument lookup both the web and the jobs use."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
import pytest_asyncio

from tests.order_api import web_orders
from ticker.core.orders import BasketRequest, OrderRequest
from ticker.infra.orders.audit_trail import get_order
from ticker.infra.orders.validate import UnknownAccount, find_instrument, resolve_account_id
from ticker.infra.queue.enqueue import create_queue
from ticker.infra.queue.status import cancel_job
from ticker.infra.stores.accounts import KiteAccount, account_store

TOKEN = 0x7FFF_0002  # an NFO option row of our own
_ROW = ("INSERT INTO instruments (instrument_token, exchange_token, tradingsymbol, tick_size, lot_size,"
        " instrument_type, segment, exchange, is_active) VALUES ($1, $2, $3, 0.05, 50, 'CE', 'NFO-OPT', 'NFO', $4)")


@pytest_asyncio.fixture
async def arq(settings):
    pool = await create_queue(settings)
    yield pool
    await pool.aclose()


@pytest_asyncio.fixture
async def api(settings):
    async with web_orders(settings) as client:
        yield client


@pytest_asyncio.fixture
async def known(db, settings) -> str:
    await db.execute(_ROW + " ON CONFLICT DO NOTHING", TOKEN, TOKEN >> 8, "TESTOPT25100CE", True)
    account_id = "submit-" + uuid.uuid4().hex[:8]
    await account_store(db, settings).upsert(KiteAccount(account_id=account_id, api_key="k", access_token="t"))
    return account_id


def order(account: str | None, **kw) -> OrderRequest:
    base = dict(account_id=account, exchange="NFO", tradingsymbol="TESTOPT25100CE", transaction_type="BUY",
                quantity=50, product="NRML", order_type="LIMIT", price=10.05)
    return OrderRequest(**{**base, **kw})


async def test_instrument_lookup(db, known) -> None:
    found = await find_instrument(db, "NFO", "TESTOPT25100CE")
    assert found.lot_size == 50 and found.tick_size == 0.05
    assert await find_instrument(db, "NSE", "TESTOPT25100CE") is None


async def test_a_live_symbol_names_one_instrument(db, known) -> None:
    # a retired row may share the live one's symbol; a second live one may not
    await db.execute(_ROW, TOKEN + 1, (TOKEN + 1) >> 8, "TESTOPT25100CE", False)
    assert (await find_instrument(db, "NFO", "TESTOPT25100CE")).instrument_token == TOKEN
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.execute("UPDATE instruments SET is_active = TRUE WHERE instrument_token = $1", TOKEN + 1)
    await db.execute("DELETE FROM instruments WHERE instrument_token = $1", TOKEN + 1)


async def test_named_account_must_exist(db, settings, known) -> None:
    assert await resolve_account_id(db, settings, known) == known
    with pytest.raises(UnknownAccount, match="unknown Kite account 'nope'"):
        await resolve_account_id(db, settings, "nope")
    assert await resolve_account_id(db, settings, None)  # some active account is the default


async def test_valid_order_is_recorded_and_enqueued_once(api, arq, db, names, known) -> None:
    key = uuid.uuid4().hex
    first = await api.place(order(known), key)
    again = await api.place(order(known), key)
    assert first["job_id"] == again["job_id"] and again["duplicate"] and not first["duplicate"]
    record = await get_order(db, first["job_id"])
    assert record.status == "queued" and record.account_id == known and record.tag
    assert await arq.zscore(names.orders_queue, first["job_id"]) is not None
    assert await cancel_job(arq, db, names, first["job_id"])  # no worker here: leave nothing queued


async def test_invalid_order_names_the_field_and_enqueues_nothing(api, arq, names, known) -> None:
    before = await arq.zcard(names.orders_queue)
    err = (await api.place(order(known, price=10.01), expect=422))["error"]
    assert err["details"][0]["field"] == "price" and "Tick size" in err["details"][0]["message"]
    basket = BasketRequest(account_id=known, legs=[order(None), order(None, quantity=75)])
    err = (await api.basket(basket, uuid.uuid4().hex, expect=422))["error"]
    assert err["details"][0]["field"] == "legs.1.quantity"
    assert await arq.zcard(names.orders_queue) == before
