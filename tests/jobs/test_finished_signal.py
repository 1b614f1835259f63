"""Status long-polls wake on a worker's finished signal: `FinishedJobs` against real Redis, and a
long-poll through the jobs API's `wait_for` answered by a real worker finishing the job."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace

from tests.waiting import wait_for
from ticker.core.contracts import JOB_PORTFOLIO
from ticker.infra.queue.arq_adapter import finished_channel
from ticker.infra.queue.enqueue import enqueue
from ticker.infra.queue.finished import FinishedJobs


async def _listening(redis, channel: str) -> bool:
    return dict(await redis.pubsub_numsub(channel)).get(channel.encode(), 0) > 0


async def test_a_watch_wakes_on_its_jobs_signal_and_on_close(redis, names) -> None:
    finished = FinishedJobs(redis, names)
    try:
        with finished.watch("job-a") as a, finished.watch("job-b") as b:
            await wait_for(lambda: _listening(redis, finished_channel(names)))
            await redis.publish(finished_channel(names), "job-a")
            assert await a.wait(60) is True
            closing = asyncio.create_task(b.wait(3600))
            await finished.close()
            assert await closing is True  # a shutdown answers every waiter
    finally:
        await finished.close()


async def test_a_long_poll_answers_when_the_worker_finishes(world_factory, db) -> None:
    """The poll re-reads every RECHECK_SECONDS at most; here the worker's signal wakes it, and the
    answer is the finished status either way."""
    import importlib

    jobs_api = importlib.import_module("ticker.http.routes.jobs_api")  # http/ has no __init__: by name
    from .conftest import run_burst

    world = await world_factory()
    svc = SimpleNamespace(redis=world.arq, db=db, names=world.names, stopping=asyncio.Event(),
                          finished=FinishedJobs(world.arq, world.names))
    job_id = f"pf-poll-{uuid.uuid4().hex}"
    try:
        await enqueue(world.arq, world.names, JOB_PORTFOLIO, {"account_id": "sim1", "kind": "positions"},
                      job_id=job_id)
        poll = asyncio.create_task(jobs_api.wait_for(svc, job_id, 30))
        await run_burst(world, queues=("default",))
        status = await poll
        assert status is not None and status.status == "complete"
    finally:
        await svc.finished.close()
