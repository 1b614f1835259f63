"""A fresh system made ready to stream from the Kite stand-in: its accounts registered, instruments
loaded, the strike window seeded.

`ticker dev` does this as it starts. `ticker sim-setup` does the same once for a stack whose processes
run apart (infra/docker-compose.yml runs it after the worker is up and before the streamer): the
stand-in derives its accounts' credentials from its seed (`SimConfig.resolve_accounts`), so the same
seed and count here register exactly the accounts the running `ticker sim` accepts. Instruments and
strikes are loaded by the worker, as the scheduler would, through the same jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

import asyncpg
from pydantic import SecretStr

from ticker.core.contracts import JOB_REBALANCE_STRIKES, JOB_REFRESH_INSTRUMENTS
from ticker.infra.kitesim.config import SimConfig
from ticker.infra.runtime.settings import Settings
from ticker.infra.stores.accounts import AccountStore, KiteAccount
from ticker.infra.stores.crypto import SecretBox

SIM_SEED = 42
SIM_ACCOUNTS = 2
JOB_TIMEOUT = 180.0  # the worker may still be starting; an instrument refresh takes seconds


async def register_sim_accounts(pool: asyncpg.Pool, encryption_key: str, seed: int, count: int) -> list[str]:
    """Store the stand-in's accounts (seeded like `ticker sim --seed`), each with a valid token, as
    sim1, sim2, ...; storing them again changes nothing. Their ids, in order."""
    store = AccountStore(pool, SecretBox(encryption_key))
    ids = []
    for i, acc in enumerate(SimConfig(seed=seed, accounts=count).resolve_accounts(), start=1):
        account_id = f"sim{i}"
        await store.upsert(KiteAccount(
            account_id=account_id, api_key=acc.api_key, api_secret=SecretStr(acc.api_secret),
            access_token=SecretStr(acc.access_token), user_id=SecretStr(acc.user_id),
            password=SecretStr(acc.password), totp_secret=SecretStr(acc.totp_secret),
            auto_login=True, token_state="valid"))
        await store.set_token(account_id, acc.access_token, "valid")
        ids.append(account_id)
    return ids


async def run_job(settings: Settings, job_name: str, payload: dict, timeout: float = JOB_TIMEOUT) -> object:
    """Enqueue one job by name for the running worker(s) and wait for its result."""
    from ticker.infra.queue.arq_adapter import job_result
    from ticker.infra.queue.enqueue import create_queue, derived_job_id, enqueue, names_for

    queue = await create_queue(settings)
    try:
        names = names_for(settings)
        job_id = derived_job_id(job_name, "setup", time.time())
        await enqueue(queue, names, job_name, payload, job_id=job_id)
        return await job_result(queue, job_id, names.queue_for(job_name), timeout)
    finally:
        await queue.aclose()


async def load_market(settings: Settings, say: Callable[[str], object]) -> None:
    """Instruments refreshed from Kite (here the stand-in), then the strike window subscribed."""
    say(f"instruments refreshed: {await run_job(settings, JOB_REFRESH_INSTRUMENTS, {})}")
    result = await run_job(settings, JOB_REBALANCE_STRIKES, {})
    say(f"subscriptions seeded: added {result.get('added') if isinstance(result, dict) else result}")


async def _setup(args: argparse.Namespace) -> int:
    from ticker.infra.cli.oneshot import cli_context, reach_postgres, reach_redis

    ctx = cli_context()
    await (await reach_redis(ctx)).aclose()  # one clear line now, rather than a stuck enqueue
    if ctx.settings.kite_configured:
        print("Kite credentials are set (KITE_API_KEY): no stand-in accounts registered")
    else:
        ctx.require("account_encryption_key")
        assert ctx.settings.account_encryption_key is not None  # require() raised otherwise
        pool = await reach_postgres(ctx)
        try:
            ids = await register_sim_accounts(pool, ctx.settings.account_encryption_key.get_secret_value(),
                                              args.seed, args.accounts)
        finally:
            await pool.close()
        print(f"registered the stand-in's accounts: {', '.join(ids)} (seed {args.seed})")
    await load_market(ctx.settings, print)
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="ticker sim-setup",
        description="Register the Kite stand-in's accounts (unless Kite credentials are set), load instruments "
                    "and seed the strike window, as `ticker dev` does at start; for stacks that run the "
                    "processes apart (infra/docker-compose.yml). Needs a running worker; safe to run again.")
    parser.add_argument("--seed", type=int, default=SIM_SEED, help=f"the stand-in's --seed (default {SIM_SEED})")
    parser.add_argument("--accounts", type=int, default=SIM_ACCOUNTS,
                        help=f"the stand-in's --accounts (default {SIM_ACCOUNTS})")
    args = parser.parse_args(argv)
    return asyncio.run(_setup(args))
