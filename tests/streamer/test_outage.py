"""Redis goes away under a running streamer, for real: a redis-server of its own is killed with
SIGKILL (or stopped) and started again on the same port (the session's Redis stays up). The
streamer keeps its Kite sockets and keeps reading, says `degraded` with the reason, logs the
outage once and its end once however often it retries, and publishes, listens on the control
channel and holds its leases again by itself."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from ticker.core.contracts import ControlMessage
from ticker.infra.queue.control import publish_control
from ticker.infra.stores.redis import connect

from .conftest import Recorder, option_tokens, running_streamer, subscribe, wait_for
from .redis_server import RedisServer

pytestmark = pytest.mark.timeout(300)
BOUND = 60.0  # generous bound on every wait: a busy machine is slow, never wrong
RETRIES = 3  # failed attempts per part to sit through before Redis comes back


def _value(counter, *labels) -> float:
    return (counter.labels(*labels) if labels else counter)._value.get()


REDIS_USERS = {f"ticker.streamer.{m}" for m in ("stages.publish", "control.listener", "control.leases", "process.wiring",
                                                   "control.coordinator", "stages.pipeline", "stages.outbox",
                                                   "process.supervisor")}


def _lines(caplog) -> list[str]:
    """What the streamer said about Redis: the outage log, and any warning of a part using Redis."""
    return [r.getMessage() for r in caplog.records if r.name == "ticker.streamer.redis_link"
            or (r.name in REDIS_USERS and r.levelno >= logging.WARNING)]


def _sockets(market) -> int:
    return sum(market.state.counters.ws_accepted.values())


@pytest.mark.parametrize("how", ["kill", "stop"])
async def test_streamer_rides_through_redis_going_away_and_coming_back(how, market, sdb, ssettings, snames,
                                                                        tmp_path, caplog):
    server = RedisServer(tmp_path / "redis")
    server.start()
    settings = ssettings.model_copy(update={"redis_url": server.url})
    tokens = await option_tokens(sdb, 20)
    await subscribe(sdb, tokens)
    client = connect(server.url)
    caplog.set_level(logging.INFO, logger="ticker.streamer")
    try:
        async with Recorder(client, [snames.options]) as rec, running_streamer(settings) as streamer:
            await wait_for(lambda: rec.tokens(snames.options) >= set(tokens), BOUND)
            await wait_for(lambda: streamer.health()[1]["status"] == "streaming", BOUND)
            sockets, held = _sockets(market), set(streamer.leases.held)
            received = streamer.decoder.received_total
            caplog.clear()

            getattr(server, how)()  # Redis refuses every connection from now on
            await wait_for(lambda: streamer.health()[1]["status"] == "degraded", BOUND)
            link = streamer.link
            await wait_for(lambda: min(link.failures[p] for p in ("publisher", "control", "leases")) >= RETRIES,
                           BOUND)
            await wait_for(lambda: streamer.decoder.received_total > received + 200, BOUND)  # Kite still read
            status, health = streamer.health()
            assert status == 200 and health["reason"].startswith("Redis unreachable")
            assert health["redis"]["up"] is False and health["redis"]["breaker"] != "closed"
            assert _value(streamer.metrics.dropped, "redis_unavailable") + _value(
                streamer.metrics.dropped, "redis_error") > 0
            assert _value(streamer.metrics.redis_up) == 0

            server.start()  # same port, empty
            published, back = streamer.publisher.published_total, time.monotonic()
            await wait_for(lambda: streamer.publisher.published_total > published, BOUND, step=0.01)
            took = time.monotonic() - back
            since = time.time()
            await wait_for(lambda: rec.tokens(snames.options, since=since) >= set(tokens), BOUND)
            await wait_for(lambda: streamer.health()[1]["status"] == "streaming", BOUND)
            await wait_for(lambda: streamer.control.listening and not streamer.leases.failing, BOUND)
            seen = _value(streamer.metrics.control, "subscriptions")
            await publish_control(client, snames, ControlMessage(kind="subscriptions", tokens=tokens[:1]))
            await wait_for(lambda: _value(streamer.metrics.control, "subscriptions") > seen, BOUND)
            await wait_for(lambda: streamer.leases.held == held, BOUND)  # re-claimed on the empty Redis
            assert await client.hlen(snames.latest) > 0  # the snapshot is being rebuilt

            assert _sockets(market) == sockets  # the Kite sockets were never reopened
            assert streamer.supervisor.failures == 0
            assert _lines(caplog) == ["Redis unreachable; streaming on and retrying with back-off until it is back",
                                      "Redis reachable again"]
            assert _value(streamer.metrics.redis_outages) == 1 and _value(streamer.metrics.redis_up) == 1
        print(f"Redis {how}: publishing again {took:.2f} s after Redis was back")
    finally:
        await client.aclose()
        server.stop()


async def test_a_reset_the_streamer_barely_sees_costs_at_most_one_outage(market, sdb, ssettings, snames,
                                                                        tmp_path, caplog):
    """Killed and restarted at once: pooled sockets to the dead server must not each report a
    new outage, and publishing resumes by itself."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    settings = ssettings.model_copy(update={"redis_url": server.url})
    tokens = await option_tokens(sdb, 10)
    await subscribe(sdb, tokens)
    client = connect(server.url)
    caplog.set_level(logging.INFO, logger="ticker.streamer")
    try:
        async with Recorder(client, [snames.options]) as rec, running_streamer(settings) as streamer:
            await wait_for(lambda: rec.tokens(snames.options) >= set(tokens), BOUND)
            sockets = _sockets(market)
            caplog.clear()
            server.kill()
            server.start()
            since = time.time()
            await wait_for(lambda: rec.tokens(snames.options, since=since) >= set(tokens), BOUND)
            await wait_for(lambda: streamer.health()[1]["status"] == "streaming", BOUND)
            beats = streamer.link.failures["heartbeat"]
            await wait_for(lambda: streamer.control.listening and not streamer.leases.failing, BOUND)
            assert _sockets(market) == sockets and streamer.supervisor.failures == 0
            lines = _lines(caplog)
            assert lines.count("Redis unreachable; streaming on and retrying with back-off until it is back") <= 1
            assert len(lines) == 2 * lines.count("Redis reachable again")  # each outage told once, each way
            assert streamer.link.failures["heartbeat"] == beats
    finally:
        await client.aclose()
        server.stop()


async def test_a_token_refused_while_redis_is_down_is_reported_once_it_is_back(market, sdb, ssettings, snames,
                                                                              tmp_path):
    """The report of a refused token (its state in Postgres, the `tokens` control message) would be
    half lost on a dead Redis: it waits, and goes out by itself once Redis answers again."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    settings = ssettings.model_copy(update={"redis_url": server.url})
    tokens = await option_tokens(sdb, 10)
    await subscribe(sdb, tokens)
    client = connect(server.url)
    sick = market.accounts[1]

    async def token_state(account_id: str) -> str:
        return await sdb.fetchval("SELECT token_state FROM kite_accounts WHERE account_id = $1", account_id)

    try:
        async with Recorder(client, [snames.options]) as rec, running_streamer(settings) as streamer:
            await wait_for(lambda: rec.tokens(snames.options) >= set(tokens), BOUND)
            server.kill()
            await wait_for(lambda: not streamer.link.up, BOUND)
            market.state.expire_tokens(api_key=sick.api_key)  # acc2 reconnects and meets a 403
            await wait_for(lambda: "acc2" in streamer.token_health.pending, BOUND)
            passes = streamer.link.failures["leases"]
            await wait_for(lambda: streamer.link.failures["leases"] >= passes + RETRIES, BOUND)
            assert "acc2" in streamer.token_health.pending  # coordinator passes went by; the report waits
            assert await token_state("acc2") == "valid"
            server.start()
            await wait_for(lambda: "acc2" not in streamer.token_health.pending, BOUND)
            deadline = time.monotonic() + BOUND
            while await token_state("acc2") != "invalid":
                assert time.monotonic() < deadline, "the refused token was never reported"
                await asyncio.sleep(0.05)
    finally:
        await client.aclose()
        server.stop()
