"""A per-account circuit breaker in Redis, shared by every worker.

After N consecutive transient failures against one account the breaker opens for a while: order
jobs for that account wait (hand themselves back) instead of hammering a Kite that is failing.
When the open period ends, one job is let through as a probe; its success closes the breaker, its
failure opens it again. Permanent errors (a rejected order) say nothing about Kite's health and do
not count.
"""

from __future__ import annotations

from typing import Literal

from redis.asyncio import Redis

from ticker.core.contracts import Names
from ticker.infra.runtime.settings import Settings

# KEYS: failures, open, probe. ARGV: threshold, probe_ms, open_ms. Returns ms to wait (0 = go,
# -1 = go and no failures are counted).
# While a probe is out, others look again after at most one open period, not the probe's lifetime.
_ALLOW = """
local open = redis.call('PTTL', KEYS[2])
if open > 0 then return open end
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n == 0 then return -1 end
if n < tonumber(ARGV[1]) then return 0 end
if redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[2]) then return 0 end
local probe = redis.call('PTTL', KEYS[3])
if probe > 0 then return math.min(probe, tonumber(ARGV[3])) end
return 1
"""

# KEYS: failures, open, probe. ARGV: threshold, open_ms, memory_ms. Returns 1 when now open.
_FAIL = """
local n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if n >= tonumber(ARGV[1]) then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
  redis.call('DEL', KEYS[3])
  return 1
end
return 0
"""

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(self, redis: Redis, names: Names, settings: Settings, *, probe_seconds: float | None = None) -> None:
        self.redis = redis
        self.names = names
        self.threshold = settings.breaker_failure_threshold
        self.open_ms = int(settings.breaker_open_seconds * 1000)
        # a probe that never reports back (its worker died) frees the half-open slot after this long
        self.probe_ms = int((probe_seconds or settings.order_job_timeout_seconds) * 1000)
        self.memory_ms = max(self.open_ms * 10, 60_000)
        self._allow = redis.register_script(_ALLOW)
        self._fail = redis.register_script(_FAIL)

    def _keys(self, account_id: str) -> list[str]:
        return [self.names.key("breaker", account_id, part) for part in ("failures", "open", "probe")]

    async def allow(self, account_id: str) -> float:
        """0.0 when a call may go now (possibly as the half-open probe); else seconds to wait."""
        return (await self.check(account_id))[0]

    async def check(self, account_id: str) -> tuple[float, bool]:
        """(`allow`'s answer, whether failures are counted), so a caller whose call then succeeds
        only needs `record_success` when there is something to reset."""
        args = [self.threshold, self.probe_ms, self.open_ms]
        wait_ms = int(await self._allow(keys=self._keys(account_id), args=args))
        return max(wait_ms, 0) / 1000, wait_ms != -1

    async def record_success(self, account_id: str) -> None:
        await self.redis.delete(*self._keys(account_id))

    async def record_failure(self, account_id: str) -> bool:
        """Count a transient failure; True when this opened (or re-opened) the breaker."""
        args = [self.threshold, self.open_ms, self.memory_ms]
        return bool(int(await self._fail(keys=self._keys(account_id), args=args)))

    async def state(self, account_id: str) -> State:
        failures, open_ttl = await self.redis.mget(self._keys(account_id)[:2])
        if open_ttl is not None:
            return "open"
        return "half_open" if int(failures or 0) >= self.threshold else "closed"
