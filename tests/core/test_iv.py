"""The normalised implied-volatility solver: every path it can take, against the truth and
against LetsBeRational."""

from __future__ import annotations

import numpy as np
import pytest

from ticker.core import iv
from ticker.core.normal import otm_value


def wide(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised problems from near the money to far out, tiny to huge s (beta representable)."""
    rng = np.random.default_rng(seed)
    x = -np.abs(rng.normal(0.0, 0.5, n)) * rng.choice([0.001, 0.01, 0.1, 1.0, 3.0], n)
    s = np.exp(rng.uniform(np.log(1e-4), np.log(8.0), n))
    beta = otm_value(x, s)
    keep = (beta > 1e-280) & (beta < np.exp(x / 2) * (1 - 1e-12))
    return beta[keep], x[keep], s[keep]


def tolerance(beta: np.ndarray, x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """What the data allow: s moves by beta/b'(s) per relative ulp of beta; plus ~1e-15 absolute
    from evaluating b itself (its two tails nearly cancel when s is tiny)."""
    vega = np.exp(-0.5 * (x / s) ** 2 - s * s / 8) / np.sqrt(2 * np.pi)
    return 1e-12 * s + 50 * 2.3e-16 * beta / vega + 2e-15


def test_solver_recovers_s_to_the_limit_the_data_allows():
    beta, x, s = wide(1, 20_000)
    got = iv.solve_normalised(beta, x)
    assert np.all(np.abs(got - s) <= tolerance(beta, x, s))


def test_every_region_is_exercised():
    beta, x, _ = wide(2, 5_000)
    plan = iv._SolvePlan(beta, x, exact=True)
    assert set(np.unique(plan.kind)) == {iv.LOWER, iv.MIDDLE, iv.UPPER}


def test_bracketed_path_alone_agrees():
    beta, x, s = wide(3, 3_000)
    got = iv._solve_bracketed(beta, x)
    assert np.all(np.abs(got - s) <= tolerance(beta, x, s))


def test_lets_be_rational_fallback_agrees_and_gives_nan_outside_bounds():
    beta, x, s = wide(4, 200)
    np.testing.assert_allclose(iv.lets_be_rational(beta, x), iv.solve_normalised(beta, x), rtol=1e-10)
    bad = iv.lets_be_rational(np.array([2.0, -1.0]), np.array([-0.1, -0.1]))
    assert np.isnan(bad).all()


def test_tails_returned_sit_next_to_the_answer():
    beta, x, _ = wide(5, 4_000)
    s, u, r = iv.solve_with_tails(beta, x)
    have = ~np.isnan(u[0])
    assert have.mean() > 0.95
    h = x / s
    d = np.stack((np.abs(h + s / 2), s / 2 - h))
    assert np.all(np.abs(d - u)[:, have] <= 1e-3 * np.maximum(1.0, d[:, have]))
    from ticker.core.normal import mills_ratio

    np.testing.assert_allclose(r[:, have], mills_ratio(u[:, have]), rtol=1e-15)


@pytest.mark.parametrize(("beta", "x"), [
    (1e-300, -0.5), (1e-300, -700.0), (np.exp(-0.25) * (1 - 1e-15), -0.5),
    (1e-20, -1e-12), (0.3, 0.0), (1e-200, 0.0),
])
def test_extremes_finish(beta, x):
    got = iv.solve_normalised(np.array([beta]), np.array([x]))[0]
    assert np.isnan(got) or otm_value(np.array([x]), np.array([got]))[0] == pytest.approx(beta, rel=1e-8)
