"""The tick bus on a real Redis Cluster (TICK_REDIS_URL a node of it, TICK_REDIS_CLUSTER=true), end
to end with real processes: the streamer publishes each underlying's ticks to its shard by sharded
pub/sub, `/ws/ticks`, `GET /quotes` and `ticker.client.RedisFeed` read them, Kite's order
postbacks reach the orders shard, and the master serving the streamed underlying is killed
mid-stream: after the failover ticks flow again to every reader, none of them restarted."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.redis_cluster import LocalCluster
from tests.web.conftest import fresh_database
from tests.web.test_e2e import order_body, running_stack
from tests.web.test_gtt_e2e import completed
from tests.web.test_tick_bus_e2e import FeedTicks, _order_seen, background, quote, streaming, until
from ticker.client import RedisFeed
from ticker.core.contracts import ORDERS_SHARD
from ticker.infra.queue.enqueue import names_for

pytestmark = pytest.mark.timeout(420)


@pytest_asyncio.fixture
async def database(_server_urls) -> AsyncIterator[str]:
    with fresh_database(_server_urls[1], f"ticker_cl_{uuid.uuid4().hex[:8]}") as url:
        yield url


async def test_the_stack_on_a_cluster_tick_bus_rides_through_a_master_failover(
        database, redis_url, kitesim, spec_checker, redis_cluster: LocalCluster) -> None:
    async with running_stack(database, redis_url, kitesim, spec_checker, streamer=True,
                             TICK_REDIS_URL=redis_cluster.url, TICK_REDIS_CLUSTER="true") as stack:
        names, token = names_for(stack.settings), stack.option["instrument_token"]
        shard = names.shard("NIFTY")  # the stack streams a NIFTY call
        ws, client = await streaming(stack)
        feed = FeedTicks(RedisFeed(redis_cluster.url, prefix=names.prefix, tokens=[token], orders=True, cluster=True,
                                   backoff=(0.05, 0.5)))
        async with background(client.task, feed.task):
            await until(lambda: client.since(0) > 0 and feed.batches_since(0) > 0, "no ticks through the cluster")
            await until(lambda: quote(stack, token), "GET /quotes found no tick")
            streams = {s for s in feed.feed.positions if s.startswith("ticks:")}
            assert streams == {"ticks:NIFTY"}  # the option's underlying is its shard

            # an order's postback: published by the web on the orders shard, read by the feed
            status, accepted = await stack.call("POST", "/orders", "/orders", json=order_body(stack))
            assert status == 202
            order_id = (await completed(stack, accepted))["kite_order_id"]
            await until(lambda: _order_seen(feed, order_id), "the postback never reached the orders shard")
            assert redis_cluster.master_for(names.shard(ORDERS_SHARD).orders) is not None

            # the master serving the streamed underlying dies; a replica takes over
            victim = redis_cluster.master_for(shard.options)
            redis_cluster.kill(victim)
            try:
                await redis_cluster.wait_failover(victim)
                back = time.monotonic()
                await until(lambda: client.since(back) > 0, "ticks never reached /ws/ticks after the failover")
                await until(lambda: feed.batches_since(back) > 0, "ticks never reached the RedisFeed after it")
                await until(lambda: quote(stack, token), "GET /quotes never answered after it")
                _, health = await stack.call("GET", "/health", "/health")
                await until(lambda: _tick_bus_ok(stack), "the web's /health never saw the tick bus well again")
                assert health["checks"]["redis"]["ok"] is True  # REDIS_URL was never touched
            finally:
                redis_cluster.restart(victim)
                await redis_cluster.wait_rejoined(victim)
        await ws.close()


async def _tick_bus_ok(stack) -> bool:  # noqa: ANN001 - the e2e Stack
    _, health = await stack.call("GET", "/health", "/health")
    return bool(health["checks"]["tick_redis"]["ok"])
