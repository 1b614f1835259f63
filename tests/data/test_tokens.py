"""Token renewal against the stand-in: it expires tokens, the job logs in with TOTP and renews them,
a listener on the control channel is told; the official request-token exchange; secrets stay out."""

from __future__ import annotations

import logging

import aiohttp
import orjson
import pytest
from arq import Retry
from pydantic import SecretStr
from redis.asyncio import Redis

from tests.data.conftest import DataEnv
from tests.waiting import confirm_subscribed, next_messages
from ticker.infra.kite.login import LoginCredentials, LoginError, request_token
from ticker.infra.kite.rest import KiteApi, TokenException
from ticker.infra.runtime.logs import RedactingFilter
from ticker.jobs.upkeep.access_tokens import (
    LOGIN_ATTEMPTS,
    TokenJobError,
    exchange_request_token,
    refresh_tokens,
)


async def _works(env: DataEnv, account_id: str) -> bool:
    account = await env.deps.accounts.get(account_id)
    try:
        await KiteApi(env.deps.kite_http, account.api_key, account.secret("access_token")).profile()
    except TokenException:
        return False
    return True


async def _secrets(env: DataEnv) -> list[str]:
    out = []
    for a in await env.deps.accounts.list():
        out += [a.secret(n) for n in ("password", "totp_secret", "access_token", "api_secret")]
    return [s for s in out if s]


async def test_expired_tokens_are_renewed_and_the_streamer_is_told(
        data_env: DataEnv, redis: Redis, caplog: pytest.LogCaptureFixture) -> None:
    env = data_env
    before = {a.account_id: a.secret("access_token") for a in await env.deps.accounts.list()}
    assert env.sim.state.expire_tokens() >= 2
    assert not await _works(env, "sim1")

    async with redis.pubsub() as sub:
        await sub.subscribe(env.deps.names.control)
        await confirm_subscribed(sub)  # listening before the job publishes
        with caplog.at_level(logging.INFO):
            result = await refresh_tokens(env.ctx, {})
        heard = [orjson.loads(m) for m in await next_messages(sub, 2)]

    assert result["renewed"] == 2 and result["failed"] == 0
    assert sorted((m["kind"], m["account_id"]) for m in heard) == [("tokens", "sim1"), ("tokens", "sim2")]
    for account in await env.deps.accounts.list():
        assert account.secret("access_token") != before[account.account_id]
        assert account.token_state == "valid"
        assert await _works(env, account.account_id)
    again = await refresh_tokens(env.ctx, {"account_id": "sim1"})
    assert [o["outcome"] for o in again["accounts"]] == ["still_valid"]

    shown = orjson.dumps(result).decode() + orjson.dumps(again).decode()
    redactor = RedactingFilter()
    logged = []
    for record in caplog.records:
        redactor.filter(record)
        logged.append(record.getMessage() + str(vars(record)))
    for secret in await _secrets(env) + list(before.values()):
        assert secret not in shown
        assert all(secret not in line for line in logged)


async def test_a_wrong_password_fails_clearly_and_marks_the_token_bad(data_env: DataEnv) -> None:
    env = data_env
    account = await env.deps.accounts.get("sim2")
    await env.deps.accounts.upsert(account.model_copy(update={"password": SecretStr("nope-nope")}))
    env.sim.state.expire_tokens(account.api_key)
    with pytest.raises(TokenJobError, match="login") as info:
        await refresh_tokens(env.ctx, {"account_id": "sim2"})
    assert "nope-nope" not in str(info.value)
    assert (await env.deps.accounts.get("sim2")).token_state == "invalid"
    assert (await env.deps.accounts.get("sim1")).token_state != "invalid"


async def test_a_login_failing_on_the_way_is_retried_in_the_job_then_by_arq(data_env: DataEnv) -> None:
    env = data_env
    env.sim.state.expire_tokens(env.sim.accounts[0].api_key)
    env.sim.state.add_fault("POST /api/login", "503", times=LOGIN_ATTEMPTS - 1)
    result = await refresh_tokens(env.ctx, {"account_id": "sim1"})
    assert result["renewed"] == 1 and env.kite_requests("POST /api/login") == LOGIN_ATTEMPTS
    assert await _works(env, "sim1")

    env.sim.state.expire_tokens(env.sim.accounts[0].api_key)
    env.sim.state.add_fault("POST /api/login", "timeout", times=LOGIN_ATTEMPTS, delay_ms=0)
    with pytest.raises(Retry):  # every attempt of this try failed: arq runs the job again later
        await refresh_tokens({**env.ctx, "job_try": 1}, {"account_id": "sim1"})
    stored = await env.deps.accounts.get("sim1")
    assert stored.token_state == "invalid" and stored.login_error is None  # bad token, credentials fine
    result = await refresh_tokens({**env.ctx, "job_try": 2}, {"account_id": "sim1"})
    assert result["renewed"] == 1 and await _works(env, "sim1")


async def test_a_refused_login_is_recorded_and_not_retried_until_the_credentials_change(data_env: DataEnv) -> None:
    env = data_env
    good = await env.deps.accounts.get("sim2")
    await env.deps.accounts.upsert(good.model_copy(update={"password": SecretStr("wrong-pass-1")}))
    env.sim.state.expire_tokens(good.api_key)
    with pytest.raises(TokenJobError, match="ticker accounts add sim2"):
        await refresh_tokens({**env.ctx, "job_try": 1}, {"account_id": "sim2"})  # no Retry: it is not transient
    stored = await env.deps.accounts.get("sim2")
    assert "InputException" in stored.login_error and stored.login_error_at is not None
    assert "wrong-pass-1" not in stored.login_error
    tried = env.kite_requests("POST /api/login")
    with pytest.raises(TokenJobError, match="refused earlier"):
        await refresh_tokens(env.ctx, {"account_id": "sim2"})
    everyone = await refresh_tokens(env.ctx, {})  # the daily run leaves it alone too
    assert [o["failure"] for o in everyone["accounts"] if o["account_id"] == "sim2"] == ["refused"]
    assert env.kite_requests("POST /api/login") == tried
    with pytest.raises(TokenJobError):
        await refresh_tokens(env.ctx, {"account_id": "sim2", "force": True})  # forced: Kite is asked again
    assert env.kite_requests("POST /api/login") == tried + 1

    await env.deps.accounts.upsert(good.model_copy(update={"access_token": None}))  # the right password again
    assert (await env.deps.accounts.get("sim2")).login_error is None
    assert (await refresh_tokens(env.ctx, {"account_id": "sim2"}))["renewed"] == 1
    assert await _works(env, "sim2")


async def test_accounts_without_auto_login_are_refused(data_env: DataEnv) -> None:
    env = data_env
    account = await env.deps.accounts.get("sim1")
    await env.deps.accounts.upsert(account.model_copy(update={"auto_login": False}))
    with pytest.raises(TokenJobError, match="no automated login"):
        await refresh_tokens(env.ctx, {"account_id": "sim1"})
    with pytest.raises(TokenJobError, match="no stored account"):
        await refresh_tokens(env.ctx, {"account_id": "ghost"})
    assert [o["account_id"] for o in (await refresh_tokens(env.ctx, {}))["accounts"]] == ["sim2"]


async def _official_request_token(env: DataEnv) -> str:
    async with aiohttp.ClientSession() as http, http.get(
            f"{env.sim.url}/connect/login", params={"api_key": env.sim.accounts[0].api_key, "v": "3"},
            allow_redirects=False) as resp:
        return str(aiohttp.client.URL(resp.headers["Location"]).query["request_token"])


async def test_the_official_request_token_is_exchanged(data_env: DataEnv, redis: Redis) -> None:
    env = data_env
    env.sim.state.expire_tokens(env.sim.accounts[0].api_key)
    async with redis.pubsub() as sub:
        await sub.subscribe(env.deps.names.control)
        await confirm_subscribed(sub)
        token = await _official_request_token(env)
        result = await exchange_request_token(env.ctx, {"account_id": "sim1", "request_token": token})
        heard = [orjson.loads(m) for m in await next_messages(sub, 1)]
    assert result == {"account_id": "sim1", "token_state": "valid"}
    assert heard[0]["kind"] == "tokens" and heard[0]["account_id"] == "sim1"
    assert await _works(env, "sim1")

    with pytest.raises(TokenJobError, match="Kite refused the request token") as info:
        await exchange_request_token(env.ctx, {"account_id": "sim1", "request_token": token})  # used up
    assert token not in str(info.value)
    with pytest.raises(ValueError, match="request_token"):
        await exchange_request_token(env.ctx, {"account_id": "sim1"})


async def test_the_login_client_reports_where_it_failed(kitesim) -> None:
    acc = kitesim.accounts[0]
    good = LoginCredentials(acc.api_key, acc.user_id, acc.password, acc.totp_secret)
    assert await request_token(kitesim.url, good)
    bad_totp = LoginCredentials(acc.api_key, acc.user_id, acc.password, "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP")
    with pytest.raises(LoginError, match="twofa"):
        await request_token(kitesim.url, bad_totp)
    with pytest.raises(LoginError, match="authorize"):
        await request_token(kitesim.url, LoginCredentials("no_such_key", acc.user_id, acc.password,
                                                          acc.totp_secret))
