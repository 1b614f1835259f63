"""refresh_instruments against the stand-in's `full` profile: the whole dump loads, a second run
changes nothing, an instrument the dump no longer lists is retired and its subscription switched
off, and the streamer is told over the control channel."""

from __future__ import annotations

from datetime import date

import asyncpg
import orjson
import pytest
from redis.asyncio import Redis

from tests.data.conftest import make_data_env
from tests.waiting import confirm_subscribed, next_messages
from ticker.infra.runtime.settings import Settings
from ticker.jobs.context import close_deps
from ticker.jobs.data.instrument_refresh import refresh_instruments


@pytest.fixture
async def full_env(kitesim_factory, settings: Settings, private_db_url: str, private_db: asyncpg.Pool):
    sim = await kitesim_factory(profile="full")
    await private_db.execute("TRUNCATE instruments, subscriptions")
    env = await make_data_env(sim, settings, private_db_url, private_db)
    yield env
    await close_deps(env.deps)
    await env.deps.redis.aclose()


async def test_full_profile_refresh(full_env, redis: Redis) -> None:
    env = full_env
    rows = len(env.sim.state.universe)  # every instrument the stand-in lists
    assert rows > 80_000

    first = await refresh_instruments(env.ctx, {})
    assert first["rows"] == rows and first["inserted"] == rows and first["retired"] == 0
    assert await env.deps.db.fetchval("SELECT count(*) FROM instruments WHERE is_active") == rows

    second = await refresh_instruments(env.ctx, {})
    assert (second["inserted"], second["updated"], second["retired"]) == (0, 0, 0)
    assert second["unchanged"] == rows

    # An instrument Kite stopped listing, with a subscription on it.
    await env.deps.db.execute(
        "INSERT INTO instruments (instrument_token, exchange_token, tradingsymbol, name, expiry, strike,"
        " instrument_type, segment, exchange) VALUES (4294967041, 16777215, 'NIFTY99DEC1CE', 'NIFTY', $1, 1,"
        " 'CE', 'NFO-OPT', 'NFO')", date(2099, 12, 31))
    await env.deps.db.execute("INSERT INTO subscriptions (instrument_token) VALUES (4294967041)")
    live = await env.deps.db.fetchval("SELECT instrument_token FROM instruments WHERE is_active LIMIT 1")
    await env.deps.db.execute("INSERT INTO subscriptions (instrument_token) VALUES ($1)", live)

    async with redis.pubsub() as sub:
        await sub.subscribe(env.deps.names.control)
        await confirm_subscribed(sub)  # listening before the job publishes
        third = await refresh_instruments(env.ctx, {})
        heard = [orjson.loads(m) for m in await next_messages(sub, 2)]
    assert third["retired"] == 1 and third["deactivated_tokens"] == [4294967041]
    assert [m["kind"] for m in heard] == ["instruments", "subscriptions"]
    assert heard[1]["tokens"] == [4294967041]
    status = dict(await env.deps.db.fetch("SELECT instrument_token, status FROM subscriptions"))
    assert status == {4294967041: "inactive", live: "active"}


async def test_one_exchange_at_a_time(data_env) -> None:
    env = data_env
    await env.deps.db.execute("TRUNCATE instruments, subscriptions")
    nse = await refresh_instruments(env.ctx, {"exchanges": ["NSE"]})
    both = await refresh_instruments(env.ctx, {"exchanges": ["NSE", "NFO"]})
    assert nse["inserted"] > 0 and both["unchanged"] == nse["rows"]
    assert both["inserted"] == both["rows"] - nse["rows"] and both["retired"] == 0
    with pytest.raises(ValueError, match="exchanges"):
        await refresh_instruments(env.ctx, {"exchanges": ["nse; drop"]})
