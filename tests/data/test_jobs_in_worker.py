"""The data jobs as the worker runs them: enqueued by name, picked up by an arq worker, results and
progress readable afterwards, and a bad request failing the job with its message."""

from __future__ import annotations

from datetime import datetime, time, timedelta

from arq.jobs import Job, JobStatus

from tests.data.conftest import DataEnv
from ticker.core.contracts import JOB_FETCH_HISTORY, JOB_REFRESH_INSTRUMENTS, JOB_REFRESH_TOKENS
from ticker.infra.progress import get_progress
from ticker.infra.queue import derived_job_id, enqueue
from ticker.jobs.history import IST
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
    assert await enqueue(q, names, JOB_REFRESH_INSTRUMENTS, {}, job_id="w-instruments")
    assert await enqueue(q, names, JOB_REFRESH_TOKENS, {}, job_id="w-tokens")
    await _run_queued(env)
    assert (await Job("w-instruments", q).result(timeout=5))["rows"] == len(env.sim.state.universe)
    assert (await Job("w-tokens", q).result(timeout=5))["failed"] == 0

    index = await env.deps.db.fetchval("SELECT instrument_token FROM instruments WHERE tradingsymbol = 'NIFTY 50'")
    day = datetime.now(IST).date() - timedelta(days=7)
    payload = {"instrument_token": index, "interval": "15minute",
               "from": datetime.combine(day, time(9, 15), IST).isoformat(),
               "to": datetime.combine(day + timedelta(days=2), time(15, 30), IST).isoformat()}
    good = derived_job_id("history", *sorted(payload.items()))
    assert await enqueue(q, names, JOB_FETCH_HISTORY, payload, job_id=good)
    assert await enqueue(q, names, JOB_FETCH_HISTORY, {**payload, "interval": "7minute"}, job_id="w-bad")
    await _run_queued(env)

    result = await Job(good, q).result(timeout=5)
    assert result["columns"][:5] == ["date", "open", "high", "low", "close"]
    assert await get_progress(q, names, good) == {"done": 2, "total": 2}
    bad = await Job("w-bad", q).result_info()
    assert bad.success is False and "interval" in str(bad.result)
    assert await Job("w-bad", q).status() == JobStatus.complete
