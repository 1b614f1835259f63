"""The data jobs as the worker runs them: enqueued by name, picked up by an arq worker, results and
progress readable afterwards, and a bad request failing the job with its message."""

from __future__ import annotations

import uuid
from datetime import datetime, time, timedelta

from arq.jobs import Job, JobStatus

from tests.data.conftest import DataEnv
from ticker.core.contracts import JOB_FETCH_HISTORY, JOB_REFRESH_INSTRUMENTS, JOB_REFRESH_TOKENS
from ticker.infra.queue.enqueue import derived_job_id, enqueue
from ticker.infra.queue.progress import get_progress
from ticker.jobs.data.history_fetch import IST
from ticker.jobs.worker import make_worker


async def _run_queued(env: DataEnv) -> None:
    worker = make_worker("default", env.deps.settings, env.deps, burst=True)
    try:
        await worker.main()
    finally:
        await worker.close()


async def test_data_jobs_run_in_an_arq_worker(data_env: DataEnv) -> None:
    env = data_env
    q, names = env.deps.redis, env.deps.names
    await env.deps.db.execute("TRUNCATE instruments, history_cache")
    # arq keeps job records under the job id alone, outside any namespace: ids of this run only
    run = uuid.uuid4().hex[:8]
    instruments, tokens, bad_id = f"w-instruments-{run}", f"w-tokens-{run}", f"w-bad-{run}"
    assert await enqueue(q, names, JOB_REFRESH_INSTRUMENTS, {}, job_id=instruments)
    assert await enqueue(q, names, JOB_REFRESH_TOKENS, {}, job_id=tokens)
    await _run_queued(env)
    assert (await Job(instruments, q).result(timeout=60))["rows"] == len(env.sim.state.universe)
    assert (await Job(tokens, q).result(timeout=60))["failed"] == 0

    index = await env.deps.db.fetchval("SELECT instrument_token FROM instruments WHERE tradingsymbol = 'NIFTY 50'")
    day = datetime.now(IST).date() - timedelta(days=7)
    payload = {"instrument_token": index, "interval": "15minute",
               "from": datetime.combine(day, time(9, 15), IST).isoformat(),
               "to": datetime.combine(day + timedelta(days=2), time(15, 30), IST).isoformat()}
    good = derived_job_id("history", *sorted(payload.items()))
    assert await enqueue(q, names, JOB_FETCH_HISTORY, payload, job_id=good)
    assert await enqueue(q, names, JOB_FETCH_HISTORY, {**payload, "interval": "7minute"}, job_id=bad_id)
    await _run_queued(env)

    result = await Job(good, q).result(timeout=60)
    assert result["columns"][:5] == ["date", "open", "high", "low", "close"]
    assert await get_progress(q, names, good) == {"done": 2, "total": 2}
    bad = await Job(bad_id, q).result_info()
    assert bad.success is False and "interval" in str(bad.result)
    assert await Job(bad_id, q).status() == JobStatus.complete
