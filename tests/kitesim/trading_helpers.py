"""Shared bits of the GTT, margin, charges and position tests: the SDK pointed at a stand-in, picking
instruments, moving a price through the admin API, and waiting on a condition."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import requests
from kiteconnect import KiteConnect

from ticker.infra.kitesim.universe import KIND_CE, KIND_FUT, KIND_PE

TIMEOUT = 60.0


def kite(sim: Any, i: int = 0) -> KiteConnect:
    acc = sim.accounts[i]
    return KiteConnect(acc.api_key, acc.access_token, root=sim.url)


async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The SDK is synchronous; the stand-in runs in this loop."""
    return await asyncio.to_thread(fn, *args, **kwargs)


class Instrument:
    def __init__(self, sim: Any, row: int) -> None:
        uni = sim.state.universe
        self.sim, self.row = sim, int(row)
        self.symbol = str(uni.symbol[row])
        self.token = int(uni.token[row])
        self.lot = int(uni.lot[row])
        self.tick = float(uni.tick[row])

    def grid(self, price: float) -> float:
        """`price` on this instrument's tick grid."""
        return round(round(price / self.tick) * self.tick, 2)

    @property
    def price(self) -> float:
        return float(self.sim.state.market.price_rows(np.array([self.row]))[0])


def atm(sim: Any, kind: int = KIND_CE, offset: int = 0) -> Instrument:
    """A NIFTY option near the money (`offset` strikes away), or the future, of the nearest expiry
    more than a day away (so it still has time value whenever the test runs)."""
    uni, m = sim.state.universe, sim.state.market
    rows = np.flatnonzero((uni.kind == kind) & (uni.und == 0) & (uni.expiry_ts > time.time() + 86_400))
    if kind == KIND_FUT:
        return Instrument(sim, rows[np.argmin(uni.expiry_ts[rows])])
    near = rows[uni.expiry_ts[rows] == uni.expiry_ts[rows].min()]
    near = near[np.argsort(uni.strike[near])]
    at = int(np.argmin(np.abs(uni.strike[near] - m.spots[0])))
    return Instrument(sim, near[at + offset])


def option(sim: Any, put: bool = False, offset: int = 0) -> Instrument:
    return atm(sim, KIND_PE if put else KIND_CE, offset)


def future(sim: Any) -> Instrument:
    return atm(sim, KIND_FUT)


async def move_price(sim: Any, inst: Instrument, last_price: float) -> dict:
    """Through the admin API, as a test client outside the process would."""
    r = await asyncio.to_thread(requests.post, f"{sim.url}/_sim/price", timeout=10,
                                json={"exchange": "NFO", "tradingsymbol": inst.symbol, "last_price": last_price})
    assert r.status_code == 200, r.text
    return r.json()


async def wait_for(probe: Callable[[], Awaitable[Any]], what: str, timeout: float = TIMEOUT) -> Any:
    """Poll until `probe()` returns something truthy; fail after a generous bound."""
    deadline = time.monotonic() + timeout
    while True:
        got = await probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def http_headers(sim: Any, i: int = 0) -> dict[str, str]:
    acc = sim.accounts[i]
    return {"X-Kite-Version": "3", "Authorization": f"token {acc.api_key}:{acc.access_token}"}
