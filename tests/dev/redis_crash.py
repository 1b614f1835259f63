"""A Redis crash under a running system, as an operator would cause it, and what it costs.

`ticker dev` runs every production process against a Redis of ours (append-only file on), then
`crash()` SIGKILLs that Redis with orders in flight and starts it again on its port. `recover()`
watches, from the moment Redis answers again, for: the web's /health reporting Redis ok, the streamer
publishing option ticks, and the worker starting an order job enqueued right then. The test holds
the outcome (nothing restarted, every order exactly once); `make bench` reports the times.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from arq.jobs import Job
from redis.exceptions import RedisError

from tests.order_api import OrderApi
from ticker.core.orders import OrderRequest, kite_tag
from ticker.infra.dev.embedded import EmbeddedRedis, free_port
from ticker.infra.queue.enqueue import create_queue, names_for
from ticker.infra.runtime.settings import load_settings
from ticker.infra.stores.redis import connect

from .devrun import clean_env
from .test_dev_e2e import TICKER

PROCESSES = ("ticker.infra.cli worker", "ticker.infra.cli web", "ticker.infra.cli streamer", "ticker.infra.cli scheduler")


@dataclass
class Recovery:
    web_s: float
    streamer_s: float
    worker_s: float


@dataclass
class DevUnderRedis:
    folder: Path
    redis: EmbeddedRedis = field(init=False)
    dev: subprocess.Popen | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def log_text(self) -> str:
        return (self.folder / "dev.log").read_text(errors="replace")

    async def start(self, timeout: float = 180.0) -> None:
        self.redis = EmbeddedRedis(self.folder / "redis", persist=True)
        self.redis.start()
        env = {**clean_env(self.folder), "REDIS_URL": self.redis.url, "LOG_LEVEL": "INFO"}
        self._log = (self.folder / "dev.log").open("wb")
        self.dev = subprocess.Popen(
            [TICKER, "dev", "--folder", str(self.folder / "dev"), "--port", str(free_port()),
             "--streamer-port", str(free_port())],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.folder)
        info_file = self.folder / "dev" / "dev.json"
        deadline = time.monotonic() + timeout
        while not info_file.exists():
            if self.dev.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ticker dev did not come up:\n{self.log_text[-3000:]}")
            await asyncio.sleep(0.25)
        self.info = json.loads(info_file.read_text())
        await self.option_ticks(timeout)

    def pids(self) -> dict[str, set[int]]:
        assert self.dev is not None
        found: dict[str, set[int]] = {name: set() for name in PROCESSES}
        for proc in psutil.Process(self.dev.pid).children(recursive=True):
            try:
                cmd = " ".join(proc.cmdline())
            except psutil.NoSuchProcess:
                continue
            for name in PROCESSES:
                if name in cmd:
                    found[name].add(proc.pid)
        return found

    async def option_ticks(self, timeout: float) -> float:
        """Seconds until the next option tick message arrives (subscribing now)."""
        started = time.monotonic()
        client = connect(self.redis.url)
        pubsub = client.pubsub()
        try:
            while True:
                try:
                    await pubsub.subscribe("ticker:nifty:options")
                    break
                except (OSError, RedisError):  # refused, reset, or still loading its data
                    if time.monotonic() - started > timeout:
                        raise
                    await asyncio.sleep(0.05)
            while time.monotonic() - started < timeout:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
                if msg:
                    return time.monotonic() - started
            raise TimeoutError("no option ticks")
        finally:
            await pubsub.aclose()
            await client.aclose()

    async def web_healthy(self, timeout: float) -> float:
        started = time.monotonic()
        async with aiohttp.ClientSession() as http:
            while time.monotonic() - started < timeout:
                try:
                    async with http.get(f"{self.info['web_url']}/health") as r:
                        body = await r.json()
                        if body["checks"]["redis"]["ok"]:
                            return time.monotonic() - started
                except (aiohttp.ClientError, OSError, KeyError):
                    pass
                await asyncio.sleep(0.02)
        raise TimeoutError("web /health never saw Redis again")

    def _settings(self):
        return load_settings(redis_url=self.redis.url, database_url=self.info["database_url"])

    async def place(self, count: int) -> list[str]:
        """Orders accepted by the running web process (POST /orders: audit row, then the queue)."""
        example = self.info["example_order"]
        async with OrderApi.at(self.info["web_url"], self.info["api_key"]) as api:
            ids = []
            for _ in range(count):
                req = OrderRequest(**{**example, "transaction_type": "BUY", "order_type": "LIMIT", "price": 1.0})
                ids.append(await api.place_id(req, uuid.uuid4().hex))
            return ids

    async def sim(self, method: str, path: str, body: dict | None = None) -> Any:
        async with aiohttp.ClientSession() as http, http.request(method, self.info["sim_url"] + path,
                                                                  json=body) as r:
            assert r.status < 300, await r.text()
            return await r.json()

    async def crash(self) -> float:
        """SIGKILL Redis, start it again on its port; returns the epoch time it answers again."""
        self.redis.kill()
        self.redis.start()
        return time.time()

    async def worker_pickup(self, back_at: float, timeout: float) -> float:
        """Seconds from Redis answering until the worker starts an order job enqueued then."""
        (job_id,) = await self.place(1)
        settings = self._settings()
        arq = await create_queue(settings)
        try:
            job = Job(job_id, arq, _queue_name=names_for(settings).orders_queue)
            info = await job.result_info()
            deadline = time.monotonic() + timeout
            while info is None:
                if time.monotonic() > deadline:
                    raise TimeoutError("the worker never ran the order")
                await asyncio.sleep(0.02)
                info = await job.result_info()
            started: datetime = info.start_time
            return started.timestamp() - back_at
        finally:
            await arq.aclose()

    async def recover(self, back_at: float, timeout: float = 60.0) -> Recovery:
        async def since_back(waiting) -> float:
            await waiting
            return time.time() - back_at

        web, streamer, worker = await asyncio.gather(
            since_back(self.web_healthy(timeout)), since_back(self.option_ticks(timeout)),
            self.worker_pickup(back_at, timeout))
        return Recovery(web, streamer, worker)

    async def orders_at_kite(self, job_ids: list[str]) -> dict[str, int]:
        counters = await self.sim("GET", "/_sim/counters")
        return {j: counters["orders_by_tag"].get(kite_tag(j), 0) for j in job_ids}

    def stop(self) -> int | None:
        code = None
        if self.dev is not None:
            if self.dev.poll() is None:
                self.dev.send_signal(signal.SIGINT)
            code = self.dev.wait(60)
            self._log.close()
        self.redis.kill()
        return code
