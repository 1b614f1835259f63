"""The publisher against a managed-style Redis: TLS only, an ACL user, db 2, certificate not
checked (`rediss://user:pw@host:port/2?ssl_cert_reqs=none`). Its packed pipeline rides redis-py's
own connection, so what the URL says is what it gets: the ticks reach subscribers and the latest-tick
snapshot lands in db 2."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.redis_tls import tls_redis
from tests.waiting import wait_for
from ticker.core.contracts import Names
from ticker.infra.stores.redis import connect
from ticker.streamer.process.stream_metrics import StreamerMetrics
from ticker.streamer.stages.publish import Publisher
from ticker.streamer.stages.publish_breaker import PublishBreaker
from ticker.streamer.stages.render import Outgoing

from .conftest import Recorder

pytestmark = pytest.mark.timeout(120)


async def test_a_flush_is_published_over_tls_and_its_snapshot_lands_in_db_2(tmp_path: Path) -> None:
    names = Names("ticker:tls", "tls")
    with tls_redis(tmp_path / "redis") as server:
        redis, listener, db0 = connect(server.url()), connect(server.url()), connect(server.url(db=0))
        publisher = Publisher(redis, names, PublishBreaker(reset_seconds=60), StreamerMetrics(), batch_max=2,
                              timeout=5)
        ticks = [orjson.dumps({"instrument_token": t, "last_price": 100.0 + t}) for t in (1, 2, 3)]
        out = Outgoing(options=ticks, latest={b"%d" % t: tick for t, tick in zip((1, 2, 3), ticks, strict=True)})
        try:
            async with Recorder(listener, [names.options]) as rec:
                assert await publisher.publish(out)

                async def all_arrived() -> bool:
                    return sum(len(doc) for _, _, doc in rec.messages) == 3

                await wait_for(all_arrived)
            assert await redis.hgetall(names.latest) == {b"1": ticks[0], b"2": ticks[1], b"3": ticks[2]}
            assert await db0.exists(names.latest) == 0
            assert publisher.published_total == 3
        finally:
            await publisher.close()
            for client in (redis, listener, db0):
                await client.aclose()
