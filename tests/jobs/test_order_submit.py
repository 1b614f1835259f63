"""Order submission: account resolution, Kite-style validation naming the field, nothing enqueued on error."""

from __future__ import annotations

import uuid

import pytest
import pytest_asyncio

from ticker.core.orders import BasketRequest, OrderRequest, OrderValidationError
from ticker.infra.orders.audit_trail import get_order
from ticker.infra.orders.intake import (
    UnknownAccount,
    find_instrument,
    resolve_account_id,
    submit_basket,
    submit_place,
)
from ticker.infra.queue.enqueue import create_queue
from ticker.infra.queue.status import cancel_job
from ticker.infra.stores.accounts import KiteAccount, account_store

TOKEN = 0x7FFF_0002  # an NFO option row of our own


@pytest_asyncio.fixture
async def arq(settings):
    pool = await create_queue(settings)
    yield pool
    await pool.aclose()


@pytest_asyncio.fixture
async def known(db, settings) -> str:
    await db.execute(
        "INSERT INTO instruments (instrument_token, exchange_token, tradingsymbol, tick_size, lot_size,"
        " instrument_type, segment, exchange) VALUES ($1, $2, 'TESTOPT25100CE', 0.05, 50, 'CE', 'NFO-OPT', 'NFO')"
        " ON CONFLICT DO NOTHING", TOKEN, TOKEN >> 8)
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


async def test_named_account_must_exist(db, settings, known) -> None:
    assert await resolve_account_id(db, settings, known) == known
    with pytest.raises(UnknownAccount, match="unknown Kite account 'nope'"):
        await resolve_account_id(db, settings, "nope")
    assert await resolve_account_id(db, settings, None)  # some active account is the default


async def test_valid_order_is_recorded_and_enqueued_once(arq, db, names, settings, known) -> None:
    key = uuid.uuid4().hex
    first = await submit_place(arq, db, names, settings, order(known), key)
    again = await submit_place(arq, db, names, settings, order(known), key)
    assert first.job_id == again.job_id and again.duplicate and not first.duplicate
    record = await get_order(db, first.job_id)
    assert record.status == "queued" and record.account_id == known and record.tag
    assert await arq.zscore(names.orders_queue, first.job_id) is not None
    assert await cancel_job(arq, db, names, first.job_id)  # no worker here: leave nothing queued


async def test_invalid_order_names_the_field_and_enqueues_nothing(arq, db, names, settings, known) -> None:
    before = await arq.zcard(names.orders_queue)
    with pytest.raises(OrderValidationError) as err:
        await submit_place(arq, db, names, settings, order(known, price=10.01))
    assert err.value.field == "price" and "Tick size" in err.value.message
    basket = BasketRequest(account_id=known, legs=[order(None), order(None, quantity=75)])
    with pytest.raises(OrderValidationError) as err:
        await submit_basket(arq, db, names, settings, basket, uuid.uuid4().hex)
    assert err.value.field == "legs.1.quantity"
    assert await arq.zcard(names.orders_queue) == before
