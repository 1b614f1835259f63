"""Kite's rate limits, shared by every worker process and enforced in Redis by Lua scripts.

Kite counts calls per Kite user, so a budget belongs to the account's Kite user (accounts of one
user share it) and to the account itself while its user id is unknown. Each bucket (an endpoint
class) has windows: sliding ones (`limit` calls in any `period`) and, for orders, a count per IST
calendar day that starts afresh at midnight IST, as Kite's does. A call is granted only when every
window has room, and then counts in all of them, atomically. Time comes from the Redis server, so
workers on different hosts agree.

Kite counts a call when it arrives, which is after we grant it and before its answer comes back.
So a grant that will be followed by a call is held "in flight" (its time set `hold` seconds ahead,
past the call's timeout): `arm` renews that just before the call is sent, `settle` moves it to when
the answer came (no earlier than Kite's count), `release` hands back a grant whose call was never
made. A call cut short (a timeout, a killed worker) keeps counting until its hold ends, so a
restarted worker cannot squeeze its calls into a window Kite still counts.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from dataclasses import dataclass

from redis.asyncio import Redis

from ticker.core.contracts import Names
from ticker.infra.runtime.settings import Settings

BUCKETS = ("orders", "historical", "quote", "api")
DAY = 0.0  # a window's period meaning "the IST calendar day"
IST_OFFSET_S = 19_800
PENDING_POLL_S = 0.02  # a full window held by a call in flight: look again this soon
LINE_TTL_S = 300.0  # a place in a waiting line not taken up for this long is forgotten

# KEYS: one per window (a sorted set of grant times; a hash {day, n} for the day window), then with a
# ticket the budget's waiting line (a sorted set of tickets by when they first had to wait).
# ARGV: member, take (1|0), hold_us, poll_us, ticket ('' = none), line_ttl_us, then limit/period_us
# per window (period 0 = IST day).
# Returns {µs to wait (0 = granted when take=1), IST day number, place in the waiting line (-1: not
# in it), room left per window...}.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local today = math.floor((tonumber(t[1]) + 19800) / 86400)
local midnight = ((today + 1) * 86400 - 19800) * 1000000
local hold, poll, ticket = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local windows = #KEYS - ((ticket ~= '') and 1 or 0)
local wait, room = 0, {}
for i = 1, windows do
  local key, limit, period = KEYS[i], tonumber(ARGV[2 * i + 5]), tonumber(ARGV[2 * i + 6])
  local n
  if period == 0 then
    local d = redis.call('HMGET', key, 'day', 'n')
    n = (tonumber(d[1]) == today) and (tonumber(d[2]) or 0) or 0
    if n >= limit and midnight - now > wait then wait = midnight - now end
  else
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - period)
    n = redis.call('ZCARD', key)
    if n >= limit then
      local due = tonumber(redis.call('ZRANGE', key, n - limit, n - limit, 'WITHSCORES')[2])
      local w = due + period - now
      if due > now and w > poll then w = poll end
      if w > wait then wait = w end
    end
  end
  room[i] = limit - n
end
local place = -1
if ticket ~= '' and ARGV[2] == '1' then
  local line = KEYS[#KEYS]
  if wait > 0 then
    redis.call('ZREMRANGEBYSCORE', line, '-inf', now - tonumber(ARGV[6]))
    redis.call('ZADD', line, 'NX', now, ticket)
    redis.call('PEXPIRE', line, math.ceil(tonumber(ARGV[6]) / 1000))
    place = redis.call('ZRANK', line, ticket)
  else
    redis.call('ZREM', line, ticket)
  end
end
if wait > 0 or ARGV[2] ~= '1' then
  table.insert(room, 1, place)
  table.insert(room, 1, today)
  table.insert(room, 1, wait)
  return room
end
for i = 1, windows do
  local key, period = KEYS[i], tonumber(ARGV[2 * i + 6])
  if period == 0 then
    if tonumber(redis.call('HGET', key, 'day')) ~= today then
      redis.call('HSET', key, 'day', today, 'n', 1)
    else
      redis.call('HINCRBY', key, 'n', 1)
    end
    redis.call('PEXPIREAT', key, math.floor(midnight / 1000) + 3600000)
  else
    redis.call('ZADD', key, now + hold, ARGV[1])
    local need = math.ceil((period + hold) / 1000)
    if redis.call('PTTL', key) < need then redis.call('PEXPIRE', key, need) end
  end
  room[i] = room[i] - 1
end
table.insert(room, 1, place)
table.insert(room, 1, today)
table.insert(room, 1, 0)
return room
"""

# KEYS: the grant's sliding-window keys. ARGV: member, offset_us, then period_us per key.
# Sets the grant's time to now + offset (settle: 0, arm: the hold) if it is still there.
_RESTAMP = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local offset = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  if redis.call('ZSCORE', key, ARGV[1]) then
    redis.call('ZADD', key, now + offset, ARGV[1])
    local need = math.ceil((offset + tonumber(ARGV[i + 2])) / 1000)
    if redis.call('PTTL', key) < need then redis.call('PEXPIRE', key, need) end
  end
end
return 0
"""

# KEYS: the grant's window keys. ARGV: member, the grant's IST day, then period_us per key.
_RELEASE = """
for i, key in ipairs(KEYS) do
  if tonumber(ARGV[i + 2]) == 0 then
    local d = redis.call('HMGET', key, 'day', 'n')
    if tonumber(d[1]) == tonumber(ARGV[2]) and (tonumber(d[2]) or 0) > 0 then
      redis.call('HINCRBY', key, 'n', -1)
    end
  else
    redis.call('ZREM', key, ARGV[1])
  end
end
return 0
"""


@dataclass(frozen=True)
class Budget:
    """Whose Kite limits a call draws on: `key` names the budget, `account_id` the account calling."""

    account_id: str
    key: str


def budget_for(account_id: str, user_id: str | None = None) -> Budget:
    """The budget of an account: its Kite user's (the id hashed: it is personal data) when known."""
    if user_id:
        return Budget(account_id, "user:" + hashlib.sha256(user_id.encode()).hexdigest()[:20])
    return Budget(account_id, "account:" + account_id)


Who = Budget | str  # a bare account id stands for an account whose Kite user is unknown


@dataclass(frozen=True)
class Grant:
    """One granted call. Unless it was an `acquire`, `arm`, `settle` or `release` it."""

    account_id: str
    bucket: str
    member: str
    waited: float
    budget: str = ""
    day: int = 0
    hold: float = 0.0


@dataclass(frozen=True)
class Window:
    name: str
    limit: int
    period_s: float  # DAY: the IST calendar day


class RateLimited(Exception):
    """The wait for a grant would be longer than the caller accepts; `full` names the windows out of room."""

    def __init__(self, account_id: str, bucket: str, wait_s: float, full: tuple[str, ...] = ()) -> None:
        super().__init__(f"rate limit '{bucket}' for account {account_id}: next call in {wait_s:.3f}s")
        self.account_id = account_id
        self.bucket = bucket
        self.wait_s = wait_s
        self.full = full


def windows_from(settings: Settings) -> dict[str, tuple[Window, ...]]:
    """Kite's published limits per user, from settings."""
    second = 1.0 + settings.order_rate_guard_ms / 1000
    return {
        "orders": (
            Window("second", settings.order_rate_per_second, second),
            Window("minute", settings.order_rate_per_minute, 60.0),
            Window("day", settings.order_rate_per_day, DAY),
        ),
        "historical": (Window("second", settings.historical_rate_per_second, 1.0),),
        "quote": (Window("second", settings.quote_rate_per_second, 1.0),),
        "api": (Window("second", settings.api_rate_per_second, 1.0),),
    }


def _us(seconds: float) -> int:
    return int(seconds * 1_000_000)


class KiteLimiter:
    """`await limiter.acquire(budget, "quote")` before each Kite call of that class; for calls whose
    timing matters to the last millisecond (orders), `reserve` / `arm` / `settle` instead."""

    MAX_MEMO = 10_000

    def __init__(self, redis: Redis, names: Names, settings: Settings) -> None:
        self.redis = redis
        self.names = names
        self.windows = windows_from(settings)
        self._acquire = redis.register_script(_ACQUIRE)
        self._restamp = redis.register_script(_RESTAMP)
        self._release = redis.register_script(_RELEASE)
        self._mapped: set[tuple[str, str]] = set()

    def _keys(self, budget: str, bucket: str) -> tuple[tuple[Window, ...], list[str]]:
        try:
            windows = self.windows[bucket]
        except KeyError:
            raise ValueError(f"unknown rate-limit bucket {bucket!r}; one of {', '.join(self.windows)}") from None
        return windows, [self.names.key("ratelimit", budget, bucket, w.name) for w in windows]

    async def _run(self, budget: Budget, bucket: str, take: bool, member: str = "", hold: float = 0.0,
                   ticket: str | None = None) -> list[int]:
        """[µs to wait, IST day, place in the waiting line (-1: none), room per window...]"""
        windows, keys = self._keys(budget.key, bucket)
        if ticket:
            keys.append(self.names.key("ratelimit", budget.key, bucket, "line"))
        args: list[object] = [member or uuid.uuid4().hex, int(take), _us(hold), _us(PENDING_POLL_S), ticket or "",
                              _us(LINE_TTL_S)]
        for w in windows:
            args += [w.limit, _us(w.period_s)]
        return [int(v) for v in await self._acquire(keys=keys, args=args)]

    async def _remember(self, budget: Budget) -> None:
        """Note which budget an account draws on, for /health (once per process and pair)."""
        pair = (budget.account_id, budget.key)
        if pair in self._mapped:
            return
        await self.redis.hset(budget_map_key(self.names), budget.account_id, budget.key)
        if len(self._mapped) >= self.MAX_MEMO:
            self._mapped.clear()
        self._mapped.add(pair)

    async def try_acquire(self, who: Who, bucket: str) -> float:
        """0.0 when a call is granted now (and counted); otherwise seconds until one could be."""
        return (await self._run(_budget(who), bucket, True))[0] / 1_000_000

    async def acquire(self, who: Who, bucket: str, max_wait: float | None = None) -> float:
        """Wait until a call is granted (counted from now); returns seconds waited. Raises RateLimited
        instead of waiting longer than `max_wait` (so a job can hand itself back, not hold a slot)."""
        return (await self.reserve(who, bucket, max_wait)).waited

    async def reserve(self, who: Who, bucket: str, max_wait: float | None = None, hold: float = 0.0,
                      ticket: str | None = None) -> Grant:
        """`acquire`, returning the grant. With `hold` the grant counts as a call in flight for that
        long: `arm` it just before the call goes out and `settle` it once answered (or `release` it
        if no call is made).

        A caller that may come back later (a job handing itself back) names itself with `ticket`: it
        then keeps its place in the budget's waiting line from its first wait on, and when more than a
        second's worth of callers are ahead of it, RateLimited comes at once, its `wait_s` saying about
        when its turn comes. So a crowd waiting for the same budget neither holds worker slots that
        other budgets' calls could use nor wakes all at once for every call that frees."""
        budget, member, waited = _budget(who), uuid.uuid4().hex, 0.0
        if budget.key != "account:" + budget.account_id:
            await self._remember(budget)
        windows, _ = self._keys(budget.key, bucket)
        while True:
            wait_us, day, place, *room = await self._run(budget, bucket, True, member, hold, ticket)
            if wait_us <= 0:
                return Grant(budget.account_id, bucket, member, waited, budget.key, day, hold)
            wait = wait_us / 1_000_000
            ahead = place >= windows[0].limit
            if max_wait is not None and (ahead or waited + wait > max_wait):
                full = tuple(w.name for w, r in zip(windows, room, strict=True) if r <= 0)
                turn = wait + max(place, 0) * windows[0].period_s / windows[0].limit
                raise RateLimited(budget.account_id, bucket, turn, full)
            await asyncio.sleep(wait)
            waited += wait

    async def _stamp(self, grant: Grant, offset: float) -> None:
        windows, keys = self._keys(grant.budget, grant.bucket)
        sliding = [(k, w) for k, w in zip(keys, windows, strict=True) if w.period_s != DAY]
        await self._restamp(keys=[k for k, _ in sliding],
                            args=[grant.member, _us(offset), *(_us(w.period_s) for _, w in sliding)])

    async def arm(self, grant: Grant) -> None:
        """The call is about to be sent: it counts as in flight from now for the grant's hold."""
        await self._stamp(grant, grant.hold)

    async def settle(self, grant: Grant) -> None:
        """The call was answered: it counts from now (no earlier than Kite counted it)."""
        await self._stamp(grant, 0.0)

    async def release(self, grant: Grant) -> None:
        """No call was made with this grant: give it back to every window."""
        windows, keys = self._keys(grant.budget, grant.bucket)
        await self._release(keys=keys, args=[grant.member, grant.day, *(_us(w.period_s) for w in windows)])

    async def remaining(self, who: Who, bucket: str) -> dict[str, int]:
        """Calls left right now in each window of the bucket (nothing is counted)."""
        room = (await self._run(_budget(who), bucket, False))[3:]
        return {w.name: max(r, 0) for w, r in zip(self.windows[bucket], room, strict=True)}


def _budget(who: Who) -> Budget:
    return who if isinstance(who, Budget) else budget_for(who)


def budget_map_key(names: Names) -> str:
    """Hash: account id -> the budget its calls draw on (written by workers, read by /health)."""
    return names.key("ratelimit", "budget-of")


async def order_day_budgets(redis: Redis, names: Names, settings: Settings,
                            account_ids: list[str]) -> dict[str, dict[str, int]]:
    """Per account: Kite's daily order limit, how much of it today (IST) has used, what is left.
    Accounts of one Kite user show the same shared budget."""
    if not account_ids:
        return {}
    limit = settings.order_rate_per_day
    mapped = await redis.hmget(budget_map_key(names), account_ids)
    budgets = [m.decode() if isinstance(m, bytes) else (m or budget_for(a).key)
               for a, m in zip(account_ids, mapped, strict=True)]
    today = int((time.time() + IST_OFFSET_S) // 86_400)
    async with redis.pipeline(transaction=False) as pipe:
        for budget in budgets:
            pipe.hmget(names.key("ratelimit", budget, "orders", "day"), ["day", "n"])
        counts = await pipe.execute()
    out = {}
    for account_id, (day, n) in zip(account_ids, counts, strict=True):
        used = int(n) if day is not None and int(day) == today and n is not None else 0
        out[account_id] = {"limit": limit, "used": used, "remaining": max(limit - used, 0)}
    return out
