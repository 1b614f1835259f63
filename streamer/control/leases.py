"""Account ownership across streamer replicas: one Redis lease per account (SET NX PX, renewed).

Each replica is also a member of one sorted set, scored by when its membership runs out (Redis's
own clock, one lease ahead), so every replica knows how many are alive and claims only its fair
share, ceil(accounts / replicas): a newcomer gets accounts handed over (the others release their
surplus), and a replica that dies stops renewing, its score falls behind, the next renewal of any
replica drops it, and the survivors' shares grow to cover its accounts within the lease time.
Counting members is one script on one key, never a scan of the keyspace.
While Redis cannot be reached nothing is given up: streaming what we hold beats streaming nothing
(the outage is told to the shared `RedisLink`, which logs it once). A Redis that lost its keys
(restarted empty) hands every lease back to whoever renews first, normally its holder.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ticker.core.contracts import Names
from ticker.streamer.redis_link import RedisLink

log = logging.getLogger(__name__)

# Renew when we hold it, take it when free; 1 when we hold it afterwards.
_CLAIM = """
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not owner then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
# Renew our membership, drop members whose time ran out, return how many remain. The set itself
# expires a lease after its last renewal, so nothing is left behind when every replica is gone.
_MEMBERS = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[1], ms + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return redis.call('ZCARD', KEYS[1])
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Leases:
    def __init__(self, redis: Redis, names: Names, instance: str, lease_ms: int,
                 link: RedisLink | None = None) -> None:
        self.redis = redis
        self.link = link or RedisLink()
        self.names = names
        self.instance = instance
        self.lease_ms = lease_ms
        self.held: set[str] = set()
        self.members = 1
        self.failing = False
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(_RELEASE)
        self._members = redis.register_script(_MEMBERS)
        self._members_key = names.key("streamer", "members")

    @property
    def interval(self) -> float:
        """Seconds between renewals: a quarter of the lease, so two misses still keep it."""
        return self.lease_ms / 4000

    async def refresh(self, accounts: Iterable[str]) -> set[str]:
        """Renew, release surplus, claim up to our share; returns the accounts held now."""
        wanted = sorted(set(accounts))
        began = self.link.now()
        try:
            self.members = max(1, int(await self._members(keys=[self._members_key],
                                                           args=[self.instance, self.lease_ms])))
            share = math.ceil(len(wanted) / self.members) if wanted else 0
            held = {a for a in sorted(self.held) if a in wanted and await self._try(a)}
            for account in sorted(held, reverse=True)[:max(0, len(held) - share)]:
                await self._release(keys=[self.names.lease(account)], args=[self.instance])
                held.discard(account)
            for account in _spread(wanted, self.instance):
                if len(held) >= share:
                    break
                if account not in held and await self._try(account):
                    held.add(account)
        except (RedisError, OSError) as exc:
            self.link.failed("leases", exc, since=began)
            self.failing = True
            return self.held
        self.link.ok("leases", began)
        self.failing = False
        for gone in sorted(self.held - held):
            log.info("account lease handed over", extra={"account_id": gone})
        for new in sorted(held - self.held):
            log.info("account lease acquired", extra={"account_id": new})
        self.held = held
        return held

    async def _try(self, account: str) -> bool:
        return bool(await self._claim(keys=[self.names.lease(account)], args=[self.instance, self.lease_ms]))

    async def release_all(self) -> None:
        """On shutdown: hand everything back at once instead of waiting for expiry."""
        try:
            for account in sorted(self.held):
                await self._release(keys=[self.names.lease(account)], args=[self.instance])
            await self.redis.zrem(self._members_key, self.instance)
        except (RedisError, OSError) as exc:
            log.warning("could not release leases", extra={"error": type(exc).__name__})
        self.held = set()


def _spread(accounts: list[str], instance: str) -> list[str]:
    """Accounts in an order particular to this instance, so replicas reach for different ones."""
    return sorted(accounts, key=lambda a: hashlib.blake2b(f"{instance}:{a}".encode(), digest_size=8).digest())
