"""Small instrument sets and frames for the streamer's stage tests."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np

from ticker.core.instruments import SEG_INDICES, SEG_NFO, Instrument, make_token, option_symbol
from ticker.core.wire import Ticks

NIFTY_INDEX = 256265
EXPIRY = date.today() + timedelta(days=30)
STRIKES = (24800.0, 24900.0, 25000.0, 25100.0, 25200.0)


def index() -> Instrument:
    assert make_token(NIFTY_INDEX >> 8, SEG_INDICES) == NIFTY_INDEX
    return Instrument(instrument_token=NIFTY_INDEX, exchange_token=NIFTY_INDEX >> 8, tradingsymbol="NIFTY 50",
                      name="NIFTY 50", tick_size=0.0, instrument_type="EQ", segment="INDICES", exchange="NSE")


def future(expiry: date = EXPIRY, exchange_token: int = 50_000) -> Instrument:
    return Instrument(instrument_token=make_token(exchange_token, SEG_NFO), exchange_token=exchange_token,
                      tradingsymbol=f"NIFTY{expiry:%y%b}FUT".upper(), name="NIFTY", expiry=expiry, lot_size=75,
                      instrument_type="FUT", segment="NFO-FUT", exchange="NFO")


def option(strike: float, kind: str, expiry: date = EXPIRY) -> Instrument:
    et = 60_000 + int(strike) // 10 + (1 if kind == "PE" else 0) + (expiry - date(2020, 1, 1)).days * 4_000
    return Instrument(instrument_token=make_token(et, SEG_NFO), exchange_token=et,
                      tradingsymbol=option_symbol("NIFTY", expiry, strike, kind), name="NIFTY", expiry=expiry,
                      strike=strike, lot_size=75, instrument_type=kind, segment="NFO-OPT", exchange="NFO")


def chain(expiry: date = EXPIRY, strikes=STRIKES) -> list[Instrument]:
    return [option(k, kind, expiry) for k in strikes for kind in ("CE", "PE")]


def full_ticks(tokens, prices, *, volume=1000, oi=5000, ts=1_763_600_000) -> Ticks:
    """Full-mode ticks with a five-level book 0.05 apart around each price."""
    prices = np.asarray(prices, dtype=float)
    n = len(prices)
    levels = np.arange(1, 6) * 0.05
    return Ticks.build(
        token=np.asarray(tokens), mode="full", last_price=prices, volume_traded=volume, oi=oi,
        exchange_timestamp=ts, last_trade_time=ts, close=prices * 0.99, open=prices, high=prices, low=prices,
        depth_buy_price=np.maximum(np.round(prices[:, None] - levels, 2), 0), depth_sell_price=np.round(prices[:, None] + levels, 2),
        depth_buy_quantity=np.full((n, 5), 75), depth_sell_quantity=np.full((n, 5), 150),
        depth_buy_orders=np.full((n, 5), 3), depth_sell_orders=np.full((n, 5), 4))
