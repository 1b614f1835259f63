"""`SimState`: one stand-in's books wired together, and the controls tests reach in-process
(the admin API in admin.py is a thin JSON skin over these same methods)."""

from __future__ import annotations

import functools
import time
from datetime import date

from aiohttp import web

from ticker.infra.kitesim.api_limits import LimitSettings, RateLimits
from ticker.infra.kitesim.candles import History
from ticker.infra.kitesim.config import SimAccount, SimConfig
from ticker.infra.kitesim.counters import Counters
from ticker.infra.kitesim.engine import Engine
from ticker.infra.kitesim.envelopes import input_error
from ticker.infra.kitesim.faults import Faults, RouteFault
from ticker.infra.kitesim.gtt_book import GttBook
from ticker.infra.kitesim.ipallow import OrderIpAllowlist
from ticker.infra.kitesim.margin_calc import MarginModel
from ticker.infra.kitesim.market import Market
from ticker.infra.kitesim.mf_book import MfBook
from ticker.infra.kitesim.order_book import OrderBook
from ticker.infra.kitesim.postback_sender import Postbacks, signed
from ticker.infra.kitesim.pricemove import move_price
from ticker.infra.kitesim.pricepath import PricePath, previous_session_day
from ticker.infra.kitesim.sessions import AuthBook
from ticker.infra.kitesim.universe import Universe, build_universe, profile_underlyings, today_ist
from ticker.infra.kitesim.ws import TickerConn, TickerHub


@functools.lru_cache(maxsize=8)
def cached_universe(profile: str, seed: int, today: date) -> Universe:
    """The day's universe (immutable, so shared by every stand-in with the same seed that day):
    strikes centred on each underlying's previous close, so they hold still through the day."""
    path = PricePath(seed)
    underlyings = profile_underlyings(profile)  # type: ignore[arg-type]
    prev = previous_session_day(today)
    centers = {u.name: float(path.day(u.name, u.spot, u.vol, prev)[-1]) for u in underlyings}
    return build_universe(profile, today, centers)  # type: ignore[arg-type]


SIM_KEY: web.AppKey[SimState] = web.AppKey("kitesim", object)  # type: ignore[arg-type]


ACCOUNT_KEY: web.RequestKey[SimAccount] = web.RequestKey("kitesim_account", SimAccount)


def sim_of(request: web.Request) -> SimState:
    return request.app[SIM_KEY]


class SimState:
    def __init__(self, config: SimConfig, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.config = config
        self.accounts: list[SimAccount] = config.resolve_accounts()
        self.auth = AuthBook(self.accounts)
        self.path = PricePath(config.seed)
        self.universe = cached_universe(config.profile, config.seed, today_ist(now))
        self.market = Market(self.universe, self.path, config.seed, config.rate, config.market_hours, now)
        self.counters = Counters()
        self.hub = TickerHub(self.auth, self.universe, self.counters, config.max_connections_per_key,
                             config.max_tokens_per_connection)
        self.postbacks = Postbacks()
        self.orders = OrderBook(self.market, self._order_update)
        self.history = History(self.universe, self.path, config.seed, config.rate)
        self.faults = Faults(config.seed, config.timeout_seconds, config.latency_ms, config.error_rate)
        self.limits = RateLimits(config.limit_settings())
        self.engine = Engine(self.market, self.orders, self.hub, self.counters, config.tick_interval_ms,
                             config.tick_rate, config.ticks_per_second, config.heartbeat_seconds,
                             config.tick_phases)
        self.engine.drop_every = config.drop_every_seconds
        self.gtts = GttBook(self.orders)
        self.engine.after_match.append(self.gtts.check)
        self.margin_model = MarginModel(self.market, self.orders)
        self.order_ips = OrderIpAllowlist(config.order_ip_allowlist)
        self.mf = MfBook(config.seed, today_ist(now))
        self._csv: dict[str | None, str] = {}

    def _order_update(self, api_key: str, update: dict) -> None:
        """Every order status change: signed, to the account's ticker connections and postback URL."""
        account = self.auth.accounts[api_key]
        update = signed(account, update)
        self.hub.notify(api_key, update)
        self.postbacks.offer(account, update)

    def set_postback_url(self, url: str | None, api_key: str | None = None) -> int:
        """Point the postback URL of one account (or of every account) at `url` (None: no HTTP
        postbacks), as changing it in Kite's developer console does; returns the accounts changed."""
        keys = [self.account(api_key).api_key] if api_key else [a.api_key for a in self.accounts]
        for key in keys:
            changed = self.auth.accounts[key].model_copy(update={"postback_url": url})
            self.auth.accounts[key] = self.auth.by_user[changed.user_id] = changed
            self.accounts = [changed if a.api_key == key else a for a in self.accounts]
        return len(keys)

    def send_postback(self, update: dict, api_key: str | None = None, checksum: str | None = None,
                      ws: bool = True, http: bool = True) -> dict:
        """An order update of our choosing, signed as Kite signs it unless `checksum` overrides it (a
        forged or damaged postback), sent the way real ones go: to the account's ticker connections
        and/or its postback URL."""
        account = self.account(api_key)
        doc = signed(account, update)
        if checksum is not None:
            doc["checksum"] = checksum
        sent_ws = 0
        if ws:
            sent_ws = len([c for c in self.hub.of_key(account.api_key) if not c.stalled])
            self.hub.notify(account.api_key, doc)
        queued = False
        if http:
            before = self.postbacks.describe()["queued"] + self.postbacks.dropped
            self.postbacks.offer(account, doc)
            queued = self.postbacks.describe()["queued"] + self.postbacks.dropped > before
        return {"update": doc, "ws_connections": sent_ws, "http_queued": queued}

    # --- data ------------------------------------------------------------------------------------
    def instruments_csv(self, exchange: str | None) -> str:
        """Kite's dump (cached: the universe is fixed for the life of the process)."""
        if exchange not in self._csv:
            if exchange is not None and exchange not in ("NSE", "NFO"):
                return self.universe.csv("__none__")
            self._csv[exchange] = self.universe.csv(exchange, self.market.prev_close)
        return self._csv[exchange]

    def margins(self, api_key: str) -> dict:
        used = max(0.0, self.orders.premium_used(api_key))
        cash = 10_000_000.0

        def segment(net: float, used_: float) -> dict:
            return {"enabled": True, "net": net - used_,
                    "available": {"adhoc_margin": 0, "cash": net, "opening_balance": net,
                                  "live_balance": net - used_, "collateral": 0, "intraday_payin": 0},
                    "utilised": {"debits": used_, "exposure": 0, "m2m_realised": 0, "m2m_unrealised": 0,
                                 "option_premium": used_, "payout": 0, "span": 0, "holding_sales": 0,
                                 "turnover": 0, "liquid_collateral": 0, "stock_collateral": 0,
                                 "delivery": 0}}

        return {"equity": segment(cash, used), "commodity": segment(0.0, 0.0)}

    def account(self, api_key: str | None = None) -> SimAccount:
        if api_key is None:
            return self.accounts[0]
        if api_key not in self.auth.accounts:
            raise input_error(f"unknown api_key {api_key!r}")
        return self.auth.accounts[api_key]

    # --- controls --------------------------------------------------------------------------------
    def add_fault(self, route: str = "*", kind: str = "500", rate: float = 1.0, times: int | None = None,
                  delay_ms: float | None = None) -> RouteFault:
        rule = RouteFault(route=route, kind=kind, rate=rate, times=times, delay_ms=delay_ms)
        self.faults.add(rule)
        return rule

    def set_latency(self, latency_ms: float | None = None, error_rate: float | None = None) -> None:
        if latency_ms is not None:
            self.faults.latency_ms = max(0.0, latency_ms)
        if error_rate is not None:
            self.faults.error_rate = min(1.0, max(0.0, error_rate))

    def connections(self, api_key: str | None = None) -> list[TickerConn]:
        return [c for c in self.hub.conns.values() if api_key is None or c.api_key == api_key]

    def connections_per_key(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for conn in self.hub.conns.values():
            out[conn.api_key] = out.get(conn.api_key, 0) + 1
        return out

    def drop(self, connection_id: int | None = None, api_key: str | None = None) -> int:
        return self.hub.drop(connection_id, api_key)

    def drop_every(self, seconds: float | None) -> None:
        self.engine.drop_every = seconds if seconds and seconds > 0 else None

    def stall(self, connection_id: int | None = None, api_key: str | None = None,
              stalled: bool = True) -> int:
        targets = [c for c in self.connections(api_key) if connection_id is None or c.id == connection_id]
        for conn in targets:
            conn.stall(stalled)
        return len(targets)

    async def inject(self, frame: bytes, times: int = 1, interval_ms: float = 0.0) -> dict:
        """Send these exact bytes as binary frames on every open ticker connection (see ws.py)."""
        return await self.hub.inject(frame, times, interval_ms)

    def expire_tokens(self, api_key: str | None = None, drop_connections: bool = True) -> int:
        """Invalidate access tokens (one api_key or all); open sockets are dropped by default, so
        the reconnect meets the 403 a real expiry produces."""
        count = self.auth.expire(api_key)
        if drop_connections:
            self.hub.drop(api_key=api_key)
        return count

    def refuse_handshakes(self, api_key: str | None = None, times: int = 1, drop_connections: bool = True) -> int:
        """Refuse the next `times` ticker handshakes (of one api_key or of each) with a 403 although the
        token is good, as Kite's ticker now and then does; open sockets are dropped by default so the
        reconnect meets it. Returns how many api_keys are affected."""
        keys = [self.account(api_key).api_key] if api_key else [a.api_key for a in self.accounts]
        for key in keys:
            self.hub.refusals[key] = times
            if drop_connections:
                self.hub.drop(api_key=key)
        return len(keys)

    def set_ticks(self, **kwargs: object) -> None:
        self.engine.set_rates(**kwargs)  # type: ignore[arg-type]

    def set_price(self, row: int, last_price: float, now: float | None = None) -> float:
        """Move one instrument to `last_price` (its underlying's spot moves; see pricemove.py)."""
        return move_price(self.market, row, last_price, time.time() if now is None else now)

    def set_order_rate_limit(self, per_second: int) -> None:
        self.set_limits(orders_per_second=per_second)

    def set_limits(self, **changes: int | bool) -> LimitSettings:
        """Change some of Kite's rate limits (LimitSettings fields); every window starts empty."""
        updated = LimitSettings(**{**self.limits.settings.__dict__, **changes})
        self.limits.configure(updated)
        return updated

    def orders_with_tag(self, tag: str) -> list[dict]:
        return [o.as_kite() for o in self.orders.orders.values() if o.req.tag == tag]

    def reset(self) -> None:
        """Counters, faults, tick rates, stalls and the rate limits back to the configuration."""
        c = self.config
        self.counters.reset()
        self.faults.reset()
        self.faults.latency_ms, self.faults.error_rate = c.latency_ms, c.error_rate
        self.engine.set_rates(interval_ms=c.tick_interval_ms, clear=True, phases=c.tick_phases)
        self.engine.set_rates(tick_rate=c.tick_rate, ticks_per_second=c.ticks_per_second)
        self.engine.drop_every = c.drop_every_seconds
        self.limits.configure(c.limit_settings())
        self.order_ips = OrderIpAllowlist(c.order_ip_allowlist)
        self.hub.refusals.clear()
        for conn in self.hub.conns.values():
            conn.stall(False)

    def describe(self) -> dict:
        return {
            "config": self.config.model_dump(mode="json", exclude={"accounts"}),
            "instruments": len(self.universe),
            "accounts": [{"api_key": a.api_key, "user_id": a.user_id,
                          "live_tokens": len(self.auth.live_tokens(a.api_key))} for a in self.accounts],
            "connections": [c.describe() for c in self.hub.conns.values()],
            "connections_per_api_key": self.connections_per_key(),
            "faults": self.faults.describe(),
            "ticks": self.engine.describe(),
            "order_rate_limit": self.limits.settings.orders_per_second,
            "rate_limits": self.limits.describe(),
            "postbacks": self.postbacks.describe(),
            "order_ip_allowlist": self.order_ips.describe(),
            "spots": {u.name: float(s) for u, s in zip(self.universe.underlyings, self.market.spots, strict=True)},
        }
