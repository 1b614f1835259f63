"""Mutual funds: the funds the stand-in offers, and the book behind `/mf/orders`, `/mf/sips` and
`/mf/holdings`.

Kite's MF orders do not fill on a price: a purchase is allotted units at the fund's next NAV, a
redemption is paid out at it. Here the NAV moves only when it is published (`publish_nav`, the admin
API's `POST /_sim/mf/nav`), so tests decide when orders complete: every OPEN order placed before a
publication is COMPLETE at it (units = amount / NAV for a purchase) and lands in the holdings with a
folio. A SIP places its `initial_amount` (if any) as an order at once, and an instalment order each
time a published NAV date reaches its `next_instalment` while it is ACTIVE.

Kite's rules, from its MF instruments: a purchase needs `purchase_allowed`, an amount of at least
`minimum_purchase_amount` (`minimum_additional_purchase_amount` when the account holds the fund) and a
multiple of `purchase_amount_multiplier`; a redemption needs `redemption_allowed`, a quantity of at
least `minimum_redemption_quantity`, a multiple of `redemption_quantity_multiplier` and no more than
the units held. SIPs: frequency weekly, monthly or quarterly; `instalment_day` 1-28 for monthly ones;
`instalments` -1 (until cancelled) or 1-1200; the instalment amount follows the additional-purchase
rules. A SIP is modified to ACTIVE or PAUSED, cancelled to CANCELLED.
"""

from __future__ import annotations

import calendar
import time
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import date, timedelta

from ticker.infra.kitesim.envelopes import KiteError, input_error
from ticker.infra.kitesim.order_book import kite_time

FREQUENCIES = ("weekly", "monthly", "quarterly")
SIP_STATUSES = ("ACTIVE", "PAUSED")
MAX_INSTALMENTS = 1200
EPS = 1e-6


@dataclass(frozen=True)
class Fund:
    tradingsymbol: str  # the ISIN
    amc: str
    name: str
    purchase_allowed: bool
    redemption_allowed: bool
    minimum_purchase_amount: float
    purchase_amount_multiplier: float
    minimum_additional_purchase_amount: float
    minimum_redemption_quantity: float
    redemption_quantity_multiplier: float
    dividend_type: str
    scheme_type: str
    plan: str
    settlement_type: str
    nav: float  # the NAV on the first day


FUNDS: tuple[Fund, ...] = (
    Fund("INF000S01013", "SimAMC_MF", "Sim Bluechip Fund - Direct Plan - Growth", True, True, 500.0, 1.0, 100.0,
         0.001, 0.001, "growth", "equity", "direct", "T2", 54.321),
    Fund("INF000S01021", "SimAMC_MF", "Sim Liquid Fund - Direct Plan - Growth", True, True, 1000.0, 1.0, 1000.0,
         0.001, 0.001, "growth", "liquid", "direct", "T1", 2418.7654),
    Fund("INF000S01039", "SimAMC_MF", "Sim Tax Saver (ELSS) - Direct Plan - Growth", True, False, 500.0, 500.0, 500.0,
         0.001, 0.001, "growth", "elss", "direct", "T3", 97.81),
    Fund("INF000S01047", "SimAMC_MF", "Sim Corporate Bond Fund - Regular Plan - IDCW Payout", True, True, 5000.0,
         100.0, 1000.0, 1.0, 0.001, "payout", "debt", "regular", "T2", 10.4502),
    Fund("INF000S01054", "SimAMC_MF", "Sim Closed Infrastructure Fund - Direct Plan - Growth", False, True, 5000.0,
         1.0, 1000.0, 0.001, 0.001, "growth", "equity", "direct", "T3", 31.075),
    Fund("INF000T01012", "TestAMC_MF", "Test Index Nifty 50 Fund - Direct Plan - Growth", True, True, 100.0, 1.0,
         100.0, 0.001, 0.001, "growth", "index", "direct", "T2", 187.4423),
)
CSV_HEADER = ("tradingsymbol,amc,name,purchase_allowed,redemption_allowed,minimum_purchase_amount,"
              "purchase_amount_multiplier,minimum_additional_purchase_amount,minimum_redemption_quantity,"
              "redemption_quantity_multiplier,dividend_type,scheme_type,plan,settlement_type,last_price,"
              "last_price_date")


@dataclass
class SimMfOrder:
    order_id: str
    api_key: str
    user_id: str
    fund: Fund
    transaction_type: str
    amount: float
    quantity: float
    placed_at: float
    tag: str | None = None
    variety: str = "regular"
    purchase_type: str | None = None
    status: str = "OPEN"
    status_message: str | None = None
    average_price: float = 0.0
    folio: str | None = None
    settled_on: date | None = None


@dataclass
class Sip:
    sip_id: str
    api_key: str
    fund: Fund
    frequency: str
    instalment_day: int
    instalments: int
    amount: float
    created_at: float
    next_instalment: date
    tag: str | None = None
    status: str = "ACTIVE"
    completed: int = 0
    last_instalment: float | None = None
    order_ids: list[str] = field(default_factory=list)


@dataclass
class SimMfHolding:
    folio: str
    quantity: float = 0.0
    cost: float = 0.0


def _multiple(value: float, step: float) -> bool:
    if step <= 0:
        return True
    ratio = value / step
    return abs(ratio - round(ratio)) <= EPS * max(1.0, abs(ratio))


def _number(form: dict[str, str], name: str, required: bool) -> float | None:
    raw = (form.get(name) or "").strip()
    if not raw:
        if required:
            raise input_error(f"Missing or empty field `{name}`.")
        return None
    try:
        value = float(raw)
    except ValueError:
        raise input_error(f"Invalid `{name}`: must be a number.") from None
    if not value > 0 or value != value or value == float("inf"):
        raise input_error(f"Invalid `{name}`: must be greater than 0.")
    return value


def _whole(form: dict[str, str], name: str) -> int | None:
    raw = (form.get(name) or "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise input_error(f"Invalid `{name}`: must be a whole number.") from None


def _add_months(day: date, months: int, on: int) -> date:
    month = day.month - 1 + months
    year, month = day.year + month // 12, month % 12 + 1
    return date(year, month, min(on, calendar.monthrange(year, month)[1]))


def first_instalment(frequency: str, instalment_day: int, today: date) -> date:
    """The first instalment date after `today`."""
    if frequency == "weekly":
        return today + timedelta(days=7)
    step = 1 if frequency == "monthly" else 3
    day = instalment_day or today.day
    this_month = _add_months(today, 0, min(day, 28))
    return this_month if this_month > today and step == 1 else _add_months(today, step, min(day, 28))


def next_after(sip: Sip) -> date:
    if sip.frequency == "weekly":
        return sip.next_instalment + timedelta(days=7)
    return _add_months(sip.next_instalment, 1 if sip.frequency == "monthly" else 3,
                       sip.instalment_day or sip.next_instalment.day)


class MfBook:
    def __init__(self, seed: int, today: date) -> None:
        self.seed = seed
        self.funds = {f.tradingsymbol: f for f in FUNDS}
        self.navs = {f.tradingsymbol: f.nav for f in FUNDS}
        self.nav_date = today - timedelta(days=1)  # the NAV in force is yesterday's until one is published
        self.orders: dict[str, SimMfOrder] = {}
        self.sips: dict[str, Sip] = {}
        self.holdings: dict[tuple[str, str], SimMfHolding] = {}
        self._sip_seq = 0

    # --- instruments -----------------------------------------------------------------------------
    def instruments_csv(self) -> str:
        rows = [CSV_HEADER]
        for f in FUNDS:
            rows.append(",".join([
                f.tradingsymbol, f.amc, f'"{f.name}"', str(int(f.purchase_allowed)), str(int(f.redemption_allowed)),
                repr(f.minimum_purchase_amount), repr(f.purchase_amount_multiplier),
                repr(f.minimum_additional_purchase_amount), repr(f.minimum_redemption_quantity),
                repr(f.redemption_quantity_multiplier), f.dividend_type, f.scheme_type, f.plan,
                f.settlement_type, repr(self.navs[f.tradingsymbol]), self.nav_date.isoformat()]))
        return "\n".join(rows) + "\n"

    def fund(self, tradingsymbol: str) -> Fund:
        found = self.funds.get(tradingsymbol.strip())
        if found is None:
            raise input_error("Invalid `tradingsymbol`: no such mutual fund.")
        return found

    # --- orders ----------------------------------------------------------------------------------
    def place(self, api_key: str, user_id: str, form: dict[str, str], now: float | None = None) -> SimMfOrder:
        fund = self.fund(form.get("tradingsymbol") or "")
        side = (form.get("transaction_type") or "").strip()
        if side not in ("BUY", "SELL"):
            raise input_error("Invalid `transaction_type`. Allowed: BUY, SELL.")
        tag = _tag(form)
        if side == "BUY":
            amount = _number(form, "amount", True) or 0.0
            purchase_type = self._check_purchase(api_key, fund, amount)
            return self._new_order(api_key, user_id, fund, "BUY", amount, 0.0, now, tag,
                                   purchase_type=purchase_type)
        quantity = _number(form, "quantity", True) or 0.0
        self._check_redemption(api_key, fund, quantity)
        return self._new_order(api_key, user_id, fund, "SELL", 0.0, quantity, now, tag)

    def _check_purchase(self, api_key: str, fund: Fund, amount: float, what: str = "amount") -> str:
        """FRESH or ADDITIONAL, once the amount passes the fund's purchase rules."""
        if not fund.purchase_allowed:
            raise input_error(f"Purchases are not allowed in {fund.name}.")
        held = (api_key, fund.tradingsymbol) in self.holdings
        minimum = fund.minimum_additional_purchase_amount if held else fund.minimum_purchase_amount
        if amount + EPS < minimum:
            raise input_error(f"Invalid `{what}`: the minimum {'additional ' if held else ''}purchase amount for "
                              f"this fund is {minimum:g}.")
        if not _multiple(amount, fund.purchase_amount_multiplier):
            raise input_error(f"Invalid `{what}`: must be a multiple of {fund.purchase_amount_multiplier:g}.")
        return "ADDITIONAL" if held else "FRESH"

    def _check_redemption(self, api_key: str, fund: Fund, quantity: float) -> None:
        if not fund.redemption_allowed:
            raise input_error(f"Redemptions are not allowed in {fund.name}.")
        if quantity + EPS < fund.minimum_redemption_quantity:
            raise input_error(f"Invalid `quantity`: the minimum redemption quantity for this fund is "
                              f"{fund.minimum_redemption_quantity:g}.")
        if not _multiple(quantity, fund.redemption_quantity_multiplier):
            raise input_error(f"Invalid `quantity`: must be a multiple of {fund.redemption_quantity_multiplier:g}.")
        holding = self.holdings.get((api_key, fund.tradingsymbol))
        pending = sum(o.quantity for o in self.orders.values()
                      if o.api_key == api_key and o.fund is fund and o.transaction_type == "SELL" and o.status == "OPEN")
        free = (holding.quantity if holding else 0.0) - pending
        if quantity > free + EPS:
            raise input_error(f"Insufficient units: {max(free, 0.0):.3f} of {fund.name} can be redeemed.")

    def _new_order(self, api_key: str, user_id: str, fund: Fund, side: str, amount: float, quantity: float,
                   now: float | None, tag: str | None, purchase_type: str | None = None,
                   variety: str = "regular") -> SimMfOrder:
        order = SimMfOrder(str(uuid.uuid4()), api_key, user_id, fund, side, amount, quantity,
                        time.time() if now is None else now, tag, variety, purchase_type)
        self.orders[order.order_id] = order
        return order

    def get(self, api_key: str, order_id: str) -> SimMfOrder:
        order = self.orders.get(order_id)
        if order is None or order.api_key != api_key:
            raise KiteError(404, "InputException", "Invalid `order_id`: no such order.")
        return order

    def cancel(self, api_key: str, order_id: str) -> SimMfOrder:
        order = self.get(api_key, order_id)
        if order.status != "OPEN":
            raise input_error(f"Order cannot be cancelled as it is {order.status}.")
        order.status, order.status_message = "CANCELLED", "Cancelled by the user."
        return order

    def orders_of(self, api_key: str) -> list[dict]:
        """Newest first."""
        mine = [o for o in self.orders.values() if o.api_key == api_key]
        return [self.order_json(o) for o in sorted(mine, key=lambda o: o.placed_at, reverse=True)]

    def order_json(self, o: SimMfOrder) -> dict:
        done = o.status == "COMPLETE"
        return {
            "order_id": o.order_id, "exchange_order_id": o.order_id.replace("-", "")[:16] if done else None,
            "tradingsymbol": o.fund.tradingsymbol, "fund": o.fund.name, "status": o.status,
            "status_message": o.status_message, "folio": o.folio, "transaction_type": o.transaction_type,
            "variety": o.variety, "purchase_type": o.purchase_type, "quantity": round(o.quantity, 3),
            "amount": round(o.amount, 2), "price": 0.0, "average_price": o.average_price,
            "last_price": self.navs[o.fund.tradingsymbol], "last_price_date": self.nav_date.isoformat(),
            "placed_by": o.user_id, "tag": o.tag, "order_timestamp": kite_time(o.placed_at),
            "exchange_timestamp": o.settled_on.isoformat() if o.settled_on else None,
            "settlement_id": None,
        }

    # --- SIPs ------------------------------------------------------------------------------------
    def place_sip(self, api_key: str, user_id: str, form: dict[str, str], now: float | None = None) -> Sip:
        now = time.time() if now is None else now
        fund = self.fund(form.get("tradingsymbol") or "")
        amount = _number(form, "amount", True) or 0.0
        frequency, day = self._schedule(form, None)
        instalments = _whole(form, "instalments")
        if instalments is None:
            raise input_error("Missing or empty field `instalments`.")
        _check_instalments(instalments)
        initial = _number(form, "initial_amount", False)
        self._check_sip_amount(api_key, fund, amount, "amount")
        if initial is not None:
            self._check_purchase(api_key, fund, initial, "initial_amount")
        self._sip_seq += 1
        sip_id = str(800_000_000_000_000 + zlib.crc32(f"{self.seed}:{self._sip_seq}".encode()) * 10 + self._sip_seq % 10)
        sip = Sip(sip_id, api_key, fund, frequency, day, instalments, amount, now,
                  first_instalment(frequency, day, self.nav_date + timedelta(days=1)), _tag(form))
        self.sips[sip_id] = sip
        if initial is not None:
            order = self._new_order(api_key, user_id, fund, "BUY", initial, 0.0, now, sip.tag,
                                    purchase_type=self._check_purchase(api_key, fund, initial, "initial_amount"),
                                    variety="sip")
            sip.order_ids.append(order.order_id)
        return sip

    def _check_sip_amount(self, api_key: str, fund: Fund, amount: float, what: str) -> None:
        if not fund.purchase_allowed:
            raise input_error(f"Purchases are not allowed in {fund.name}.")
        if amount + EPS < fund.minimum_additional_purchase_amount:
            raise input_error(f"Invalid `{what}`: the minimum SIP instalment for this fund is "
                              f"{fund.minimum_additional_purchase_amount:g}.")
        if not _multiple(amount, fund.purchase_amount_multiplier):
            raise input_error(f"Invalid `{what}`: must be a multiple of {fund.purchase_amount_multiplier:g}.")

    @staticmethod
    def _schedule(form: dict[str, str], sip: Sip | None) -> tuple[str, int]:
        """(frequency, instalment_day) from the form, the SIP's current ones where the form is silent."""
        frequency = (form.get("frequency") or "").strip() or (sip.frequency if sip else "")
        if frequency not in FREQUENCIES:
            raise input_error("Invalid `frequency`. Allowed: weekly, monthly, quarterly.")
        day = _whole(form, "instalment_day")
        if day is None:
            day = sip.instalment_day if sip and sip.frequency == frequency else 0
        if frequency == "monthly" and not 1 <= day <= 28:
            raise input_error("Invalid `instalment_day`: a monthly SIP needs a day from 1 to 28.")
        if frequency != "monthly" and day and not 1 <= day <= 28:
            raise input_error("Invalid `instalment_day`: must be from 1 to 28.")
        return frequency, day if frequency != "weekly" else 0

    def get_sip(self, api_key: str, sip_id: str) -> Sip:
        sip = self.sips.get(sip_id)
        if sip is None or sip.api_key != api_key:
            raise KiteError(404, "InputException", "Invalid `sip_id`: no such SIP.")
        return sip

    def modify_sip(self, api_key: str, sip_id: str, form: dict[str, str]) -> Sip:
        sip = self.get_sip(api_key, sip_id)
        if sip.status == "CANCELLED":
            raise input_error("SIP cannot be modified as it is CANCELLED.")
        status = (form.get("status") or "").strip() or sip.status
        if status not in SIP_STATUSES:
            raise input_error("Invalid `status`. Allowed: ACTIVE, PAUSED.")
        frequency, day = self._schedule(form, sip)
        instalments = _whole(form, "instalments")
        if instalments is not None:
            _check_instalments(instalments)
            if instalments != -1 and instalments <= sip.completed:
                raise input_error(f"Invalid `instalments`: {sip.completed} are already done.")
        amount = _number(form, "amount", False)
        if amount is not None:
            self._check_sip_amount(api_key, sip.fund, amount, "amount")
            sip.amount = amount
        if (frequency, day) != (sip.frequency, sip.instalment_day):
            sip.frequency, sip.instalment_day = frequency, day
            sip.next_instalment = first_instalment(frequency, day, self.nav_date + timedelta(days=1))
        sip.instalments = sip.instalments if instalments is None else instalments
        sip.status = status
        return sip

    def cancel_sip(self, api_key: str, sip_id: str) -> Sip:
        sip = self.get_sip(api_key, sip_id)
        if sip.status == "CANCELLED":
            raise input_error("SIP is already CANCELLED.")
        sip.status = "CANCELLED"
        return sip

    def sips_of(self, api_key: str) -> list[dict]:
        mine = [s for s in self.sips.values() if s.api_key == api_key]
        return [self.sip_json(s) for s in sorted(mine, key=lambda s: s.created_at, reverse=True)]

    def sip_json(self, s: Sip) -> dict:
        pending = -1 if s.instalments == -1 else max(s.instalments - s.completed, 0)
        return {
            "sip_id": s.sip_id, "tradingsymbol": s.fund.tradingsymbol, "fund": s.fund.name,
            "dividend_type": s.fund.dividend_type, "transaction_type": "BUY", "status": s.status,
            "sip_type": "sip", "created": kite_time(s.created_at), "frequency": s.frequency,
            "instalment_amount": s.amount, "instalments": s.instalments,
            "last_instalment": kite_time(s.last_instalment) if s.last_instalment else None,
            "pending_instalments": pending, "instalment_day": s.instalment_day,
            "completed_instalments": s.completed, "next_instalment": s.next_instalment.isoformat(),
            "trigger_price": 0.0, "step_up": {}, "sip_reg_num": None, "tag": s.tag,
        }

    # --- holdings --------------------------------------------------------------------------------
    def holdings_of(self, api_key: str) -> list[dict]:
        out = []
        for (key, symbol), h in sorted(self.holdings.items()):
            if key != api_key or h.quantity <= EPS:
                continue
            nav, avg = self.navs[symbol], h.cost / h.quantity
            out.append({"folio": h.folio, "fund": self.funds[symbol].name, "tradingsymbol": symbol,
                        "average_price": round(avg, 4), "last_price": nav,
                        "last_price_date": self.nav_date.isoformat(),
                        "pnl": round((nav - avg) * h.quantity, 2), "quantity": round(h.quantity, 3),
                        "pledged_quantity": 0.0})
        return out

    # --- the NAV ---------------------------------------------------------------------------------
    def publish_nav(self, navs: dict[str, float] | None = None, on: date | None = None,
                    now: float | None = None) -> dict:
        """The next NAV: for date `on` (default: the day after the last one), at `navs` where given and a
        small seeded move elsewhere. Settles every OPEN order, then places the SIP instalments due."""
        now = time.time() if now is None else now
        on = on or self.nav_date + timedelta(days=1)
        if on <= self.nav_date:
            raise input_error(f"NAV date must be after {self.nav_date.isoformat()}.")
        for symbol in navs or {}:
            self.fund(symbol)
        for symbol, nav in self.navs.items():
            move = ((zlib.crc32(f"{self.seed}:{symbol}:{on}".encode()) % 2001) - 1000) / 100_000  # within 1%
            self.navs[symbol] = round(float((navs or {}).get(symbol, nav * (1 + move))), 4)
        self.nav_date = on
        settled = [self._settle(o, on) for o in list(self.orders.values()) if o.status == "OPEN"]
        placed = [self._instalment(s, now) for s in list(self.sips.values())
                  if s.status == "ACTIVE" and s.next_instalment <= on]
        return {"nav_date": on.isoformat(), "navs": dict(self.navs), "completed": sum(settled),
                "instalments": len(placed)}

    def _settle(self, o: SimMfOrder, on: date) -> bool:
        nav = self.navs[o.fund.tradingsymbol]
        key = (o.api_key, o.fund.tradingsymbol)
        holding = self.holdings.get(key)
        if o.transaction_type == "BUY":
            if holding is None:
                holding = self.holdings[key] = SimMfHolding(folio=_folio(self.seed, o.api_key, o.fund))
            o.quantity = round(o.amount / nav, 3)
            holding.quantity += o.quantity
            holding.cost += o.quantity * nav
        else:
            if holding is None or holding.quantity + EPS < o.quantity:
                o.status, o.status_message = "REJECTED", "Insufficient units."
                return False
            avg = holding.cost / holding.quantity
            holding.quantity -= o.quantity
            holding.cost -= avg * o.quantity
            o.amount = round(o.quantity * nav, 2)
        o.status, o.average_price, o.folio, o.settled_on = "COMPLETE", nav, holding.folio, on
        o.status_message = None
        return True

    def _instalment(self, sip: Sip, now: float) -> str:
        order = self._new_order(sip.api_key, "", sip.fund, "BUY", sip.amount, 0.0, now, sip.tag,
                                purchase_type="ADDITIONAL" if (sip.api_key, sip.fund.tradingsymbol) in self.holdings
                                else "FRESH", variety="sip")
        sip.order_ids.append(order.order_id)
        sip.completed += 1
        sip.last_instalment = now
        sip.next_instalment = next_after(sip)
        if sip.instalments != -1 and sip.completed >= sip.instalments:
            sip.status = "CANCELLED"  # every instalment is done: Kite ends the SIP
        return order.order_id

    def describe(self) -> dict:
        return {"nav_date": self.nav_date.isoformat(), "navs": dict(self.navs),
                "orders": [{**self.order_json(o), "api_key": o.api_key} for o in self.orders.values()],
                "sips": [{**self.sip_json(s), "api_key": s.api_key} for s in self.sips.values()]}


def _check_instalments(instalments: int) -> None:
    if instalments != -1 and not 1 <= instalments <= MAX_INSTALMENTS:
        raise input_error(f"Invalid `instalments`: -1 (until cancelled) or 1 to {MAX_INSTALMENTS}.")


def _tag(form: dict[str, str]) -> str | None:
    tag = (form.get("tag") or "").strip()
    if len(tag) > 20 or not all(c.isalnum() or c in "_-" for c in tag):
        raise input_error("Invalid `tag`: up to 20 letters, digits, - and _.")
    return tag or None


def _folio(seed: int, api_key: str, fund: Fund) -> str:
    """The AMC's folio for this account: one per AMC, as folios are."""
    n = zlib.crc32(f"{seed}:{api_key}:{fund.amc}".encode())
    return f"{n % 10_000_000:07d}/{n % 97:02d}"
