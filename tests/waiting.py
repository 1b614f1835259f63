"""Waiting for something to happen instead of sleeping and hoping it did.

Tests run on busy machines: a fixed sleep is either too short there or wasted time everywhere else.
These helpers poll a condition, or wait for Redis to confirm a subscription, and return as soon as
it holds; their bounds are generous because reaching one means the test has failed anyway.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

GENEROUS = 60.0  # seconds; only a broken system waits this long


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float = GENEROUS, every: float = 0.05) -> None:
    """Poll until `check()` holds; fail the test with a clear message when it never does."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s: {check.__name__}")
        await asyncio.sleep(every)


async def confirm_subscribed(pubsub: Any, timeout: float = GENEROUS) -> None:
    """Wait until Redis has confirmed the pubsub's subscription (its first reply), so a message
    published from now on reaches it. The pubsub must not drop subscribe replies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = await pubsub.get_message(timeout=1.0)
        if message is not None and message["type"] in ("subscribe", "psubscribe"):
            return
    pytest.fail(f"Redis did not confirm the subscription within {timeout}s")


async def next_messages(pubsub: Any, count: int, timeout: float = GENEROUS) -> list[bytes]:
    """The data of the next `count` published messages (subscribe replies skipped)."""
    deadline, out = time.monotonic() + timeout, []
    while len(out) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"{len(out)} of {count} messages arrived within {timeout}s")
        message = await pubsub.get_message(timeout=1.0)
        if message is not None and message["type"] == "message":
            out.append(message["data"])
    return out
