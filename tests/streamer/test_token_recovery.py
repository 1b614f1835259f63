"""Tokens come back by themselves: the streamer, a real arq worker running the token jobs, the Kite
stand-in, Redis and PostgreSQL, all real.

A login that fails on the way is retried until the account streams again; the streamer keeps
asking for a refresh (a request is never dropped as a duplicate of an earlier one); a login Kite
refuses is reported once, shown in /health and not retried in a loop, and new credentials bring the
account back; a token registered again, even one refused before, is streamed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from pydantic import SecretStr

from ticker.infra.cli import accounts_cli
from ticker.infra.queue.enqueue import create_queue
from ticker.infra.runtime.settings import Settings
from ticker.infra.stores.accounts import AccountStore, account_store
from ticker.jobs.context import build_deps, close_deps
from ticker.jobs.upkeep.access_tokens import LOGIN_ATTEMPTS
from ticker.jobs.worker import make_worker
from ticker.streamer.process.wiring import Streamer

from .conftest import Recorder, option_tokens, running_streamer, subscribe, wait_for

pytestmark = pytest.mark.timeout(180)
WRONG_TOTP = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"  # valid base32, not the account's


@pytest.fixture
def tsettings(ssettings: Settings, kitesim: Any) -> Settings:
    """Quick back-off so a test sees several rounds; the stand-in as Kite's login site too."""
    return ssettings.model_copy(update={"kite_login_root": kitesim.url, "token_refresh_retry_seconds": 0.3,
                                        "token_refresh_retry_max_seconds": 2.0})


@pytest_asyncio.fixture
async def store(sdb: Any, tsettings: Settings, market: Any) -> AccountStore:
    """The stand-in's accounts with automated login: acc1 (and acc2 unless a test changes it)."""
    accounts = account_store(sdb, tsettings)
    for i, sim_account in enumerate(market.accounts):
        login = {k: SecretStr(getattr(sim_account, k)) for k in ("user_id", "password", "totp_secret")}
        current = await accounts.get(f"acc{i + 1}")
        await accounts.upsert(current.model_copy(update={"auto_login": True, **login}))
    return accounts


@contextlib.asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[None]:
    """An arq worker on the default queue (where token jobs run), in this event loop."""
    queue = await create_queue(settings)
    deps = await build_deps(settings, queue)
    worker = make_worker("default", settings, deps)
    assert worker is not None
    task = asyncio.create_task(worker.main())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await worker.close()
        await close_deps(deps)
        await queue.aclose()


def account(streamer: Streamer, account_id: str) -> dict:
    return streamer.health()[1]["accounts"][account_id]


def streaming(streamer: Streamer, account_id: str) -> bool:
    doc = account(streamer, account_id)
    return doc["token_state"] != "invalid" and doc["connected"] > 0 and doc["tokens"] > 0


def logged(caplog: pytest.LogCaptureFixture, message: str, account_id: str) -> int:
    return sum(1 for r in caplog.records if r.getMessage() == message
               and account_id in (getattr(r, "account", None), getattr(r, "account_id", None)))


async def _cli(settings: Settings, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], *argv: str) -> None:
    for name in accounts_cli.ENV.values():
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert await accounts_cli.run(settings, accounts_cli.parser().parse_args(list(argv)), io.StringIO(), False) == 0


async def _stream(sdb: Any, count: int = 20) -> list[int]:
    tokens = await option_tokens(sdb, count)
    await subscribe(sdb, tokens)
    return tokens


async def test_a_login_failing_three_times_is_retried_until_the_account_streams(
        store: AccountStore, market: Any, sdb: Any, tsettings: Settings, snames: Any, sredis: Any) -> None:
    tokens = await _stream(sdb)
    sick = market.accounts[0]
    async with Recorder(sredis, [snames.options]) as rec, running_worker(tsettings), \
            running_streamer(tsettings) as streamer:
        await wait_for(lambda: rec.tokens(snames.options) >= set(tokens), 30)
        await wait_for(lambda: streaming(streamer, "acc1"), 30)
        market.state.add_fault("POST /api/login", "503", times=3)
        market.state.expire_tokens(api_key=sick.api_key)
        await wait_for(lambda: account(streamer, "acc1")["token_state"] == "invalid", 30)
        await wait_for(lambda: streaming(streamer, "acc1"), 90)
        back = account(streamer, "acc1")
    assert market.state.faults.fired.get("503") == 3
    assert market.state.counters.requests["POST /api/login"] >= 4  # three refused, then one through
    stored = await store.get("acc1")
    assert stored.secret("access_token") != sick.access_token and stored.token_state == "valid"
    assert stored.login_error is None and back["login_error"] is None


async def test_the_streamer_asks_again_after_a_refresh_job_gave_up(
        store: AccountStore, market: Any, sdb: Any, tsettings: Settings, snames: Any, sredis: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    """arq does not retry here (one try per job): only the streamer's later asks bring it back."""
    once = tsettings.model_copy(update={"order_max_tries": 1})
    tokens = await _stream(sdb)
    sick = market.accounts[0]
    caplog.set_level(logging.INFO)
    async with Recorder(sredis, [snames.options]) as rec, running_worker(once), running_streamer(once) as streamer:
        await wait_for(lambda: rec.tokens(snames.options) >= set(tokens), 30)
        await wait_for(lambda: streaming(streamer, "acc1"), 30)
        market.state.add_fault("POST /api/login", "503", times=LOGIN_ATTEMPTS + 1)  # more than one job tries
        market.state.expire_tokens(api_key=sick.api_key)
        await wait_for(lambda: account(streamer, "acc1")["token_state"] == "invalid", 30)
        await wait_for(lambda: streaming(streamer, "acc1"), 90)
    assert market.state.faults.fired.get("503") == LOGIN_ATTEMPTS + 1
    assert logged(caplog, "token refresh asked for", "acc1") >= 2
    assert logged(caplog, "token renewal failing; it is retried with back-off", "acc1") == 1
    assert (await store.get("acc1")).token_state == "valid"


async def test_a_wrong_totp_is_reported_once_shown_in_health_and_fixed_by_new_credentials(
        store: AccountStore, market: Any, sdb: Any, tsettings: Settings, snames: Any, sredis: Any,
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = await _stream(sdb)
    sick = market.accounts[0]
    await store.upsert((await store.get("acc1")).model_copy(update={"totp_secret": SecretStr(WRONG_TOTP)}))
    caplog.set_level(logging.INFO)
    async with Recorder(sredis, [snames.options]) as rec, running_worker(tsettings), \
            running_streamer(tsettings) as streamer:
        await wait_for(lambda: rec.tokens(snames.options) >= set(tokens), 30)
        market.state.expire_tokens(api_key=sick.api_key)
        await wait_for(lambda: account(streamer, "acc1")["login_error"] is not None, 60)
        assert "TOTP" in account(streamer, "acc1")["login_error"]
        assert account(streamer, "acc1")["token_state"] == "invalid"
        # Time for several more asks had the failure been taken for a passing one (0.3-2 s apart).
        passes = _passes(streamer)
        await wait_for(lambda: _passes(streamer) >= passes + 8, 60)
        assert market.state.counters.requests["POST /api/twofa"] == 1
        assert logged(caplog, "automated login refused by Kite; not retried until the credentials change",
                      "acc1") == 1
        stored = await store.get("acc1")
        assert stored.login_error is not None and stored.token_state == "invalid"

        # New credentials clear the error and bring the account back without anything else.
        await _cli(tsettings, monkeypatch, {"KITE_ACCOUNT_TOTP_SECRET": sick.totp_secret},
                   "add", "acc1", "--api-key", sick.api_key, "--auto-login")
        await wait_for(lambda: streaming(streamer, "acc1"), 60)
        assert account(streamer, "acc1")["login_error"] is None
    assert (await store.get("acc1")).login_error is None
    secrets = [sick.password, sick.totp_secret, WRONG_TOTP]
    assert not any(s in r.getMessage() + str(vars(r)) for r in caplog.records for s in secrets)


def _passes(streamer: Streamer) -> float:
    return sum(streamer.metrics.reconciles.labels(r)._value.get() for r in ("ok", "failed"))


async def test_a_refused_token_registered_again_streams_at_once(
        market: Any, sdb: Any, ssettings: Settings, snames: Any, sredis: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # No periodic reload in this test: only the registration itself can bring the account back.
    settings = ssettings.model_copy(update={"streamer_reconcile_seconds": 3600.0})
    store = account_store(sdb, settings)
    tokens = await _stream(sdb)
    sick = market.accounts[1]
    async with Recorder(sredis, [snames.options]) as rec, running_streamer(settings) as streamer:
        await wait_for(lambda: rec.tokens(snames.options) >= set(tokens), 30)
        await wait_for(lambda: streaming(streamer, "acc2"), 30)
        for how in ("set-token", "add"):
            market.state.refuse_handshakes(api_key=sick.api_key, times=1)  # Kite refuses the good token once
            await wait_for(lambda: account(streamer, "acc2")["token_state"] == "invalid", 30)
            await wait_for(lambda: _placed_on(streamer, "acc1") == len(tokens) + 1, 30)  # failed over
            assert (await store.get("acc2")).token_state == "invalid"
            assert not streaming(streamer, "acc2")
            argv = ["set-token", "acc2"] if how == "set-token" else ["add", "acc2", "--api-key", sick.api_key]
            await _cli(settings, monkeypatch, {"KITE_ACCOUNT_ACCESS_TOKEN": sick.access_token}, *argv)
            await wait_for(lambda: streaming(streamer, "acc2"), 30)
            assert (await store.get("acc2")).secret("access_token") == sick.access_token
        moved = _placed_on(streamer, "acc1") + _placed_on(streamer, "acc2")
    assert moved == len(tokens) + 1  # + the NIFTY index


def _placed_on(streamer: Streamer, account_id: str) -> int:
    return account(streamer, account_id)["tokens"]
