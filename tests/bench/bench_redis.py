"""The streamer's publish path: the hand-written RESP pipeline against redis-py (hiredis), same run.

One flush as the publisher sends it at full load: TICK_BATCH_MAX_SIZE-tick JSON arrays PUBLISHed to
the options and underlying channels and the latest-tick snapshot HSET, written and its replies read
on one connection. Measured as CPU time of this process per tick (Redis runs elsewhere) and flushes
per second, best of three rounds:

- fast path: `redis_fast.Lane` with `publish_array` / `hset` (what the publisher ships with
  TICK_MESSAGE_FORMAT=array);
- sequenced: the same with each array through the sequencing script (the default envelopes), also
  measured as Redis's own CPU per tick (INFO cpu), where the script's work is done (meaningful only
  on a Redis the bench has to itself: leave TEST_REDIS_URL unset and it starts a private one);
- redis-py pipeline: `pipeline(transaction=False)`, `publish(channel, b"[...]")`, `hset(key, mapping=...)`;
- redis-py `execute_command` batching: the same commands as `execute_command` calls on one pipeline
  with pre-built arguments (the least redis-py can do per command).

The web's hot path is measured in bench_http (fast path vs redis-py pooled and batched).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from itertools import chain

import orjson

from tests.bench.harness import bench_servers, fmt_time
from ticker.core.contracts import Names
from ticker.infra.stores import redis_fast, tick_history
from ticker.infra.stores.redis import connect

OPTIONS, UNDERLYING, BATCH = 4_000, 100, 1_000  # ticks per flush; TICK_BATCH_MAX_SIZE's default
FLUSHES, ROUNDS = 100, 3
# History trimmed as in steady state: with 300 s this short run would only grow the stream, and
# Redis would spend its time faulting in fresh memory that production reuses.
HISTORY_SECONDS = 1


def _tick(token: int) -> bytes:
    """About the size and shape of an enriched full-mode option tick."""
    return orjson.dumps({
        "instrument_token": token, "tradingsymbol": f"NIFTY26DEC{20000 + token % 400 * 50}CE",
        "last_price": 101.25 + token % 17, "volume": 123_456 + token, "oi": 98_765, "oi_day_high": 99_000,
        "oi_day_low": 97_000, "buy_quantity": 4_500, "sell_quantity": 3_900, "average_price": 100.8,
        "ohlc": {"open": 99.5, "high": 104.0, "low": 98.2, "close": 100.1}, "change": 1.15,
        "last_trade_time": "2026-12-03T10:15:02+05:30", "exchange_timestamp": "2026-12-03T10:15:02+05:30",
        "iv": 0.1432, "delta": 0.5123, "gamma": 0.0011, "theta": -12.34, "vega": 8.91, "rho": 1.23,
        "underlying_price": 24_012.5, "time_to_expiry": 0.0411,
    })


class Flush:
    def __init__(self, prefix: str) -> None:
        self.names = Names(prefix)
        self.options_ch, self.underlying_ch = f"{prefix}:options".encode(), f"{prefix}:underlying".encode()
        self.latest = f"{prefix}:latest".encode()
        self.options = [_tick(t) for t in range(OPTIONS)]
        self.underlying = [_tick(100_000 + t) for t in range(UNDERLYING)]
        self.snapshot = {b"%d" % t: tick for t, tick in enumerate(self.options + self.underlying)}

    @property
    def ticks(self) -> int:
        return OPTIONS + UNDERLYING

    def arrays(self) -> list[tuple[bytes, list[bytes]]]:
        parts = [(self.options_ch, self.options[i:i + BATCH]) for i in range(0, OPTIONS, BATCH)]
        return parts + [(self.underlying_ch, self.underlying[i:i + BATCH]) for i in range(0, UNDERLYING, BATCH)]


async def _fast(redis, flush: Flush) -> None:
    lane = redis_fast.Lane(redis)
    packed = [redis_fast.publish_array(ch, items) for ch, items in flush.arrays()]
    packed.append(redis_fast.hset(flush.latest, flush.snapshot))
    await lane.write(packed)
    await lane.read(len(packed))
    await lane.close()


async def _pipeline(redis, flush: Flush) -> None:
    pipe = redis.pipeline(transaction=False)
    for ch, items in flush.arrays():
        pipe.publish(ch, b"[" + b",".join(items) + b"]")
    pipe.hset(flush.latest, mapping=flush.snapshot)
    await pipe.execute()


async def _execute_command(redis, flush: Flush) -> None:
    pipe = redis.pipeline(transaction=False)
    for ch, items in flush.arrays():
        pipe.execute_command("PUBLISH", ch, b"[" + b",".join(items) + b"]")
    pipe.execute_command("HSET", flush.latest, *chain.from_iterable(flush.snapshot.items()))
    await pipe.execute()


async def _sequenced(redis, flush: Flush) -> None:
    """The fast path with envelopes: each array through the sequencing script (count, XADD to the
    history stream, PUBLISH the envelope), what the publisher ships by default."""
    lane = redis_fast.Lane(redis)
    calls = {ch: [[a.encode() for a in part] for part in tick_history.script_call(flush.names, ch.decode(), HISTORY_SECONDS)]
             for ch in (flush.options_ch, flush.underlying_ch)}
    packed = [redis_fast.command(b"SCRIPT", b"LOAD", tick_history.SEQUENCED)]
    packed += [redis_fast.script_array(tick_history.SEQUENCED_SHA, *calls[ch], items) for ch, items in flush.arrays()]
    packed.append(redis_fast.hset(flush.latest, flush.snapshot))
    await lane.write(packed)
    await lane.read(len(packed))
    await lane.close()


Way = Callable[..., Awaitable[None]]


async def _measure(redis, flush: Flush, way: Way) -> tuple[float, float, float]:
    """(best CPU seconds per flush, best wall seconds per flush, best Redis server CPU seconds per
    flush) over ROUNDS rounds of FLUSHES."""
    await way(redis, flush)  # warm: connection, caches
    cpu, wall, server = [], [], []
    for _ in range(ROUNDS):
        s0, c0, w0 = await _server_cpu(redis), time.process_time(), time.perf_counter()
        for _ in range(FLUSHES):
            await way(redis, flush)
        cpu.append((time.process_time() - c0) / FLUSHES)
        wall.append((time.perf_counter() - w0) / FLUSHES)
        server.append((await _server_cpu(redis) - s0) / FLUSHES)
    return min(cpu), min(wall), min(server)


async def _server_cpu(redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _run(report, redis_url: str) -> None:
    redis = connect(redis_url)
    flush = Flush(f"bench-redis-{uuid.uuid4().hex[:8]}")
    try:
        results = {}
        for name, way in (("fast", _fast), ("sequenced", _sequenced), ("pipeline", _pipeline),
                          ("execute_command", _execute_command)):
            results[name] = await _measure(redis, flush, way)
        await redis.delete(flush.latest, flush.names.sequence, flush.names.ticks_history)
    finally:
        await redis.aclose()
    fast_cpu, fast_wall, fast_server = results["fast"]
    n = flush.ticks
    what = f"{n:,}-tick flush ({BATCH:,}-tick arrays + {n:,}-field HSET)"
    seq_cpu, seq_wall, seq_server = results["sequenced"]
    report.row(f"streamer publish path, envelopes through the sequencing script (count, XADD history, PUBLISH) vs "
               f"bare PUBLISH, {what}",
               f"{seq_cpu / n * 1e9:,.0f} ns CPU/tick here, {seq_server / n * 1e9:,.0f} ns Redis CPU/tick, "
               f"{fmt_time(seq_wall)}/flush",
               f"bare: {fast_cpu / n * 1e9:,.0f} ns CPU/tick here, {fast_server / n * 1e9:,.0f} ns Redis CPU/tick, "
               f"{fmt_time(fast_wall)}/flush", ratio=seq_wall / fast_wall)
    for name, label in (("pipeline", "redis-py pipeline publish/hset"),
                        ("execute_command", "redis-py pipeline execute_command")):
        cpu, wall, _ = results[name]
        report.row(f"streamer publish path, hand-written RESP (redis_fast.Lane) vs {label}, {what}",
                   f"{fast_cpu / n * 1e9:,.0f} ns CPU/tick, {fmt_time(fast_wall)}/flush",
                   f"{label}: {cpu / n * 1e9:,.0f} ns CPU/tick, {fmt_time(wall)}/flush", ratio=cpu / fast_cpu)


async def run(report) -> None:
    with bench_servers("redis") as (redis_url, _):
        await _run(report, redis_url)
