"""A real `ticker worker` keeps running when its Redis is killed (SIGKILL) and started again on the
same port: orders accepted before the crash complete exactly once, orders after it are taken too."""

from __future__ import annotations

import uuid

import aiohttp

from ticker.core.orders import kite_tag
from ticker.infra.dev.embedded import EmbeddedRedis, free_port
from ticker.infra.queue.enqueue import create_queue
from ticker.infra.runtime.heartbeat import alive

from .conftest import World, wait_for
from .test_worker_processes import assert_exactly_once, order, statuses, wait_all_terminal


async def _submit(world: World, db, count: int) -> list[str]:
    ids = []
    for i in range(count):
        req = order(world, world.accounts[i % len(world.accounts)])
        ids.append(await world.api.place_id(req, uuid.uuid4().hex))
    return ids


async def test_worker_outlives_a_redis_crash_and_orders_complete_exactly_once(world_factory, db, tmp_path) -> None:
    server = EmbeddedRedis(tmp_path / "redis", persist=True)
    server.start()
    try:
        world = await world_factory(accounts=2, overrides={"redis_url": server.url})
        # Kite answers slowly, so some orders are running and the rest still queued when Redis dies.
        await world.admin("POST", "/_sim/faults", {"route": "POST /orders/*", "kind": "latency", "rate": 1.0,
                                                   "delay_ms": 300})
        worker = world.start_worker("--queue", "orders", "--concurrency", "2", log_level="INFO")

        async def serving() -> bool:
            return bool(await alive(world.arq, world.names, "worker"))

        await wait_for(serving, timeout=60)
        before = await _submit(world, db, 12)

        async def some_placed() -> bool:
            return sum(world.orders_with_tag(kite_tag(j)) for j in before) >= 1

        await wait_for(some_placed, timeout=60)
        server.kill()
        await world.arq.aclose()
        server.start()  # same port, same append-only file
        world.arq = await create_queue(world.settings)
        await world.admin("DELETE", "/_sim/faults")

        after = await _submit(world, db, 4)
        final = await wait_all_terminal(db, before + after, [worker], timeout=120)
        assert worker.poll() is None, World.log_of(worker)
        assert set(final.values()) == {"complete"}, final
        await assert_exactly_once(world, db, before + after, final)
        log = World.log_of(worker, tail=None)  # what happened after the outage can fill any tail
        assert "redis unreachable" in log and "reachable again" in log, log[-4000:]
        assert log.count("redis unreachable") <= 2, log[-4000:]  # once per outage, not once per retry
        assert await statuses(db, before) == {j: "complete" for j in before}
    finally:
        server.kill()


async def test_worker_health_says_degraded_while_redis_is_down(world_factory, tmp_path) -> None:
    server = EmbeddedRedis(tmp_path / "redis", persist=True)
    server.start()
    port = free_port()
    try:
        world = await world_factory(accounts=1, overrides={"redis_url": server.url})
        worker = world.start_worker("--queue", "all", worker_port=port, worker_host="127.0.0.1")

        async def status() -> str | None:
            try:
                async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/health") as r:
                    doc = await r.json()
            except aiohttp.ClientError:
                return None
            return doc["status"]

        async def ok() -> bool:
            return await status() == "ok"

        async def degraded() -> bool:
            return await status() == "degraded"

        await wait_for(ok, timeout=60)
        server.kill()
        await wait_for(degraded, timeout=60)
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/health") as r:
            doc = await r.json()
        assert doc["reason"].startswith("redis unreachable") and doc["redis"]["ok"] is False
        server.start()
        await wait_for(ok, timeout=60)
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as r:
            text = await r.text()
        assert 'ticker_dependency_up{dependency="redis"} 1.0' in text
        assert worker.poll() is None
    finally:
        server.kill()
