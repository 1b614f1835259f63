"""Shared Kite rate limits on real Redis.

Where a test needs a window to stay full while it looks, it uses the minute window (nothing here
takes a minute); grant times are read from the limiter's own records, not from a clock afterwards.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, time, timedelta

import pytest

from ticker.core.clock import IST
from ticker.infra.kite.limits import PENDING_POLL_S, KiteLimiter, RateLimited, budget_for, order_day_budgets
from ticker.infra.kite.rest import NetworkException
from ticker.jobs.orders.runner import backoff


def limiter(redis, names, settings, **limits) -> KiteLimiter:
    return KiteLimiter(redis, names, settings.model_copy(update=limits))


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
    assert await rl.try_acquire(acct, "orders") > 50  # the minute window is the one that is full
    assert await rl.remaining(acct, "orders") == {"second": 97, "minute": 0, "day": 4997}
    with pytest.raises(RateLimited) as err:
        await rl.acquire(acct, "orders", max_wait=1)
    assert err.value.full == ("minute",)


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
    key = names.key("ratelimit", budget_for(acct).key, "orders", "minute")
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
        await KiteLimiter(redis, names, settings).try_acquire("a", "nope")


async def test_settling_counts_the_call_from_when_it_was_answered(redis, names, settings) -> None:
    rl = limiter(redis, names, settings, api_rate_per_second=2)
    acct = uuid.uuid4().hex
    key = names.key("ratelimit", budget_for(acct).key, "api", "second")
    first = await rl.reserve(acct, "api")
    second = await rl.reserve(acct, "api")
    granted_at = await redis.zscore(key, first.member)
    await rl.settle(first)
    settled_at = await redis.zscore(key, first.member)
    assert settled_at > granted_at and settled_at > await redis.zscore(key, second.member)
    assert await redis.zrange(key, 0, -1) == [second.member.encode(), first.member.encode()]
    assert first.waited == 0.0 and await rl.try_acquire(acct, "api") > 0


async def test_a_call_in_flight_counts_until_it_is_answered(redis, names, settings) -> None:
    # Kite counts a call when it arrives: however long it is on its way, a held grant keeps its place.
    rl = limiter(redis, names, settings, order_rate_per_second=2)
    acct = uuid.uuid4().hex
    held = [await rl.reserve(acct, "orders", hold=60.0) for _ in range(2)]
    for grant in held:
        await rl.arm(grant)
    wait = await rl.try_acquire(acct, "orders")
    assert 0 < wait <= PENDING_POLL_S  # full while in flight: look again soon, not a window from now
    await rl.settle(held[0])  # answered now: it counts for a full window from now
    sec, usec = await redis.time()
    key = names.key("ratelimit", budget_for(acct).key, "orders", "second")
    assert await redis.zscore(key, held[0].member) <= sec * 1e6 + usec < await redis.zscore(key, held[1].member)
    assert (await rl.remaining(acct, "orders"))["second"] == 0


async def test_a_grant_never_used_is_given_back(redis, names, settings) -> None:
    rl = limiter(redis, names, settings, order_rate_per_second=2, order_rate_per_day=10)
    acct = uuid.uuid4().hex
    grants = [await rl.reserve(acct, "orders", hold=60.0) for _ in range(2)]
    assert (await rl.remaining(acct, "orders"))["day"] == 8
    await rl.release(grants[0])
    assert await rl.remaining(acct, "orders") == {"second": 1, "minute": 399, "day": 9}
    assert await rl.try_acquire(acct, "orders") == 0.0


async def test_the_day_budget_is_a_count_per_ist_day(redis, names, settings) -> None:
    rl = limiter(redis, names, settings, order_rate_per_second=100, order_rate_per_minute=100,
                 order_rate_per_day=3)
    acct = uuid.uuid4().hex
    for _ in range(3):
        assert await rl.try_acquire(acct, "orders") == 0.0
    now = datetime.now(IST)
    to_midnight = (datetime.combine(now.date() + timedelta(days=1), time(0), IST) - now).total_seconds()
    wait = await rl.try_acquire(acct, "orders")
    assert abs(wait - to_midnight) < 60  # full until midnight IST
    with pytest.raises(RateLimited) as err:
        await rl.acquire(acct, "orders", max_wait=1)
    assert err.value.full == ("day",)
    # the count belongs to its day: once the day has changed it starts from zero
    key = names.key("ratelimit", budget_for(acct).key, "orders", "day")
    await redis.hset(key, "day", int(await redis.hget(key, "day")) - 1)
    assert await rl.try_acquire(acct, "orders") == 0.0
    assert (await rl.remaining(acct, "orders"))["day"] == 2


async def test_accounts_of_one_kite_user_share_one_budget(redis, names, settings) -> None:
    rl = limiter(redis, names, settings, order_rate_per_second=3)
    user = f"ZX{uuid.uuid4().hex[:6]}"
    a, b = budget_for("acct-a", user), budget_for("acct-b", user)
    other = budget_for("acct-c", f"ZY{uuid.uuid4().hex[:6]}")
    assert a.key == b.key != other.key and user not in a.key  # the user id is personal: only its hash
    assert budget_for("acct-a").key != a.key  # an account whose user is unknown has its own
    for who in (a, b, a):
        assert await rl.try_acquire(who, "orders") == 0.0
    assert await rl.try_acquire(b, "orders") > 0
    assert await rl.try_acquire(other, "orders") == 0.0


async def test_the_day_budget_per_account_for_health(redis, names, settings) -> None:
    rl = limiter(redis, names, settings, order_rate_per_second=100, order_rate_per_minute=100)
    user = f"ZW{uuid.uuid4().hex[:6]}"
    one, two, alone = (f"h{uuid.uuid4().hex[:8]}" for _ in range(3))
    await rl.reserve(budget_for(one, user), "orders")
    await rl.reserve(budget_for(two, user), "orders")
    await rl.reserve(alone, "orders")
    budgets = await order_day_budgets(redis, names, settings, [one, two, alone, "never-ordered"])
    assert budgets[one] == budgets[two] == {"limit": 5000, "used": 2, "remaining": 4998}
    assert budgets[alone]["remaining"] == 4999 and budgets["never-ordered"]["remaining"] == 5000


async def test_callers_waiting_for_one_budget_keep_their_place_in_line(redis, names, settings) -> None:
    rl = limiter(redis, names, settings, order_rate_per_second=3)
    acct = uuid.uuid4().hex
    line = names.key("ratelimit", budget_for(acct).key, "orders", "line")
    grants = [await rl.reserve(acct, "orders", hold=60.0) for _ in range(3)]  # the window is full (in flight)
    turns = {}
    for job in ("a", "b", "c", "d", "e"):
        with pytest.raises(RateLimited) as err:
            await rl.reserve(acct, "orders", max_wait=0, ticket=job)
        turns[job] = err.value.wait_s
    assert turns["a"] < turns["c"] < turns["e"]  # told their turn by their place: no crowd wakes at once
    with pytest.raises(RateLimited) as err:
        await rl.reserve(acct, "orders", max_wait=0, ticket="a")  # coming back keeps the first place
    assert err.value.wait_s < turns["b"]
    assert await redis.zrange(line, 0, -1) == [b"a", b"b", b"c", b"d", b"e"]
    # far back in line: handed back at once rather than held waiting (even with time to wait)
    with pytest.raises(RateLimited):
        await rl.reserve(acct, "orders", max_wait=30, ticket="e")
    await rl.release(grants[0])
    await rl.reserve(acct, "orders", max_wait=0, ticket="b")  # room again: whoever comes takes it
    assert await redis.zrange(line, 0, -1) == [b"a", b"c", b"d", b"e"]


def test_a_kite_429_is_retried_in_the_next_window_however_short_the_back_off(settings) -> None:
    quick = settings.model_copy(update={"order_retry_base_seconds": 0.05, "order_retry_max_seconds": 0.4})
    too_many = NetworkException("Too many requests", code=429)
    assert all(1.0 <= backoff(quick, attempt, too_many) <= 1.5 for attempt in (1, 2, 3) for _ in range(20))
    gateway = NetworkException("Bad gateway", code=502)
    assert all(backoff(quick, 1, gateway) <= 0.075 for _ in range(20))  # other failures keep the short back-off
