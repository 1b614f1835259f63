"""Schemathesis against the live `ticker web` process: generated requests (valid and invalid, from
openapi.yaml) must never get a 5xx, and every response must match the spec (status, content type,
headers, body schema, Allow on 405s; the API key enforced).

Two checks are left out on purpose: `positive_data_acceptance` (a schema cannot say which
instruments and accounts exist, so schema-valid orders for unknown symbols are rightly refused) and
`use_after_free` (DELETE /jobs/{id} cancels a job, whose status stays readable as `cancelled`).
The response-time check (10 s by default) gets the same generous bound as the request timeout: a
long poll (`GET /jobs/{id}?wait=29`) on a job no worker runs rightly takes as long as it was asked.
The stateful phase is left out because it long-polls real queued jobs for up to 30 s each; a
single such long poll (`GET /jobs/{id}?wait=30` on a job no worker runs) is simply waited for (the
request timeout is only a generous bound against a hang, not a speed check).

The fuzzer creates accounts, subscriptions and jobs at random, so it gets a database and key
namespace of its own: nothing it leaves behind can change what the other web tests see. It sends
the admin key, which opens every route, so the account and admin routes are exercised too (the
trading key's 403s there are tested on their own).
"""

from __future__ import annotations

import asyncio
import pathlib
import re
import sys

from tests.conftest import SESSION_ID
from tests.web.conftest import ADMIN_KEY, API_KEY, KITE, fresh_database
from tests.web.procs import process_env, web_process
from tests.web.seed import seed_instruments
from ticker.infra.stores.crypto import new_key
from ticker.infra.stores.db import create_pool

SCHEMATHESIS = str(pathlib.Path(sys.executable).with_name("schemathesis"))
EXAMPLES = 12


async def test_generated_requests_never_get_a_5xx_and_match_the_spec(settings, _server_urls, tmp_path) -> None:
    with fresh_database(_server_urls[1], f"ticker_fuzz_{SESSION_ID}") as database_url:
        pool = await create_pool(database_url, min_size=1, max_size=2)
        try:
            await seed_instruments(pool)
        finally:
            await pool.close()
        fuzz = settings.model_copy(update={"database_url": database_url, "redis_namespace": f"tf{SESSION_ID}",
                                           "publish_channel_prefix": f"ticker:f{SESSION_ID}"})
        report, returncode = await _fuzz(fuzz, tmp_path)
    assert returncode == 0, report[-15000:]
    exercised = re.search(r"\b(\d+)/\1\b", report)  # every operation was exercised: n of n
    assert exercised and int(exercised[1]) >= 40, report[-3000:]


async def _fuzz(settings, cwd) -> tuple[str, int | None]:
    env = process_env(settings, API_KEY=API_KEY, ADMIN_API_KEY=ADMIN_KEY, ACCOUNT_ENCRYPTION_KEY=new_key(),
                      JWT_SECRET="fuzz-jwt-secret-0123456789abcdef",  # so POST /auth/token can sign
                      **{k.upper(): v for k, v in KITE.items()})
    async with web_process(env) as web:
        proc = await asyncio.create_subprocess_exec(
            SCHEMATHESIS, "run", f"{web.url}/openapi.json", "--checks", "all",
            "--exclude-checks", "positive_data_acceptance,use_after_free", "--max-response-time", "60",
            "--phases", "examples,coverage,fuzzing", "--max-examples", str(EXAMPLES), "--seed", "20251",
            "--generation-database", "none", "--workers", "1", "--request-timeout", "60", "--no-color",
            "-H", f"X-API-Key: {ADMIN_KEY}", cwd=cwd, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        async with asyncio.timeout(600):
            out, _ = await proc.communicate()
    return out.decode(errors="replace"), proc.returncode
