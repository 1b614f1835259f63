"""The web against a managed-style Redis: TLS only, a password, an ACL user, db 2, certificate not
checked (`rediss://user:pw@host:port/2?ssl_cert_reqs=none`). Every Redis client of the web is
redis-py reading that URL, so an order lands in db 2, and the hot path's batched script calls take
every option of the URL (user, db, CA file, timeouts) and refuse what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
from arq.constants import job_key_prefix
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.redis_tls import DEFAULT_PASSWORD, USER, TlsRedis, tls_redis
from tests.web.seed import CALL, LOT
from ticker.http.state import SETTINGS
from ticker.infra.queue.enqueue import names_for
from ticker.infra.stores.redis import AutoPipeline, Script, connect

pytestmark = pytest.mark.timeout(120)

ORDER = {"exchange": "NFO", "tradingsymbol": CALL.tradingsymbol, "transaction_type": "BUY", "quantity": LOT,
         "product": "NRML", "order_type": "LIMIT", "price": 101.5}
GET = Script("return redis.call('GET', KEYS[1])")


@pytest.fixture
def server(tmp_path: Path):
    with tls_redis(tmp_path / "redis") as tls:
        yield tls


async def test_an_order_placed_through_the_web_lands_in_db_2_of_a_tls_redis(make_api, server: TlsRedis) -> None:
    url = server.url()
    api = await make_api(redis_url=url)
    resp = await api.post("/orders", json=ORDER)
    assert resp.status == 202, await resp.text()
    job_id = (await resp.json())["job_id"]
    redis, db0 = connect(url), connect(server.url(db=0))
    try:
        names = names_for(api.server.app[SETTINGS])
        assert await redis.zscore(names.orders_queue, job_id) is not None
        assert await redis.exists(job_key_prefix + job_id) == 1
        assert await db0.exists(job_key_prefix + job_id) == 0
        status = await (await api.get(f"/jobs/{job_id}")).json()
        assert status["status"] == "queued"
    finally:
        await redis.aclose()
        await db0.aclose()


async def test_the_hot_path_takes_every_part_of_the_url(server: TlsRedis) -> None:
    cases = {  # what -> (url, user, db)
        "acl user, no certificate check": (server.url(), USER, 2),
        "default user by password alone": (server.url(user="", password=DEFAULT_PASSWORD, db=3), "default", 3),
        "certificate checked against its CA file": (
            server.url(query=f"ssl_ca_certs={server.cert}&socket_timeout=4"), USER, 2),
    }
    for what, (url, user, db) in cases.items():
        pipe, redis = AutoPipeline(url), connect(url)
        try:
            await redis.set("tls-probe", what)
            assert await pipe.call(GET, ["tls-probe"], []) == what.encode(), what
            assert await pipe.command("ACL", "WHOAMI") == user.encode(), what
            assert f" db={db} " in (await pipe.command("CLIENT", "INFO")).decode(), what
        finally:
            await pipe.close()
            await redis.aclose()
    assert AutoPipeline(cases["certificate checked against its CA file"][0]).call_timeout == 4.0


async def test_the_hot_path_refuses_what_the_url_refuses(server: TlsRedis) -> None:
    refused = {
        "self-signed certificate required to verify": server.url(query=""),
        "wrong password": server.url(password="nope"),
        "unknown user": server.url(user=f"{USER}-other"),
    }
    for url in refused.values():
        pipe = AutoPipeline(url)
        try:
            with pytest.raises(RedisConnectionError):  # redis-py's AuthenticationError is one too
                await pipe.command("PING")
        finally:
            await pipe.close()
