"""Orders, baskets, jobs and history over HTTP (in-process app, no worker: jobs stay queued)."""

from __future__ import annotations

import uuid

import pytest
from arq.constants import job_key_prefix

from tests.web.seed import CALL, EQUITY, INDEX, LOT, NIFTY_INDEX, RETIRED

ORDER = {"exchange": "NFO", "tradingsymbol": CALL.tradingsymbol, "transaction_type": "BUY", "quantity": LOT,
         "product": "NRML", "order_type": "LIMIT", "price": 101.5}


def key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


async def queued(redis, names, job_id: str) -> bool:
    in_queue = await redis.zscore(names.orders_queue, job_id) is not None
    return in_queue and await redis.exists(job_key_prefix + job_id) == 1


async def test_place_returns_202_with_a_job_to_poll(api, redis, names, db) -> None:
    resp = await api.post("/orders", json=ORDER)
    assert resp.status == 202
    doc = await resp.json()
    assert doc["status_url"] == f"/jobs/{doc['job_id']}" == resp.headers["Location"]
    assert doc["duplicate"] is False and doc["account_id"] == "primary"
    assert await queued(redis, names, doc["job_id"])
    row = await db.fetchrow("SELECT status, account_id, payload FROM order_requests WHERE job_id = $1", doc["job_id"])
    assert row["status"] == "queued" and row["payload"]["order"]["tradingsymbol"] == CALL.tradingsymbol
    status = await (await api.get(doc["status_url"])).json()
    assert status["status"] == "queued" and status["job_id"] == doc["job_id"]


async def test_same_idempotency_key_is_the_same_job_and_one_audit_row(api, redis, names, db) -> None:
    headers = key()
    first = await (await api.post("/orders", json=ORDER, headers=headers)).json()
    second_resp = await api.post("/orders", json=ORDER, headers=headers)
    second = await second_resp.json()
    assert second_resp.status == 202
    assert second["job_id"] == first["job_id"] and second["duplicate"] is True
    assert await db.fetchval("SELECT count(*) FROM order_requests WHERE job_id = $1", first["job_id"]) == 1
    assert await queued(redis, names, first["job_id"])


async def test_same_key_for_a_different_order_is_a_conflict(api) -> None:
    headers = key()
    assert (await api.post("/orders", json=ORDER, headers=headers)).status == 202
    resp = await api.post("/orders", json={**ORDER, "quantity": 2 * LOT}, headers=headers)
    assert resp.status == 409
    assert (await resp.json())["error"]["code"] == "idempotency_conflict"


@pytest.mark.parametrize(("change", "field", "words"), [
    ({"quantity": LOT + 1}, "quantity", f"multiple of lot size {LOT}"),
    ({"price": 101.53}, "price", "tick size"),
    ({"order_type": "MARKET"}, "price", "not allowed"),
    ({"tradingsymbol": "NOSUCHSYMBOL"}, "tradingsymbol", "unknown instrument"),
    ({"tradingsymbol": RETIRED.tradingsymbol}, "tradingsymbol", "unknown instrument"),
    ({"exchange": "NSE", "tradingsymbol": INDEX.tradingsymbol, "quantity": 1, "product": "MIS"}, "tradingsymbol",
     "index"),
    ({"account_id": "nobody"}, "account_id", "unknown account"),
])
async def test_invalid_orders_are_422_naming_the_field_and_nothing_is_enqueued(api, redis, names, db,
                                                                               change, field, words) -> None:
    before = (await redis.zcard(names.orders_queue), await db.fetchval("SELECT count(*) FROM order_requests"))
    resp = await api.post("/orders", json={**ORDER, **change}, headers=key())
    assert resp.status == 422, await resp.text()
    err = (await resp.json())["error"]
    assert err["details"][0]["field"] == field and words in err["message"]
    after = (await redis.zcard(names.orders_queue), await db.fetchval("SELECT count(*) FROM order_requests"))
    assert after == before


async def test_no_account_at_all_is_a_503(make_api) -> None:
    api = await make_api(kite_api_key=None)
    resp = await api.post("/orders", json=ORDER)
    assert resp.status == 503 and (await resp.json())["error"]["code"] == "no_account"


async def test_modify_and_cancel_are_jobs_too(api, redis, names) -> None:
    resp = await api.put("/orders/250101000001", json={"price": 99.0, "order_type": "LIMIT"}, headers=key())
    assert resp.status == 202
    assert await queued(redis, names, (await resp.json())["job_id"])
    resp = await api.put("/orders/250101000001", json={"order_id": "other", "price": 99.0})
    assert resp.status == 422 and (await resp.json())["error"]["details"][0]["field"] == "order_id"
    resp = await api.put("/orders/250101000001", json={})
    assert resp.status == 422 and "nothing to modify" in (await resp.json())["error"]["message"]
    resp = await api.delete("/orders/250101000001?variety=regular", headers=key())
    assert resp.status == 202
    assert await queued(redis, names, (await resp.json())["job_id"])
    resp = await api.delete("/orders/250101000001?variety=bogus")
    assert resp.status == 422 and (await resp.json())["error"]["details"][0]["field"] == "variety"
    assert (await api.delete("/orders/bad%20id")).status == 422


async def test_basket_is_one_job_per_leg_and_checks_every_leg_first(api, redis, names, db) -> None:
    legs = [ORDER, {**ORDER, "transaction_type": "SELL"},
            {"exchange": "NSE", "tradingsymbol": EQUITY.tradingsymbol, "transaction_type": "BUY", "quantity": 3,
             "product": "CNC", "order_type": "MARKET"}]
    resp = await api.post("/orders/basket", json={"legs": legs}, headers=key())
    assert resp.status == 202
    doc = await resp.json()
    assert resp.headers["Location"] == doc["status_url"] == f"/baskets/{doc['basket_id']}"
    assert [j["leg"] for j in doc["jobs"]] == [0, 1, 2]
    for job in doc["jobs"]:
        assert await queued(redis, names, job["job_id"])
    status = await (await api.get(doc["status_url"])).json()
    assert status["status"] == "queued" and [leg["job_id"] for leg in status["legs"]] == [j["job_id"] for j in doc["jobs"]]
    before = await redis.zcard(names.orders_queue)
    bad = await api.post("/orders/basket", json={"legs": [ORDER, {**ORDER, "quantity": 7}]})
    assert bad.status == 422
    assert (await bad.json())["error"]["details"][0]["field"] == "legs.1.quantity"
    assert await redis.zcard(names.orders_queue) == before
    assert (await api.get("/baskets/bsk-nothing")).status == 404


async def test_order_audit_is_listed_newest_first_with_paging(api) -> None:
    placed = [(await (await api.post("/orders", json=ORDER)).json())["job_id"] for _ in range(3)]
    page = await (await api.get("/orders?limit=2")).json()
    assert [o["job_id"] for o in page["orders"]] == placed[::-1][:2]
    assert page["next_offset"] == 2
    rest = await (await api.get("/orders?limit=1&offset=2")).json()
    assert rest["orders"][0]["job_id"] == placed[0]


async def test_jobs_long_poll_cancel_and_unknown(api) -> None:
    job_id = (await (await api.post("/orders", json=ORDER)).json())["job_id"]
    waited = await api.get(f"/jobs/{job_id}?wait=0.3")
    assert waited.status == 200 and (await waited.json())["status"] == "queued"
    assert (await api.get(f"/jobs/{job_id}?wait=31")).status == 422
    cancelled = await api.delete(f"/jobs/{job_id}")
    assert cancelled.status == 200 and (await cancelled.json())["cancelled"] is True
    assert (await (await api.get(f"/jobs/{job_id}")).json())["status"] == "cancelled"
    again = await api.delete(f"/jobs/{job_id}")
    assert again.status == 409 and (await again.json())["error"]["details"]["status"] == "cancelled"
    assert (await api.get("/jobs/no-such-job")).status == 404
    assert (await api.delete("/jobs/no-such-job")).status == 404


async def test_history_is_one_job_per_parameter_set(api, redis, names) -> None:
    query = f"/history?instrument_token={CALL.instrument_token}&from=2025-01-01T09:15:00&to=2025-01-02T15:30:00"
    first = await api.get(query)
    second = await api.get(query)
    assert first.status == second.status == 202
    a, b = await first.json(), await second.json()
    assert a["job_id"] == b["job_id"] and (a["duplicate"], b["duplicate"]) == (False, True)
    assert await redis.zscore(names.default_queue, a["job_id"]) is not None
    other = await (await api.get(query + "&interval=5minute")).json()
    assert other["job_id"] != a["job_id"]
    bad = await api.get(f"/history?instrument_token={NIFTY_INDEX}&from=2025-01-02T00:00:00&to=2025-01-01T00:00:00")
    assert bad.status == 422 and "to must be after from" in (await bad.json())["error"]["message"]
    unknown = await api.get("/history?instrument_token=12&from=2025-01-01T00:00:00&to=2025-01-02T00:00:00")
    assert unknown.status == 422 and (await unknown.json())["error"]["details"][0]["field"] == "instrument_token"
    interval = await api.get(query.replace("from=", "interval=2minute&from="))
    assert (await interval.json())["error"]["details"][0]["field"] == "interval"
