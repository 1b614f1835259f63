"""Prices, implied volatility and Greeks against py_vollib, option by option, over wide ranges:
deep in and out of the money, one hour to two years, volatility 1%–300%, r and q including 0."""

from __future__ import annotations

import math
import warnings
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ticker.core import greeks as gk

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # py_vollib now lives on as `vollib`
    from py_vollib.black import black as ref_black
    from py_vollib.black.greeks import analytical as ref_black_greeks
    from py_vollib.black.implied_volatility import implied_volatility as ref_black_iv
    from py_vollib.black_scholes_merton import black_scholes_merton as ref_bsm
    from py_vollib.black_scholes_merton.greeks import analytical as ref_bsm_greeks
    from py_vollib.black_scholes_merton.implied_volatility import implied_volatility as ref_bsm_iv

MODELS = ("bsm", "black76")
HOUR = 1.0 / (365 * 24)

rates = st.one_of(st.just(0.0), st.floats(0.0, 0.2))
yields = st.one_of(st.just(0.0), st.floats(0.0, 0.1))
option = st.tuples(
    st.floats(1.0, 1e5),            # S (spot, or forward for black76)
    st.floats(-2.0, 2.0),           # ln(K/S): deep in and out of the money
    st.floats(HOUR, 2.0),           # t in years
    st.floats(0.01, 3.0),           # sigma
    rates, yields, st.booleans(),   # r, q, is_call
)
batches = st.lists(option, min_size=1, max_size=12)


def columns(batch):
    S, m, t, sigma, r, q, call = (np.array(c) for c in zip(*batch, strict=True))  # noqa: N806
    return S, S * np.exp(m), t, r, q, sigma, call


def flag(call) -> str:
    return "c" if call else "p"


def reference_prices(model, S, K, t, r, q, sigma, call):  # noqa: N803
    if model == "bsm":
        return np.array([ref_bsm(flag(c), *v) for c, *v in zip(call, S, K, t, r, sigma, q, strict=True)])
    return np.array([ref_black(flag(c), *v) for c, *v in zip(call, S, K, t, r, sigma, strict=True)])


def reference_iv(model, price, S, K, t, r, q, call):  # noqa: N803
    out = []
    for p, s, k, tt, rr, qq, c in zip(price, S, K, t, r, q, call, strict=True):
        try:
            out.append(ref_bsm_iv(p, s, k, tt, rr, qq, flag(c)) if model == "bsm"
                       else ref_black_iv(p, s, k, rr, tt, flag(c)))
        except Exception:
            out.append(np.nan)
    return np.array(out)


def reference_greeks(model, S, K, t, r, q, sigma, call):  # noqa: N803
    mod = ref_bsm_greeks if model == "bsm" else ref_black_greeks
    out = {}
    for name in gk.GREEK_NAMES:
        fn = getattr(mod, name)
        if model == "bsm":
            out[name] = np.array([fn(flag(c), *v) for c, *v in zip(call, S, K, t, r, sigma, q, strict=True)])
        else:
            out[name] = np.array([fn(flag(c), *v) for c, *v in zip(call, S, K, t, r, sigma, strict=True)])
    return out


def theta_scale(model, S, K, t, r, q, sigma):  # noqa: N803
    """Sum of the magnitudes of theta's three terms: theta may cancel to ~0, its terms do not."""
    q = r if model == "black76" else q
    eq, er = np.exp(-q * t), np.exp(-r * t)
    d1 = (np.log(S / K) + ((r - q) + sigma * sigma / 2) * t) / (sigma * np.sqrt(t))
    pdf = np.exp(-0.5 * d1 * d1) / math.sqrt(2 * math.pi)
    return (S * eq * pdf * sigma / (2 * np.sqrt(t)) + q * S * eq + r * K * er) / 365.0


def vega_abs(model, S, K, t, r, q, sigma):  # noqa: N803
    """∂price/∂σ per unit volatility."""
    q = r if model == "black76" else q
    d1 = (np.log(S / K) + ((r - q) + sigma * sigma / 2) * t) / (sigma * np.sqrt(t))
    return S * np.exp(-q * t) * np.exp(-0.5 * d1 * d1) / math.sqrt(2 * math.pi) * np.sqrt(t)


# --- prices --------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", MODELS)
@settings(max_examples=120, deadline=None)
@given(batch=batches)
def test_price_equals_py_vollib(model, batch):
    S, K, t, r, q, sigma, call = columns(batch)  # noqa: N806
    ours = gk.price(S, K, t, r, q, sigma, call, model=model)
    ref = reference_prices(model, S, K, t, r, q, sigma, call)
    big = ref >= 1e-6 * S                       # where an option's price matters to anyone
    tiny = ~big & (ref > 1e-300 * S)            # far tails, still representable
    # Within 1e-12 relative, or a few ulps of the underlying (the floor that matters for
    # at-the-money options with minutes of life at 1% volatility, priced as bound - tails).
    assert np.all(np.abs(ours - ref)[big] <= np.maximum(1e-12 * ref, 2e-15 * (S + K))[big])
    np.testing.assert_allclose(ours[tiny], ref[tiny], rtol=1e-10)
    assert np.all(ours[ref <= 1e-300 * S] <= 1e-290 * S[ref <= 1e-300 * S])


def test_price_at_expiry_and_zero_vol_is_discounted_intrinsic():
    S, K, r = 100.0, np.array([90.0, 110.0]), 0.05  # noqa: N806
    at_expiry = gk.price(S, K, 0.0, r, 0.0, 0.2, [True, False])
    np.testing.assert_allclose(at_expiry, [10.0, 10.0])
    no_vol = gk.price(S, K, 0.5, r, 0.0, 0.0, [True, True])
    forward = S * math.exp(r * 0.5)
    np.testing.assert_allclose(no_vol, [(forward - 90.0) * math.exp(-r * 0.5), 0.0])


def test_price_put_call_parity():
    S, K, t, r, q, sigma = 22000.0, np.linspace(18000, 26000, 41), 0.1, 0.065, 0.01, 0.18  # noqa: N806
    c = gk.price(S, K, t, r, q, sigma, True)
    p = gk.price(S, K, t, r, q, sigma, False)
    np.testing.assert_allclose(c - p, S * math.exp(-q * t) - K * math.exp(-r * t), rtol=0, atol=1e-9)


# --- implied volatility ------------------------------------------------------------------------

@pytest.mark.parametrize("model", MODELS)
@settings(max_examples=150, deadline=None)
@given(batch=batches)
def test_implied_volatility_equals_py_vollib(model, batch):
    S, K, t, r, q, sigma, call = columns(batch)  # noqa: N806
    price = gk.price(S, K, t, r, q, sigma, call, model=model)
    ours = gk.implied_volatility(price, S, K, t, r, q, call, model=model)
    ref = reference_iv(model, price, S, K, t, r, q, call)
    # Meaningful time value: the price pins sigma down to ~1e-11 (price rounding / vega).
    meaningful = (vega_abs(model, S, K, t, r, q, sigma) >= 1e-5 * price) & (price > 1e-250 * S)
    assert np.all(np.abs(ours - ref)[meaningful] <= 1e-9), (ours[meaningful], ref[meaningful])
    assert np.all(np.abs(ours - sigma)[meaningful] <= 1e-9)
    # Wherever an IV is returned, it reprices the option.
    found = np.isfinite(ours)
    again = gk.price(S[found], K[found], t[found], r[found], q[found], ours[found], call[found], model=model)
    np.testing.assert_allclose(again, price[found], rtol=1e-9, atol=1e-300)


@pytest.mark.parametrize("model", MODELS)
def test_implied_volatility_over_a_dense_chain(model):
    """A whole NIFTY-like surface at once: every option with time value comes back."""
    rng = np.random.default_rng(5)
    n = 20_000
    S = 22_000.0 * np.exp(rng.normal(0.0, 0.02, n))  # noqa: N806
    K = np.round(S * np.exp(rng.normal(0.0, 0.15, n)) / 50) * 50  # noqa: N806
    t = rng.choice([1, 2, 5, 9, 16, 30, 58, 90, 180, 365], n) / 365 - rng.uniform(0, 0.25 / 365, n)
    sigma = np.exp(rng.uniform(np.log(0.05), np.log(1.5), n))
    call = rng.random(n) < 0.5
    price = gk.price(S, K, t, 0.065, 0.012, sigma, call, model=model)
    iv = gk.implied_volatility(price, S, K, t, 0.065, 0.012, call, model=model)
    meaningful = (vega_abs(model, S, K, t, 0.065, 0.012, sigma) >= 1e-5 * price) & (price > 1e-250 * S)
    assert meaningful.sum() > n // 2
    assert np.abs(iv - sigma)[meaningful].max() <= 1e-9


@pytest.mark.parametrize("model", MODELS)
def test_no_implied_volatility_gives_nan(model):
    S, K, t, r = 100.0, 90.0, 0.25, 0.0  # noqa: N806  (r = 0: the bounds below are exact)
    cases = [  # (price, S, K, t, is_call)
        (9.99, S, K, t, True),                             # below intrinsic
        (10.0, S, K, t, True),                             # exactly intrinsic: no time value
        (S * (1 + 1e-12), S, K, t, True),                  # above the upper bound
        (S * 1.5, S, K, t, True),
        (K * 1.01, S, K, t, False),                        # put above its bound
        (0.0, S, K, t, False),                             # zero price
        (-1.0, S, K, t, False),                            # negative price
        (5.0, S, K, 0.0, True),                            # expired
        (5.0, S, K, -0.1, True),                           # past expiry
        (5.0, 0.0, K, t, True),                            # zero underlying
        (5.0, S, -1.0, t, True),                           # negative strike
        (np.nan, S, K, t, True),
        (5.0, np.inf, K, t, True),
        (5.0, S, K, np.nan, True),
    ]
    price, S_, K_, t_, call = (np.array(c) for c in zip(*cases, strict=True))  # noqa: N806
    iv = gk.implied_volatility(price, S_, K_, t_, r, 0.0, call, model=model)
    assert np.isnan(iv).all(), iv
    out = gk.iv_and_greeks(price, S_, K_, t_, r, 0.0, call, model)
    assert all(np.isnan(out[name]).all() for name in ("iv", *gk.GREEK_NAMES))


def test_extreme_but_valid_inputs_solve_or_give_nan_quickly():
    # Huge moneyness, time values near underflow and near the upper bound.
    beta_cases = [
        (1e5, 1.0, 1.0, 0.5, True),
        (1.0, 1e-200, 2.0, 3.0, True),
        (100.0, 100.0, 1e-6, 0.01, True),
        (100.0, 100.0, 50.0, 3.0, False),
    ]
    S, K, t, sigma, call = (np.array(c) for c in zip(*beta_cases, strict=True))  # noqa: N806
    price = gk.price(S, K, t, 0.0, 0.0, sigma, call)
    iv = gk.implied_volatility(price, S, K, t, 0.0, 0.0, call)
    ok = np.isfinite(iv)
    np.testing.assert_allclose(gk.price(S[ok], K[ok], t[ok], 0.0, 0.0, iv[ok], call[ok]), price[ok], rtol=1e-9)
    assert np.all(np.isnan(iv[~ok]) & (price[~ok] >= 0))


# --- Greeks ------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", MODELS)
@settings(max_examples=150, deadline=None)
@given(batch=batches)
def test_greeks_equal_py_vollib(model, batch):
    S, K, t, r, q, sigma, call = columns(batch)  # noqa: N806
    ours = gk.greeks(S, K, t, r, q, sigma, call, model=model)
    ref = reference_greeks(model, S, K, t, r, q, sigma, call)
    for name in gk.GREEK_NAMES:
        scale = np.abs(ref[name])
        if name == "theta":
            scale = np.maximum(scale, theta_scale(model, S, K, t, r, q, sigma))
        err = np.abs(ours[name] - ref[name])
        assert np.all(err <= 1e-9 * scale + 1e-280), (name, ours[name], ref[name])


@pytest.mark.parametrize("model", MODELS)
def test_greeks_without_volatility_or_time_are_nan(model):
    out = gk.greeks(100.0, 100.0, [0.1, 0.0, -1.0, 0.1, 0.1], 0.05, 0.0, [0.2, 0.2, 0.2, 0.0, np.nan], True, model)
    for name in gk.GREEK_NAMES:
        assert np.isfinite(out[name][0]) and np.isnan(out[name][1:]).all()


@pytest.mark.parametrize("model", MODELS)
@settings(max_examples=60, deadline=None)
@given(batch=batches)
def test_iv_and_greeks_is_iv_then_greeks(model, batch):
    S, K, t, r, q, sigma, call = columns(batch)  # noqa: N806
    price = gk.price(S, K, t, r, q, sigma, call, model=model)
    both = gk.iv_and_greeks(price, S, K, t, r, q, call, model)
    iv = gk.implied_volatility(price, S, K, t, r, q, call, model=model)
    np.testing.assert_array_equal(both["iv"], iv)
    separate = gk.greeks(S, K, t, r, q, iv, call, model=model)
    for name in gk.GREEK_NAMES:   # Black-76 rho uses the quoted price rather than the repriced one
        np.testing.assert_allclose(both[name], separate[name], rtol=1e-9, atol=1e-300)


# --- arguments ---------------------------------------------------------------------------------

def test_arguments_broadcast():
    K = np.array([[95.0], [100.0], [105.0]])  # noqa: N806
    t = np.array([0.1, 0.2, 0.5, 1.0])
    p = gk.price(100.0, K, t, 0.05, 0.0, 0.2, True)
    assert p.shape == (3, 4)
    assert p[1, 2] == pytest.approx(float(gk.price(100.0, 100.0, 0.5, 0.05, 0.0, 0.2, True)), rel=1e-15)
    iv = gk.implied_volatility(p, 100.0, K, t, 0.05, 0.0, np.array([True, True, True, True]))
    np.testing.assert_allclose(iv, 0.2, atol=1e-12)
    g = gk.greeks(100.0, 100.0, 0.5, 0.05, 0.0, 0.2, False)
    assert all(np.ndim(v) == 0 for v in g.values())
    assert gk.implied_volatility(np.array([]), 100.0, 100.0, 0.5, 0.0, 0.0, True).shape == (0,)


def test_batches_larger_than_a_chunk_match_small_ones():
    rng = np.random.default_rng(9)
    n = gk.CHUNK * 2 + 17
    K = 100.0 * np.exp(rng.normal(0, 0.2, n))  # noqa: N806
    t = rng.uniform(0.01, 1.0, n)
    sigma = rng.uniform(0.1, 0.6, n)
    call = rng.random(n) < 0.5
    price = gk.price(100.0, K, t, 0.03, 0.0, sigma, call)
    whole = gk.iv_and_greeks(price, 100.0, K, t, 0.03, 0.0, call)
    part = gk.iv_and_greeks(price[-40:], 100.0, K[-40:], t[-40:], 0.03, 0.0, call[-40:])
    for name, value in part.items():
        np.testing.assert_allclose(whole[name][-40:], value, rtol=1e-13, atol=1e-300)


@pytest.mark.parametrize("bad", [
    dict(model="heston"),
    dict(is_call="c"),
    dict(is_call=[0.5]),
    dict(S="abc"),
    dict(t=[1.0, 2.0], S=[1.0, 2.0, 3.0]),
])
def test_wrong_kinds_of_argument_raise_value_error(bad):
    args = dict(S=100.0, K=100.0, t=0.5, r=0.0, q=0.0, sigma=0.2, is_call=True, model="bsm") | bad
    with pytest.raises(ValueError):
        gk.price(**args)


# --- helpers -----------------------------------------------------------------------------------

IST = timezone(timedelta(hours=5, minutes=30))


def test_time_to_expiry_runs_to_1530_ist_on_the_expiry_date():
    close = datetime(2024, 6, 27, 15, 30, tzinfo=IST)
    assert gk.time_to_expiry(close.timestamp(), date(2024, 6, 27)) == 0.0
    day_before = (close - timedelta(days=1)).timestamp()
    assert gk.time_to_expiry(day_before, "2024-06-27") == pytest.approx(1 / 365, rel=1e-12)
    assert gk.time_to_expiry(close + timedelta(hours=1), date(2024, 6, 27)) == pytest.approx(-1 / (365 * 24))
    # Naive datetimes are IST, as Kite sends them.
    assert gk.time_to_expiry(datetime(2024, 6, 27, 9, 30), date(2024, 6, 27)) == pytest.approx(6 / (365 * 24))


def test_time_to_expiry_is_vectorised_over_batches():
    now = datetime(2024, 6, 24, 9, 15, tzinfo=IST).timestamp()
    expiries = np.array(["2024-06-27", "2024-07-04", "NaT"], dtype="datetime64[D]")
    out = gk.time_to_expiry(now, expiries)
    expected = [(3 * 86400 + 6.25 * 3600) / (365 * 86400), (10 * 86400 + 6.25 * 3600) / (365 * 86400)]
    np.testing.assert_allclose(out[:2], expected, rtol=1e-13)
    assert np.isnan(out[2])
    ts = np.array([now, now + 3600.0])
    np.testing.assert_allclose(gk.time_to_expiry(ts, expiries[:2]), np.array(expected) - [0, 3600 / (365 * 86400)])
    as_datetime64 = np.array([now], dtype="float64").astype("datetime64[s]")
    assert gk.time_to_expiry(as_datetime64, expiries[:1])[0] == pytest.approx(expected[0], rel=1e-13)
    with pytest.raises(ValueError):
        gk.time_to_expiry(now, "not a date")


def test_synthetic_forward_recovers_the_forward_by_parity():
    S, t, r, q, sigma = 22_000.0, 0.08, 0.065, 0.012, 0.15  # noqa: N806
    K = np.array([21_000.0, 22_000.0, 23_500.0])  # noqa: N806
    c = gk.price(S, K, t, r, q, sigma, True)
    p = gk.price(S, K, t, r, q, sigma, False)
    np.testing.assert_allclose(gk.synthetic_forward(c, p, K, t, r), S * math.exp((r - q) * t), rtol=1e-13)
