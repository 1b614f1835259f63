"""The web process: POST /orders throughput and latency on one core; WebSocket fan-out to 100 clients.

`ticker web` runs as its own process pinned to CPU 0; the load comes from another process pinned to
CPU 1 (Redis and Postgres float). Every order request does the whole job: API key, Redis rate
limit, validation against the instrument, the audit row in Postgres, the arq enqueue; each carries
an Idempotency-Key. Two measurements per server: maximum throughput (a closed loop of CONCURRENCY
keep-alive connections for MEASURE seconds after a warm-up) and latency at PACED_RATE requests/s
offered on a fixed schedule (latency counted from each request's due time). Anchor: a bare aiohttp
handler on the same core that parses the JSON body and answers 202 — the framework's own ceiling.

Fan-out: 100 WebSocket clients each subscribe to the same TOKENS tokens; batches of ticks are
published to Redis faster than one core can deliver them; clients count frames and ticks with a
minimal parser (so the client process is not the bottleneck). Measured with one `tick` message per
tick (the classic protocol) and with `?batch=true`. Anchor: an aiohttp server sending pre-encoded
tick frames to 100 clients in a tight loop, the ceiling of aiohttp's WebSocket writer on one core.

Redis/Postgres: TEST_REDIS_URL / TEST_DATABASE_URL (else REDIS_URL / DATABASE_URL), else embedded.
An embedded Postgres is a fresh cluster with no spare WAL segments, so every 16 MB of WAL (about 5 s
of orders at 3,000/s) makes it create and zero-fill a new segment file while every commit waits
(~50 ms here). A server that has run through a checkpoint recycles old segments instead, so the
bench first gives the embedded cluster such spares; an external server is left as it is.
The load clients and anchor servers live in tests/web/load.py and run as their own processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tests.bench.harness import bench_servers, fmt_time
from tests.web.load import (
    API_KEY,
    CONCURRENCY,
    FANOUT_SECONDS,
    MEASURE,
    TOKENS,
    WARMUP,
    WS_CLIENTS,
    publish_ticks,
)

PACED_RATE = 3000
ROOT = pathlib.Path(__file__).resolve().parents[2]
PY = sys.executable
TICKER = str(pathlib.Path(PY).with_name("ticker"))


# --- environment -------------------------------------------------------------------------------
def _pin(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _prepare(redis_url: str, pg_admin: str, name: str) -> tuple[str, str]:
    """A fresh migrated database with the test instruments, and a clean Redis db index."""
    import asyncpg

    from tests.web.seed import seed_instruments
    from ticker.infra.stores.db import create_pool
    from ticker.infra.stores.migrate import migrate
    from ticker.infra.stores.redis import connect

    conn = await asyncpg.connect(pg_admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    db_url = urlunsplit(urlsplit(pg_admin)._replace(path=f"/{name}"))
    await migrate(db_url)
    pool = await create_pool(db_url)
    await seed_instruments(pool)
    await pool.close()
    scoped = urlunsplit(urlsplit(redis_url)._replace(path="/14"))
    client = connect(scoped)
    await client.flushdb()
    await client.aclose()
    return db_url, scoped


async def _recycled_wal(pg_admin: str, segments: int = 6) -> None:
    """Write `segments` WAL segments' worth of switches, then checkpoint: the old segment files are
    renamed into spares for the WAL the bench is about to write, as on a server that has been running."""
    import asyncpg

    conn = await asyncpg.connect(pg_admin)
    try:
        for _ in range(segments):
            await conn.execute("SELECT pg_logical_emit_message(false, 'ticker-bench', '')")
            await conn.execute("SELECT pg_switch_wal()")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def _drop(pg_admin: str, name: str, redis_url: str) -> None:
    import asyncpg

    from ticker.infra.stores.redis import connect

    conn = await asyncpg.connect(pg_admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
    client = connect(redis_url)
    await client.flushdb()
    await client.aclose()


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=1):
                return
        time.sleep(0.1)
    raise RuntimeError(f"server at {url} did not come up")


@contextlib.contextmanager
def _process(args: list[str], env: dict[str, str] | None = None, ready_url: str | None = None
             ) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        if ready_url:
            _wait_http(ready_url, proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _run_load(*args: str) -> dict[str, Any]:
    out = subprocess.run([*_pin(1), PY, "-m", "tests.web.load", *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"load process failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- load: POST /orders ------------------------------------------------------------------------
def _web_env(redis_url: str, db_url: str, ns: str, **extra: str) -> dict[str, str]:
    from tests.web.conftest import KITE

    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env.update({"ENVIRONMENT": "test", "REDIS_URL": redis_url, "DATABASE_URL": db_url, "REDIS_NAMESPACE": ns,
                "PUBLISH_CHANNEL_PREFIX": f"ticker:{ns}", "API_KEY": API_KEY, "LOG_LEVEL": "WARNING",
                "HTTP_RATE_LIMIT_PER_MINUTE": "100000000", "WS_CLIENT_QUEUE_MAX": "1000",
                **{k.upper(): v for k, v in KITE.items()}, **extra})
    return env


def _cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure_orders(args: list[str], env: dict[str, str] | None, ready: str, port: int) -> dict[str, Any]:
    """Closed-loop maximum throughput, then latency at the goal's offered load, on one process."""
    url = f"http://127.0.0.1:{port}/orders"
    with _process(args, env, ready) as proc:
        cpu0 = _cpu_seconds(proc.pid)
        peak = _run_load("orders", url)  # also warms the process (pools, caches) for the paced run
        cpu1 = _cpu_seconds(proc.pid)
        paced = _run_load("orders-paced", url, str(PACED_RATE))
    served = sum(peak["statuses"].values()) * (WARMUP + MEASURE) / MEASURE  # warm-up requests cost CPU too
    return {"peak": peak, "paced": paced, "cpu_per_request": (cpu1 - cpu0) / max(1.0, served)}


def _orders(report: Any, env: dict[str, str]) -> None:
    port = _free_port()
    ours = _measure_orders([*_pin(0), TICKER, "web", "--host", "127.0.0.1", "--port", str(port)], env,
                           f"http://127.0.0.1:{port}/openapi.json", port)
    port = _free_port()
    anchor = _measure_orders([*_pin(0), PY, "-m", "tests.web.load", "anchor-orders", str(port)], None,
                             f"http://127.0.0.1:{port}/ready", port)
    peak, paced = ours["peak"], ours["paced"]
    ok = (peak["statuses"].get("202", 0) + paced["statuses"].get("202", 0)) / max(
        1, sum(peak["statuses"].values()) + sum(paced["statuses"].values()))
    report.row(f"web POST /orders max throughput, 1 core ({CONCURRENCY} connections)",
               f"{peak['rps']:,.0f} req/s ({ok:.0%} 202), {ours['cpu_per_request'] * 1e6:.0f} µs CPU/req",
               f"{anchor['peak']['rps']:,.0f} req/s bare aiohttp", ratio=peak["rps"] / anchor["peak"]["rps"],
               goal="≥ 3,000 req/s", met=peak["rps"] >= 3000 and ok == 1.0)
    report.row(f"web POST /orders latency p50 / p99 at {PACED_RATE:,} req/s offered",
               f"{fmt_time(paced['p50'])} / {fmt_time(paced['p99'])}",
               f"{fmt_time(anchor['paced']['p50'])} / {fmt_time(anchor['paced']['p99'])} bare aiohttp",
               goal="p99 ≤ 25 ms", met=paced["p99"] <= 0.025)
    _redis_clients(report, env)


def _redis_clients(report: Any, env: dict[str, str]) -> None:
    """The same load with a pooled redis-py client in place of the hot path's AutoPipeline, right
    after a run of the shipped web, so both see the machine alike (it drifts on a shared host)."""
    port = _free_port()
    shipped = _measure_orders([*_pin(0), TICKER, "web", "--host", "127.0.0.1", "--port", str(port)], env,
                              f"http://127.0.0.1:{port}/openapi.json", port)
    port = _free_port()
    pooled = _measure_orders([*_pin(0), PY, "-m", "tests.bench.redis_clients", "pooled", "--host", "127.0.0.1",
                              "--port", str(port)], env, f"http://127.0.0.1:{port}/openapi.json", port)
    report.row("web POST /orders, rate-limit + enqueue scripts: redis-py AutoPipeline vs a pooled redis-py client",
               _orders_figures(shipped), _orders_figures(pooled), ratio=shipped["peak"]["rps"] / pooled["peak"]["rps"])


def _orders_figures(m: dict[str, Any]) -> str:
    return (f"{m['peak']['rps']:,.0f} req/s, {m['cpu_per_request'] * 1e6:.0f} µs CPU/req; p50 / p99 at "
            f"{PACED_RATE:,}/s {fmt_time(m['paced']['p50'])} / {fmt_time(m['paced']['p99'])}")


def _fanout(report: Any, env: dict[str, str], redis_url: str) -> None:
    channel = f"{env['PUBLISH_CHANNEL_PREFIX']}:options"
    results = {}
    for mode, path in (("tick", "/ws/ticks"), ("batch", "/ws/ticks?batch=true")):
        port = _free_port()
        with _process([*_pin(0), TICKER, "web", "--host", "127.0.0.1", "--port", str(port)], env,
                      f"http://127.0.0.1:{port}/openapi.json"):
            results[mode] = _fanout_run(["ws", str(port), path, str(TOKENS)], redis_url, channel)
    port = _free_port()
    with _process([*_pin(0), PY, "-m", "tests.web.load", "anchor-ws", str(port)]):
        time.sleep(1.0)
        anchor = _fanout_run(["ws", str(port), "/ws", "0"], None, None)
    one, batched = results["tick"], results["batch"]
    report.row(f"web WS fan-out to {WS_CLIENTS} clients x {TOKENS} tokens, 1 core, one tick per message",
               f"{one['ticks']:,.0f} ticks/s delivered", f"{anchor['msgs']:,.0f} msg/s raw aiohttp sends",
               ratio=one["ticks"] / anchor["msgs"])
    report.row(f"web WS fan-out to {WS_CLIENTS} clients x {TOKENS} tokens, 1 core, ?batch=true",
               f"{batched['ticks']:,.0f} ticks/s in {batched['msgs']:,.0f} msg/s",
               f"{anchor['msgs']:,.0f} msg/s raw aiohttp sends", ratio=batched["ticks"] / anchor["msgs"])


def _fanout_run(args: list[str], redis_url: str | None, channel: str | None) -> dict[str, Any]:
    proc = subprocess.Popen([*_pin(1), PY, "-m", "tests.web.load", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"fan-out clients failed: {proc.stderr.read() if proc.stderr else ''}")
        if redis_url and channel:
            asyncio.run(publish_ticks(redis_url, channel, FANOUT_SECONDS + 2.0))
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    if proc.returncode != 0:
        raise RuntimeError(f"fan-out clients failed: {err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def run(report: Any) -> None:
    name = f"ticker_bench_http_{uuid.uuid4().hex[:8]}"
    with bench_servers("http") as (redis_base, pg_admin):
        db_url, redis_url = asyncio.run(_prepare(redis_base, pg_admin, name))
        try:
            if not (os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")):
                asyncio.run(_recycled_wal(pg_admin))
            env = _web_env(redis_url, db_url, f"bh{uuid.uuid4().hex[:6]}")
            _orders(report, env)
            _fanout(report, env, redis_url)
        finally:
            asyncio.run(_drop(pg_admin, name, redis_url))

