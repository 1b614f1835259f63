"""Shared Kite rate limits on real Redis.

Where a test needs a window to stay full while it looks, it uses the minute window (nothing here
takes a minute); grant times are read from the limiter's own records, not from a clock afterwards.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from ticker.infra.ratelimit import RateLimited, RateLimiter


def limiter(redis, names, settings, **limits) -> RateLimiter:
    return RateLimiter(redis, names, settings.model_copy(update=limits))


async def test_grants_up_to_the_limit_then_says_how_long_to_wait(redis, names, settings) -> None:
    rl = limiter(redis, names, settings, order_rate_per_second=100, order_rate_per_minute=4)
    acct = uuid.uuid4().hex
    assert [await rl.try_acquire(acct, "orders") for _ in range(4)] == [0.0] * 4
    wait = await rl.try_acquire(acct, "orders")
    assert 0 < wait <= 60.0
    assert (await rl.remaining(acct, "orders"))["minute"] == 0
    assert await rl.try_acquire(uuid.uuid4().hex, "orders") == 0.0  # other accounts are independent


async def test_every_window_must_have_room(redis, names, settings) -> None:
    rl = limiter(redis, names, settings, order_rate_per_second=100, order_rate_per_minute=3)
    acct = uuid.uuid4().hex
    for _ in range(3):
        assert await rl.try_acquire(acct, "orders") == 0.0
    assert await rl.try_acquire(acct, "orders") > 1.0  # the minute window is the one that is full
    room = await rl.remaining(acct, "orders")
    assert (room["minute"], room["day"]) == (0, 4997) and room["second"] >= 97


async def test_two_limiters_share_one_budget(redis, names, settings) -> None:
    a = limiter(redis, names, settings, order_rate_per_second=100, order_rate_per_minute=3)
    b = limiter(redis, names, settings, order_rate_per_second=100, order_rate_per_minute=3)
    acct = uuid.uuid4().hex
    results = await asyncio.gather(*(x.try_acquire(acct, "orders") for x in (a, b) * 4))
    assert sum(1 for r in results if r == 0.0) == 3


async def test_acquire_waits_and_concurrent_callers_never_exceed_a_window(redis, names, settings) -> None:
    rl = limiter(redis, names, settings, order_rate_per_second=5)
    acct = uuid.uuid4().hex
    await asyncio.gather(*(rl.acquire(acct, "orders") for _ in range(12)))
    # Every grant is recorded (Redis time, microseconds) in each window; the minute window still
    # holds all 12. Any 6 consecutive grants span at least a second.
    key = names.key("ratelimit", acct, "orders", "minute")
    granted = sorted(int(score) for _, score in await redis.zrange(key, 0, -1, withscores=True))
    assert len(granted) == 12
    assert min(granted[i + 5] - granted[i] for i in range(len(granted) - 5)) >= 1_000_000


async def test_acquire_refuses_to_wait_beyond_max_wait(redis, names, settings) -> None:
    rl = limiter(redis, names, settings, order_rate_per_minute=1)
    acct = uuid.uuid4().hex
    await rl.acquire(acct, "orders", max_wait=0)
    with pytest.raises(RateLimited) as err:
        await rl.acquire(acct, "orders", max_wait=0.5)
    assert err.value.wait_s > 0.5 and err.value.bucket == "orders"


async def test_unknown_bucket_is_a_clear_error(redis, names, settings) -> None:
    with pytest.raises(ValueError, match="unknown rate-limit bucket"):
        await RateLimiter(redis, names, settings).try_acquire("a", "nope")


async def test_settling_counts_the_call_from_when_it_was_answered(redis, names, settings) -> None:
    rl = limiter(redis, names, settings, api_rate_per_second=2)
    acct = uuid.uuid4().hex
    key = names.key("ratelimit", acct, "api", "second")
    first = await rl.reserve(acct, "api")
    second = await rl.reserve(acct, "api")
    granted_at = await redis.zscore(key, first.member)
    await rl.settle(first)
    settled_at = await redis.zscore(key, first.member)
    assert settled_at > granted_at and settled_at > await redis.zscore(key, second.member)
    assert await redis.zrange(key, 0, -1) == [second.member.encode(), first.member.encode()]
    assert first.waited == 0.0
