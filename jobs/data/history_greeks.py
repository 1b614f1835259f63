"""IV and Greeks for a run of option candles against the underlying's candles of the same times.

Alignment is by candle timestamp; an option candle without an underlying candle at its time gets
no IV. Time to expiry is measured per candle from the moment its close was struck (the end of the
bar, or 15:30 for a daily candle) to 15:30 IST on the expiry day.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ticker.core.greeks import GREEK_NAMES, iv_and_greeks, time_to_expiry
from ticker.infra.runtime.settings import Settings
from ticker.jobs.data.history_store import IST_OFFSET, Candles, ist_days

SESSION_CLOSE = 15 * 3600 + 30 * 60  # seconds after IST midnight


def close_instants(t: np.ndarray, interval_seconds: int) -> np.ndarray:
    """When each candle's close was struck: bar end, capped at the session close of its day."""
    day_start = ist_days(t) * 86_400 - IST_OFFSET
    session_close = day_start + SESSION_CLOSE
    if interval_seconds >= 86_400:
        return session_close.astype(np.float64)
    return np.minimum(t + interval_seconds, session_close).astype(np.float64)


def align(option: Candles, underlying: Candles) -> np.ndarray:
    """The underlying's close at each option candle's time (NaN where it has none)."""
    if len(underlying) == 0:
        return np.full(len(option), np.nan)
    pos = np.clip(np.searchsorted(underlying.t, option.t), 0, len(underlying) - 1)
    return np.where(underlying.t[pos] == option.t, underlying.c[pos], np.nan)


def option_greeks(option: Mapping[str, Any], underlying: Mapping[str, Any], model: str, candles: Candles,
                  und_candles: Candles, interval_seconds: int, settings: Settings) -> dict[str, np.ndarray]:
    """Columns `underlying`, `iv` and the five Greeks, one value per option candle."""
    und_close = align(candles, und_candles)
    at = close_instants(candles.t, interval_seconds)
    t = time_to_expiry(at, option["expiry"])
    strike = np.full(len(candles), float(option["strike"]))
    is_call = np.full(len(candles), option["instrument_type"] == "CE")
    r = settings.option_greeks_interest_rate
    if model == "black76":
        # The listed future may expire after the option: carry its price back to the option's expiry.
        t_fut = time_to_expiry(at, underlying["expiry"])
        base, q = und_close * np.exp(-r * (t_fut - t)), 0.0
    else:
        base, q = und_close, settings.option_greeks_dividend_yield
    values = iv_and_greeks(candles.c, base, strike, t, r, q, is_call, model=model)
    return {"underlying": und_close, "iv": values["iv"], **{g: values[g] for g in GREEK_NAMES}}
