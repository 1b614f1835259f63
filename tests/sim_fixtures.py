"""Kite stand-in fixtures for every part's tests (loaded from tests/conftest.py).

- `kitesim`: a fresh in-process stand-in (`ticker.infra.kitesim`) on a free port in the test's
  event loop, stopped after the test. Defaults: `SimConfig(accounts=2, seed=7, tick_interval_ms=50)`
  (two accounts `sim_api_key` / `sim_api_key_2`, each with a working pre-issued access token).
  The object has `.url`, `.ws_url`, `.accounts` (SimAccount: api_key, api_secret, user_id,
  password, totp_secret, access_token), `.account` (the first) and `.state` (SimState: counters,
  faults, tokens, connections, orders; see ticker.infra.kitesim.sim_state / admin).
- `kitesim_factory`: `await kitesim_factory(**config)` starts one with any SimConfig fields
  overriding the defaults above (e.g. `order_rate_limit=0`, `quote_rate_limit=0`, `rate_limits=False`,
  `market_hours="nse"`, `postback_url=...`); every stand-in it started is stopped after the test.

The stand-in enforces Kite's 2026 rules by default: `X-Kite-Version: 3` on every REST call,
`market_protection` on MARKET/SL-M orders, per-user rate limits (a test that fires several quote
calls at once switches that limit off rather than sleeping). Take lot sizes from the instrument
master (`sim.state.universe.lot[row]` or the SDK's `instruments()`), never from constants.

The real kiteconnect SDK is synchronous: call it through `asyncio.to_thread` when the stand-in
runs in the test's own loop, e.g. `await asyncio.to_thread(KiteConnect(key, token, root=sim.url).orders)`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

SIM_DEFAULTS: dict[str, Any] = {"accounts": 2, "seed": 7, "tick_interval_ms": 50}


@pytest.fixture
async def kitesim_factory() -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    # Imported here so a test session that never asks for the stand-in does not load it.
    from ticker.infra.kitesim.config import SimConfig
    from ticker.infra.kitesim.server import running_sim

    async with contextlib.AsyncExitStack() as stack:
        async def start(**config: Any) -> Any:
            return await stack.enter_async_context(running_sim(SimConfig(**{**SIM_DEFAULTS, **config})))

        yield start


@pytest.fixture
async def kitesim(kitesim_factory: Callable[..., Awaitable[Any]]) -> Any:
    return await kitesim_factory()
