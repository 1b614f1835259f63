"""Option prices, implied volatility and Greeks for whole batches as numpy arrays.

Two models: "bsm" (Black-Scholes-Merton on spot S with continuous dividend yield q) and
"black76" (S is the forward or future price, q is ignored, discounting at r) — the right one for
index options priced off the future or a synthetic forward.

Every array argument broadcasts against the others; results have the broadcast shape. Greeks use
py_vollib's analytical units: theta per calendar day, vega per volatility point, rho per rate
point. Inputs for which no answer exists give NaN, never an exception; arguments of the wrong
kind (text for numbers, an unknown model) raise ValueError.

Batches run in chunks of up to CHUNK options: numpy's fixed cost per call is paid once per
chunk, while each chunk's temporaries still fit in the second-level cache.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any

import numpy as np

from ticker.core.clock import IST, MARKET_CLOSE, to_ist
from ticker.core.iv import solve_with_tails
from ticker.core.normal import INV_SQRT_2PI, mills_ratio, otm_from_tails, otm_value

GREEK_NAMES = ("delta", "gamma", "theta", "vega", "rho")
MODELS = ("bsm", "black76")
CHUNK = 16384

# Seconds after 00:00 UTC of the expiry date at which time runs out: 15:30 IST is 10:00 UTC.
_EXPIRY_CLOSE_UTC = MARKET_CLOSE.hour * 3600 + MARKET_CLOSE.minute * 60 - int(IST.utcoffset(None).total_seconds())
_DAY = 86_400
_YEAR = 365 * _DAY


class _Market:
    """One chunk of inputs plus the terms every kernel needs (discount factors, forward, √t)."""

    def __init__(self, S, K, t, r, q, call, black76: bool) -> None:
        self.S, self.K, self.t, self.r, self.call, self.black76 = S, K, t, r, call, black76
        self.q = r if black76 else q               # Black-76 is BSM on F with q = r
        self.sqrt_t = np.sqrt(t)
        self.er = np.exp(-r * t)
        self.eq = self.er if black76 else np.exp(-q * t)
        self.F = S if black76 else S * np.exp((r - q) * t)
        self.sign = np.where(call, 1.0, -1.0)
        finite = np.isfinite(S) & np.isfinite(K) & np.isfinite(t) & np.isfinite(r) & np.isfinite(self.q)
        self.usable = finite & (S > 0) & (K > 0)

    def intrinsic(self) -> np.ndarray:
        """Undiscounted intrinsic value against the forward."""
        return np.maximum(self.sign * (self.F - self.K), 0.0)


# --- public API ----------------------------------------------------------------------------------

def price(S, K, t, r, q, sigma, is_call, model: str = "bsm") -> np.ndarray:
    """Option price. t = 0 or sigma = 0 gives the discounted intrinsic value of the forward."""
    return _run(_price_kernel, ("S", "K", "t", "r", "q", "sigma"), (S, K, t, r, q, sigma), is_call,
                model, ("price",))["price"]


def greeks(S, K, t, r, q, sigma, is_call, model: str = "bsm") -> dict[str, np.ndarray]:
    """delta, gamma, theta, vega, rho (py_vollib units); NaN where t ≤ 0 or sigma ≤ 0."""
    return _run(_greeks_kernel, ("S", "K", "t", "r", "q", "sigma"), (S, K, t, r, q, sigma), is_call,
                model, GREEK_NAMES)


def implied_volatility(price, S, K, t, r, q, is_call, model: str = "bsm") -> np.ndarray:
    """Implied volatility; NaN where none exists (price at or below the discounted intrinsic value,
    at or above the no-arbitrage bound, t ≤ 0, non-positive or non-finite inputs)."""
    return _run(_iv_kernel, ("price", "S", "K", "t", "r", "q"), (price, S, K, t, r, q), is_call,
                model, ("iv",))["iv"]


def iv_and_greeks(price, S, K, t, r, q, is_call, model: str = "bsm") -> dict[str, np.ndarray]:
    """{"iv", "delta", "gamma", "theta", "vega", "rho"} in one pass over the batch."""
    return _run(_iv_greeks_kernel, ("price", "S", "K", "t", "r", "q"), (price, S, K, t, r, q), is_call,
                model, ("iv", *GREEK_NAMES))


def synthetic_forward(call_price, put_price, K, t, r) -> np.ndarray:
    """Forward implied by a call and a put of one strike and expiry (put-call parity)."""
    c, p, k, t_, r_ = (_numeric(n, v) for n, v in zip(("call_price", "put_price", "K", "t", "r"),
                                                        (call_price, put_price, K, t, r), strict=True))
    return k + (c - p) * np.exp(r_ * t_)


def time_to_expiry(ts, expiry) -> np.ndarray:
    """Years (calendar days / 365) from `ts` to 15:30 IST on `expiry`; ≤ 0 once expired.

    `ts`: epoch seconds (number or array), datetime(s) (naive ones are IST, as Kite sends them),
    or numpy datetime64 (UTC). `expiry`: date(s), ISO strings or datetime64[D]; NaT/None → NaN.
    """
    seconds = _epoch_seconds(ts)
    days = _expiry_days(expiry)
    return (days * _DAY + _EXPIRY_CLOSE_UTC - seconds) / _YEAR


# --- kernels (one chunk of flat arrays each) -------------------------------------------------------

def _price_kernel(m: _Market, sigma: np.ndarray) -> dict[str, np.ndarray]:
    s = sigma * m.sqrt_t
    live = s > 0
    x_otm = -np.abs(np.log(m.F / m.K))
    tv = np.sqrt(m.F) * np.sqrt(m.K) * otm_value(x_otm, np.where(live, s, 1.0))
    out = m.er * (m.intrinsic() + np.where(live, tv, 0.0))
    ok = m.usable & (m.t >= 0) & (sigma >= 0) & np.isfinite(sigma)
    return {"price": np.where(ok, out, np.nan)}


def _greeks_kernel(m: _Market, sigma: np.ndarray, market_price: np.ndarray | None = None,
                   tails: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """py_vollib's analytical Greeks, with d1 formed the way it forms it. `tails`: Mills ratios
    the IV solver took next to these d's, reused instead of evaluated again (see `_near_tails`)."""
    S, K, t, r, sq_t = m.S, m.K, m.t, m.r, m.sqrt_t
    vol_t = sigma * sq_t
    drift = sigma * sigma * t / 2.0 if m.black76 else ((r - m.q) + sigma * sigma / 2.0) * t
    d1 = (np.log(S / K) + drift) / vol_t
    d = np.stack((d1, d1 - vol_t))
    pdf = INV_SQRT_2PI * np.exp(-0.5 * d * d)
    mills = mills_ratio(np.abs(d)) if tails is None else _near_tails(np.abs(d), *tails)
    tail = pdf * mills                                   # N(-|d|)
    cdf = np.where(d * m.sign <= 0, tail, 1.0 - tail)    # N(d) for calls, N(-d) for puts
    n1, n2, pdf1 = cdf[0], cdf[1], pdf[0]
    spot_pdf = S * m.eq * pdf1
    out = {
        "delta": m.sign * m.eq * n1,
        "gamma": m.eq * pdf1 / (S * vol_t),
        "theta": (-spot_pdf * sigma / (2.0 * sq_t) + m.sign * (m.q * S * m.eq * n1 - r * K * m.er * n2)) / 365.0,
        "vega": spot_pdf * sq_t * 0.01,
    }
    if m.black76:
        if market_price is None:  # Black-76 rho is -t·price: price from the same tails
            tv = otm_from_tails(d[0] * d[1] >= 0, mills.max(axis=0), mills.min(axis=0), S * pdf1,
                                np.minimum(S, K))
            market_price = m.er * (m.intrinsic() + tv)
        out["rho"] = -t * market_price * 0.01
    else:
        out["rho"] = m.sign * t * K * m.er * n2 * 0.01
    ok = m.usable & (t > 0) & (sigma > 0) & np.isfinite(sigma)
    return {name: np.where(ok, value, np.nan) for name, value in out.items()}


def _iv_kernel(m: _Market, option_price: np.ndarray) -> dict[str, np.ndarray]:
    return {"iv": _solve(m, option_price)[0]}


def _iv_greeks_kernel(m: _Market, option_price: np.ndarray) -> dict[str, np.ndarray]:
    iv, u, r = _solve(m, option_price)
    return {"iv": iv, **_greeks_kernel(m, iv, option_price, (u, r))}


def _solve(m: _Market, option_price: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Implied volatility, plus the solver's last tails reordered as this option's |d1|, |d2|."""
    sqrt_fk = np.sqrt(m.F) * np.sqrt(m.K)
    beta = (option_price / m.er - m.intrinsic()) / sqrt_fk    # normalised time value
    x = np.log(m.F / m.K)
    x_otm = -np.abs(x)
    ok = m.usable & (m.t > 0) & (beta > 0) & (beta < np.exp(0.5 * x_otm))
    iv = np.full(beta.shape, np.nan)
    u = np.full((2, beta.size), np.nan)
    r = np.full((2, beta.size), np.nan)
    if ok.all():
        s, u, r = solve_with_tails(beta, x_otm)
        iv = s / m.sqrt_t
    elif ok.any():
        i = np.flatnonzero(ok)
        s, u[:, i], r[:, i] = solve_with_tails(beta[i], x_otm[i])
        iv[i] = s / m.sqrt_t[i]
    # The out-of-the-money twin of an in-the-money option has its d's swapped and negated.
    itm = x > 0
    if itm.any():
        u[:, itm] = u[::-1, itm]
        r[:, itm] = r[::-1, itm]
    return iv, u, r


_TAYLOR_REACH = 1e-5  # R's third derivative stays within ±2, so the remainder is below 1e-15


def _near_tails(a: np.ndarray, u: np.ndarray, r: np.ndarray) -> np.ndarray:
    """R(a) from R(u) at a nearby u, by Taylor with R' = uR - 1 and R'' = R + uR'.

    Evaluates R afresh where u is missing or not within _TAYLOR_REACH of a (a NaN stays NaN).
    """
    delta = a - u
    r1 = u * r - 1.0
    out = r + delta * (r1 + 0.5 * delta * (r + u * r1))
    far = ~(np.abs(delta) <= _TAYLOR_REACH) & ~np.isnan(a)
    if far.any():
        out[far] = mills_ratio(a[far])
    return out


# --- plumbing ------------------------------------------------------------------------------------

Kernel = Callable[..., dict[str, np.ndarray]]


def _run(kernel: Kernel, names: Sequence[str], values: Sequence[Any], is_call: Any, model: str,
         outputs: Sequence[str]) -> dict[str, np.ndarray]:
    """Validate and broadcast the arguments, then run `kernel` chunk by chunk."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, not {model!r}")
    arrays = [_numeric(n, v) for n, v in zip(names, values, strict=True)]
    flag = np.asarray(is_call)
    if flag.dtype.kind not in "biu":
        raise ValueError("is_call must be boolean (True for calls, False for puts)")
    shape = np.broadcast_shapes(flag.shape, *(a.shape for a in arrays))
    flat = [np.broadcast_to(a, shape).ravel() for a in arrays]
    call = np.broadcast_to(flag != 0, shape).ravel()
    n = call.size
    # One block for all outputs: contiguous rows, and one large allocation rather than many.
    out = np.empty((len(outputs), n))
    step = -(-n // max(1, -(-n // CHUNK))) if n else 1
    for lo in range(0, n, step):
        part = slice(lo, lo + step)
        cols = dict(zip(names, (a[part] for a in flat), strict=True))
        with np.errstate(all="ignore"):
            m = _Market(cols["S"], cols["K"], cols["t"], cols["r"], cols["q"], call[part], model == "black76")
            result = kernel(m, cols["sigma"] if "sigma" in cols else cols["price"])
        for row, name in enumerate(outputs):
            out[row, part] = result[name]
    return {name: out[row].reshape(shape) for row, name in enumerate(outputs)}


def _numeric(name: str, value: Any) -> np.ndarray:
    try:
        out = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric") from exc
    return out


def _epoch_seconds(ts: Any) -> np.ndarray:
    if isinstance(ts, datetime):
        return np.asarray(to_ist(ts).timestamp())
    arr = np.asarray(ts)
    if arr.dtype.kind == "M":
        secs = arr.astype("datetime64[ns]").astype(np.int64) / 1e9
        return np.where(np.isnat(arr), np.nan, secs)
    if arr.dtype == object:
        return np.vectorize(lambda v: to_ist(v).timestamp() if isinstance(v, datetime) else float(v),
                            otypes=[np.float64])(arr)
    return _numeric("ts", arr)


def _expiry_days(expiry: Any) -> np.ndarray:
    if isinstance(expiry, datetime):
        expiry = to_ist(expiry).date()
    if isinstance(expiry, date):
        expiry = np.datetime64(expiry, "D")
    try:
        days = np.asarray(expiry, dtype="datetime64[D]")
    except (TypeError, ValueError) as exc:
        raise ValueError("expiry must be a date, an ISO date string or datetime64[D]") from exc
    return np.where(np.isnat(days), np.nan, days.astype(np.int64).astype(np.float64))
