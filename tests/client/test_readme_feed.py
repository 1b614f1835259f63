"""The README's `ticker.client` example ("Subscribing to ticks from your own code") runs as written
against a real Redis with published envelopes, and prints what it says it prints. The example runs
until stopped, so the test stops it once the expected lines came."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import uuid
from pathlib import Path

import orjson
from redis.asyncio import Redis

from tests.client.test_redis_feed import publish, subscribed
from ticker.core.contracts import Names

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Subscribing to ticks from your own code"
BOUND = 60.0  # seconds; only a broken system waits this long


def example() -> str:
    """The first python block of the section."""
    text = README.read_text()
    section = text[text.index(SECTION):]
    section = section[:section.index("\n## ", len(SECTION))]
    match = re.search(r"^```python\n(.*?)^```$", section, re.S | re.M)
    assert match, "the section has no python block"
    return match.group(1)


async def test_the_readme_subscriber_example_prints_ticks_and_order_updates(redis: Redis, redis_url: str,
                                                                            tmp_path: Path) -> None:
    names = Names(f"ticker:x{uuid.uuid4().hex[:8]}")
    env = {**os.environ, "REDIS_URL": redis_url, "PUBLISH_CHANNEL_PREFIX": names.prefix}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-u", "-c", example(), cwd=tmp_path, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    expected = ["1 NIFTY 50 24000.5 None None", "1 NIFTY BANK 51000.0 0.14 0.52",
                "orders [('42', 'COMPLETE')]"]
    lines: list[str] = []
    try:
        await subscribed(redis, names.orders)
        await publish(redis, names.underlying, names, [{"instrument_token": 256265, "tradingsymbol": "NIFTY 50",
                                                        "last_price": 24000.5}])
        await publish(redis, names.options, names, [
            {"instrument_token": 260105, "tradingsymbol": "NIFTY BANK", "last_price": 51000.0, "iv": 0.14,
             "delta": 0.52},
            {"instrument_token": 999, "tradingsymbol": "OTHER", "last_price": 1.0}])
        await publish(redis, names.orders, names, [{"order_id": "42", "status": "COMPLETE"}])
        assert proc.stdout is not None
        async with asyncio.timeout(BOUND):
            while len(lines) < len(expected):
                line = await proc.stdout.readline()
                assert line, f"the example ended: {(await proc.stderr.read()).decode() if proc.stderr else ''}"
                lines.append(line.decode().rstrip("\n"))
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    assert sorted(lines) == sorted(expected), orjson.dumps(lines).decode()
