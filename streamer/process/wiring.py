"""The streamer process, wired: pools → decode → batch → enrich → render → publish (see
`ticker.streamer.stages`), with the coordinator (leases, reconcile, token rejections; see
`ticker.streamer.control`), the control listener and the monitor (heartbeat, backpressure) as
supervised loops.

Stopping follows SIGTERM's contract: stop reading (close every socket), flush what was read,
hand the leases back, close clients.

Redis may go away at any time: every part that uses it reports to one `RedisLink` (an outage is
logged once, its end once), retries on its own, and the Kite sockets never notice; `/health`
says `degraded` with the reason meanwhile, as it does when ticks come in but none get published.
The tick bus may be a Redis of its own (TICK_REDIS_URL, `ticker.infra.stores.tick_bus`): the
publisher then writes there and reports to a `RedisLink` of its own, shown as `tick_redis`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import aiohttp
import asyncpg
from arq.connections import ArqRedis
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ticker.core.contracts import Names
from ticker.infra.kite.ticker_pool import AccountPool
from ticker.infra.kite.ticker_socket import Credentials, Timing
from ticker.infra.queue.enqueue import create_queue, names_for
from ticker.infra.runtime.heartbeat import beat
from ticker.infra.runtime.settings import Settings
from ticker.infra.stores.accounts import account_store
from ticker.infra.stores.db import create_pool
from ticker.infra.stores.redis import connect
from ticker.infra.stores.tick_bus import close_tick_client, separate, tick_bus_url, tick_client
from ticker.streamer.control.coordinator import Coordinator
from ticker.streamer.control.leases import Leases
from ticker.streamer.control.listener import ControlListener
from ticker.streamer.control.reconcile import Reconciler
from ticker.streamer.control.token_health import TokenHealth
from ticker.streamer.control.token_refresh import RefreshRequests
from ticker.streamer.process.backpressure import Backpressure
from ticker.streamer.process.stream_metrics import StreamerMetrics
from ticker.streamer.process.supervisor import TaskSupervisor
from ticker.streamer.redis_link import RedisLink
from ticker.streamer.stages.batch import BatchWindow, TickBuffer
from ticker.streamer.stages.chain_stream import ChainStage
from ticker.streamer.stages.decode import Decoder
from ticker.streamer.stages.enrich import Enricher
from ticker.streamer.stages.instrument_table import InstrumentTable
from ticker.streamer.stages.pipeline import Pipeline
from ticker.streamer.stages.publish import Publisher
from ticker.streamer.stages.publish_breaker import PublishBreaker
from ticker.streamer.stages.render import BatchRenderer

log = logging.getLogger(__name__)
HEARTBEAT_EVERY = 5  # monitor ticks (seconds)
DRAIN_WAIT_SECONDS = 3.0


@dataclass
class Clients:
    """Everything the streamer holds open; closed in `Streamer.stop`."""

    redis: Redis
    db: asyncpg.Pool
    queue: ArqRedis
    session: aiohttp.ClientSession
    control: Redis  # the control channel's own client: no silent reconnects (see infra.redis)
    ticks: Redis  # the tick bus (infra.stores.tick_bus): `redis` itself unless TICK_REDIS_URL names another

    @classmethod
    async def open(cls, settings: Settings) -> Clients:
        redis_url = settings.url("redis_url")
        db = await create_pool(settings.url("database_url"), min_size=1, max_size=4)
        try:
            queue = await create_queue(settings, retries=0)  # the caller waits out a Redis outage
        except BaseException:
            await db.close()
            raise
        timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10)
        redis = connect(redis_url, retries=1)
        return cls(redis, db, queue, aiohttp.ClientSession(timeout=timeout), connect(redis_url, max_connections=2),
                   tick_client(settings, redis, retries=1))

    async def close(self) -> None:
        await self.session.close()
        await self.queue.aclose()
        await self.control.aclose()
        await close_tick_client(self.ticks, self.redis)
        await self.redis.aclose()
        await self.db.close()


class Streamer:
    def __init__(self, settings: Settings, clients: Clients, instance: str) -> None:
        self.settings = settings
        self.clients = clients
        self.instance = instance
        self.names: Names = names_for(settings)
        self.metrics = StreamerMetrics()
        self.supervisor = TaskSupervisor(on_restart=lambda name: self.metrics.stage_failures.labels(name).inc())
        self.link = RedisLink(on_change=self._on_redis)
        # a tick bus of its own has its own outages; else the publisher tells the one link
        self.tick_link = (RedisLink(on_change=self.metrics.tick_redis_up.set, dependency="tick_redis",
                                    label="tick-bus Redis") if separate(settings) else self.link)
        self.timing = Timing(settings.stall_seconds, settings.reconnect_base_seconds,
                             settings.reconnect_max_seconds, settings.ws_subscribe_batch)
        self._pipeline(settings, clients)
        self._control(settings, clients)
        self.backpressure = Backpressure()
        self.started_at = time.time()
        self._pipeline_tasks: list[asyncio.Task] = []

    # --- wiring ----------------------------------------------------------------------------------
    def _pipeline(self, settings: Settings, clients: Clients) -> None:
        """pools → decode → batch → enrich → render → publish: the stages in the order ticks flow
        through them (the pools, made per account by `_new_pool`, feed `decoder`)."""
        self.buffer = TickBuffer(settings.tick_buffer_max, settings.tick_batch_max_size)
        self.decoder = Decoder(self.buffer, self.metrics)
        self.batches = BatchWindow(self.buffer, settings.tick_batch_window_ms / 1000, settings.tick_batch_adaptive)
        self.enricher = Enricher(
            InstrumentTable([]), model=settings.greeks_model, rate=settings.option_greeks_interest_rate,
            dividend_yield=settings.option_greeks_dividend_yield, bar_interval=settings.bar_interval_seconds,
            metrics=self.metrics)
        self.renderer = BatchRenderer(InstrumentTable([]), model=settings.greeks_model,
                                      bar_interval=settings.bar_interval_seconds, tz=settings.tz,
                                      snapshot_seconds=settings.latest_snapshot_ms / 1000,
                                      sharded=settings.tick_redis_cluster)
        self.breaker = PublishBreaker(settings.redis_breaker_reset_seconds)
        self.publisher = Publisher(clients.ticks, self.names, self.breaker, self.metrics,
                                   batch_max=settings.tick_batch_max_size, timeout=settings.streamer_publish_timeout,
                                   link=self.tick_link, envelope=settings.tick_message_format == "envelope",
                                   history_seconds=settings.tick_history_seconds,
                                   cluster_url=tick_bus_url(settings) if settings.tick_redis_cluster else None)
        self.chains = ChainStage(InstrumentTable([]), settings.chain_interval_ms / 1000, model=settings.greeks_model)
        self.pipeline = Pipeline(self.batches, self.enricher, self.renderer, self.publisher, self.metrics,
                                 self.chains)

    def _control(self, settings: Settings, clients: Clients) -> None:
        """What streams on which account of which replica: demand and accounts from Postgres,
        leases and control messages from Redis, moved into the pools by the coordinator."""
        self.token_health = TokenHealth()
        self.refreshes = RefreshRequests(settings, clients.queue, self.names)
        store = account_store(clients.db, settings)
        self.reconciler = Reconciler(settings, clients.db, store if store.configured else None, self.token_health,
                                     self._rebind, self.metrics, self._new_pool)
        self.leases = Leases(clients.redis, self.names, self.instance, settings.streamer_lease_ms, self.link)
        self.coordinator = Coordinator(settings, self.reconciler, self.leases, self.token_health, self.refreshes,
                                       self.decoder, clients.redis, self.names, self.link, self.metrics)
        self.control = ControlListener(clients.control, self.names, self.metrics, self.coordinator.on_control,
                                       retry_seconds=settings.redis_breaker_reset_seconds, link=self.link)

    def _rebind(self, table: InstrumentTable) -> None:
        """The streamed instruments changed: enrich and render by the new table."""
        self.enricher.rebind(table)
        self.renderer.rebind(table)
        self.chains.rebind(table)

    def _new_pool(self, account_id: str, creds: Credentials) -> AccountPool:
        s = self.settings
        return AccountPool(account_id, creds, ws_root=s.kite_ws_root, max_connections=s.max_ws_connections,
                           per_connection=s.max_instruments_per_ws, session=self.clients.session,
                           sink=self.decoder, metrics=self.metrics, timing=self.timing,
                           supervisor=self.supervisor, on_rejected=self.coordinator.refused)

    def _on_redis(self, up: bool) -> None:
        self.metrics.redis_up.set(1 if up else 0)
        if self.tick_link is self.link:
            self.metrics.tick_redis_up.set(1 if up else 0)
        if not up:
            self.metrics.redis_outages.inc()

    # --- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        keep = self.supervisor.keep  # the pipeline's loops come back at once: a sleep would stall publishing
        self._pipeline_tasks = [keep("enrich", self.pipeline.batch_loop, at_once=True),
                                keep("publish", self.pipeline.outbox.publish_loop, at_once=True),
                                keep("replies", self.pipeline.outbox.reply_loop, at_once=True)]
        self.supervisor.keep("coordinator", self.coordinator.run)
        self.supervisor.keep("control", self.control.run)
        self.supervisor.keep("monitor", self._monitor)

    async def stop(self) -> None:
        """Stop reading, flush what was read, hand leases back, close everything."""
        await self.reconciler.stop()
        if self._pipeline_tasks:
            enrich, publish, replies = self._pipeline_tasks
            await self.supervisor.cancel(enrich)
            for _ in range(int(DRAIN_WAIT_SECONDS * 20)):  # let the publish loop send what is queued
                if self.pipeline.idle:
                    break
                await asyncio.sleep(0.05)
            await self.supervisor.cancel(publish)
            await self.supervisor.cancel(replies)
        await self.pipeline.drain()
        await self.supervisor.close()
        await self.leases.release_all()
        await self.clients.close()

    # --- loops -----------------------------------------------------------------------------------
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
        self.backpressure.sample(self.decoder.received_total, self.publisher.published_total,
                                 self.enricher.rejected_total, self.buffer.count + self.pipeline.in_flight)

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
        accounts = self.reconciler.describe(owned, self.decoder.last_tick, time.time())
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
            **self._tick_bus(),
            "backpressure": backpressure,
            "tasks": len(self.supervisor), "task_failures": self.supervisor.failures,
            "postbacks": {"unverified_accounts": sorted(self.decoder.unverified)},
        }
        if reasons:
            doc["reason"] = "; ".join(reasons)
        return (503 if status == "down" else 200), doc

    def _tick_bus(self) -> dict:
        """The tick bus's Redis, when it is not REDIS_URL's (the breaker is the publisher's, above)."""
        if self.tick_link is self.link:
            return {}
        return {"tick_redis": {"up": self.tick_link.up, "outages": self.tick_link.outages}}

    def _troubles(self, backpressure: dict) -> list[str]:
        links = [self.link] if self.tick_link is self.link else [self.link, self.tick_link]
        reasons = [reason for reason in (link.reason() for link in links) if reason]
        if self.tick_link.up and self.breaker.state != "closed":  # the publisher's breaker, on the tick bus
            reasons.append(f"publishing paused: the Redis breaker is {self.breaker.state.replace('_', '-')}")
        if backpressure["stalled_seconds"] >= self.backpressure.stall:
            reasons.append(f"ticks received but none published for {backpressure['stalled_seconds']:.0f} s")
        return reasons
