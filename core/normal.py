"""The normal distribution's tail and the normalised Black value, on whole numpy arrays.

numpy has no erf, so the tail comes from the Mills ratio R(u) = N(-u)/φ(u), one rational
function accurate to ~1e-15 relative on [0, ∞). With R the Black value needs one exponential
and never subtracts two tiny tails from each other (see `otm_from_tails`).

Black values use Jäckel's normalisation: x = ln(F/K), s = σ·√t, values divided by √(F·K).
By put-call parity every option's time value equals that of an out-of-the-money call with
x̄ = -|x| ≤ 0, so one kernel serves calls, puts, Black-Scholes-Merton and Black-76.
"""

from __future__ import annotations

import math

import numpy as np

SQRT_2PI = math.sqrt(2.0 * math.pi)
INV_SQRT_2PI = 1.0 / SQRT_2PI
LN_SQRT_2PI = math.log(SQRT_2PI)

# R(u) = c/(u+c) · P(v)/Q(v), v = u/(u+c): rational interpolants of R at Chebyshev nodes in v,
# computed against a 70-digit reference (tests/core/test_normal.py rebuilds them and checks both).
# Constant terms first. The accurate one (c = 5, degree 10) is within 8e-16 relative on [0, ∞);
# the fast one (c = 3, degree 5) within 8e-9, enough for node values and first solver steps.
_ACCURATE = (5.0,
             (1.2533141373155, -1.9042354527632235, 5.249399954252975, -4.653787978582191,
              6.373815971289621, -2.9323807103594595, 2.7202644913148712, -0.37247695396388286,
              0.41326488371264347, 0.02828959329314547, 0.0027035456842500693),
             (1.0, 1.470062736120799, 3.0618998517414298, 4.037142773957683, 4.931730735585162,
              5.04498697577891, 4.486005198810239, 3.390024904094871, 2.1192007121553056,
              1.0212876243704463, 0.3285158933563998))
_FAST = (3.0,
         (1.2533141399422516, -2.398488263195045, 2.8058625549303184, -1.671923719181371,
          0.6104025599995341, -0.08751538903384137),
         (1.0, -0.5200625675159553, 0.8012550175741358, 0.015527703316989367, 0.18075365699978435,
          0.05748184764672618))


def mills_ratio(u: np.ndarray) -> np.ndarray:
    """R(u) = N(-u)/φ(u) for u ≥ 0 (any shape); R(u) ~ 1/u for large u, R(+inf) = 0."""
    with np.errstate(invalid="ignore"):
        return _rational(np.asarray(u, dtype=np.float64), *_ACCURATE)


def mills_ratio_fast(u: np.ndarray) -> np.ndarray:
    """R(u) to ~1e-8 relative at half the cost of `mills_ratio`."""
    with np.errstate(invalid="ignore"):
        return _rational(np.asarray(u, dtype=np.float64), *_FAST)


def _rational(u: np.ndarray, c: float, pc: tuple[float, ...], qc: tuple[float, ...]) -> np.ndarray:
    w = 1.0 / (u + c)
    v = u * w
    # In-place Horner with Python-float coefficients: the cheapest numpy calls there are.
    p = v * pc[-1]
    q = v * qc[-1]
    for cp, cq in zip(pc[-2:0:-1], qc[-2:0:-1], strict=True):
        p += cp
        p *= v
        q += cq
        q *= v
    p += pc[0]
    q += qc[0]
    w *= c
    p *= w
    p /= q
    infinite = np.isinf(u)
    return np.where(infinite, 0.0, p) if infinite.any() else p


def norm_pdf(z: np.ndarray) -> np.ndarray:
    return INV_SQRT_2PI * np.exp(-0.5 * z * z)


def norm_cdf(z: np.ndarray) -> np.ndarray:
    """Standard normal CDF, accurate to ~1e-15 relative in both tails (down to underflow)."""
    z = np.asarray(z, dtype=np.float64)
    tail = norm_pdf(z) * mills_ratio(np.abs(z))
    return np.where(z <= 0, tail, 1.0 - tail)


def otm_from_tails(inside: np.ndarray, r_near: np.ndarray, r_far: np.ndarray, w: np.ndarray,
                   w_max: np.ndarray) -> np.ndarray:
    """Time value of an option from the Mills ratios at its two d's.

    With d̄1 = x̄/s + s/2, d̄2 = x̄/s - s/2 of the out-of-the-money twin, r_near = R(|d̄1|),
    r_far = R(|d̄2|), w = F·φ(d1) = K·φ(d2) (any common scale) and w_max the value's supremum
    in that scale (min(F, K), or e^{x̄/2} normalised). `inside` is d̄1 ≤ 0 (s² ≤ 2|x|): both
    d's are negative and the value is w·(R1 - R2) without subtracting two tails; otherwise the
    value is w_max less the two tails.
    """
    return np.where(inside, w * (r_near - r_far), w_max - w * (r_near + r_far))


def otm_value(x: np.ndarray, s: np.ndarray, mills=mills_ratio) -> np.ndarray:
    """Normalised Black value b(x, s) of an out-of-the-money call, x ≤ 0, s > 0 (same shapes)."""
    h = x / s
    half = 0.5 * s
    d1 = h + half
    r = mills(np.stack((np.abs(d1), half - h)))
    v = np.exp(-0.5 * h * h - 0.125 * s * s) * INV_SQRT_2PI
    return otm_from_tails(d1 <= 0, r[0], r[1], v, np.exp(0.5 * x))
