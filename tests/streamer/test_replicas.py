"""Two real `ticker streamer` processes split the accounts through Redis leases; when one is
killed the other takes its accounts over once the lease expires; SIGTERM exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from ticker.infra.dev.embedded import free_port
from ticker.infra.runtime.settings import Settings

from .conftest import BOUND, Recorder, option_tokens, subscribe, wait_for

pytestmark = pytest.mark.timeout(120)
LEASE_MS = 2000


def streamer_env(settings: Settings, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KITE_", "STREAMER_"))}
    env.update({
        "ENVIRONMENT": "test", "LOG_FORMAT": "text", "LOG_LEVEL": "INFO",
        "REDIS_URL": settings.redis_url, "DATABASE_URL": settings.database_url,
        "REDIS_NAMESPACE": settings.redis_namespace, "PUBLISH_CHANNEL_PREFIX": settings.publish_channel_prefix,
        "KITE_ROOT": settings.kite_root, "KITE_WS_ROOT": settings.kite_ws_root,
        "ACCOUNT_ENCRYPTION_KEY": settings.account_encryption_key.get_secret_value(),
        "STREAMER_PORT": str(port), "STREAMER_LEASE_MS": str(LEASE_MS), "STALL_SECONDS": "2",
    })
    return env


class Proc:
    def __init__(self, settings: Settings, name: str, folder: Path) -> None:
        self.port = free_port()
        self.log = folder / f"{name}.log"
        ticker = Path(sys.executable).with_name("ticker")
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([str(ticker), "streamer", "--instance", name, "--host", "127.0.0.1"],
                                         env=streamer_env(settings, self.port), stdout=out, stderr=subprocess.STDOUT)

    async def health(self) -> dict | None:
        try:
            async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{self.port}/health") as r:
                return await r.json()
        except (aiohttp.ClientError, OSError):
            return None

    async def owned(self) -> set[str]:
        doc = await self.health()
        return {a for a, d in (doc or {}).get("accounts", {}).items() if d["owned"] and d["connected"]}

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait(10)


async def poll(check, timeout: float) -> float:
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s")
        await asyncio.sleep(0.1)
    return time.monotonic() - start


async def test_two_processes_split_accounts_and_take_over(market, sdb, ssettings, snames, sredis, tmp_path):
    tokens = await option_tokens(sdb, 40)
    await subscribe(sdb, tokens)
    a = Proc(ssettings, "replica-a", tmp_path)
    b = Proc(ssettings, "replica-b", tmp_path)
    try:
        async with Recorder(sredis, [snames.options]) as rec:
            async def split() -> bool:
                owned_a, owned_b = await a.owned(), await b.owned()
                return len(owned_a) == 1 and len(owned_b) == 1 and owned_a | owned_b == {"acc1", "acc2"}

            await poll(split, BOUND)
            await wait_for(lambda: rec.tokens(snames.options) >= set(tokens))
            kept = await b.owned()
            a.proc.kill()
            killed_at = time.time()

            async def taken_over() -> bool:
                return await b.owned() == {"acc1", "acc2"}

            took = await poll(taken_over, BOUND)
            after = time.time()
            await wait_for(lambda: rec.tokens(snames.options, since=after) >= set(tokens))
            assert kept <= await b.owned()
            print(f"accounts taken over {took:.2f} s after the kill (lease {LEASE_MS} ms); "
                  f"{time.time() - killed_at:.2f} s until every token ticked again")
        b.proc.send_signal(signal.SIGTERM)
        assert b.proc.wait(BOUND) == 0
        assert "streamer stopped" in b.log.read_text()
    finally:
        a.stop()
        b.stop()
