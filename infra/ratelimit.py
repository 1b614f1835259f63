"""Per-account Kite rate limits shared by every worker process, enforced in Redis by one Lua script.

Each bucket (an endpoint class) has one or more windows (`limit` calls per `period`); a call is
granted only when every window has room, and then counts in all of them, atomically. Windows are
sliding logs (a sorted set of grant times) rather than refilling token buckets: a token bucket of
10/s lets 20 calls through in some one-second span (a full bucket plus a second of refill), and
Kite counts calls per window. Time comes from the Redis server, so workers on different hosts agree.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

from redis.asyncio import Redis

from ticker.core.contracts import Names
from ticker.infra.settings import Settings

BUCKETS = ("orders", "historical", "quote", "api")

# KEYS: one sorted set per window. ARGV: member, take(1|0), then limit/period_us per window.
# Returns the microseconds to wait (0 = granted when take=1), then the room left in each window.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local wait = 0
local room = {}
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 * i + 1])
  local period = tonumber(ARGV[2 * i + 2])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - period)
  local n = redis.call('ZCARD', key)
  room[i] = limit - n
  if n >= limit then
    local due = redis.call('ZRANGE', key, n - limit, n - limit, 'WITHSCORES')
    local w = tonumber(due[2]) + period - now
    if w > wait then wait = w end
  end
end
if wait > 0 or ARGV[2] ~= '1' then
  table.insert(room, 1, wait)
  return room
end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[1])
  redis.call('PEXPIRE', key, math.ceil(tonumber(ARGV[2 * i + 2]) / 1000))
  room[i] = room[i] - 1
end
table.insert(room, 1, 0)
return room
"""


# KEYS: the grant's window keys. ARGV: member, then period_us per window. Moves the grant's time to
# now (never back), so the window counts the call from when its answer came, not when it was granted.
_SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for i, key in ipairs(KEYS) do
  local s = redis.call('ZSCORE', key, ARGV[1])
  if s and tonumber(s) < now then
    redis.call('ZADD', key, now, ARGV[1])
    redis.call('PEXPIRE', key, math.ceil(tonumber(ARGV[i + 1]) / 1000))
  end
end
return 0
"""


@dataclass(frozen=True)
class Grant:
    """One granted call; `settle` it once the call has been answered (or has failed)."""

    account_id: str
    bucket: str
    member: str
    waited: float


@dataclass(frozen=True)
class Window:
    name: str
    limit: int
    period_s: float


class RateLimited(Exception):
    """The wait for a grant would be longer than the caller accepts."""

    def __init__(self, account_id: str, bucket: str, wait_s: float) -> None:
        super().__init__(f"rate limit '{bucket}' for account {account_id}: next call in {wait_s:.3f}s")
        self.account_id = account_id
        self.bucket = bucket
        self.wait_s = wait_s


def windows_from(settings: Settings) -> dict[str, tuple[Window, ...]]:
    """Kite's published limits per account, from settings."""
    second = 1.0 + settings.order_rate_guard_ms / 1000
    return {
        "orders": (
            Window("second", settings.order_rate_per_second, second),
            Window("minute", settings.order_rate_per_minute, 60.0),
            Window("day", settings.order_rate_per_day, 86_400.0),
        ),
        "historical": (Window("second", settings.historical_rate_per_second, 1.0),),
        "quote": (Window("second", settings.quote_rate_per_second, 1.0),),
        "api": (Window("second", settings.api_rate_per_second, 1.0),),
    }


class RateLimiter:
    """`await limiter.acquire(account_id, "orders")` before each Kite call of that class."""

    def __init__(self, redis: Redis, names: Names, settings: Settings) -> None:
        self.redis = redis
        self.names = names
        self.windows = windows_from(settings)
        self._script = redis.register_script(_SCRIPT)
        self._settle = redis.register_script(_SETTLE)

    def _plan(self, account_id: str, bucket: str) -> tuple[list[str], list[object]]:
        try:
            windows = self.windows[bucket]
        except KeyError:
            raise ValueError(f"unknown rate-limit bucket {bucket!r}; one of {', '.join(self.windows)}") from None
        keys = [self.names.key("ratelimit", account_id, bucket, w.name) for w in windows]
        args: list[object] = []
        for w in windows:
            args += [w.limit, int(w.period_s * 1_000_000)]
        return keys, args

    async def _run(self, account_id: str, bucket: str, take: bool, member: str = "") -> list[int]:
        keys, args = self._plan(account_id, bucket)
        return [int(v) for v in await self._script(keys=keys, args=[member or uuid.uuid4().hex, int(take), *args])]

    async def try_acquire(self, account_id: str, bucket: str) -> float:
        """0.0 when a call is granted now (and counted); otherwise seconds until one could be."""
        return (await self._run(account_id, bucket, True))[0] / 1_000_000

    async def acquire(self, account_id: str, bucket: str, max_wait: float | None = None) -> float:
        """Wait until a call is granted; returns seconds waited. Raises RateLimited instead of waiting
        longer than `max_wait` (so a job can hand itself back rather than hold a worker slot)."""
        return (await self.reserve(account_id, bucket, max_wait)).waited

    async def reserve(self, account_id: str, bucket: str, max_wait: float | None = None) -> Grant:
        """`acquire`, returning the grant so the caller can `settle` it after the call.

        Kite counts a call when it arrives, which is some time after our grant (a busy event loop, a
        database write, the network). Settling moves the grant to when the answer came back, a time
        no earlier than Kite's arrival, so later grants keep a full window away from it."""
        member, waited = uuid.uuid4().hex, 0.0
        while True:
            wait = (await self._run(account_id, bucket, True, member))[0] / 1_000_000
            if wait <= 0:
                return Grant(account_id, bucket, member, waited)
            if max_wait is not None and waited + wait > max_wait:
                raise RateLimited(account_id, bucket, wait)
            await asyncio.sleep(wait)
            waited += wait

    async def settle(self, grant: Grant) -> None:
        keys, args = self._plan(grant.account_id, grant.bucket)
        await self._settle(keys=keys, args=[grant.member, *args[1::2]])

    async def remaining(self, account_id: str, bucket: str) -> dict[str, int]:
        """Calls left right now in each window of the bucket (nothing is counted)."""
        room = (await self._run(account_id, bucket, False))[1:]
        return {w.name: max(r, 0) for w, r in zip(self.windows[bucket], room, strict=True)}
