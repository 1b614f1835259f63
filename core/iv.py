"""Implied volatility for whole arrays: solve the normalised Black equation b(x, s) = beta.

Three regions around the inflection point s_c = √(2|x|) of b(s): below s_l (where the tangent
at s_c crosses zero), between s_l and s_u = s_c + 2.5, and above s_u. Values of b at s_c and at
s_l or s_u anchor the initial guess (asymptotic expansions outside, a rational matching b's slope
at s_c inside). Each region then takes fourth-order Householder steps on an objective that is
nearly linear there: ln b in 1/s² below, b in s between, ln(e^{x/2} - b) in s² above. Two steps
settle nearly every element, the first on fast tail values, the second on accurate ones. The
rest take a bracketed careful path, and anything that still fails goes to LetsBeRational.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from ticker.core.normal import (
    INV_SQRT_2PI,
    LN_SQRT_2PI,
    mills_ratio,
    mills_ratio_fast,
    otm_from_tails,
    otm_value,
)

Mills = Callable[[np.ndarray], np.ndarray]

# The steps are fourth order: once a step on accurate values moves s by less than STEP_TOL
# relative, what is left is of order STEP_TOL**4.
STEP_TOL = 1e-4
BRACKETED_STEPS = 12    # cap for the careful path; whatever is left goes to LetsBeRational
UPPER_NODE = 2.5        # s_u = s_c + UPPER_NODE

LOWER, MIDDLE, UPPER = 0, 1, 2
# The power p of s each region steps in, and the sign in its objective (0: plain b - beta).
_POWER = {LOWER: -2.0, MIDDLE: 1.0, UPPER: 2.0}
_SIGN = {LOWER: -1.0, MIDDLE: 0.0, UPPER: 1.0}


def solve_normalised(beta: np.ndarray, x: np.ndarray) -> np.ndarray:
    """s > 0 with otm_value(x, s) = beta, for 1-D arrays with x ≤ 0 and 0 < beta < e^{x/2}."""
    return solve_with_tails(beta, x)[0]


def solve_with_tails(beta: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`solve_normalised`, plus where the last accurate tails were taken and their values.

    Returns (s, u, r): u rows are |d̄1| and |d̄2| of the out-of-the-money twin at the last point
    where the solver evaluated accurate Mills ratios (one small step before s), r = R(u). Greeks
    at s can reuse them through a short Taylor expansion. NaN where not available.
    """
    with np.errstate(all="ignore"):
        plan = _SolvePlan(beta, x, exact=False)
        s = plan.s0.copy()
        u = np.full((2, s.size), np.nan)
        r = np.full((2, s.size), np.nan)
        unsure = np.zeros(s.shape, dtype=bool)
        for kind, idx in plan.groups():
            s[idx], unsure[idx], u[:, idx], r[:, idx] = _polish(kind, plan.s0[idx], x[idx], beta[idx])
        if unsure.any():
            i = np.flatnonzero(unsure)
            s[i] = _solve_bracketed(beta[i], x[i])
            u[:, i] = np.nan
    return s, u, r


class _SolvePlan:
    """Regions, brackets and initial guesses for a batch (1-D arrays).

    `exact` takes every node value from accurate tails (the careful path needs exact region
    boundaries for its brackets). Otherwise tails are fast and b(s_l) comes from the model in
    `_lower_model`: a misplaced boundary element only starts from a slightly worse guess.
    """

    def __init__(self, beta: np.ndarray, x: np.ndarray, exact: bool) -> None:
        mills = mills_ratio if exact else mills_ratio_fast
        self.sc = sc = np.sqrt(-2.0 * x)
        bmax = np.exp(0.5 * x)
        vc = bmax * INV_SQRT_2PI                      # b'(s_c)
        bc = np.maximum(0.5 * bmax - vc * mills(sc), 0.0)
        self.low = low = beta < bc
        self.sl = np.maximum(sc - bc / vc, 1e-300)
        self.su = sc + UPPER_NODE
        node = np.where(low, self.sl, self.su)
        if exact:
            bn = otm_value(x, node, mills)
        else:
            bn = _lower_model(x, node)
            high = np.flatnonzero(~low)
            if high.size:
                bn[high] = otm_value(x[high], node[high], mills)
        lower = low & (beta < bn)
        upper = ~low & (beta > bn)
        self.kind = MIDDLE + upper.astype(np.int8) - lower
        # b ≈ bc + vc·w/(1 + κw), w = s - s_c: b's slope at s_c and its value at the node.
        span = node - sc
        kappa = (vc * span / (bn - bc) - 1.0) / span
        gap = beta - bc
        s0 = sc + gap / (vc - kappa * gap)
        self.s0 = np.minimum(np.maximum(s0, np.minimum(node, sc)), np.maximum(node, sc))
        if lower.any():
            i = np.flatnonzero(lower)
            self.s0[i] = _lower_guess(beta[i], x[i], self.sl[i])
        if upper.any():
            i = np.flatnonzero(upper)
            self.s0[i] = _upper_guess(bmax[i] - beta[i], x[i], self.su[i])

    def groups(self) -> Iterator[tuple[int, np.ndarray]]:
        for kind in (LOWER, MIDDLE, UPPER):
            idx = np.flatnonzero(self.kind == kind)
            if idx.size:
                yield kind, idx

    def bracket(self, kind: int, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if kind == LOWER:
            return np.zeros(idx.size), self.sl[idx]
        if kind == UPPER:
            return self.su[idx], np.full(idx.size, np.inf)
        low, sc = self.low[idx], self.sc[idx]
        return np.where(low, self.sl[idx], sc), np.where(low, sc, self.su[idx])


# 1 - uR(u) ≈ 1/(u² + T1·u + T0), within 2.5% for u ≥ 0.8 (|h| > 0.8 everywhere below s_l).
_T1, _T0 = 0.35, 1.55


def _lower_model(x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """b(x, s) below s_l to a few percent, without tails.

    With h = x/s, b = V·(R(|h| - s/2) - R(|h| + s/2)) ≈ V·s·(1 - |h|R(|h|)) (midpoint rule on
    R' = uR - 1), and 1 - uR(u) is close to the rational above.
    """
    h = np.abs(x / s)
    return np.exp(-0.5 * h * h - 0.125 * s * s) * (INV_SQRT_2PI * s) / (h * h + _T1 * h + _T0)


def _lower_guess(beta: np.ndarray, x: np.ndarray, sl: np.ndarray) -> np.ndarray:
    """s below s_l: `_lower_model` = beta solved by Newton in y = 1/s², from s_l.

    In y the model's log, -x²y/2 - 1/(8y) - ln√(2π) - ln(√y·(x²y + T1|x|√y + T0)), is nearly
    linear: two steps give s within ~3% everywhere in the region.
    """
    x2, ax = x * x, np.abs(x)
    a = -np.log(beta) - LN_SQRT_2PI
    y_min = 1.0 / (sl * sl)
    y = y_min
    for _ in range(2):
        ry = np.sqrt(y)
        den = x2 * y + _T1 * ax * ry + _T0
        f = a - 0.5 * x2 * y - 0.125 / y - np.log(ry * den)
        df = 0.125 / (y * y) - 0.5 * x2 - 0.5 / y - (x2 + 0.5 * _T1 * ax / ry) / den
        y = np.maximum(y - f / df, y_min)
    return 1.0 / np.sqrt(y)


def _upper_guess(room: np.ndarray, x: np.ndarray, su: np.ndarray) -> np.ndarray:
    """s from ln(bmax - b) ≈ -x²/(2z) - z/8 - ln√(2π) + ½ln z - ln(z/4 - x²/z), z = s² (large s)."""
    x2 = x * x
    a = -np.log(room) - LN_SQRT_2PI
    z_min = su * su
    z = np.maximum(8.0 * a, z_min)
    for _ in range(3):
        z = np.maximum(8.0 * (a - 0.5 * x2 / z + 0.5 * np.log(z) - np.log(0.25 * z - x2 / z)), z_min)
    return np.sqrt(z)


class _Objective:
    """What one region's steps solve: its kind, x, x², the target value and bmax = e^{x/2}."""

    def __init__(self, kind: int, beta: np.ndarray, x: np.ndarray) -> None:
        self.kind, self.x, self.x2 = kind, x, x * x
        self.bmax = np.exp(0.5 * x)
        if kind == LOWER:
            self.target = np.log(beta)
        else:
            self.target = beta if kind == MIDDLE else np.log(self.bmax - beta)


def _polish(kind: int, s: np.ndarray, x: np.ndarray, beta: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two steps from the guess; returns s, a mask of elements that may not have converged, and
    the second step's tail arguments and values (each 2 × n)."""
    obj = _Objective(kind, beta, x)
    s, *_ = _step(obj, s, mills_ratio_fast)
    s_new, moved, trusted, u, r = _step(obj, s, mills_ratio)
    done = trusted & (moved <= STEP_TOL * s_new) & (s_new > 0)
    return s_new, ~done, u.reshape(2, -1), r.reshape(2, -1)


def _solve_bracketed(beta: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The careful path: regions from accurate values, a bracket that shrinks every step and a
    bisection whenever a step would leave it; LetsBeRational for anything still unsettled."""
    plan = _SolvePlan(beta, x, exact=True)
    s = plan.s0.copy()
    for kind, idx in plan.groups():
        obj = _Objective(kind, beta[idx], x[idx])
        si, bracket = s[idx], plan.bracket(kind, idx)
        for _ in range(BRACKETED_STEPS):
            si, moved, trusted, *_ = _step(obj, si, mills_ratio, bracket)
            left = ~(trusted & (moved <= STEP_TOL * si))
            if not left.any():
                break
        else:
            si[left] = lets_be_rational(beta[idx][left], obj.x[left])
        s[idx] = si
    return s


def _step(obj: _Objective, s: np.ndarray, mills: Mills, bracket: tuple[np.ndarray, np.ndarray] | None = None
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One fourth-order Householder step for every element: (s, |change|, trusted, u, R(u)),
    u being the tails' arguments |d̄1| and |d̄2| (concatenated) at the starting s.

    With V = b'(s) = exp(-h²/2 - s²/8)/√(2π), h = x/s, every derivative of b follows from
    g = (ln V)' = x²/s³ - s/4, so the log objectives need one log and the plain one one exp.
    A step that disagrees with Newton's in sign, or is over twice its size, is replaced by
    Newton's and reported untrusted. With a (lo, hi) bracket, the bracket is tightened first
    and a step that would leave it becomes a bisection. (In-place arithmetic throughout: this
    is the hot loop, and fresh temporaries cost as much as the arithmetic.)
    """
    kind, n = obj.kind, s.size
    inv_s = 1.0 / s
    h = obj.x * inv_s
    u = np.empty(2 * n)                      # |d1| then -d2, evaluated in one call
    np.multiply(s, 0.5, out=u[n:])
    np.add(h, u[n:], out=u[:n])
    inside = u[:n] <= 0 if kind == MIDDLE else None
    np.abs(u[:n], out=u[:n])
    np.subtract(u[n:], h, out=u[n:])
    r = mills(u)
    r1, r2 = r[:n], r[n:]
    g1 = obj.x2 * inv_s                      # g = x²/s³ - s/4, g1 = g' = -3x²/s⁴ - 1/4
    g1 *= inv_s
    g1 *= inv_s
    g = s * -0.25
    g += g1
    g1 *= inv_s
    g1 *= -3.0
    g1 -= 0.25
    lnv = h                                  # ln V = -h²/2 - s²/8 - ln√(2π)
    lnv *= h
    lnv += 0.25 * s * s
    lnv *= -0.5
    lnv -= LN_SQRT_2PI
    if kind == MIDDLE:
        v = np.exp(lnv)
        assert inside is not None  # set above whenever kind == MIDDLE
        newton = otm_from_tails(inside, r1, r2, v, obj.bmax)
        np.subtract(obj.target, newton, out=newton)
        newton /= v
        a, c3 = g, g * g                     # ratios of b's 2nd and 3rd derivatives to b'
        c3 += g1
    else:
        sgn = _SIGN[kind]
        m = r2 * sgn                         # b/V below s_c, (bmax - b)/V above
        m += r1
        newton = np.log(m)
        newton += lnv
        newton -= obj.target
        newton *= m
        newton *= sgn
        f1 = np.divide(-sgn, m, out=m)       # derivative of the log objective
        a = g - f1
        c3 = f1
        c3 *= -2.0
        c3 += g
        c3 *= a
        c3 += g1
    p = _POWER[kind]
    k1 = 1.0 - p                             # terms of the change of variable to s**p
    k2 = k1 * (1.0 - 2.0 * p)
    big_b = inv_s * k2                       # newton²·(c3 + (3·k1·a + k2/s)/s)
    big_b += 3.0 * k1 * a
    big_b *= inv_s
    big_b += c3
    big_b *= newton
    big_b *= newton
    big_a = inv_s * k1                       # newton·(a + k1/s)
    big_a += a
    big_a *= newton
    ratio = big_b
    ratio *= 1.0 / 6.0
    ratio += big_a
    ratio += 1.0
    big_a *= 0.5
    big_a += 1.0
    np.divide(big_a, ratio, out=ratio)
    trusted = ratio > 0
    trusted &= ratio <= 2.0
    np.copyto(ratio, 1.0, where=~trusted)
    step = ratio
    step *= newton
    if kind == MIDDLE:
        s_new = step
        s_new += s
    else:
        root = step
        root *= inv_s
        root *= p
        root += 1.0
        np.sqrt(root, out=root)
        s_new = np.multiply(s, root, out=root) if kind == UPPER else np.divide(s, root, out=root)
    if bracket is not None:
        s_new, trusted = _keep_inside(s, s_new, newton, bracket, trusted)
    moved = s_new - s
    return s_new, np.abs(moved, out=moved), trusted, u, r


def _keep_inside(s: np.ndarray, s_new: np.ndarray, newton: np.ndarray, bracket: tuple[np.ndarray, np.ndarray],
                 trusted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = bracket
    np.copyto(lo, s, where=newton > 0)       # newton > 0: s is below the root, in every region
    np.copyto(hi, s, where=newton < 0)
    inside = (s_new >= lo) & (s_new <= hi)
    halfway = np.where(np.isfinite(hi), 0.5 * (lo + hi), 2.0 * s)
    return np.where(inside, s_new, halfway), trusted & inside


def lets_be_rational(beta: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Reference solver (py_vollib's LetsBeRational), element by element: the rare fallback."""
    from lets_be_rational import normalised_implied_volatility_from_a_transformed_rational_guess as lbr

    out = np.full(beta.shape, np.nan)
    for i, (b, xi) in enumerate(zip(beta.tolist(), x.tolist(), strict=True)):
        try:
            s = lbr(b, xi, 1.0)
        except Exception:  # the reference raises for values outside its bounds
            continue
        if 0.0 < s < 1e100:
            out[i] = s
    return out
