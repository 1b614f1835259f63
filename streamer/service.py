"""The streamer process, wired: pools → ingest (decode) → buffer → flusher (enrich + publish),
with the coordinator (leases, reconcile, token rejections), the control listener and the monitor
(heartbeat, backpressure) as supervised loops.

Stopping follows SIGTERM's contract: stop reading (close every socket), flush what was read,
hand the leases back, close clients.

Redis may go away at any time: every part that uses it reports to one `RedisLink` (an outage is
logged once, its end once), retries on its own, and the Kite sockets never notice; `/health`
says `degraded` with the reason meanwhile, as it does when ticks come in but none get published.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import aiohttp
import asyncpg
from arq.connections import ArqRedis
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ticker.core.contracts import TOKEN_PROBLEM_REASONS, ControlMessage, Names
from ticker.infra.kite.ticker_pool import AccountPool
from ticker.infra.kite.ticker_socket import Credentials, Timing
from ticker.infra.queue.enqueue import create_queue, names_for
from ticker.infra.runtime.heartbeat import beat
from ticker.infra.runtime.settings import Settings
from ticker.infra.stores.accounts import account_store
from ticker.infra.stores.db import create_pool
from ticker.infra.stores.redis import connect
from ticker.streamer.breaker import CircuitBreaker
from ticker.streamer.buffer import TickBuffer, wait_event
from ticker.streamer.control import ControlListener
from ticker.streamer.enrich import Enricher
from ticker.streamer.flusher import Flusher
from ticker.streamer.health import Backpressure
from ticker.streamer.ingest import Ingest
from ticker.streamer.leases import Leases
from ticker.streamer.metrics import StreamerMetrics
from ticker.streamer.outage import RedisLink
from ticker.streamer.publisher import Publisher
from ticker.streamer.reconcile import Reconciler
from ticker.streamer.registry import Registry
from ticker.streamer.tasks import Supervisor
from ticker.streamer.tokens import RefreshRequests, TokenHealth, report_rejection

log = logging.getLogger(__name__)
HEARTBEAT_EVERY = 5  # monitor ticks (seconds)
DEBOUNCE_SECONDS = 0.05
DRAIN_WAIT_SECONDS = 3.0


@dataclass
class Clients:
    """Everything the streamer holds open; closed in `Streamer.stop`."""

    redis: Redis
    db: asyncpg.Pool
    queue: ArqRedis
    session: aiohttp.ClientSession
    control: Redis  # the control channel's own client: no silent reconnects (see infra.redis)

    @classmethod
    async def open(cls, settings: Settings) -> Clients:
        settings.require("redis_url", "database_url")
        db = await create_pool(settings.database_url, min_size=1, max_size=4)
        try:
            queue = await create_queue(settings, retries=0)  # the caller waits out a Redis outage
        except BaseException:
            await db.close()
            raise
        timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10)
        return cls(connect(settings.redis_url, retries=1), db, queue,
                   aiohttp.ClientSession(timeout=timeout), connect(settings.redis_url, max_connections=2))

    async def close(self) -> None:
        await self.session.close()
        await self.queue.aclose()
        await self.control.aclose()
        await self.redis.aclose()
        await self.db.close()


@dataclass
class Wake:
    """Why the coordinator should run now (collected between runs)."""

    event: asyncio.Event = field(default_factory=asyncio.Event)
    reload: bool = False
    instruments: bool = False

    def request(self, *, reload: bool = True, instruments: bool = False) -> None:
        self.reload |= reload
        self.instruments |= instruments
        self.event.set()


class Streamer:
    def __init__(self, settings: Settings, clients: Clients, instance: str) -> None:
        self.settings = settings
        self.clients = clients
        self.instance = instance
        self.names: Names = names_for(settings)
        self.metrics = StreamerMetrics()
        self.supervisor = Supervisor(on_restart=lambda name: self.metrics.stage_failures.labels(name).inc())
        self.link = RedisLink(on_change=self._on_redis)
        self.buffer = TickBuffer(settings.tick_buffer_max, settings.tick_batch_max_size)
        self.ingest = Ingest(self.buffer, self.metrics)
        self.enricher = Enricher(
            Registry([]), model=settings.greeks_model, rate=settings.option_greeks_interest_rate,
            dividend_yield=settings.option_greeks_dividend_yield, bar_interval=settings.bar_interval_seconds,
            tz=settings.tz, metrics=self.metrics, snapshot_seconds=settings.latest_snapshot_ms / 1000)
        self.breaker = CircuitBreaker(settings.redis_breaker_reset_seconds)
        self.publisher = Publisher(clients.redis, self.names, self.breaker, self.metrics,
                                   batch_max=settings.tick_batch_max_size, timeout=settings.streamer_publish_timeout,
                                   link=self.link)
        self.flusher = Flusher(self.buffer, self.enricher, self.publisher, self.metrics,
                               settings.tick_batch_window_ms / 1000)
        self.tokens = TokenHealth()
        self.refreshes = RefreshRequests(settings, clients.queue, self.names)
        self.timing = Timing(settings.stall_seconds, settings.reconnect_base_seconds,
                             settings.reconnect_max_seconds, settings.ws_subscribe_batch)
        store = account_store(clients.db, settings)
        self.reconciler = Reconciler(settings, clients.db, store if store.configured else None, self.tokens,
                                     self.enricher, self.metrics, self._new_pool)
        self.leases = Leases(clients.redis, self.names, instance, settings.streamer_lease_ms, self.link)
        self.control = ControlListener(clients.control, self.names, self.metrics, self._on_control,
                                       retry_seconds=settings.redis_breaker_reset_seconds, link=self.link)
        self.backpressure = Backpressure()
        self.wake = Wake()
        self.started_at = time.time()
        self._flusher_tasks: list[asyncio.Task] = []

    # --- wiring ----------------------------------------------------------------------------------
    def _new_pool(self, account_id: str, creds: Credentials) -> AccountPool:
        s = self.settings
        return AccountPool(account_id, creds, ws_root=s.kite_ws_root, max_connections=s.max_ws_connections,
                           per_connection=s.max_instruments_per_ws, session=self.clients.session,
                           sink=self.ingest, metrics=self.metrics, timing=self.timing,
                           supervisor=self.supervisor, on_rejected=self._on_rejected)

    def _on_rejected(self, account_id: str, creds: Credentials) -> None:
        account = self.reconciler.accounts.get(account_id)
        self.tokens.refused(account_id, creds.access_token, account.token_updated_at if account else None)
        self.wake.request(reload=False)

    def _on_redis(self, up: bool) -> None:
        self.metrics.redis_up.set(1 if up else 0)
        if not up:
            self.metrics.redis_outages.inc()

    def _on_control(self, message: ControlMessage | None) -> None:
        if message is not None and message.kind == "tokens" and message.account_id \
                and message.reason not in TOKEN_PROBLEM_REASONS:
            self.tokens.forgive(message.account_id)
        self.wake.request(instruments=message is not None and message.kind == "instruments")

    # --- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        keep = self.supervisor.keep  # the pipeline's loops come back at once: a sleep would stall publishing
        self._flusher_tasks = [keep("enrich", self.flusher.run, at_once=True),
                               keep("publish", self.flusher.publish_loop, at_once=True),
                               keep("replies", self.flusher.reply_loop, at_once=True)]
        self.supervisor.keep("coordinator", self._coordinate)
        self.supervisor.keep("control", self.control.run)
        self.supervisor.keep("monitor", self._monitor)

    async def stop(self) -> None:
        """Stop reading, flush what was read, hand leases back, close everything."""
        await self.reconciler.stop()
        if self._flusher_tasks:
            enrich, publish, replies = self._flusher_tasks
            await self.supervisor.cancel(enrich)
            for _ in range(int(DRAIN_WAIT_SECONDS * 20)):  # let the publish loop send what is queued
                if self.flusher.idle:
                    break
                await asyncio.sleep(0.05)
            await self.supervisor.cancel(publish)
            await self.supervisor.cancel(replies)
        await self.flusher.drain()
        await self.supervisor.close()
        await self.leases.release_all()
        await self.clients.close()

    # --- loops -----------------------------------------------------------------------------------
    async def _coordinate(self) -> None:
        """Leases every quarter lease, full reload every STREAMER_RECONCILE_SECONDS, and at once
        when woken (control message, refused token)."""
        next_lease = next_reload = 0.0
        while True:
            timeout = max(0.0, min(next_lease, next_reload) - time.monotonic())
            if await wait_event(self.wake.event, timeout):
                await asyncio.sleep(DEBOUNCE_SECONDS)  # let a burst of messages arrive
            now = time.monotonic()
            reload = self.wake.reload or now >= next_reload
            instruments, self.wake.reload, self.wake.instruments = self.wake.instruments, False, False
            self.wake.event.clear()
            if await self._pass(reload, instruments, lease_due=now >= next_lease):
                next_reload = now + self.settings.streamer_reconcile_seconds if reload else next_reload
            else:
                next_reload = now + 1.0  # Postgres trouble: retry soon, keep streaming meanwhile
            if now >= next_lease:
                next_lease = now + self.leases.interval

    async def _pass(self, reload: bool, instruments: bool, lease_due: bool) -> bool:
        """One coordination pass; False when Postgres could not be read (the old plan stays)."""
        for account_id, fp in list(self.tokens.pending.items()) if self.link.up else []:
            # While Redis is down the report (a token-refresh job, a control message) would be
            # lost: it stays pending until Redis is back.
            del self.tokens.pending[account_id]
            account = self.reconciler.accounts.get(account_id)
            await report_rejection(account_id, fp, auto_login=account is not None and account.auto_login,
                                   store=self.reconciler.store, redis=self.clients.redis, names=self.names)
        ok = True
        try:
            if reload:
                await self.reconciler.reload(instruments_changed=instruments)
                self.ingest.set_secrets({a: acc.secret("api_secret") for a, acc in self.reconciler.accounts.items()})
            else:
                self.reconciler.replan()
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            ok = False
            log.warning("could not read accounts/subscriptions; keeping the current plan",
                        extra={"error": type(exc).__name__})
            self.reconciler.replan()
        if lease_due or reload:
            await self.leases.refresh(self.reconciler.accounts)
        self.metrics.accounts_owned.set(len(self.leases.held))
        accounts = self.reconciler.accounts
        await self.refreshes.run([accounts[a] for a in sorted(self.leases.held) if a in accounts], self.tokens)
        await self.reconciler.apply(self.leases.held)
        self.ingest.forget(set(self.reconciler.accounts))
        self.metrics.reconciles.labels("ok" if ok else "failed").inc()
        return ok

    async def _monitor(self) -> None:
        ticks = 0
        while True:
            self._sample()
            self.metrics.buffer_ticks.set(self.buffer.count)
            if ticks % HEARTBEAT_EVERY == 0:
                await self._beat()
            ticks += 1
            await asyncio.sleep(1.0)

    def _sample(self) -> None:
        self.backpressure.sample(self.ingest.received_total, self.publisher.published_total,
                                 self.enricher.rejected_total, self.buffer.count + self.flusher.in_flight)

    async def _beat(self) -> None:
        _, doc = self.health()
        began = self.link.now()
        try:
            await beat(self.clients.redis, self.names, "streamer", self.instance, {
                "accounts": sorted(self.leases.held), "tokens": sum(len(p.tokens) for p in self.reconciler.pools.values()),
                "backpressure": doc["backpressure"]["level"], "status": doc["status"]})
        except (RedisError, OSError) as exc:
            self.link.failed("heartbeat", exc, since=began)
        else:
            self.link.ok("heartbeat", began)

    # --- surface ---------------------------------------------------------------------------------
    def health(self) -> tuple[int, dict]:
        """`streaming` / `idle`, `degraded` (working, but something is wrong: `reason` says what),
        or `down` (503: nothing can stream)."""
        self._sample()
        owned = self.leases.held
        accounts = self.reconciler.describe(owned, self.ingest.last_tick, time.time())
        working = [a for a in accounts.values() if a["owned"] and a["planned_tokens"]]
        streaming = any(a["connected"] for a in working)
        stranded = bool(self.reconciler.wanted) and self.reconciler.plan.placed == 0  # no account can stream
        status = "streaming" if streaming else ("down" if working or stranded else "idle")
        backpressure = self.backpressure.report(self.buffer.fill)
        reasons = self._troubles(backpressure)
        if reasons and status != "down":
            status = "degraded"
        self.metrics.degraded.set(1 if status == "degraded" else 0)
        doc = {
            "status": status, "instance": self.instance, "uptime": round(time.time() - self.started_at, 1),
            "accounts": accounts, "unplaced_tokens": len(self.reconciler.plan.unplaced),
            "redis": {"up": self.link.up, "outages": self.link.outages, "breaker": self.breaker.state,
                      "control_listening": self.control.listening},
            "backpressure": backpressure,
            "tasks": len(self.supervisor), "task_failures": self.supervisor.failures,
            "postbacks": {"unverified_accounts": sorted(self.ingest.unverified)},
        }
        if reasons:
            doc["reason"] = "; ".join(reasons)
        return (503 if status == "down" else 200), doc

    def _troubles(self, backpressure: dict) -> list[str]:
        reasons = []
        redis = self.link.reason()
        if redis:
            reasons.append(redis)
        elif self.breaker.state != "closed":
            reasons.append(f"publishing paused: the Redis breaker is {self.breaker.state.replace('_', '-')}")
        if backpressure["stalled_seconds"] >= self.backpressure.stall:
            reasons.append(f"ticks received but none published for {backpressure['stalled_seconds']:.0f} s")
        return reasons
