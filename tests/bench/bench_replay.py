"""Resuming `/ws/ticks` from history: how fast a client that was away gets what it missed.

History: 60 s at 20k ticks/s, written before the web starts by the streamer's own `Publisher`
(the sequencing script: count, XADD to the ticks history stream, PUBLISH the envelope), one flush
per 100 ms of market time: each of TOKENS option tokens ticks once per flush, 2,000 ticks, sent
as two TICK_BATCH_MAX_SIZE (1,000-tick) envelopes. That is 1.2M ticks in 1,200 stream entries. The
flushes are written back to back (the history's size and shape are what count, not its pace), after
one flush whose offset is where the client left off.

`ticker web` runs pinned to CPU 0; the client, a minimal frame counter in its own process pinned
to CPU 1 (Redis floats), connects, then sends `subscribe` with `since` and counts ticks until every
one replayed has arrived. Measured: replayed ticks/s and the time from sending the subscribe to the
last replayed tick (resume complete), for a client subscribed to every token and to a tenth of
them, with `?batch=true` and one tick per message. Each case runs twice on a fresh connection;
the faster counts. Anchor, same run, same stream: redis-py XRANGE reading every entry after the
offset in ANCHOR_PAGE-entry pages on CPU 0 (the Redis read alone, nothing parsed or sent); the
ratio is the history the resume went through per second (all of it, whatever the client takes)
against that bare read. The web's CPU per tick of history (the whole process, while the client
runs) says more than the rates when the shared host is busy.

`python -m tests.bench.bench_replay client PORT PATH SUBSCRIBE_JSON EXPECTED` is the client.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import orjson

from tests.bench.bench_http import (
    PY,
    ROOT,
    TICKER,
    _cpu_seconds,
    _drop,
    _free_port,
    _pin,
    _prepare,
    _process,
    _web_env,
)
from tests.bench.harness import bench_servers, fmt_time
from tests.web.load import FrameCounter, _tick
from ticker.core.contracts import Names
from ticker.infra.stores import tick_history

TOKENS, FLUSHES, FLUSH_SECONDS, BATCH_MAX = 2_000, 600, 0.1, 1_000  # 20k ticks/s for 60 s
RATE_GOAL, RESUME_GOAL = 500_000, 1.0  # ticks/s replayed; seconds from subscribe to the last one
ROUNDS = 2
ANCHOR_PAGE = 200  # entries per XRANGE of the anchor's plain read (~75 MB of these entries)
CLIENT_TIMEOUT = 300.0  # the slowest case on a very busy shared host took over 120 s


# --- history -----------------------------------------------------------------------------------
def _flush(n: int) -> list[bytes]:
    """Flush `n`: one tick per token, its price moving from flush to flush."""
    ticks = []
    for token in range(1, TOKENS + 1):
        tick = _tick(token)
        tick["last_price"] = round(100.0 + (n * 7 + token) % 5_000 / 20, 2)
        tick["volume"] += n
        ticks.append(orjson.dumps(tick))
    return ticks


async def _write_history(redis_url: str, names: Names) -> tuple[str, str]:
    """Write one flush (the client saw it), then FLUSHES more (it missed them); returns the
    position the client resumes from: the last entry of the first flush, and the epoch."""
    from ticker.infra.stores.redis import connect
    from ticker.streamer.process.stream_metrics import StreamerMetrics
    from ticker.streamer.stages.publish import Publisher
    from ticker.streamer.stages.publish_breaker import PublishBreaker
    from ticker.streamer.stages.render import Outgoing

    redis = connect(redis_url)
    publisher = Publisher(redis, names, PublishBreaker(60.0), StreamerMetrics(), batch_max=BATCH_MAX, timeout=30.0)
    try:
        since = ""
        for n in range(FLUSHES + 1):
            if not await publisher.publish(Outgoing(options=_flush(n))):
                raise RuntimeError(f"flush {n} did not reach Redis")
            if n == 0:
                since = (await redis.xrevrange(names.ticks_history, "+", "-", count=1))[0][0].decode()
        epoch = await tick_history.current_epoch(redis, names)
    finally:
        await publisher.close()
        await redis.aclose()
    if epoch is None:
        raise RuntimeError("no epoch after publishing")
    return since, epoch


async def _xrange_rate(redis_url: str, stream: str, since: str, ticks: int) -> float:
    """Ticks/s of reading every entry after `since` with redis-py XRANGE, page by page."""
    from ticker.infra.stores.redis import connect

    redis = connect(redis_url)
    try:
        t0, after, entries = time.perf_counter(), since, 0
        while True:
            page = await redis.xrange(stream, f"({after}", "+", count=ANCHOR_PAGE)
            entries += len(page)
            if len(page) < ANCHOR_PAGE:
                break
            after = page[-1][0].decode()
        elapsed = time.perf_counter() - t0
    finally:
        await redis.aclose()
    if entries * BATCH_MAX != ticks:
        raise RuntimeError(f"XRANGE read {entries} entries, expected {ticks // BATCH_MAX}")
    return ticks / elapsed


# --- the client (its own process) ------------------------------------------------------------------
class ReplayCounter(FrameCounter):
    """Counts ticks like the fan-out clients and notes when the `expected`-th one arrived."""

    def __init__(self, path: str, host: str, expected: int) -> None:
        super().__init__(path, host, None)
        self.expected = expected
        self.complete = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.ticks >= self.expected and not self.complete.done():
            self.complete.set_result(time.perf_counter())


async def _client(port: int, path: str, subscribe: bytes, expected: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: ReplayCounter(path, f"127.0.0.1:{port}", expected),
                                            "127.0.0.1", port)
    await proto.ready
    frame = proto.frame(subscribe)  # masked before the clock starts
    t0 = time.perf_counter()
    proto.transport.write(frame)
    async with asyncio.timeout(CLIENT_TIMEOUT):
        done = await proto.complete
    first = proto.ticks
    await asyncio.sleep(0.5)  # anything past the expected count would be a bug (sent twice, or a gap's stand-in)
    proto.transport.close()
    return {"seconds": done - t0, "ticks": first, "after": proto.ticks, "frames": proto.frames}


def _run_client(port: int, pid: int, path: str, tokens: list[int], since: str, epoch: str,
                expected: int) -> dict[str, Any]:
    """One resume by a client process; also the web's CPU seconds meanwhile (`pid`)."""
    cpu = _cpu_seconds(pid)
    subscribe = orjson.dumps({"action": "subscribe", "tokens": tokens, "since": {"offset": since, "epoch": epoch}})
    out = subprocess.run([*_pin(1), PY, "-m", "tests.bench.bench_replay", "client", str(port), path,
                          subscribe.decode(), str(expected)], cwd=ROOT, capture_output=True, text=True,
                         timeout=CLIENT_TIMEOUT + 30)
    if out.returncode != 0:
        raise RuntimeError(f"replay client failed: {out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["cpu"] = _cpu_seconds(pid) - cpu
    if result["after"] != expected:
        raise RuntimeError(f"client got {result['after']:,} ticks, {expected:,} were replayed")
    return result


# --- the bench ---------------------------------------------------------------------------------
def _cases() -> list[tuple[str, str, list[int]]]:
    every = list(range(1, TOKENS + 1))
    tenth = every[::10]
    return [("?batch=true, every token", "/ws/ticks?batch=true", every),
            ("?batch=true, a tenth of the tokens", "/ws/ticks?batch=true", tenth),
            ("one tick per message, every token", "/ws/ticks", every),
            ("one tick per message, a tenth of the tokens", "/ws/ticks", tenth)]


def _anchor(redis_url: str, names: Names, since: str) -> float:
    """The XRANGE rate on CPU 0 (the web's core; the web is idle meanwhile), best of ROUNDS."""
    cpus = os.sched_getaffinity(0)
    if len(_pin(0)):
        os.sched_setaffinity(0, {0})
    try:
        return max(asyncio.run(_xrange_rate(redis_url, names.ticks_history, since, FLUSHES * TOKENS))
                   for _ in range(ROUNDS))
    finally:
        os.sched_setaffinity(0, cpus)


def _measure(report: Any, env: dict[str, str], redis_url: str, names: Names, since: str, epoch: str) -> None:
    port = _free_port()
    with _process([*_pin(0), TICKER, "web", "--host", "127.0.0.1", "--port", str(port)], env,
                  f"http://127.0.0.1:{port}/openapi.json") as web:
        anchor = _anchor(redis_url, names, since)
        for label, path, tokens in _cases():
            expected = FLUSHES * len(tokens)
            runs = [_run_client(port, web.pid, path, tokens, since, epoch, expected) for _ in range(ROUNDS)]
            best = min(runs, key=lambda r: r["seconds"])
            rate, read = expected / best["seconds"], FLUSHES * TOKENS / best["seconds"]
            report.row(f"web /ws/ticks resume from history, 60 s at 20k ticks/s ({FLUSHES * TOKENS:,} ticks), "
                       f"{label} ({len(tokens):,} tokens)",
                       f"{rate:,.0f} ticks/s delivered ({read:,.0f} ticks of history/s), resume complete in "
                       f"{fmt_time(best['seconds'])} ({expected:,} ticks in {best['frames']:,} frames), "
                       f"web CPU {best['cpu'] / (FLUSHES * TOKENS) * 1e6:.2f} µs per tick of history",
                       f"redis-py XRANGE of the same history {anchor:,.0f} ticks/s", ratio=read / anchor,
                       goal=f"≥ {RATE_GOAL:,} ticks/s, ≤ {RESUME_GOAL:g} s",
                       met=rate >= RATE_GOAL and best["seconds"] <= RESUME_GOAL)


def run(report: Any) -> None:
    name = f"ticker_bench_replay_{uuid.uuid4().hex[:8]}"
    with bench_servers("replay") as (redis_base, pg_admin):
        db_url, redis_url = asyncio.run(_prepare(redis_base, pg_admin, name))
        try:
            ns = f"br{uuid.uuid4().hex[:6]}"
            env = _web_env(redis_url, db_url, ns)
            names = Names(env["PUBLISH_CHANNEL_PREFIX"], ns)
            since, epoch = asyncio.run(_write_history(redis_url, names))
            _measure(report, env, redis_url, names, since, epoch)
        finally:
            asyncio.run(_drop(pg_admin, name, redis_url))


def _main(argv: list[str]) -> int:
    role, port, path, subscribe, expected = argv
    if role != "client":
        raise SystemExit(f"unknown role {role}")
    result = asyncio.run(_client(int(port), path, subscribe.encode(), int(expected)))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
