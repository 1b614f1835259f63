"""Data calls on any healthy account: ranked by rate budget, failing over on 429 and refused tokens."""

from __future__ import annotations

import pytest

from tests.data.conftest import DataEnv
from ticker.infra.kite.account_choice import NoDataAccount, data_accounts
from ticker.infra.kite.limits import budget_for

PROFILE = "GET /user/profile"


async def _profile(env: DataEnv):
    return await data_accounts(env.deps).call("api", lambda api: api.profile())


async def test_budget_decides_which_account_serves(data_env: DataEnv) -> None:
    env = data_env
    picker = data_accounts(env.deps)
    assert [a.account_id for a in await picker.ranked("orders")] == ["sim1", "sim2"]
    user = env.sim.accounts[0].user_id  # Kite counts per user: sim1's budget is its user's
    await picker.limiter.acquire(budget_for("sim1", user), "orders")  # its second, minute and day windows
    assert [a.account_id for a in await picker.ranked("orders")] == ["sim2", "sim1"]


async def test_a_429_fails_over_to_the_next_account(data_env: DataEnv) -> None:
    env = data_env
    env.sim.state.add_fault(PROFILE, kind="429", times=1)
    before = env.kite_requests(PROFILE)
    profile, used = await _profile(env)
    assert used == "sim2" and profile.user_id == env.sim.accounts[1].user_id
    assert env.kite_requests(PROFILE) - before == 2


async def test_a_refused_token_marks_the_account_and_fails_over(data_env: DataEnv) -> None:
    env = data_env
    env.sim.state.expire_tokens(env.sim.accounts[0].api_key)
    _, used = await _profile(env)
    assert used == "sim2"
    assert (await env.deps.accounts.get("sim1")).token_state == "invalid"
    assert [a.account_id for a in await data_accounts(env.deps).healthy()] == ["sim2"]

    env.sim.state.expire_tokens()
    with pytest.raises(NoDataAccount, match="sim2: token refused"):
        await _profile(env)
    with pytest.raises(NoDataAccount, match="none is active"):
        await _profile(env)
