"""`GET /chain?underlying=NIFTY` on a running `ticker dev`, checked against the stand-in's own view of
its market, read over Kite's REST API (`GET /quote` through the real kiteconnect SDK, with an
account's credentials from the stand-in's admin API), the figures worked out here from scratch.

Freezing the market: the stand-in has no pause, but a per-token tick rate of 0 (`POST /_sim/ticks`,
`rate_by_token`) stops the chain's options and its index from trading and ticking. Their volume and
OI then stand still in the stand-in, and once the streamer has worked off the frames already sent,
`GET /chain` shows exactly the stand-in's volume and OI for every leg: PCR by OI and by volume and
max pain are compared exactly. The underlying keeps walking inside the stand-in (its quote prices
an option at the spot of the moment, while the chain keeps the last traded price), so prices are
compared within the spot's own drift: an option's price moves by at most |Δ forward| (|delta| ≤ 1)
plus one tick each side of rounding. The IVs, and so GEX, are solved here from the quoted prices
(Black-76, forward from put-call parity at the ATM strike, time to 15:30 IST on expiry in years of
365 days, r from the settings), against the chain's, which were solved by the streamer from the
last traded prices: the tolerances below allow for that drift, and say so where they are set.
The tick rates are put back afterwards, whatever happens.
"""

from __future__ import annotations

import asyncio
import math
import time
from datetime import date, datetime
from typing import Any

import aiohttp
import numpy as np
import pytest
from kiteconnect import KiteConnect
from kiteconnect.exceptions import KiteException

from tests.dev.shared_dev import RunningDev
from ticker.core.clock import IST
from ticker.infra.runtime.settings import Settings

pytestmark = pytest.mark.timeout(600)

BOUND = 120.0  # seconds; reaching it means the system is broken, not slow
RATE = Settings.model_fields["option_greeks_interest_rate"].default
INDEX = "NSE:NIFTY 50"
TICK = 0.05
FRESH_MS = 10_000


class StandIn:
    """The stand-in's admin API and its Kite REST API through the SDK."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http, self.url = http, url
        self.kite: KiteConnect | None = None

    async def admin(self, method: str, path: str, body: dict | None = None) -> Any:
        async with self.http.request(method, f"{self.url}/_sim/{path}", json=body) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def login(self) -> None:
        accounts = await self.admin("GET", "accounts")
        acc = accounts[0]
        token = (acc.get("live_tokens") or [acc["access_token"]])[-1]
        self.kite = KiteConnect(acc["api_key"], token, root=self.url)

    async def quote(self, keys: list[str]) -> dict[str, dict]:
        """Kite's quotes for `keys`; a 429 (the account's one quote a second, shared with the
        system's own calls) is asked again until the bound."""
        assert self.kite is not None
        deadline = time.monotonic() + BOUND
        while True:
            try:
                return await asyncio.to_thread(self.kite.quote, keys)
            except KiteException as exc:
                if exc.code != 429 or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.5)


async def _chain(http: aiohttp.ClientSession, dev: RunningDev) -> dict:
    async with http.get(f"{dev.web_url}/chain", params={"underlying": "NIFTY"},
                        headers={"X-API-Key": dev.api_key}) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


def _legs(doc: dict, priced: bool = True) -> dict[int, tuple[float, bool, dict]]:
    """token -> (strike, is_call, leg) for the chain's legs with a tick (`priced`), or all listed.
    The system streams a window of strikes around the money (`otm_levels`), not every listed one."""
    out = {}
    for row in doc["rows"]:
        for side, is_call in (("ce", True), ("pe", False)):
            leg = row[side]
            if leg is not None and (not priced or (leg["ltp"] is not None and leg["oi"] is not None)):
                out[leg["token"]] = (row["strike"], is_call, leg)
    return out


async def _live_chain(http: aiohttp.ClientSession, dev: RunningDev) -> tuple[dict, set[int]]:
    """The chain once it has its figures and live legs, and which legs are live: ticked within
    FRESH_MS (the stand-in ticks each every tick interval, 500 ms in dev; a leg the rebalancer
    stopped streaming keeps its last tick, older)."""
    deadline = time.monotonic() + BOUND
    while True:
        doc = await _chain(http, dev)
        live = {t for t, (_, _, leg) in _legs(doc).items() if leg["age_ms"] is not None and leg["age_ms"] < FRESH_MS}
        if doc["atm_iv"] is not None and doc["spot"] is not None and len(live) >= 10:
            return doc, live
        assert time.monotonic() < deadline, "the chain never had live legs and its figures"
        await asyncio.sleep(0.5)


# --- the figures, from scratch ---------------------------------------------------------------------

def _norm_cdf(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def black76(fwd: float, strike: np.ndarray, t: float, sigma: np.ndarray, is_call: np.ndarray) -> np.ndarray:
    vt = sigma * math.sqrt(t)
    d1 = (np.log(fwd / strike) + vt * vt / 2.0) / vt
    d2 = d1 - vt
    call = fwd * _norm_cdf(d1) - strike * _norm_cdf(d2)
    put = strike * _norm_cdf(-d2) - fwd * _norm_cdf(-d1)
    return math.exp(-RATE * t) * np.where(is_call, call, put)


def implied_vol(price: np.ndarray, fwd: float, strike: np.ndarray, t: float, is_call: np.ndarray) -> np.ndarray:
    """Bisection on Black-76 between 0.1% and 500% vol; NaN where the price lies outside that
    range (at or under intrinsic, as a price floored at one tick can be)."""
    lo, hi = np.full(price.shape, 1e-3), np.full(price.shape, 5.0)
    inside = (black76(fwd, strike, t, lo, is_call) < price) & (price < black76(fwd, strike, t, hi, is_call))
    for _ in range(80):
        mid = (lo + hi) / 2.0
        above = black76(fwd, strike, t, mid, is_call) > price
        hi, lo = np.where(above, mid, hi), np.where(above, lo, mid)
    return np.where(inside, (lo + hi) / 2.0, np.nan)


def gamma76(fwd: float, strike: np.ndarray, t: float, sigma: np.ndarray) -> np.ndarray:
    """∂²price/∂F² under Black-76 (discounted), ticker's gamma for the forward."""
    vt = sigma * math.sqrt(t)
    d1 = (np.log(fwd / strike) + vt * vt / 2.0) / vt
    return math.exp(-RATE * t) * np.exp(-d1 * d1 / 2.0) / math.sqrt(2.0 * math.pi) / (fwd * vt)


def brute_max_pain(strikes: list[float], oi: dict[tuple[float, bool], int]) -> float:
    """The strike at which holders collect least at expiry, every strike tried (ties: the lower)."""
    def payout(settle: float) -> float:
        return sum(n * max(0.0, settle - k) if call else n * max(0.0, k - settle) for (k, call), n in oi.items())
    return min(strikes, key=lambda k: (payout(k), k))


def years_to_expiry(expiry: date, now: float) -> float:
    close = datetime.combine(expiry, datetime.min.time().replace(hour=15, minute=30), IST).timestamp()
    return (close - now) / (365.0 * 86_400.0)


# --- the test --------------------------------------------------------------------------------------

async def test_chain_matches_the_stand_ins_market(ticker_dev: RunningDev) -> None:
    async with aiohttp.ClientSession() as http:
        sim = StandIn(http, ticker_dev.info["sim_url"])
        await sim.login()
        doc, live = await _live_chain(http, ticker_dev)
        listed = sorted(_legs(doc, priced=False))
        index = (await sim.quote([INDEX]))[INDEX]["instrument_token"]
        before = await sim.admin("POST", "ticks", {})
        # Every listed leg frozen, streamed or not: the stand-in trades only what ticks, so each
        # leg's last tick is then its state in the stand-in.
        await sim.admin("POST", "ticks", {"rate_by_token": {str(t): 0 for t in [*listed, index]}})
        try:
            await _compare(http, sim, ticker_dev, listed, live)
        finally:
            await sim.admin("POST", "ticks", {"clear": True, "tick_interval_ms": before["tick_interval_ms"],
                                              "tick_rate": before["tick_rate"],
                                              "ticks_per_second": before["ticks_per_second"],
                                              "rate_by_token": before["rate_by_token"] or None})


async def _settled(http: aiohttp.ClientSession, sim: StandIn, dev: RunningDev, listed: list[int], live: set[int]
                   ) -> tuple[dict, dict[str, dict], float]:
    """The chain once it shows the frozen stand-in's volume and OI on every priced leg (the live
    ones among them), the stand-in's quotes (every listed leg and the index) read just before it,
    and when they were read."""
    keys = [str(t) for t in listed]
    deadline = time.monotonic() + BOUND
    while True:
        read_at = time.time()
        quotes = await sim.quote([*keys, INDEX])
        doc = await _chain(http, dev)
        legs = _legs(doc)
        if live <= set(legs) and all(
                leg["oi"] == quotes[str(t)]["oi"] and leg["volume"] == quotes[str(t)]["volume"]
                for t, (_, _, leg) in legs.items()):
            return doc, quotes, read_at
        assert time.monotonic() < deadline, "the chain never caught up with the frozen stand-in"
        await asyncio.sleep(0.5)


async def _compare(http: aiohttp.ClientSession, sim: StandIn, dev: RunningDev, listed: list[int],
                   live: set[int]) -> None:
    doc, quotes, read_at = await _settled(http, sim, dev, listed, live)
    legs = _legs(doc)
    tokens = sorted(legs)
    strikes = [row["strike"] for row in doc["rows"]]  # max pain may settle on any listed strike
    oi = {(k, call): quotes[str(t)]["oi"] for t, (k, call, _) in legs.items()}
    volume = {(k, call): quotes[str(t)]["volume"] for t, (k, call, _) in legs.items()}

    # Volume and OI stand still: these match exactly.
    assert doc["max_pain"] == brute_max_pain(strikes, oi)
    calls_oi = sum(n for (_, call), n in oi.items() if call)
    assert doc["pcr_oi"] == pytest.approx(sum(n for (_, c), n in oi.items() if not c) / calls_oi, rel=1e-12)
    calls_volume = sum(n for (_, call), n in volume.items() if call)
    assert doc["pcr_volume"] == pytest.approx(sum(n for (_, c), n in volume.items() if not c) / calls_volume,
                                              rel=1e-12)

    # Prices: the stand-in's quote is the option at today's spot, the chain's the last trade, made
    # at the spot of the freeze (the chain's `spot`). An option moves by at most its forward's move.
    spot_now = quotes[INDEX]["last_price"]
    t = years_to_expiry(date.fromisoformat(doc["expiry"]), read_at)
    drift = abs(spot_now - doc["spot"]) * math.exp(RATE * t)
    for tok in live:
        k, call, leg = legs[tok]
        assert leg["ltp"] == pytest.approx(quotes[str(tok)]["last_price"], abs=drift + 2 * TICK), (k, call)
        assert leg["tradingsymbol"].endswith("CE" if call else "PE") and leg["age_ms"] >= 0

    # ATM: forward from put-call parity at the chain's ATM strike, on the stand-in's prices.
    atm = doc["atm_strike"]
    call_q, put_q = (quotes[str(next(tk for tk, (k, c, _) in legs.items() if k == atm and c is side))]
                     for side in (True, False))
    fwd = atm + (call_q["last_price"] - put_q["last_price"]) * math.exp(RATE * t)
    step = min(np.diff(strikes))
    # The ATM strike is the listed one nearest the forward; the forward has moved by `drift` since.
    assert abs(atm - fwd) <= step / 2 + drift + 2 * TICK, (atm, fwd)
    ivs = implied_vol(np.array([call_q["last_price"], put_q["last_price"]]), fwd, np.array([atm, atm]), t,
                      np.array([True, False]))
    # A fifth of a vol point: ATM vega of NIFTY a few days out is ~10 rupees per vol point, so one
    # tick of rounding on each leg (0.005 points) stays far inside it; the spot's drift moves the
    # call and the put's prices alike, which the parity forward absorbs.
    assert doc["atm_iv"] == pytest.approx(float(np.nanmean(ivs)), abs=0.002)

    # GEX (dealers long calls, short puts, per 1% move, OI in units): gamma from IVs solved here.
    k = np.array([legs[tk][0] for tk in tokens])
    is_call = np.array([legs[tk][1] for tk in tokens])
    price = np.array([quotes[str(tk)]["last_price"] for tk in tokens])
    open_interest = np.array([quotes[str(tk)]["oi"] for tk in tokens], dtype=float)
    iv = implied_vol(price, fwd, k, t, is_call)
    usable = np.isfinite(iv)  # a price floored at one tick may have none, here or in the chain

    def gex_at(f: float) -> float:
        gamma = gamma76(f, k[usable], t, iv[usable])
        return float(np.sum(np.where(is_call[usable], 1.0, -1.0) * gamma * open_interest[usable])) * f * f * 0.01

    gex = gex_at(fwd)
    # What the forward's drift alone moves it by, plus 1% of it: the chain's gammas were taken at
    # the freeze, these at the quote, and the stand-in's sockets tick at phases of their own, so
    # the legs' last ticks (hence the chain's gammas) were taken at spots up to one interval apart.
    moved = max(abs(gex_at(fwd + drift) - gex), abs(gex_at(fwd - drift) - gex))
    assert doc["gex_total"] == pytest.approx(gex, abs=moved + 0.01 * abs(gex))
