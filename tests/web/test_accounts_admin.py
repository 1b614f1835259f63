"""Accounts (secrets in, never out), admin jobs, the dead-letter queue, Kite's login callback, and
the admin key that guards all but the last."""

from __future__ import annotations

import uuid

import pytest
from arq.constants import job_key_prefix

from tests.web.conftest import ADMIN_KEY, API_KEY
from tests.web.test_subscriptions_reads import control_listener, next_control
from ticker.core.contracts import JOB_EXCHANGE_REQUEST_TOKEN, JOB_PLACE_ORDER, JOB_REFRESH_INSTRUMENTS
from ticker.infra.stores.deadletters import add_dead_letter

SECRET = "sup3r-s3cret-" + uuid.uuid4().hex


async def job_name(redis, job_id: str) -> str:
    import pickle

    return pickle.loads(await redis.get(job_key_prefix + job_id))["f"]


async def test_accounts_take_secrets_and_never_return_them(admin_api, db, redis, names) -> None:
    account_id = f"acct-{uuid.uuid4().hex[:6]}"
    body = {"account_id": account_id, "api_key": "kitekey1", "api_secret": SECRET, "access_token": SECRET + "t"}
    async with control_listener(redis, names) as control:
        created = await admin_api.post("/accounts", json=body)
        text = await created.text()
        assert created.status == 201, text
        assert SECRET not in text
        doc = await created.json()
        assert doc["has_api_secret"] and doc["has_access_token"] and not doc["has_password"]
        assert (await next_control(control)) | {"reason": ""} == {"kind": "tokens", "account_id": account_id,
                                                                  "tokens": [], "reason": ""}
    try:
        stored = await db.fetchrow("SELECT api_secret_enc FROM kite_accounts WHERE account_id = $1", account_id)
        assert SECRET.encode() not in bytes(stored["api_secret_enc"])
        listed = await admin_api.get("/accounts")
        assert SECRET not in await listed.text()
        assert account_id in [a["account_id"] for a in (await listed.json())["accounts"]]
        again = await admin_api.post("/accounts", json={"account_id": account_id, "api_key": "kitekey2"})
        assert again.status == 200 and (await again.json())["has_api_secret"]  # kept when not resent
        bad = await admin_api.post("/accounts", json={**body, "auto_login": True})
        assert bad.status == 422 and (await bad.json())["error"]["details"][0]["field"] == "auto_login"
        order = await admin_api.post("/subscriptions", json={"instrument_token": 408065, "account_id": account_id})
        assert order.status in (200, 201)
    finally:
        removed = await admin_api.delete(f"/accounts/{account_id}")
    assert removed.status == 200
    assert (await admin_api.delete(f"/accounts/{account_id}")).status == 404
    await db.execute("DELETE FROM subscriptions WHERE account_id = $1", account_id)


async def test_accounts_without_an_encryption_key_are_refused_cleanly(make_api) -> None:
    api = await make_api(account_encryption_key=None)
    resp = await api.post("/accounts", json={"account_id": "x", "api_key": "k", "api_secret": "s"})
    assert resp.status == 503 and "ACCOUNT_ENCRYPTION_KEY" in (await resp.json())["error"]["message"]


async def test_settings_account_is_listed_when_the_table_is_empty(admin_api) -> None:
    accounts = (await (await admin_api.get("/accounts")).json())["accounts"]
    assert {"account_id": "primary", "source": "settings", "has_api_secret": True}.items() <= accounts[-1].items()


async def test_refresh_jobs_are_enqueued_by_name(admin_api, redis, names) -> None:
    resp = await admin_api.post("/admin/instrument-refresh")
    assert resp.status == 202
    job_id = (await resp.json())["job_id"]
    assert await redis.zscore(names.default_queue, job_id) is not None
    assert await job_name(redis, job_id) == JOB_REFRESH_INSTRUMENTS
    assert (await admin_api.post("/admin/instrument-refresh", json={"exchanges": ["NFO"]})).status == 202
    assert (await admin_api.post("/admin/instrument-refresh", json={"exchanges": ["XYZ"]})).status == 422
    assert (await admin_api.post("/admin/token-refresh", json={"account_id": "primary"})).status == 202
    ghost = await admin_api.post("/admin/token-refresh", json={"account_id": "ghost"})
    assert ghost.status == 422 and (await ghost.json())["error"]["details"][0]["field"] == "account_id"


async def test_kite_callback_needs_no_api_key_and_is_idempotent(make_api, redis) -> None:
    api = await make_api(api_key=API_KEY)
    url = "/auth/kite/callback?action=login&type=login&status=success&request_token=abc123XYZ"
    first, second = await api.get(url), await api.get(url)
    assert first.status == second.status == 202
    a, b = await first.json(), await second.json()
    assert a["job_id"] == b["job_id"] and b["duplicate"] and a["account_id"] == "primary"
    assert await job_name(redis, a["job_id"]) == JOB_EXCHANGE_REQUEST_TOKEN
    failed = await api.get("/auth/kite/callback?status=cancelled")
    assert failed.status == 400 and (await failed.json())["error"]["code"] == "login_failed"
    missing = await api.get("/auth/kite/callback?status=success")
    assert missing.status == 422


async def test_dead_letters_are_listed_and_replayed(admin_api, db, redis, names) -> None:
    failed_job = f"ord-place-{uuid.uuid4().hex[:24]}"
    payload = {"order": {"exchange": "NFO", "tradingsymbol": "X", "transaction_type": "BUY", "quantity": 75,
                         "product": "NRML", "order_type": "MARKET", "account_id": "primary"},
               "idempotency_key": None, "basket_id": None, "leg": None, "prior_tags": []}
    letter_id = await add_dead_letter(db, job_id=failed_job, job_name=JOB_PLACE_ORDER, payload=payload,
                                      reason="InputException: bad", errors=[{"attempt": 1, "error": "bad"}],
                                      account_id="primary")
    listed = await (await admin_api.get("/dlq?pending_only=true")).json()
    assert letter_id in [d["id"] for d in listed["dead_letters"]]
    replayed = await admin_api.post(f"/dlq/{letter_id}/replay")
    assert replayed.status == 202
    doc = await replayed.json()
    assert doc["original_job_id"] == failed_job and doc["job_id"] != failed_job
    assert await redis.zscore(names.orders_queue, doc["job_id"]) is not None
    row = await db.fetchrow("SELECT replayed_job_id FROM dead_letters WHERE id = $1", letter_id)
    assert row["replayed_job_id"] == doc["job_id"]
    assert (await admin_api.post("/dlq/999999999/replay")).status == 404
    assert (await admin_api.post("/dlq/abc/replay")).status == 422


ADMIN_ROUTES = [("GET", "/accounts", None), ("POST", "/accounts", {"account_id": "x"}),  # incomplete: admitted, then a 422
                ("DELETE", "/accounts/nobody", None), ("POST", "/admin/instrument-refresh", None),
                ("POST", "/admin/token-refresh", None), ("GET", "/dlq", None), ("POST", "/dlq/999999999/replay", None)]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
async def test_admin_routes_refuse_the_trading_key(make_api, method, path, body) -> None:
    api = await make_api(api_key=API_KEY, admin_api_key=ADMIN_KEY)
    refused = await api.request(method, path, json=body, headers={"X-API-Key": API_KEY})
    assert refused.status == 403, await refused.text()
    err = (await refused.json())["error"]
    assert err["code"] == "forbidden" and "admin key" in err["message"]
    anonymous = await api.request(method, path, json=body)
    assert anonymous.status == 401
    admitted = await api.request(method, path, json=body, headers={"X-API-Key": ADMIN_KEY})
    assert admitted.status not in (401, 403), await admitted.text()


async def test_the_admin_key_opens_trading_routes_and_the_callback_stays_open(admin_api) -> None:
    assert (await admin_api.get("/subscriptions")).status == 200
    callback = await admin_api.get("/auth/kite/callback?status=success&request_token=abc",
                                   headers={"X-API-Key": "not a key at all"})
    assert callback.status == 202


async def test_without_an_admin_key_the_api_key_opens_admin_routes_outside_production(make_api) -> None:
    api = await make_api(api_key=API_KEY, environment="development")
    assert (await api.get("/accounts", headers={"X-API-Key": API_KEY})).status == 200
    assert (await api.get("/accounts")).status == 401
    assert (await api.get("/accounts", headers={"X-API-Key": ADMIN_KEY})).status == 401
