"""The statistics of one expiry's option chain, each a vectorised function of strike-aligned arrays.

Arrays shaped (m, 2) hold one value per listed strike (ascending) and side: column CALL for the
call, PUT for the put, NaN where the leg is missing or has no value. Every statistic skips the
NaNs it meets instead of letting one unpriced leg poison the answer, and answers None when
nothing usable is left.
"""

from __future__ import annotations

import numpy as np

CALL, PUT = 0, 1

# Dealer positioning assumed by gamma exposure: long the calls, short the puts (see gamma_exposure).
DEALER_SIGN = np.array([1.0, -1.0])


def atm_iv(call_iv: float, put_iv: float) -> float | None:
    """The mean of the ATM call's and put's IV where both exist, else the one that does."""
    ivs = [v for v in (call_iv, put_iv) if np.isfinite(v) and v > 0]
    return sum(ivs) / len(ivs) if ivs else None


def put_call_ratio(values: np.ndarray) -> float | None:
    """Σ puts / Σ calls of one column (OI or volume), legs without a value left out of both sums;
    None when the calls sum to zero (or no call has a value)."""
    with np.errstate(invalid="ignore"):
        usable = np.isfinite(values) & (values >= 0)
    totals = np.where(usable, values, 0.0).sum(axis=0)
    return float(totals[PUT] / totals[CALL]) if totals[CALL] > 0 else None


def holder_payout(strikes: np.ndarray, oi: np.ndarray) -> np.ndarray:
    """What option holders would collect at expiry were the underlying to settle at each listed
    strike: Σ_calls oi·max(0, S−K) + Σ_puts oi·max(0, K−S), per unit of OI. `strikes` ascending.

    Running sums instead of a strikes × strikes matrix: at S = K_j only calls below and puts above
    pay, so payout_j = K_j·Σ_{i<j} c_i − Σ_{i<j} c_i·K_i + Σ_{i>j} p_i·K_i − K_j·Σ_{i>j} p_i. Linear in
    the strikes, and exact (so ties stay ties) while strikes, OI and the sums are whole numbers
    below 2⁵³, as an index chain's are. Legs without OI count as none.
    """
    with np.errstate(invalid="ignore"):
        held = np.where(np.isfinite(oi) & (oi > 0), oi, 0.0)
    calls, puts = held[:, CALL], held[:, PUT]
    calls_below = np.cumsum(calls) - calls
    call_strikes_below = np.cumsum(calls * strikes) - calls * strikes
    puts_above = np.cumsum(puts[::-1])[::-1] - puts
    put_strikes_above = np.cumsum((puts * strikes)[::-1])[::-1] - puts * strikes
    return (strikes * calls_below - call_strikes_below) + (put_strikes_above - strikes * puts_above)


def max_pain(strikes: np.ndarray, oi: np.ndarray) -> float | None:
    """The listed strike at which holders' total payout is least (ties: the lower strike);
    None when no leg has open interest, as every strike then pays nothing."""
    if strikes.size == 0 or not np.any(oi > 0):
        return None
    return float(strikes[int(np.argmin(holder_payout(strikes, oi)))])


def wing_iv(strikes: np.ndarray, delta: np.ndarray, iv: np.ndarray, target: float) -> float | None:
    """IV at delta `target` on one side of the chain (calls: +0.25, puts: −0.25).

    Among the legs with both a delta and an IV, take the one whose delta is nearest the target
    (ties: the lower strike). If a strike-neighbour of it (among those legs) lies on the other side
    of the target, IV is interpolated linearly in delta between the two (the nearer in delta if
    both neighbours qualify, as noisy deltas may not be monotone); otherwise, or on an exact hit,
    it is the nearest leg's own IV. `strikes` orders the legs; the arrays are one side's, (m,).
    """
    with np.errstate(invalid="ignore"):
        usable = np.isfinite(delta) & np.isfinite(iv) & (iv > 0) & np.isfinite(strikes)
    order = np.argsort(strikes[usable], kind="stable")
    d, v = delta[usable][order], iv[usable][order]
    if d.size == 0:
        return None
    gap = d - target
    j = int(np.argmin(np.abs(gap)))
    if gap[j] == 0:
        return float(v[j])
    across = [i for i in (j - 1, j + 1) if 0 <= i < d.size and gap[i] * gap[j] < 0]
    if not across:
        return float(v[j])
    i = min(across, key=lambda k: (abs(gap[k]), k))
    weight = gap[j] / (gap[j] - gap[i])              # share of the way from leg j to leg i
    return float(v[j] + weight * (v[i] - v[j]))


def gamma_exposure(gamma: np.ndarray, oi: np.ndarray, price: float, multiplier: float
                   ) -> tuple[np.ndarray, float | None]:
    """Dealers' net gamma exposure per strike (NaN where no leg counts) and in total (None then).

    Sign convention: dealers are assumed long the calls and short the puts the public holds, so

        GEX_K = gamma_call·oi_call·multiplier·P²·0.01 − gamma_put·oi_put·multiplier·P²·0.01

    is the rupee change in dealers' delta for a 1% move of the underlying: positive GEX means
    dealers sell into rallies and buy dips (dampening), negative means they chase the move.
    P is the price the Greeks were taken against (the forward for Black-76, spot for BSM), so
    P²·gamma is the same quantity under either model. `multiplier` converts one unit of OI into
    units of the underlying: 1 when OI counts units (as Kite reports it), the lot size when it
    counts contracts. A leg without gamma or OI is left out.
    """
    with np.errstate(invalid="ignore"):
        counts = np.isfinite(gamma) & np.isfinite(oi)
        each = np.where(counts, gamma * oi, 0.0) * DEALER_SIGN * (multiplier * price * price * 0.01)
    per_strike = np.where(counts.any(axis=1), each.sum(axis=1), np.nan)
    return per_strike, float(each.sum()) if counts.any() else None


def iv_percentile(history: np.ndarray, today: float | None) -> float | None:
    """The percentage (0–100) of days in `history` (daily ATM IVs) whose IV is below `today`'s;
    days without a value are left out. None when no day has one, or today has none."""
    past = np.asarray(history, dtype=np.float64).ravel()
    past = past[np.isfinite(past)]
    if past.size == 0 or today is None or not np.isfinite(today):
        return None
    return float(100.0 * np.count_nonzero(past < today) / past.size)
