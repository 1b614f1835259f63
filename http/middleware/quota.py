"""Per-client request quota, shared by every web replica through Redis.

A token bucket per client (the API key's hash, else the peer address): capacity = the per-minute
limit, refilled continuously, so bursts up to the limit pass and the sustained rate is the limit.
The script reads Redis's own clock, so replicas with skewed clocks agree.

Under high limits a replica takes tokens from the shared bucket in small leases (up to LEASE_MAX,
about a tenth of a second's worth of the limit) and spends them locally, so a busy client costs one
Redis call per lease instead of one per request. Leased tokens not spent within LEASE_SECONDS are
dropped, never carried; with the default limit (100/min) the lease is a single token, which is the
exact per-request check. When Redis cannot be reached the request is let through (and counted, and
reported to the outage watcher, which logs the outage once): the quota protects the service, it
must not become the reason the service is down.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections import OrderedDict

from aiohttp import web
from redis.exceptions import RedisError

from ticker.core.contracts import Names
from ticker.http.dependency_watch import Outages
from ticker.http.keys import Handler
from ticker.http.middleware.auth import API_KEY_HEADER
from ticker.http.middleware.errors import ApiError
from ticker.http.middleware.observe import HttpMetrics
from ticker.infra.stores.redis import AutoPipeline, Script

log = logging.getLogger("ticker.http.middleware.quota")

# The docs and chain pages and their files are served from memory like the spec, and must load during a
# Redis outage.
UNLIMITED_PATHS = frozenset({"/health", "/metrics", "/openapi.json", "/", "/docs"})
UNLIMITED_PREFIXES = ("/docs/static/", "/page/")
# Status polls are free: every enqueue answers "poll this URL", and polling it must not eat the
# quota that the next order needs (a long poll, `?wait=N`, holds one request however long it waits).
FREE_POLLS = frozenset({"/jobs/{job_id}", "/baskets/{basket_id}"})
LEASE_MAX, LEASE_SECONDS, MAX_CLIENTS = 50, 1.0, 10_000

# ARGV: limit per minute, tokens wanted. Returns {granted, whole tokens left, ms until one is due}.
_BUCKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cap = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local rate = cap / 60000.0
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or cap
local ts = tonumber(state[2]) or now
tokens = math.min(cap, tokens + math.max(0, now - ts) * rate)
local granted = math.min(want, math.floor(tokens))
local wait = 0
if granted >= 1 then
  tokens = tokens - granted
else
  granted = 0
  wait = math.ceil((1 - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], 60000)
return {granted, math.floor(tokens), wait}
"""


class ClientQuota:
    """Built with the app, bound to the hot-path Redis connection once startup has opened it."""

    script = Script(_BUCKET)

    def __init__(self, names: Names, per_minute: int) -> None:
        self.per_minute = per_minute
        self.names = names
        self.lease = max(1, min(LEASE_MAX, per_minute // 600))
        self._redis: AutoPipeline | None = None
        self._outages: Outages | None = None
        self._leases: OrderedDict[str, tuple[int, int, float]] = OrderedDict()  # client -> (left, shared, until)
        self._refills: dict[str, asyncio.Future] = {}

    def bind(self, redis: AutoPipeline, outages: Outages | None = None) -> None:
        self._redis = redis
        self._outages = outages

    def unavailable(self, exc: BaseException) -> None:
        """Redis could not be asked: the request goes through unmetered; an outage is suspected."""
        if self._outages is not None:
            self._outages.suspect(exc)

    async def take(self, client: str) -> tuple[bool, int, int]:
        """(allowed, remaining, retry_after_ms) for one request by `client`."""
        while True:
            spent = self._spend(client)
            if spent is not None:
                return True, spent, 0
            refill = self._refills.get(client)
            if refill is None:
                break
            await asyncio.shield(refill)  # one refill per client at a time; then spend from it
        future = asyncio.get_running_loop().create_future()
        self._refills[client] = future
        try:
            granted, remaining, wait_ms = await self._call(client)
            if granted:
                self._store(client, granted - 1, remaining)
            return bool(granted), remaining + max(0, granted - 1), wait_ms
        finally:
            del self._refills[client]
            future.set_result(None)

    def _spend(self, client: str) -> int | None:
        left, shared, until = self._leases.get(client, (0, 0, 0.0))
        if left <= 0 or until < time.monotonic():
            return None
        self._leases[client] = (left - 1, shared, until)
        return shared + left - 1

    def _store(self, client: str, left: int, shared: int) -> None:
        self._leases[client] = (left, shared, time.monotonic() + LEASE_SECONDS)
        self._leases.move_to_end(client)
        while len(self._leases) > MAX_CLIENTS:
            self._leases.popitem(last=False)

    async def _call(self, client: str) -> tuple[int, int, int]:
        if self._redis is None:
            raise RuntimeError("rate limiter used before startup bound it to Redis")
        granted, remaining, wait_ms = await self._redis.call(
            self.script, [self.names.key("http-rl", client)], [self.per_minute, self.lease])
        return int(granted), int(remaining), int(wait_ms)


def client_id(request: web.Request) -> str:
    key = request.headers.get(API_KEY_HEADER)
    if key:
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"ip:{request.remote or 'unknown'}"


def unmetered(request: web.Request) -> bool:
    if request.path in UNLIMITED_PATHS or request.path.startswith(UNLIMITED_PREFIXES):
        return True
    resource = request.match_info.route.resource
    return request.method == "GET" and resource is not None and resource.canonical in FREE_POLLS


def rate_limit_middleware(limiter: ClientQuota, metrics: HttpMetrics):
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if unmetered(request):
            return await handler(request)
        try:
            allowed, remaining, wait_ms = await limiter.take(client_id(request))
        except (RedisError, OSError, TimeoutError) as exc:
            metrics.rate_limit_skipped.inc()
            limiter.unavailable(exc)
            log.debug("rate limit unavailable, letting the request through: %s", type(exc).__name__)
            return await handler(request)
        limit_headers = {"X-RateLimit-Limit": str(limiter.per_minute), "X-RateLimit-Remaining": str(remaining)}
        if not allowed:
            metrics.rate_limited.inc()
            retry = max(1, math.ceil(wait_ms / 1000))
            raise ApiError(429, "rate_limited", f"rate limit of {limiter.per_minute} requests per minute "
                           f"exceeded; retry in {retry} s", {"retry_after_seconds": retry},
                           headers={"Retry-After": str(retry), **limit_headers})
        response = await handler(request)
        if not response.prepared:
            response.headers.update(limit_headers)
        return response

    return middleware
