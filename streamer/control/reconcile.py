"""Bring the running pools in line with Postgres: accounts × subscriptions → plan → pools.

`reload` reads accounts and demand and recomputes the plan (the instrument table is rebuilt only when the
set of instruments changed or an `instruments` message asked for it); `apply` then moves every
pool of an account this replica leases to its planned token set, diff by diff, and stops pools of
accounts it no longer holds or that have nothing to stream. Unaffected connections are untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import asyncpg

from ticker.infra.kite.ticker_pool import AccountPool
from ticker.infra.kite.ticker_socket import Credentials
from ticker.infra.runtime.logs import register_secret
from ticker.infra.runtime.settings import Settings
from ticker.infra.stores.accounts import AccountStore, KiteAccount, load_accounts
from ticker.streamer.control.demand import demand_fingerprint, load_demand
from ticker.streamer.control.placement import Plan, Slot, Wanted, plan_assignments
from ticker.streamer.control.token_health import TokenHealth, fingerprint
from ticker.streamer.process.stream_metrics import StreamerMetrics
from ticker.streamer.stages.instrument_table import InstrumentTable

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(self, settings: Settings, db: asyncpg.Pool, store: AccountStore | None, token_health: TokenHealth,
                 rebind: Callable[[InstrumentTable], None], metrics: StreamerMetrics,
                 new_pool: Callable[[str, Credentials], AccountPool]) -> None:
        self.settings = settings
        self.db = db
        self.store = store
        self.token_health = token_health
        self.rebind = rebind  # hands a rebuilt instrument table to the pipeline
        self.table = InstrumentTable([])  # the instruments being streamed
        self.metrics = metrics
        self.new_pool = new_pool
        self.accounts: dict[str, KiteAccount] = {}
        self.wanted: list[Wanted] = []
        self.plan = Plan()
        self.pools: dict[str, AccountPool] = {}
        self._demand_key: tuple | None = None  # what the current demand was read under
        self._versions = [0, 0]  # demand, plan: bumped on every change (cheap change detection)
        self._plan_key: tuple | None = None  # what the current plan was computed from
        self._applied_key: tuple | None = None  # what the pools were last moved to

    @property
    def capacity(self) -> int:
        return self.settings.max_ws_connections * self.settings.max_instruments_per_ws

    async def reload(self, *, instruments_changed: bool = False) -> None:
        accounts = await load_accounts(self.store, self.settings)
        for account in accounts:
            register_secret(account.secret("access_token"))
            register_secret(account.secret("api_secret"))
        self.accounts = {a.account_id: a for a in accounts}
        self.token_health.retain(set(self.accounts))
        today = datetime.now(self.settings.tz).date()
        key = await demand_fingerprint(self.db, today)
        if instruments_changed or key != self._demand_key:
            demand = await load_demand(self.db, today, underlyings=self.settings.streamer_underlyings)
            tokens_now = {w.token for w in demand.wanted}
            if instruments_changed or tokens_now != set(self.table.tokens.tolist()):
                self.table = InstrumentTable(demand.instruments, previous=self.table)
                self.rebind(self.table)
            self.wanted = demand.wanted
            self._demand_key = key
            self._versions[0] += 1
        self.replan()

    def replan(self) -> None:
        """Recompute the plan when its inputs changed (demand, accounts, token health)."""
        slots = [Slot(a.account_id, self.capacity, self.token_health.healthy(a)) for a in self.accounts.values()]
        key = (self._versions[0], tuple(slots))
        if key == self._plan_key:
            return
        self._plan_key = key
        self.plan = plan_assignments(self.wanted, slots)
        self._versions[1] += 1
        self.metrics.unplaced.set(len(self.plan.unplaced))
        if self.plan.unplaced:
            log.warning("no account capacity for some instruments", extra={
                "count": len(self.plan.unplaced), "sample": self.plan.unplaced[:10]})

    async def apply(self, owned: set[str]) -> None:
        creds = {a: _fingerprint(acc) for a, acc in self.accounts.items()}
        key = (self._versions[1], frozenset(owned), tuple(sorted(creds.items())))
        if key == self._applied_key:
            return
        self._applied_key = key
        for account_id in [a for a in self.pools if a not in owned or not self.plan.tokens_of(a)]:
            await self.pools.pop(account_id).stop()
        for account_id in sorted(owned):
            tokens = self.plan.tokens_of(account_id)
            account = self.accounts.get(account_id)
            if not tokens or account is None:
                continue
            login = Credentials(account.api_key, account.secret("access_token") or "")
            pool = self.pools.get(account_id)
            if pool is None:
                pool = self.pools[account_id] = self.new_pool(account_id, login)
            else:
                await pool.set_credentials(login)
            await pool.apply(tokens)
        self.metrics.tokens.set(sum(len(p.tokens) for p in self.pools.values()))

    async def stop(self) -> None:
        self._applied_key = None
        for account_id in list(self.pools):
            await self.pools.pop(account_id).stop()

    def describe(self, owned: set[str], last_tick: dict[str, float], now: float) -> dict[str, dict]:
        out = {}
        for account_id, account in sorted(self.accounts.items()):
            pool = self.pools.get(account_id)
            seen = last_tick.get(account_id)
            doc = {"owned": account_id in owned, "token_state": self.token_health.state(account),
                   "login_error": account.login_error,
                   "planned_tokens": len(self.plan.tokens_of(account_id)),
                   "last_tick_age": round(now - seen, 3) if seen else None}
            doc.update(pool.describe() if pool else {"connections": 0, "connected": 0, "tokens": 0})
            out[account_id] = doc
        return out


def _fingerprint(account: KiteAccount) -> tuple[str, str]:
    return account.api_key, fingerprint(account.secret("access_token"))
