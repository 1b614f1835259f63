"""arq's internals as `infra/queue/arq_adapter.py` relies on them, held against the installed arq.

When one of these fails after an arq upgrade, the adapter (and only the adapter) needs changing, and
the pin in pyproject.toml moves with it. Each record is written by one side and read by the other:
arq's `enqueue_job` read back through the adapter, the adapter's enqueue read by arq's `Job` and run
by a real arq Worker, the adapter's cancelled result read by arq.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import AsyncIterator
from typing import Any

import arq
import pytest
import pytest_asyncio
from arq import constants
from arq.connections import ArqRedis
from arq.jobs import Job, JobStatus
from arq.worker import Worker, func

from tests.waiting import confirm_subscribed, next_messages, wait_for
from ticker.core.contracts import Names
from ticker.infra.queue import arq_adapter as adapter
from ticker.infra.queue.enqueue import create_queue, redis_settings
from ticker.infra.runtime.outage import Outage

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")


@pytest_asyncio.fixture
async def pool(settings) -> AsyncIterator[ArqRedis]:
    client = await create_queue(settings)
    yield client
    await client.aclose()


@pytest.fixture
def queue(names: Names) -> str:
    return f"{names.namespace}:contract-{uuid.uuid4().hex[:8]}"


def _job_id() -> str:
    return f"contract-{uuid.uuid4().hex}"


def test_the_installed_arq_is_the_series_the_adapter_knows() -> None:
    assert arq.VERSION.startswith(adapter.ARQ_SERIES + "."), (
        f"arq {arq.VERSION} is installed; arq_adapter knows {adapter.ARQ_SERIES}: check its keys, records and "
        "Worker hooks against this release, then move ARQ_SERIES and the pin in pyproject.toml")


def test_key_layout_is_arqs() -> None:
    # arq's own constants, and the literal layout in Redis that other deployments' workers read
    assert (constants.job_key_prefix, constants.result_key_prefix, constants.in_progress_key_prefix,
            constants.retry_key_prefix, constants.health_check_key_suffix) == (
        "arq:job:", "arq:result:", "arq:in-progress:", "arq:retry:", ":health-check")
    assert adapter.job_key("x") == "arq:job:x" and adapter.result_key("x") == "arq:result:x"
    assert adapter.in_progress_key("x") == "arq:in-progress:x" and adapter.retry_key("x") == "arq:retry:x"
    assert adapter.health_check_key("q") == "q:health-check"
    assert constants.expires_extra_ms == 86_400_000


def test_worker_members_the_adapter_extends_exist() -> None:
    for name in ("_poll_iteration", "start_jobs", "_release_sem_dec_counter_on_complete", "handle_sig", "close",
                 "async_run"):
        assert callable(getattr(Worker, name, None)), f"arq.Worker.{name} is gone"
    assert list(inspect.signature(Worker.start_jobs).parameters) == ["self", "job_ids"]
    params = inspect.signature(Worker.__init__).parameters
    for name in ("after_job_end", "poll_delay", "max_jobs", "queue_name", "ctx", "health_check_interval"):
        assert name in params, f"arq.Worker() no longer takes {name}"
    w = Worker(functions=[func(_echo, name="echo")], redis_settings=None, redis_pool=object(),  # type: ignore[arg-type]
               handle_signals=False)
    for attr in ("tasks", "jobs_complete", "jobs_failed", "jobs_retried", "allow_pick_jobs", "in_progress_timeout_s",
                 "job_counter", "sem", "queue_name", "burst", "_last_health_check", "health_check_interval"):
        assert hasattr(w, attr), f"arq.Worker has no {attr}"


async def _echo(ctx: dict[str, Any], payload: Any) -> dict[str, Any]:
    seen = adapter.job_context(ctx)
    return {"payload": payload, "job_id": seen.job_id, "try": seen.job_try, "due_ms": seen.due_ms}


async def test_arqs_enqueue_reads_back_through_the_adapter(pool, queue) -> None:
    job_id = _job_id()
    try:
        await pool.enqueue_job("echo", {"n": 1}, _job_id=job_id, _queue_name=queue)
        view = await adapter.read_view(pool, job_id)
        assert view.job is not None and view.result is None and not view.running and view.tries == 0
        assert (view.job.function, view.job.args, view.job.kwargs) == ("echo", ({"n": 1},), {})
        assert view.job.enqueued_ms > 0
        assert await pool.zscore(queue, job_id) is not None
    finally:
        await pool.delete(adapter.job_key(job_id), queue)


async def test_the_adapters_enqueue_is_what_arq_reads_and_runs(pool, queue) -> None:
    job_id = _job_id()
    keys, args = adapter.enqueue_call(queue, "echo", {"n": 2}, job_id=job_id)
    try:
        assert await pool.eval(adapter.ENQUEUE_SCRIPT, len(keys), *keys, *args) == 1
        assert await pool.eval(adapter.ENQUEUE_SCRIPT, len(keys), *keys, *args) == 0  # the id is taken
        job = Job(job_id, pool, _queue_name=queue)
        assert await job.status() == JobStatus.queued
        info = await job.info()
        assert info is not None and (info.function, info.args) == ("echo", ({"n": 2},))
        worker = Worker(functions=[func(_echo, name="echo")], redis_settings=None, redis_pool=pool, queue_name=queue,
                        burst=True, poll_delay=0.01, handle_signals=False)
        await worker.main()
        result = await job.result_info()
        assert result is not None and result.success and result.result["payload"] == {"n": 2}
        # arq's ctx as the adapter reads it
        assert result.result["job_id"] == job_id and result.result["try"] == 1 and result.result["due_ms"] > 0
        view = await adapter.read_view(pool, job_id)
        assert view.result is not None and view.result.success and view.result.function == "echo"
        assert view.result.value == result.result and view.result.tries == 1
        assert view.result.enqueued_ms <= view.result.started_ms <= view.result.finished_ms
    finally:
        await pool.delete(adapter.job_key(job_id), adapter.result_key(job_id), adapter.retry_key(job_id), queue)


async def test_a_cancelled_result_is_one_arq_reads(pool, queue) -> None:
    job_id = _job_id()
    try:
        await pool.enqueue_job("echo", {"n": 3}, _job_id=job_id, _queue_name=queue)
        assert await adapter.cancel_unstarted(pool, job_id, (queue,), RuntimeError("cancelled"), 60) is True
        result = await Job(job_id, pool, _queue_name=queue).result_info()
        assert result is not None and not result.success and str(result.result) == "cancelled"
        assert await pool.zscore(queue, job_id) is None
        assert await pool.enqueue_job("echo", {"n": 4}, _job_id=job_id, _queue_name=queue) is None  # id still taken
    finally:
        await pool.delete(adapter.job_key(job_id), adapter.result_key(job_id), queue)


async def _run_queue_worker(settings, queue: str, finished: str | None, **extra: Any) -> tuple[Worker, asyncio.Task]:
    worker = adapter.QueueWorker(outage=Outage("redis"), finished=finished, idle_recheck_s=3600.0,
                                 functions=[func(_echo, name="echo")], queue_name=queue,
                                 redis_settings=redis_settings(settings), poll_delay=0.005, handle_signals=False,
                                 **extra)
    return worker, asyncio.create_task(worker.async_run())


async def _stop(worker: Worker, task: asyncio.Task) -> None:
    adapter.cancel_running(worker)
    await asyncio.gather(task, return_exceptions=True)
    await worker.close()


async def test_an_idle_worker_is_woken_by_an_enqueue_and_tells_who_finished(settings, pool, queue, names) -> None:
    """With a re-check an hour away, only the enqueue's wake-up can start the job, and the deferred
    one starts when it comes due; each finished job's id is published once its result is written."""
    finished = adapter.finished_channel(names) + f"-{uuid.uuid4().hex[:6]}"
    listener = pool.pubsub()
    await listener.subscribe(finished)
    await confirm_subscribed(listener)
    worker, task = await _run_queue_worker(settings, queue, finished)
    first, later = _job_id(), _job_id()
    try:
        await wait_for(lambda: _subscribed(pool, adapter.wake_channel(queue)))
        for job_id, defer in ((first, None), (later, 0.3)):
            keys, args = adapter.enqueue_call(queue, "echo", {"id": job_id}, job_id=job_id, defer_by=defer)
            await pool.eval(adapter.ENQUEUE_SCRIPT, len(keys), *keys, *args)
        assert sorted(await next_messages(listener, 2)) == sorted([first.encode(), later.encode()])
        for job_id in (first, later):
            assert (await adapter.read_view(pool, job_id)).result.success
    finally:
        await _stop(worker, task)
        await listener.aclose()
        await pool.delete(queue, *(k(j) for j in (first, later) for k in (adapter.job_key, adapter.result_key)))


async def _subscribed(pool: ArqRedis, channel: str) -> bool:
    return dict(await pool.pubsub_numsub(channel)).get(channel.encode(), 0) > 0


def test_only_the_adapter_reaches_into_arq() -> None:
    """arq's public surface (Retry, func, the pool and its settings) may be used anywhere; its key
    constants, record (de)serializers, Job handles and Worker class only in the adapter."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    internal = re.compile(r"from arq\.(constants|jobs|utils)\b|import arq\.(constants|jobs|utils)\b"
                          r"|from arq\.worker import [^\n]*\bWorker\b|from arq import [^\n]*\b(Worker|constants|Job)\b")
    allowed = {root / "infra" / "queue" / "arq_adapter.py"}
    offenders = [str(p.relative_to(root)) for folder in ("core", "infra", "jobs", "http", "streamer")
                 for p in (root / folder).rglob("*.py") if p not in allowed and internal.search(p.read_text())]
    assert offenders == []
