"""The normal tail kernels against a 70-digit reference built here with `decimal`.

The reference is independent of numpy and of every library under comparison: erfcx(z) by its
positive series below z = 6 and by its continued fraction above, in 70-digit arithmetic.
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext

import numpy as np
import pytest

from ticker.core import normal
from ticker.core.normal import mills_ratio, mills_ratio_fast, norm_cdf, otm_value

PI = Decimal("3.14159265358979323846264338327950288419716939937510582097494459230781640628620899863")
DIGITS = 70


def erfcx(z: Decimal) -> Decimal:
    """e^{z²}·erfc(z) for z ≥ 0, to ~DIGITS digits."""
    if z <= 6:
        # erf(z) = 2/√π·e^{-z²}·Σ z·(2z²)^k / (1·3·…·(2k+1)): all terms positive, no cancellation.
        term = total = z
        k, z2 = 0, 2 * z * z
        while term > total * Decimal(10) ** -(DIGITS - 2) and term != 0:
            k += 1
            term = term * z2 / (2 * k + 1)
            total += term
        return (z * z).exp() - 2 / PI.sqrt() * total
    acc = z                                   # 1/√π / (z + (1/2)/(z + 1/(z + (3/2)/(z + …))))
    for k in range(400, 0, -1):
        acc = z + (Decimal(k) / 2) / acc
    return 1 / (PI.sqrt() * acc)


def mills_reference(u: float) -> Decimal:
    """R(u) = N(-u)/φ(u) = √(π/2)·erfcx(u/√2)."""
    with localcontext() as ctx:
        ctx.prec = DIGITS
        return (PI / 2).sqrt() * erfcx(Decimal(u) / Decimal(2).sqrt())


def relative_errors(values: np.ndarray, points: np.ndarray) -> np.ndarray:
    out = []
    for value, u in zip(values.tolist(), points.tolist(), strict=True):
        ref = mills_reference(u)
        out.append(abs(float((Decimal(value) - ref) / ref)))
    return np.array(out)


POINTS = np.concatenate([np.linspace(0.0, 12.0, 121), np.geomspace(12.5, 1e12, 60)])


def test_accurate_mills_ratio_within_2e_15_relative_everywhere():
    err = relative_errors(mills_ratio(POINTS), POINTS)
    assert err.max() < 2e-15, (err.max(), POINTS[err.argmax()])


def test_fast_mills_ratio_within_1e_8_relative_everywhere():
    err = relative_errors(mills_ratio_fast(POINTS), POINTS)
    assert err.max() < 1e-8, (err.max(), POINTS[err.argmax()])


def test_mills_ratio_limits_and_shapes():
    assert mills_ratio(np.inf) == 0.0
    assert mills_ratio(0.0) == pytest.approx(math.sqrt(math.pi / 2), rel=1e-15)
    grid = np.array([[0.5, np.inf], [3.0, 40.0]])
    out = mills_ratio(grid)
    assert out.shape == (2, 2) and out[0, 1] == 0.0 and out[1, 1] == pytest.approx(1 / 40, rel=1e-3)


def _decimal_interpolant(c: float, degree: int) -> tuple[list[float], list[float]]:
    """Rebuild the coefficients: interpolate G(v) = R(u)·(u + c)/c, u = c·v/(1 - v), by
    P(v)/Q(v) (Q's constant term 1) at 2·degree + 1 Chebyshev nodes of v in (0, 1)."""
    nodes = 2 * degree + 1
    with localcontext() as ctx:
        ctx.prec = DIGITS
        rows = []
        for j in range(nodes):
            v = (1 - Decimal(repr(math.cos((2 * j + 1) * math.pi / (2 * nodes))))) / 2
            u = Decimal(c) * v / (1 - v)
            g = (PI / 2).sqrt() * erfcx(u / Decimal(2).sqrt()) * (u + Decimal(c)) / Decimal(c)
            rows.append([v**k for k in range(degree + 1)] + [-g * v**k for k in range(1, degree + 1)] + [g])
        for i in range(len(rows)):            # Gaussian elimination with partial pivoting
            pivot = max(range(i, len(rows)), key=lambda r: abs(rows[r][i]))
            rows[i], rows[pivot] = rows[pivot], rows[i]
            for r in range(i + 1, len(rows)):
                f = rows[r][i] / rows[i][i]
                rows[r] = [a - f * b for a, b in zip(rows[r], rows[i], strict=True)]
        sol = [Decimal(0)] * len(rows)
        for i in range(len(rows) - 1, -1, -1):
            sol[i] = (rows[i][-1] - sum(rows[i][k] * sol[k] for k in range(i + 1, len(rows)))) / rows[i][i]
    return [float(a) for a in sol[: degree + 1]], [1.0] + [float(a) for a in sol[degree + 1:]]


@pytest.mark.parametrize("table", ["_ACCURATE", "_FAST"])
def test_coefficients_are_the_documented_interpolant(table):
    c, p, q = getattr(normal, table)
    p_again, q_again = _decimal_interpolant(c, len(p) - 1)
    np.testing.assert_allclose(p, p_again, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(q, q_again, rtol=1e-12, atol=1e-15)


def test_norm_cdf_matches_erfc_in_both_tails():
    z = np.concatenate([np.linspace(-37.5, 8.0, 2001), [0.0, -1e-300, 1e-300]])
    ref = np.array([0.5 * math.erfc(-v / math.sqrt(2.0)) for v in z])
    # math.erfc's own argument rounding costs ~z²·1e-16 relative in the far tail.
    tol = 4e-16 * (4.0 + z * z)
    assert np.all(np.abs(norm_cdf(z) - ref) <= tol * ref)


def test_norm_cdf_extremes():
    assert norm_cdf(-40.0) == 0.0 or norm_cdf(-40.0) < 1e-300
    assert norm_cdf(40.0) == 1.0
    assert norm_cdf(-np.inf) == 0.0 and norm_cdf(np.inf) == 1.0


def test_otm_value_matches_the_black_formula_where_it_is_well_conditioned():
    rng = np.random.default_rng(3)
    x = -np.abs(rng.normal(0.0, 0.3, 400))
    s = np.exp(rng.uniform(np.log(0.05), np.log(3.0), 400))
    n = lambda v: 0.5 * math.erfc(-v / math.sqrt(2.0))  # noqa: E731
    ref = np.array([math.exp(a / 2) * n(a / b + b / 2) - math.exp(-a / 2) * n(a / b - b / 2)
                    for a, b in zip(x, s, strict=True)])
    big = ref > 1e-3
    np.testing.assert_allclose(otm_value(x, s)[big], ref[big], rtol=1e-12)
