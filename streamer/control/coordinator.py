"""The coordinator: one loop that keeps this replica's pools in line with what should stream.

It runs for its leases every quarter lease, for a full reload every STREAMER_RECONCILE_SECONDS,
and at once when woken (a control message, a token Kite refused), after a short pause that lets a
burst of messages arrive. A pass reports refused tokens, reloads accounts and demand (or only
re-plans), renews leases, asks for token refreshes of held accounts and moves the pools to the
plan. When Postgres cannot be read the current plan stays, the streams go on, and the reload is
tried again a second later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import asyncpg
from redis.asyncio import Redis

from ticker.core.contracts import TOKEN_PROBLEM_REASONS, ControlMessage, Names
from ticker.infra.kite.ticker_socket import Credentials
from ticker.infra.runtime.settings import Settings
from ticker.streamer.control.leases import Leases
from ticker.streamer.control.reconcile import Reconciler
from ticker.streamer.control.token_health import TokenHealth, report_rejection
from ticker.streamer.control.token_refresh import RefreshRequests
from ticker.streamer.process.stream_metrics import StreamerMetrics
from ticker.streamer.redis_link import RedisLink
from ticker.streamer.stages.batch import wait_event
from ticker.streamer.stages.decode import Decoder

log = logging.getLogger(__name__)
DEBOUNCE_SECONDS = 0.05
POSTGRES_RETRY_SECONDS = 1.0


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


@dataclass
class Coordinator:
    settings: Settings
    reconciler: Reconciler
    leases: Leases
    token_health: TokenHealth
    refreshes: RefreshRequests
    decoder: Decoder  # told the accounts' api_secrets (postback checks) and which accounts remain
    redis: Redis
    names: Names
    link: RedisLink
    metrics: StreamerMetrics
    wake: Wake = field(default_factory=Wake)

    def refused(self, account_id: str, creds: Credentials) -> None:
        """Kite refused this account's token on the ticker handshake."""
        account = self.reconciler.accounts.get(account_id)
        self.token_health.refused(account_id, creds.access_token, account.token_updated_at if account else None)
        self.wake.request(reload=False)

    def on_control(self, message: ControlMessage | None) -> None:
        """A control message (None: we may have missed some)."""
        if message is not None and message.kind == "tokens" and message.account_id \
                and message.reason not in TOKEN_PROBLEM_REASONS:
            self.token_health.forgive(message.account_id)
        self.wake.request(instruments=message is not None and message.kind == "instruments")

    async def run(self) -> None:
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
                next_reload = now + POSTGRES_RETRY_SECONDS  # keep streaming meanwhile
            if now >= next_lease:
                next_lease = now + self.leases.interval

    async def _pass(self, reload: bool, instruments: bool, lease_due: bool) -> bool:
        """One coordination pass; False when Postgres could not be read (the old plan stays)."""
        await self._report_refusals()
        ok = True
        try:
            if reload:
                await self.reconciler.reload(instruments_changed=instruments)
                self.decoder.set_secrets({a: acc.secret("api_secret") for a, acc in self.reconciler.accounts.items()})
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
        await self.refreshes.run([accounts[a] for a in sorted(self.leases.held) if a in accounts], self.token_health)
        await self.reconciler.apply(self.leases.held)
        self.decoder.forget(set(self.reconciler.accounts))
        self.metrics.reconciles.labels("ok" if ok else "failed").inc()
        return ok

    async def _report_refusals(self) -> None:
        """While Redis is down the report (a token-refresh job, a control message) would be lost:
        it stays pending until Redis is back."""
        for account_id, fp in list(self.token_health.pending.items()) if self.link.up else []:
            del self.token_health.pending[account_id]
            account = self.reconciler.accounts.get(account_id)
            await report_rejection(account_id, fp, auto_login=account is not None and account.auto_login,
                                   store=self.reconciler.store, redis=self.redis, names=self.names)
