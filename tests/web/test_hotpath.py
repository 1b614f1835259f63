"""The request hot path's building blocks: the one-round-trip arq enqueue, the pipelined Redis
connection, coalesced batches and the group-committed audit rows."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest
from arq.worker import Worker, func
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from tests.web.seed import CALL, LOT
from ticker.core.contracts import Names
from ticker.core.orders import OrderRequest, plan_place
from ticker.infra.orders.audit_batch import AuditBatcher
from ticker.infra.orders.audit_trail import record_queued
from ticker.infra.orders.coalesce import Coalescer
from ticker.infra.queue.enqueue import create_queue, enqueue, enqueue_atomic, redis_settings
from ticker.infra.stores.redis import AutoPipeline, Script

ECHO = Script("return {KEYS[1], ARGV[1]}")


@pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")  # arq's own pool close
async def test_atomic_enqueue_writes_what_arq_runs(settings, names) -> None:
    pool = await create_queue(settings)
    probe_names = Names(names.prefix, f"{names.namespace}-probe-{uuid.uuid4().hex[:6]}")
    seen: list[dict] = []

    async def probe(ctx, payload: dict) -> dict:
        seen.append(payload)
        return {"echo": payload["n"], "job_id": ctx["job_id"]}

    job_id = f"probe-{uuid.uuid4().hex}"
    try:
        assert await enqueue_atomic(pool, probe_names, "probe", {"n": 7}, job_id=job_id) is True
        assert await enqueue_atomic(pool, probe_names, "probe", {"n": 8}, job_id=job_id) is False
        assert await enqueue(pool, probe_names, "probe", {"n": 9}, job_id=job_id) is False  # arq agrees
        worker = Worker(functions=[func(probe, name="probe")], redis_settings=redis_settings(settings),
                        queue_name=probe_names.default_queue, burst=True, poll_delay=0.01, handle_signals=False)
        await worker.main()
        await worker.close()
        assert seen == [{"n": 7}]
        info = await pool._get_job_result(f"arq:result:{job_id}".encode())
        assert info.result == {"echo": 7, "job_id": job_id} and info.function == "probe"
        assert await enqueue_atomic(pool, probe_names, "probe", {"n": 10}, job_id=job_id) is False  # result kept
    finally:
        await pool.delete(f"arq:result:{job_id}", f"arq:job:{job_id}")
        await pool.aclose()


async def test_pipe_matches_replies_to_callers_and_reloads_scripts(settings, redis) -> None:
    pipe = AutoPipeline(settings.redis_url)
    try:
        await redis.script_flush()
        replies = await asyncio.gather(*(pipe.call(ECHO, [f"k{i}"], [i]) for i in range(300)))
        assert replies == [[f"k{i}".encode(), str(i).encode()] for i in range(300)]
        with pytest.raises(ResponseError):
            await pipe.call(Script("return redis.call('NOSUCHCOMMAND')"), [], [])
        assert await pipe.call(ECHO, ["after-error"], [1]) == [b"after-error", b"1"]
    finally:
        await pipe.close()


async def test_pipe_sends_several_commands_as_one_batch(settings, redis) -> None:
    pipe = AutoPipeline(settings.redis_url)
    key = f"pipe-probe-{uuid.uuid4().hex[:8]}"
    try:
        await redis.hset(key, mapping={"a": "1", "b": "2"})
        # CLIENT ID twice in one batch: the same connection answers both, in the order asked.
        first, values, everything, second = await pipe.commands(
            ("CLIENT", "ID"), ("HMGET", key, b"a", "b", "c"), ("HGETALL", key), ("CLIENT", "ID"))
        assert values == [b"1", b"2", None] and everything == [b"a", b"1", b"b", b"2"] and first == second
        with pytest.raises(ResponseError):
            await pipe.commands(("HGET", key, "a"), ("NOSUCHCOMMAND",))
        assert await pipe.commands(("HGET", key, "b")) == [b"2"]
    finally:
        await redis.delete(key)
        await pipe.close()


async def test_pipe_reconnects_after_the_server_drops_it(settings, redis) -> None:
    pipe = AutoPipeline(settings.redis_url)
    try:
        await pipe.command("CLIENT", "SETNAME", "web-pipe-probe")
        dropped = await pipe.command("CLIENT", "ID")
        killed = await redis.execute_command("CLIENT", "KILL", "SKIPME", "yes", "TYPE", "normal", "ID", dropped)
        assert killed == 1
        with contextlib.suppress(RedisConnectionError):  # a call may meet the dead socket first
            await pipe.call(ECHO, ["lost"], [1])
        assert await pipe.call(ECHO, ["again"], [2]) == [b"again", b"2"]
        assert await pipe.command("CLIENT", "ID") != dropped  # on a new connection
    finally:
        await pipe.close()


class Doubler(Coalescer[int, int]):
    def __init__(self) -> None:
        super().__init__(max_batch=10)
        self.batches: list[list[int]] = []

    async def run(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(items)
        if -1 in items:
            raise RuntimeError("bad batch")
        return [ValueError("odd") if i == 3 else 2 * i for i in items]


async def test_coalescer_batches_one_loop_turn_and_delivers_errors_per_caller() -> None:
    doubler = Doubler()
    results = await asyncio.gather(*(doubler.submit(i) for i in range(25)), return_exceptions=True)
    assert [len(b) for b in doubler.batches] == [10, 10, 5]
    assert isinstance(results[3], ValueError) and results[24] == 48
    failed = await asyncio.gather(doubler.submit(-1), doubler.submit(1), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in failed)
    await doubler.close()


async def test_group_committed_audit_rows_equal_record_queued(db) -> None:
    order = OrderRequest(exchange="NFO", tradingsymbol=CALL.tradingsymbol, transaction_type="SELL", quantity=LOT,
                         product="NRML", order_type="MARKET", account_id="primary")
    single, batched = plan_place(order, uuid.uuid4().hex), plan_place(order, uuid.uuid4().hex)
    assert await record_queued(db, single, "primary") is True
    audit = AuditBatcher(db)
    first, repeat = await asyncio.gather(audit.record(batched, "primary"), audit.record(batched, "primary"))
    assert (first, repeat) == (True, False)
    assert await audit.record(batched, "primary") is False
    columns = "kind, account_id, basket_id, status, attempts, length(tag) AS tag_len, payload - 'idempotency_key' AS p"
    a = await db.fetchrow(f"SELECT {columns} FROM order_requests WHERE job_id = $1", single.job_id)
    b = await db.fetchrow(f"SELECT {columns} FROM order_requests WHERE job_id = $1", batched.job_id)
    assert dict(a) == dict(b)
    keys = await db.fetch("SELECT idempotency_key FROM order_requests WHERE job_id = ANY($1::text[]) "
                          "ORDER BY created_at", [single.job_id, batched.job_id])
    assert [k["idempotency_key"] for k in keys] == [single.payload["idempotency_key"],
                                                    batched.payload["idempotency_key"]]
    await audit.close()


class Gated(Coalescer[int, int]):
    """Batches block until released, like commits on a slow database."""

    def __init__(self) -> None:
        super().__init__(max_batch=100, max_inflight=2)
        self.gate = asyncio.Event()
        self.batches: list[list[int]] = []
        self.running = self.peak = 0

    async def run(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(items)
        self.running += 1
        self.peak = max(self.peak, self.running)
        await self.gate.wait()
        self.running -= 1
        return items


async def test_coalescer_bounds_batches_in_flight_and_grows_the_next_one() -> None:
    gated = Gated()
    first = [gated.submit(i) for i in range(3)]
    await asyncio.sleep(0)
    second = [gated.submit(i) for i in range(3, 5)]
    await asyncio.sleep(0)
    later = [gated.submit(i) for i in range(5, 40)]  # arrive one turn at a time while both are busy
    for _ in range(5):
        await asyncio.sleep(0)
    assert [len(b) for b in gated.batches] == [3, 2]
    gated.gate.set()
    assert await asyncio.gather(*first, *second, *later) == list(range(40))
    assert [len(b) for b in gated.batches] == [3, 2, 35] and gated.peak == 2
    await gated.close()


def test_pipe_packs_commands_as_redis_py_does() -> None:
    from redis.asyncio.connection import Connection
    from redis.exceptions import DataError

    from ticker.infra.stores.redis import pack_commands

    commands = [("EVALSHA", "ab" * 20, 4, "k1", "k2", "q", "q:wake", 86_400_000, b"\x80\x04" + bytes(range(256)) * 30,
                 1_700_000_000_000, "id", "1"), ("CLIENT SETNAME", "x"), ("CLIENT", "ID"), ("EVAL", "return 1", 0),
                ("SET", "k", 1.5), ("SET", "ü", "é"), ("SET", "m", memoryview(b"view"))]
    assert pack_commands(commands) == b"".join(Connection().pack_commands(commands))
    with pytest.raises(DataError):
        pack_commands([("SET", "k", True)])
