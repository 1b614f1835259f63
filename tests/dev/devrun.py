"""Running `ticker dev` as a newcomer does (no servers or credentials given) and reading its first
option ticks: shared by the end-to-end test and the start-up benchmark."""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson

from ticker.core.tick_envelope import unwrap
from ticker.infra.stores.redis import connect

OPTIONS_CHANNEL = "ticker:nifty:options"


def clean_env(home: Path) -> dict[str, str]:
    """This environment without anything that would point `ticker dev` at existing servers or keys."""
    drop = ("REDIS_URL", "DATABASE_URL", "API_KEY", "ACCOUNT_ENCRYPTION_KEY", "ENVIRONMENT", "PORT", "STREAMER_PORT",
            "SIM_PORT", "HOST", "HTTP_RATE_LIMIT_PER_MINUTE",
            "PUBLISH_CHANNEL_PREFIX", "REDIS_NAMESPACE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KITE_", "TEST_")) and k not in drop}
    env["HOME"] = str(home)  # no stray .env or user config
    return env


async def first_option_ticks(redis_url: str, started: float, deadline: float) -> tuple[list[dict], float]:
    """The first published option ticks carrying an IV, and the seconds since `started` (monotonic)
    they arrived; ([], elapsed) when none came within `deadline` seconds of `started`."""
    redis = connect(redis_url)
    pubsub = redis.pubsub()
    await pubsub.subscribe(OPTIONS_CHANNEL)
    try:
        while time.monotonic() - started < deadline:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if msg:
                ticks = [t for t in unwrap(orjson.loads(msg["data"]))[0] if t.get("iv") is not None]
                if ticks:
                    return ticks, time.monotonic() - started
        return [], time.monotonic() - started
    finally:
        await pubsub.aclose()
        await redis.aclose()
