"""Redis goes away for 10 s under a running streamer: it stays up, counts what it drops, and
publishes again soon after Redis is back. Uses a Redis of its own (the session's stays up)."""

from __future__ import annotations

import asyncio
import time

import pytest

from ticker.infra.embedded import EmbeddedRedis
from ticker.infra.redis import connect

from .conftest import Recorder, option_tokens, running_streamer, subscribe, wait_for

pytestmark = pytest.mark.timeout(120)
OUTAGE_SECONDS = 10


def _value(counter, *labels) -> float:
    return (counter.labels(*labels) if labels else counter)._value.get()


async def test_streamer_survives_a_redis_outage(market, sdb, ssettings, snames, tmp_path):
    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    settings = ssettings.model_copy(update={"redis_url": url})
    tokens = await option_tokens(sdb, 20)
    await subscribe(sdb, tokens)
    client = connect(url)
    try:
        async with Recorder(client, [snames.options]) as rec, running_streamer(settings) as streamer:
            await wait_for(lambda: rec.tokens(snames.options) >= set(tokens), 15)
            received_before = streamer.ingest.received_total
            server.stop()
            await asyncio.sleep(OUTAGE_SECONDS)
            status, health = streamer.health()
            assert status == 200 and health["status"] == "streaming"
            assert health["redis"]["breaker"] in ("open", "half_open")
            assert streamer.ingest.received_total > received_before  # still reading Kite
            dropped = _value(streamer.metrics.dropped, "redis_unavailable") + _value(
                streamer.metrics.dropped, "redis_error")
            assert dropped > 0
            assert streamer.supervisor.failures == 0
            server = EmbeddedRedis(tmp_path / "redis", port=server.port)
            server.start()
            back = time.time()
            took = await wait_for(lambda: rec.tokens(snames.options, since=back), 2.0, step=0.02)
            assert streamer.breaker.state == "closed"
        print(f"dropped {dropped:.0f} ticks during the outage; publishing again {took:.2f} s after restart")
    finally:
        await client.aclose()
        server.stop()
