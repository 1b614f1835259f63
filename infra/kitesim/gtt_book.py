"""GTT (good till triggered) triggers: the book behind `/gtt/triggers`, fired by the stand-in's own
prices.

Every engine step, each active trigger's last traded price (the model price that also drives ticks,
quotes and order matching) is compared with its trigger values. A single trigger fires when the
price reaches its value from the side the last price was on at placement; a two-leg (OCO) trigger
fires its stop-loss leg at or below the lower value and its target leg at or above the upper one.
Firing places that leg's order through the normal order book (so it shows in /orders, fills and
sends postbacks), fills the leg's `result` as Kite does and leaves the GTT `triggered`; the other
leg's result stays null. Triggers only fire while the market is open.

Statuses: active -> triggered | deleted | expired (one year after placement). Kite also reports
disabled, cancelled and rejected; the stand-in has no cause for them. At most 250 active GTTs per
account; a GTT that is not active can be neither modified nor deleted.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field

import numpy as np
import orjson

from ticker.infra.kitesim.envelopes import KiteError, input_error, order_error
from ticker.infra.kitesim.gtt_rules import GttLeg, GttSpec
from ticker.infra.kitesim.order_book import OrderBook, kite_time
from ticker.infra.kitesim.order_rules import parse_place

MAX_ACTIVE = 250
MAX_KEPT = 2000  # per account, active or not; the oldest finished ones are forgotten beyond it
VALIDITY_SECONDS = 365 * 86_400
FIRST_ID = 100_001


@dataclass
class Trigger:
    id: int
    api_key: str
    user_id: str
    spec: GttSpec
    instrument_token: int
    created_at: float
    updated_at: float
    status: str = "active"
    results: list[dict | None] = field(default_factory=list)

    @property
    def expires_at(self) -> float:
        return self.created_at + VALIDITY_SECONDS

    def as_kite(self) -> dict:
        s = self.spec
        orders = [{"exchange": s.exchange, "tradingsymbol": s.tradingsymbol, "product": leg.product,
                   "order_type": leg.order_type, "transaction_type": leg.transaction_type,
                   "quantity": leg.quantity, "price": leg.price, "result": result}
                  for leg, result in zip(s.legs, self.results, strict=True)]
        return {
            "id": self.id, "user_id": self.user_id, "parent_trigger": None, "type": s.type,
            "created_at": kite_time(self.created_at), "updated_at": kite_time(self.updated_at),
            "expires_at": kite_time(self.expires_at), "status": self.status,
            "condition": {"exchange": s.exchange, "last_price": s.last_price,
                          "tradingsymbol": s.tradingsymbol, "trigger_values": list(s.trigger_values),
                          "instrument_token": self.instrument_token},
            "orders": orders, "meta": {} if self.status == "active" else None,
        }


def fired_leg(spec: GttSpec, ltp: float) -> int | None:
    """Which leg the price `ltp` fires, if any."""
    if spec.type == "two-leg":
        low, high = spec.trigger_values
        return 0 if ltp <= low else 1 if ltp >= high else None
    value = spec.trigger_values[0]
    hit = ltp >= value if value > spec.last_price else ltp <= value
    return 0 if hit else None


class GttBook:
    def __init__(self, orders: OrderBook) -> None:
        self.orders = orders
        self.market = orders.market
        self.gtts: dict[int, Trigger] = {}
        self.active: dict[int, Trigger] = {}
        self.by_account: dict[str, list[int]] = {}
        self._next = FIRST_ID

    # --- commands --------------------------------------------------------------------------------
    def place(self, api_key: str, user_id: str, spec: GttSpec, now: float | None = None) -> Trigger:
        now = time.time() if now is None else now
        mine = self.by_account.setdefault(api_key, [])
        if sum(1 for i in mine if i in self.active) >= MAX_ACTIVE:
            raise order_error(f"Maximum number of active GTTs ({MAX_ACTIVE}) reached. Delete some first.")
        gtt = Trigger(self._next, api_key, user_id, spec, int(self.market.uni.token[spec.row]), now, now,
                  results=[None] * len(spec.legs))
        self._next += 1
        self.gtts[gtt.id] = self.active[gtt.id] = gtt
        mine.append(gtt.id)
        self._forget_old(mine)
        return gtt

    def get(self, api_key: str, gtt_id: str | int) -> Trigger:
        try:
            gtt = self.gtts.get(int(gtt_id))
        except ValueError:
            gtt = None
        if gtt is None or gtt.api_key != api_key:
            raise KiteError(404, "InputException", "Couldn't find that GTT `trigger_id`.")
        return gtt

    def modify(self, api_key: str, gtt_id: str, spec: GttSpec, now: float | None = None) -> Trigger:
        gtt = self._active(api_key, gtt_id, "modified")
        if spec.row != gtt.spec.row:
            raise input_error("A GTT's instrument cannot be changed: delete it and place a new one.")
        gtt.spec, gtt.results = spec, [None] * len(spec.legs)
        gtt.updated_at = time.time() if now is None else now
        return gtt

    def delete(self, api_key: str, gtt_id: str, now: float | None = None) -> Trigger:
        gtt = self._active(api_key, gtt_id, "deleted")
        self._finish(gtt, "deleted", time.time() if now is None else now)
        return gtt

    def _active(self, api_key: str, gtt_id: str, verb: str) -> Trigger:
        gtt = self.get(api_key, gtt_id)
        if gtt.status != "active":
            raise input_error(f"GTT cannot be {verb} as it is {gtt.status}.")
        return gtt

    def _finish(self, gtt: Trigger, status: str, now: float) -> None:
        gtt.status, gtt.updated_at = status, now
        self.active.pop(gtt.id, None)

    def _forget_old(self, mine: list[int]) -> None:
        while len(mine) > MAX_KEPT:
            old = next((i for i in mine if i not in self.active), None)
            if old is None:
                return
            mine.remove(old)
            self.gtts.pop(old, None)

    # --- queries ---------------------------------------------------------------------------------
    def of_account(self, api_key: str) -> list[dict]:
        """Newest first, as Kite lists them."""
        return [self.gtts[i].as_kite() for i in reversed(self.by_account.get(api_key, []))]

    # --- triggering ------------------------------------------------------------------------------
    def check(self, now: float) -> int:
        """Expire old triggers and fire every active one the current price reaches; returns fired."""
        for gtt in list(self.active.values()):
            if now >= gtt.expires_at:
                self._finish(gtt, "expired", now)
        live = list(self.active.values())
        if not live or not self.market.is_open(now):
            return 0
        prices = self.market.price_rows(np.array([g.spec.row for g in live]), now)
        fired = 0
        for gtt, ltp in zip(live, prices, strict=True):
            leg = fired_leg(gtt.spec, float(ltp))
            if leg is not None:
                self._fire(gtt, leg, float(ltp), now)
                fired += 1
        return fired

    def _fire(self, gtt: Trigger, index: int, ltp: float, now: float) -> None:
        self._finish(gtt, "triggered", now)
        leg = gtt.spec.legs[index]
        outcome = {"status": "success", "order_id": "", "rejection_reason": ""}
        try:
            order = self.orders.place(gtt.api_key, gtt.user_id, parse_place("regular", self._form(gtt, leg)), now)
            outcome["order_id"] = order.order_id
        except KiteError as err:
            outcome.update(status="failed", rejection_reason=err.message)
        s = gtt.spec
        gtt.results[index] = {
            "account_id": gtt.user_id, "exchange": s.exchange, "tradingsymbol": s.tradingsymbol,
            "validity": "DAY", "product": leg.product, "order_type": leg.order_type,
            "transaction_type": leg.transaction_type, "quantity": leg.quantity, "price": leg.price,
            "meta": orjson.dumps({"app_id": _app_id(gtt.api_key), "gtt": gtt.id}).decode(),
            "timestamp": kite_time(now), "triggered_at": ltp, "order_result": outcome,
        }

    @staticmethod
    def _form(gtt: Trigger, leg: GttLeg) -> dict[str, str]:
        """The order a fired leg places, as a place-order form. A MARKET leg carries automatic
        market protection (-1), which Kite requires of API MARKET orders."""
        form = {"exchange": gtt.spec.exchange, "tradingsymbol": gtt.spec.tradingsymbol,
                "transaction_type": leg.transaction_type, "quantity": str(leg.quantity),
                "product": leg.product, "order_type": leg.order_type, "validity": "DAY"}
        if leg.order_type == "LIMIT":
            form["price"] = repr(leg.price)
        else:
            form["market_protection"] = "-1"
        return form


def _app_id(api_key: str) -> int:
    """A stable number standing for the Kite Connect app the GTT came from."""
    return zlib.crc32(api_key.encode()) % 100_000
